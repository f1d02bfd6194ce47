#include "backends/engine_metrics.h"

#include <algorithm>
#include <cmath>

#include <simdjson.h>

#include "backends/prometheus.h"
#include "base/padded_buffer.h"
#include "base/strings.h"

namespace sluice::backends {

std::optional<EngineType> parseEngineType(std::string_view text) {
  std::string t = base::toLower(text);
  if (t == "vllm") {
    return EngineType::Vllm;
  }
  if (t == "sglang") {
    return EngineType::Sglang;
  }
  if (t == "trtllm" || t == "trtllm-serve" || t == "tensorrt-llm") {
    return EngineType::Trtllm;
  }
  if (t == "triton") {
    return EngineType::Triton;
  }
  return std::nullopt;
}

std::string_view engineTypeName(EngineType type) {
  switch (type) {
    case EngineType::Vllm:
      return "vllm";
    case EngineType::Sglang:
      return "sglang";
    case EngineType::Trtllm:
      return "trtllm-serve";
    case EngineType::Triton:
      return "triton";
  }
  return "vllm";
}

const EngineMapping& defaultMapping(EngineType type) {
  static const EngineMapping kVllm = [] {
    EngineMapping m;
    m.waiting = {{"vllm:num_requests_waiting", "", ""}};
    m.running = {{"vllm:num_requests_running", "", ""}};
    m.kv_usage = {{"vllm:kv_cache_usage_perc", "", ""}, {"vllm:gpu_cache_usage_perc", "", ""}};
    m.ttft_histogram = {"vllm:time_to_first_token_seconds"};
    m.itl_histogram = {"vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"};
    m.cache_info = "vllm:cache_config_info";
    m.block_size_label = "block_size";
    m.num_blocks_label = "num_gpu_blocks";
    m.lora_info = "vllm:lora_requests_info";
    return m;
  }();
  static const EngineMapping kSglang = [] {
    EngineMapping m;
    m.waiting = {{"sglang:num_queue_reqs", "", ""}};
    m.running = {{"sglang:num_running_reqs", "", ""}};
    m.kv_usage = {{"sglang:token_usage", "", ""}};
    m.ttft_histogram = {"sglang:time_to_first_token_seconds"};
    m.itl_histogram = {"sglang:inter_token_latency_seconds"};
    m.cache_info = "sglang:cache_config_info";
    m.block_size_label = "page_size";
    m.num_blocks_label = "num_pages";
    return m;
  }();
  static const EngineMapping kTrtllm = [] {
    EngineMapping m;
    m.waiting = {{"trtllm_num_requests_waiting", "", ""}};
    m.running = {{"trtllm_num_requests_running", "", ""}};
    m.kv_usage = {{"trtllm_kv_cache_utilization", "", ""}};
    m.ttft_histogram = {"trtllm_time_to_first_token_seconds"};
    m.itl_histogram = {"trtllm_time_per_output_token_seconds"};
    m.block_size_metric = {"trtllm_kv_cache_tokens_per_block", "", ""};
    m.num_blocks_metric = {"trtllm_kv_cache_max_blocks", "", ""};
    return m;
  }();
  static const EngineMapping kTriton = [] {
    EngineMapping m;
    m.waiting = {{"nv_trt_llm_request_metrics", "request_type", "waiting"}};
    m.running = {{"nv_trt_llm_request_metrics", "request_type", "scheduled"}};
    m.kv_usage = {{"nv_trt_llm_kv_cache_block_metrics", "kv_cache_block_type", "fraction"}};
    m.block_size_metric = {"nv_trt_llm_kv_cache_block_metrics", "kv_cache_block_type",
                           "tokens_per"};
    m.num_blocks_metric = {"nv_trt_llm_kv_cache_block_metrics", "kv_cache_block_type", "max"};
    return m;
  }();
  switch (type) {
    case EngineType::Vllm:
      return kVllm;
    case EngineType::Sglang:
      return kSglang;
    case EngineType::Trtllm:
      return kTrtllm;
    case EngineType::Triton:
      return kTriton;
  }
  return kVllm;
}

MetricRef parseMetricRef(std::string_view text) {
  MetricRef ref;
  size_t brace = text.find('{');
  ref.name = std::string(text.substr(0, brace));
  if (brace != std::string_view::npos && text.size() > brace + 2 && text.back() == '}') {
    std::string_view filter = text.substr(brace + 1, text.size() - brace - 2);
    size_t eq = filter.find('=');
    if (eq != std::string_view::npos && filter.size() >= eq + 3) {
      ref.label_key = std::string(filter.substr(0, eq));
      ref.label_value = std::string(filter.substr(eq + 2, filter.size() - eq - 3));
    }
  }
  return ref;
}

EngineMapping withOverrides(EngineMapping base,
                            const std::map<std::string, std::string>& overrides) {
  for (const auto& [signal, metric] : overrides) {
    MetricRef ref = parseMetricRef(metric);
    std::vector<MetricRef> refs;
    std::vector<std::string> names;
    if (!ref.name.empty()) {
      refs.push_back(ref);
      names.push_back(ref.name);
    }
    if (signal == "waiting") {
      base.waiting = refs;
    } else if (signal == "running") {
      base.running = refs;
    } else if (signal == "kv_usage") {
      base.kv_usage = refs;
    } else if (signal == "ttft_histogram") {
      base.ttft_histogram = names;
    } else if (signal == "itl_histogram") {
      base.itl_histogram = names;
    } else if (signal == "lora_info") {
      base.lora_info = ref.name;
    }
  }
  return base;
}

namespace {

bool matches(const MetricRef& ref, const PromSample& s) {
  if (ref.name.empty() || s.name != ref.name) {
    return false;
  }
  if (ref.label_key.empty()) {
    return true;
  }
  auto v = promLabel(s.labels, ref.label_key);
  return v && *v == ref.label_value;
}

std::optional<uint32_t> toCount(double v) {
  if (!std::isfinite(v) || v < 0 || v > 4e9) {
    return std::nullopt;
  }
  return static_cast<uint32_t>(v);
}

}  // namespace

base::Result<EngineSignals> extractSignals(std::string_view text, const EngineMapping& mapping) {
  EngineSignals out;
  // Which alternative matched first decides; later alternatives are ignored once one is seen.
  int waiting_alt = -1, running_alt = -1, kv_alt = -1, ttft_alt = -1, itl_alt = -1;
  double lora_ts = -HUGE_VAL;
  auto gauge = [](const std::vector<MetricRef>& refs, const PromSample& s, int& chosen,
                  std::optional<double>& value, bool take_max) {
    for (int i = 0; i < static_cast<int>(refs.size()); ++i) {
      if (!matches(refs[static_cast<size_t>(i)], s)) {
        continue;
      }
      if (chosen != -1 && chosen != i) {
        return;
      }
      chosen = i;
      if (!std::isfinite(s.value)) {
        return;
      }
      // Several series (data-parallel ranks, models) add up; utilisation takes the worst.
      value = value ? (take_max ? std::max(*value, s.value) : *value + s.value) : s.value;
      return;
    }
  };
  auto histogram = [](const std::vector<std::string>& bases, const PromSample& s, int& chosen,
                      EngineSignals::Hist& h) {
    for (int i = 0; i < static_cast<int>(bases.size()); ++i) {
      const std::string& b = bases[static_cast<size_t>(i)];
      if (s.name.size() <= b.size() || s.name.substr(0, b.size()) != b) {
        continue;
      }
      std::string_view suffix = s.name.substr(b.size());
      if (suffix != "_sum" && suffix != "_count") {
        continue;
      }
      if (chosen != -1 && chosen != i) {
        return;
      }
      chosen = i;
      h.present = true;
      if (std::isfinite(s.value)) {
        (suffix == "_sum" ? h.sum : h.count) += s.value;
      }
      return;
    }
  };
  auto r = parsePrometheusText(text, [&](const PromSample& s) {
    gauge(mapping.waiting, s, waiting_alt, out.waiting, false);
    gauge(mapping.running, s, running_alt, out.running, false);
    gauge(mapping.kv_usage, s, kv_alt, out.kv_usage, true);
    histogram(mapping.ttft_histogram, s, ttft_alt, out.ttft);
    histogram(mapping.itl_histogram, s, itl_alt, out.itl);
    if (!mapping.cache_info.empty() && s.name == mapping.cache_info) {
      if (auto v = promLabel(s.labels, mapping.block_size_label)) {
        if (auto n = base::parseUint(*v)) {
          out.block_size = static_cast<uint32_t>(*n);
        }
      }
      if (auto v = promLabel(s.labels, mapping.num_blocks_label)) {
        if (auto n = base::parseUint(*v)) {
          out.num_blocks = static_cast<uint32_t>(*n);
        }
      }
    }
    if (matches(mapping.block_size_metric, s)) {
      out.block_size = toCount(s.value);
    }
    if (matches(mapping.num_blocks_metric, s)) {
      out.num_blocks = toCount(s.value);
    }
    if (!mapping.lora_info.empty() && s.name == mapping.lora_info && s.value >= lora_ts) {
      // The newest series (its value is its update time) describes the adapters now.
      lora_ts = s.value;
      out.has_lora = true;
      out.running_loras =
          base::splitList(promLabel(s.labels, "running_lora_adapters").value_or(""));
      out.waiting_loras =
          base::splitList(promLabel(s.labels, "waiting_lora_adapters").value_or(""));
      auto max = base::parseUint(promLabel(s.labels, "max_lora").value_or(""));
      out.max_loras = max ? static_cast<int>(*max) : -1;
    }
  });
  if (!r) {
    return base::Error{r.error().message};
  }
  return out;
}

double EndpointTracker::recentMean(const EngineSignals::Hist& now, EngineSignals::Hist& prev,
                                   double previous_mean) {
  if (!now.present) {
    return -1;
  }
  double dsum = now.sum - prev.sum;
  double dcount = now.count - prev.count;
  if (dcount < 0 || dsum < 0) {
    // The engine restarted: its counters began again from zero.
    dsum = now.sum;
    dcount = now.count;
  }
  prev = now;
  if (dcount <= 0) {
    return previous_mean;  // nothing new: keep the last known value
  }
  return dsum / dcount;
}

void EndpointTracker::onScrape(const EngineSignals& s, base::MonoTime now) {
  const bool first = !m_.scraped;
  m_.waiting = s.waiting.value_or(-1);
  m_.running = s.running.value_or(-1);
  m_.kv_usage = s.kv_usage.value_or(-1);
  if (first) {
    // The first scrape has no previous point: totals since the engine started are the best guess.
    prev_ttft_ = {};
    prev_itl_ = {};
  }
  m_.ttft_s = recentMean(s.ttft, prev_ttft_, m_.ttft_s);
  m_.itl_s = recentMean(s.itl, prev_itl_, m_.itl_s);
  if (s.block_size) {
    m_.block_size = *s.block_size;
  }
  if (s.num_blocks) {
    m_.num_blocks = *s.num_blocks;
  }
  if (s.has_lora) {
    m_.max_loras = s.max_loras;
    m_.running_loras = s.running_loras;
    m_.waiting_loras = s.waiting_loras;
  }
  m_.scraped = true;
  m_.healthy = true;
  m_.consecutive_failures = 0;
  m_.updated = now;
  m_.last_error.clear();
}

void EndpointTracker::onFailure(std::string error, uint32_t unhealthy_after) {
  ++m_.consecutive_failures;
  m_.last_error = std::move(error);
  if (m_.consecutive_failures >= unhealthy_after) {
    m_.healthy = false;
  }
}

std::vector<std::string> parseModelIds(std::string_view json, std::vector<std::string>* lora_ids) {
  namespace od = simdjson::ondemand;
  std::vector<std::string> ids;
  base::PaddedBuffer buf;
  buf.append(json);
  if (buf.empty()) {
    return ids;
  }
  od::parser parser;
  od::document doc;
  if (parser
          .iterate(simdjson::padded_string_view(buf.data(), buf.size(),
                                                buf.capacity() + base::PaddedBuffer::kPadding))
          .get(doc)) {
    return ids;
  }
  od::array data;
  if (doc["data"].get_array().get(data)) {
    return ids;
  }
  for (auto item : data) {
    std::string_view id;
    if (item["id"].get_string().get(id) == simdjson::SUCCESS) {
      ids.emplace_back(id);
      std::string_view parent;
      if (lora_ids != nullptr && item["parent"].get_string().get(parent) == simdjson::SUCCESS &&
          !parent.empty()) {
        lora_ids->push_back(ids.back());
      }
    }
  }
  return ids;
}

}  // namespace sluice::backends
