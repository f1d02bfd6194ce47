#pragma once

#include <atomic>
#include <memory>

#include "scheduler/framework.h"
#include "scheduler/prefix_index.h"

namespace sluice::scheduler {

// --- filters ---

// Drops endpoints the fetcher reports unhealthy and those ejected by outlier detection.
class HealthFilter final : public Filter {
 public:
  std::string_view name() const override { return "health"; }
  void filter(const RequestInfo& req, CycleState& state, std::vector<Candidate>& cands) override;
};

// Drops saturated endpoints: waiting queue at or over `max_waiting`, KV use at or over
// `max_kv`, or metrics older than `stale_after_s` (stale counts as saturated).
class SaturationFilter final : public Filter {
 public:
  // relative: an endpoint counts as saturated only against the best fresh candidate (its queue
  // `max_waiting` longer than the shortest, its KV use past `max_kv` while another's is 0.1 or
  // more below that), so a fleet that is busy everywhere keeps its cache affinity.
  SaturationFilter(double max_waiting, double max_kv, double stale_after_s, bool relative = false)
      : max_waiting_(max_waiting),
        max_kv_(max_kv),
        stale_after_s_(stale_after_s),
        relative_(relative) {}
  std::string_view name() const override { return "saturation"; }
  void filter(const RequestInfo& req, CycleState& state, std::vector<Candidate>& cands) override;

 private:
  double max_waiting_, max_kv_, stale_after_s_;
  bool relative_;
};

// Kthena's least-request filter: drops endpoints whose engine queue exceeds `max_waiting`.
class LeastRequestFilter final : public Filter {
 public:
  explicit LeastRequestFilter(double max_waiting) : max_waiting_(max_waiting) {}
  std::string_view name() const override { return "least-request"; }
  void filter(const RequestInfo& req, CycleState& state, std::vector<Candidate>& cands) override;

 private:
  double max_waiting_;
};

// For adapter requests: endpoints running or queueing the adapter, else those with a free
// slot, else all.
class LoraAffinityFilter final : public Filter {
 public:
  std::string_view name() const override { return "lora-affinity"; }
  void filter(const RequestInfo& req, CycleState& state, std::vector<Candidate>& cands) override;
};

// --- scorers ---

class RandomScorer final : public Scorer {
 public:
  std::string_view name() const override { return "random"; }
  void score(const RequestInfo& req, CycleState& state, std::span<const Candidate> cands,
             std::span<double> out) override;
};

class RoundRobinScorer final : public Scorer {
 public:
  std::string_view name() const override { return "round-robin"; }
  void score(const RequestInfo& req, CycleState& state, std::span<const Candidate> cands,
             std::span<double> out) override;

 private:
  std::atomic<uint64_t> next_{0};
};

// Kthena's least-request: load = max(engine running, router in flight) + 100 x engine waiting.
class LeastRequestScorer final : public Scorer {
 public:
  std::string_view name() const override { return "least-request"; }
  void score(const RequestInfo& req, CycleState& state, std::span<const Candidate> cands,
             std::span<double> out) override;
};

// GIE's queue scorer over the engine's waiting queue.
class QueueScorer final : public Scorer {
 public:
  std::string_view name() const override { return "queue"; }
  void score(const RequestInfo& req, CycleState& state, std::span<const Candidate> cands,
             std::span<double> out) override;
};

// 1 - KV-cache use.
class KvCacheScorer final : public Scorer {
 public:
  std::string_view name() const override { return "kv-cache"; }
  void score(const RequestInfo& req, CycleState& state, std::span<const Candidate> cands,
             std::span<double> out) override;
};

// Fewer running requests (engine-reported, or the router's count before any scrape) is better.
class RunningRequestsScorer final : public Scorer {
 public:
  std::string_view name() const override { return "running-requests"; }
  void score(const RequestInfo& req, CycleState& state, std::span<const Candidate> cands,
             std::span<double> out) override;
};

// The router's own zero-lag view: tokens in flight (prompt plus expected output).
class TokenLoadScorer final : public Scorer {
 public:
  std::string_view name() const override { return "token-load"; }
  void score(const RequestInfo& req, CycleState& state, std::span<const Candidate> cands,
             std::span<double> out) override;
};

// Kthena's least-latency: a blend of recent TTFT and inter-token latency, each min-max
// normalised; weight `ttft_weight` on TTFT.
class LeastLatencyScorer final : public Scorer {
 public:
  explicit LeastLatencyScorer(double ttft_weight = 0.5) : ttft_weight_(ttft_weight) {}
  std::string_view name() const override { return "least-latency"; }
  void score(const RequestInfo& req, CycleState& state, std::span<const Candidate> cands,
             std::span<double> out) override;

 private:
  double ttft_weight_;
};

// 1.0 adapter running, 0.8 free slot, 0.6 adapter waiting, 0 otherwise (1.0 for base requests).
class LoraAffinityScorer final : public Scorer {
 public:
  std::string_view name() const override { return "lora-affinity"; }
  void score(const RequestInfo& req, CycleState& state, std::span<const Candidate> cands,
             std::span<double> out) override;
};

// Share of the prompt's blocks the endpoint probably holds. With `load_threshold_tokens` > 0 a
// warm endpoint loses its affinity once its tokens in flight exceed the least-loaded
// candidate's by that much: stay on the cache until it saturates, then route on load.
class PrefixCacheScorer final : public Scorer {
 public:
  PrefixCacheScorer(std::shared_ptr<PrefixIndex> index, int64_t load_threshold_tokens = 0)
      : index_(std::move(index)), load_threshold_tokens_(load_threshold_tokens) {}
  std::string_view name() const override { return "prefix-cache"; }
  void score(const RequestInfo& req, CycleState& state, std::span<const Candidate> cands,
             std::span<double> out) override;

 private:
  std::shared_ptr<PrefixIndex> index_;
  int64_t load_threshold_tokens_;
};

// Spreads cold prefixes: when no candidate holds any of the prompt, endpoints that least
// recently received a cold request score highest; neutral (0.5) otherwise.
class NoHitScorer final : public Scorer {
 public:
  explicit NoHitScorer(std::shared_ptr<PrefixIndex> index) : index_(std::move(index)) {}
  std::string_view name() const override { return "no-hit"; }
  void score(const RequestInfo& req, CycleState& state, std::span<const Candidate> cands,
             std::span<double> out) override;

 private:
  std::shared_ptr<PrefixIndex> index_;
};

// Session affinity: rendezvous (highest random weight) hashing of the session key over the
// candidates, with bounded load: the session's preferred endpoint is skipped while its requests
// in flight exceed `max_load_factor` x (average + 1). The chosen endpoint scores 1, others 0;
// requests without a key score 0.5 everywhere.
class SessionAffinityScorer final : public Scorer {
 public:
  explicit SessionAffinityScorer(double max_load_factor) : max_load_factor_(max_load_factor) {}
  std::string_view name() const override { return "session-affinity"; }
  void score(const RequestInfo& req, CycleState& state, std::span<const Candidate> cands,
             std::span<double> out) override;

 private:
  double max_load_factor_;
};

// SGLang's cache_aware policy as one scorer: if the load is imbalanced (max - min > abs and
// max > rel x min) the least-loaded endpoint wins; else the best prefix match if its ratio
// exceeds `cache_threshold`; else the least-loaded.
class SglangCacheAwareScorer final : public Scorer {
 public:
  SglangCacheAwareScorer(std::shared_ptr<PrefixIndex> index, double abs_threshold,
                         double rel_threshold, double cache_threshold)
      : index_(std::move(index)),
        abs_(abs_threshold),
        rel_(rel_threshold),
        cache_threshold_(cache_threshold) {}
  std::string_view name() const override { return "sglang-cache-aware"; }
  void score(const RequestInfo& req, CycleState& state, std::span<const Candidate> cands,
             std::span<double> out) override;

 private:
  std::shared_ptr<PrefixIndex> index_;
  double abs_, rel_, cache_threshold_;
};

// --- pickers ---

// Highest total first; ties broken at random.
class MaxScorePicker final : public Picker {
 public:
  std::string_view name() const override { return "max-score"; }
  void pick(std::span<const double> totals, base::Random& random, size_t n,
            std::vector<size_t>& order) override;
};

// Sampling without replacement, proportional to the totals.
class WeightedRandomPicker final : public Picker {
 public:
  std::string_view name() const override { return "weighted-random"; }
  void pick(std::span<const double> totals, base::Random& random, size_t n,
            std::vector<size_t>& order) override;
};

// Fills state.prefix_blocks once per request.
void computePrefixMatches(const PrefixIndex& index, const RequestInfo& req, CycleState& state,
                          std::span<const Candidate> cands);

}  // namespace sluice::scheduler
