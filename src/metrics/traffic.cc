// The admin status page's traffic summary: every series' requests by status class, latency
// sums and tokens, summed over the shards. Counters only: the page turns two readings into
// rates, so nothing here keeps time.
#include <nlohmann/json.hpp>

#include "metrics/merged_series.h"
#include "metrics/metrics.h"

namespace sluice::metrics {

std::string Registry::trafficJson() const {
  using nlohmann::json;
  std::map<std::string, MergedSeries> series;
  std::map<std::string, uint64_t> picks;
  mergeSeries(series, picks);
  json list = json::array();
  for (const auto& [_, m] : series) {
    std::array<uint64_t, 6> by_class{};  // 1xx..5xx at [1..5]
    uint64_t requests = 0;
    for (const auto& [code, n] : m.by_status) {
      by_class[static_cast<size_t>(code / 100)] += n;
      requests += n;
    }
    uint64_t upstream_errors = 0;
    for (uint64_t n : m.errors) {
      upstream_errors += n;
    }
    const ModelSeries& s = *m.first;
    list.push_back({{"model", s.model},
                    {"gateway", s.gateway},
                    {"route", s.route},
                    {"backend", s.backend},
                    {"requests", requests},
                    {"status_2xx", by_class[2]},
                    {"status_4xx", by_class[4]},
                    {"status_5xx", by_class[5]},
                    {"upstream_errors", upstream_errors},
                    {"retries", m.retries},
                    {"duration_sum", m.duration.sum},
                    {"duration_count", m.duration.count},
                    {"ttft_sum", m.ttft.sum},
                    {"ttft_count", m.ttft.count},
                    {"input_tokens", m.input_tokens},
                    {"output_tokens", m.output_tokens}});
  }
  return json{{"active_requests", activeRequests()}, {"series", std::move(list)}, {"picks", picks}}
             .dump(-1, ' ', false, json::error_handler_t::replace) +
         "\n";
}

}  // namespace sluice::metrics
