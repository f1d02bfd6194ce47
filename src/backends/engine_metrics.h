#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "base/clock.h"
#include "base/result.h"

namespace sluice::backends {

enum class EngineType { Vllm, Sglang, Trtllm, Triton };

std::optional<EngineType> parseEngineType(std::string_view text);
std::string_view engineTypeName(EngineType type);

// A metric to read: a name, optionally restricted to series carrying one label value (Triton
// puts several signals in one family). An empty name disables the signal.
struct MetricRef {
  std::string name;
  std::string label_key;
  std::string label_value;
};

// Where each signal lives in one engine's /metrics. Alternatives are tried in order, so one
// mapping covers vLLM v1 and v0.
struct EngineMapping {
  std::vector<MetricRef> waiting;
  std::vector<MetricRef> running;
  std::vector<MetricRef> kv_usage;
  std::vector<std::string> ttft_histogram;  // histogram base names
  std::vector<std::string> itl_histogram;
  // Cache geometry: either labels on an info series, or metrics of their own.
  std::string cache_info;
  std::string block_size_label;
  std::string num_blocks_label;
  MetricRef block_size_metric;
  MetricRef num_blocks_metric;
  std::string lora_info;  // vLLM: value = last update time, labels list adapters
};

const EngineMapping& defaultMapping(EngineType type);

// A mapping with some signals replaced: signal name (waiting, running, kv_usage, ttft_histogram,
// itl_histogram, lora_info) -> "metric" or metric{label="value"}; "" turns the signal off.
EngineMapping withOverrides(EngineMapping base,
                            const std::map<std::string, std::string>& overrides);
MetricRef parseMetricRef(std::string_view text);

// One scrape, read through a mapping.
struct EngineSignals {
  std::optional<double> waiting;
  std::optional<double> running;
  std::optional<double> kv_usage;
  struct Hist {
    bool present = false;
    double sum = 0;
    double count = 0;
  };
  Hist ttft;
  Hist itl;
  std::optional<uint32_t> block_size;
  std::optional<uint32_t> num_blocks;
  bool has_lora = false;
  int max_loras = -1;
  std::vector<std::string> running_loras;
  std::vector<std::string> waiting_loras;
};

base::Result<EngineSignals> extractSignals(std::string_view text, const EngineMapping& mapping);

// What the scheduler reads about one endpoint. -1 means "not reported".
struct EndpointMetrics {
  double waiting = -1;
  double running = -1;
  double kv_usage = -1;
  double ttft_s = -1;  // mean over the observations since the previous scrape
  double itl_s = -1;
  uint32_t block_size = 0;
  uint32_t num_blocks = 0;
  int max_loras = -1;
  std::vector<std::string> running_loras;
  std::vector<std::string> waiting_loras;
  std::vector<std::string> adapters;       // every model id from /v1/models
  std::vector<std::string> lora_adapters;  // those with a "parent" (vLLM's mark of an adapter)
  bool scraped = false;                    // at least one scrape succeeded
  bool healthy = true;                     // false after repeated failures, until one succeeds
  uint32_t consecutive_failures = 0;
  base::MonoTime updated{};  // last successful scrape
  std::string last_error;
};

// Turns successive scrapes of one endpoint into EndpointMetrics: latency means from histogram
// deltas (counter resets handled), health from consecutive failures.
class EndpointTracker {
 public:
  void onScrape(const EngineSignals& s, base::MonoTime now);
  void onFailure(std::string error, uint32_t unhealthy_after);
  void setAdapters(std::vector<std::string> adapters, std::vector<std::string> lora_adapters = {}) {
    m_.adapters = std::move(adapters);
    m_.lora_adapters = std::move(lora_adapters);
  }
  const EndpointMetrics& metrics() const { return m_; }

 private:
  static double recentMean(const EngineSignals::Hist& now, EngineSignals::Hist& prev,
                           double previous_mean);
  EndpointMetrics m_;
  EngineSignals::Hist prev_ttft_;
  EngineSignals::Hist prev_itl_;
};

// The engines' state as last scraped, immutable once published; workers hold one by
// shared_ptr, replaced by message passing, so reading it takes no lock.
struct MetricsView {
  std::unordered_map<std::string, EndpointMetrics> endpoints;  // by "ip:port"
  base::MonoTime published{};
  // LoRA adapters any endpoint serves (its /v1/models) or runs: built once per publication so
  // the request path asks one set, not every endpoint.
  std::unordered_set<std::string> lora_adapters;
  const EndpointMetrics* find(const std::string& address) const {
    auto it = endpoints.find(address);
    return it == endpoints.end() ? nullptr : &it->second;
  }
  bool isLoraAdapter(std::string_view model) const {
    if (lora_adapters.empty())
      return false;
    thread_local std::string key;
    key.assign(model.data(), model.size());
    return lora_adapters.count(key) > 0;
  }
};
// Model ids from an OpenAI /v1/models body ("data":[{"id":...}]).
// With `lora_ids`, also the ids that name a "parent" model (LoRA adapters, vLLM's convention).
std::vector<std::string> parseModelIds(std::string_view json,
                                       std::vector<std::string>* lora_ids = nullptr);

}  // namespace sluice::backends
