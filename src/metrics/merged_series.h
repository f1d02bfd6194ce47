#pragma once

// A per-series view summed over the workers' shards: what the Prometheus renderings
// (series_metrics.cc) and the admin traffic summary (traffic.cc) read.

#include <array>
#include <cstdint>
#include <map>

#include "metrics/metrics.h"

namespace sluice::metrics {

// One series (model, gateway, route, backend) merged over the shards.
struct MergedSeries {
  const ModelSeries* first = nullptr;  // for its labels
  std::map<int, uint64_t> by_status;
  HistogramSnapshot duration, ttft, itl, schedule, prefix_ratio, queue_wait;
  uint64_t input_tokens = 0, output_tokens = 0, retries = 0;
  std::array<uint64_t, static_cast<size_t>(UpstreamError::kCount)> errors{};
  std::array<uint64_t, 4> rate_limited{};

  void add(const ModelSeries& s) {
    first = first ? first : &s;
    for (int code = 100; code < 600; ++code) {
      if (uint64_t v = s.by_status[static_cast<size_t>(code)].load(std::memory_order_relaxed)) {
        by_status[code] += v;
      }
    }
    duration.add(s.duration);
    ttft.add(s.ttft);
    itl.add(s.itl);
    schedule.add(s.schedule);
    prefix_ratio.add(s.prefix_ratio);
    queue_wait.add(s.queue_wait);
    input_tokens += s.input_tokens.load(std::memory_order_relaxed);
    output_tokens += s.output_tokens.load(std::memory_order_relaxed);
    retries += s.retries.load(std::memory_order_relaxed);
    for (size_t e = 0; e < errors.size(); ++e) {
      errors[e] += s.upstream_errors[e].load(std::memory_order_relaxed);
    }
    for (size_t k = 0; k < rate_limited.size(); ++k) {
      rate_limited[k] += s.rate_limited[k].load(std::memory_order_relaxed);
    }
  }
};

}  // namespace sluice::metrics
