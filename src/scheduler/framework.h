#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "backends/engine_metrics.h"
#include "base/random.h"
#include "metrics/metrics.h"
#include "router/snapshot.h"

namespace sluice::scheduler {

class PrefixIndex;

// What the scheduler knows about the request. Views point into the request and live as long
// as the pick.
struct RequestInfo {
  std::string_view model;      // the backend's model name (the index is seeded with it)
  std::string_view lora;       // the adapter asked for, if the model is an adapter
  uint64_t prompt_tokens = 0;  // estimate: prompt bytes / 4
  uint64_t max_tokens = 0;     // requested output, or a default
  const std::vector<uint64_t>* prefix_hashes = nullptr;  // chained block hashes of the prompt
  std::string_view session;  // session key (header or the body's `user`); may be empty
  uint64_t expectedTokens() const { return prompt_tokens + max_tokens; }
  // The work the request brings to an endpoint that already holds `matched_blocks` leading
  // prompt blocks of `block_bytes` each: the prompt it must compute (tokens estimated as bytes
  // / 4, like prompt_tokens) plus the expected output.
  uint64_t expectedWorkOn(uint32_t matched_blocks, size_t block_bytes) const {
    const uint64_t cached = static_cast<uint64_t>(matched_blocks) * block_bytes / 4;
    return prompt_tokens - std::min(cached, prompt_tokens) + max_tokens;
  }
};

// One endpoint as the plugins see it: the router's own live counts and the engine's last
// scraped state (null when no fetcher or not yet scraped).
struct Candidate {
  const router::Endpoint* endpoint = nullptr;
  const backends::EndpointMetrics* metrics = nullptr;
  int64_t in_flight = 0;         // requests the router has sent and not seen complete
  int64_t in_flight_tokens = 0;  // their prompt plus expected output
  double metrics_age_s = -1;     // how old `metrics` is; -1 if none
};

// Per-request scratch the plugins share (prefix matches computed once, used by several).
struct CycleState {
  base::Random* random = nullptr;       // the worker's generator
  int64_t now_ns = 0;                   // steady clock, for ejection periods
  std::vector<uint32_t> prefix_blocks;  // per candidate: consecutive matched blocks
  uint32_t prefix_total = 0;            // blocks in the request
  bool prefix_computed = false;
};

class Filter {
 public:
  virtual ~Filter() = default;
  virtual std::string_view name() const = 0;
  // Removes candidates in place. A filter never empties the set: if it would, it keeps all.
  virtual void filter(const RequestInfo& req, CycleState& state, std::vector<Candidate>& cands) = 0;
};

class Scorer {
 public:
  virtual ~Scorer() = default;
  virtual std::string_view name() const = 0;
  // Writes one score in [0, 1] per candidate (1 = best).
  virtual void score(const RequestInfo& req, CycleState& state, std::span<const Candidate> cands,
                     std::span<double> out) = 0;
};

class Picker {
 public:
  virtual ~Picker() = default;
  virtual std::string_view name() const = 0;
  // Orders candidate indexes best first, at most `n` of them.
  virtual void pick(std::span<const double> totals, base::Random& random, size_t n,
                    std::vector<size_t>& order) = 0;
};

struct WeightedScorer {
  std::unique_ptr<Scorer> scorer;
  double weight = 1;
  metrics::Histogram* timer = nullptr;  // time spent in this plugin (process-wide, by name)
};

// Filters, then weighted scorers, then a picker.
struct Profile {
  std::string name;
  std::vector<std::unique_ptr<Filter>> filters;
  std::vector<metrics::Histogram*> filter_timers;  // parallel to filters
  std::vector<WeightedScorer> scorers;
  std::unique_ptr<Picker> picker;
};

// Why an endpoint was chosen: the scores behind the decision, for logs and /debug/decisions.
struct Decision {
  std::string profile;
  struct Row {
    std::string address;
    double total = 0;
    std::vector<double> scores;  // per scorer, in profile order
  };
  std::vector<std::string> scorer_names;
  std::vector<Row> rows;  // candidates after filtering, in pick order
  std::string summary;    // e.g. "4 of 4 candidates after filters, prefix 0.92"
};

// One line a person can read: the profile, why, and the top candidates with their scores.
std::string describe(const Decision& d);
// The same as a JSON object.
std::string decisionJson(const Decision& d);

}  // namespace sluice::scheduler
