#include "server/epp_metrics.h"

#include <set>

#include <fmt/format.h>

#include "metrics/metrics.h"
#include "server/epp_pick.h"

namespace sluice::server {

void appendPoolMetrics(std::string& out, const router::Snapshot& snap,
                       const backends::MetricsView* view) {
  const auto& epp = snap.config.epp;
  const router::Backend* pool = servedPool(snap);
  const std::string name = metrics::escapeLabel(epp.pool_name);
  metrics::appendHeader(out, "inference_extension_info", "gauge", "The endpoint picker's build.");
  out += "inference_extension_info{commit=\"\",build_ref=\"sluice-0.1.0\"} 1\n";
  std::set<std::string_view> pods;
  double kv = 0, queue = 0, running = 0;
  size_t scraped = 0;
  std::string per_pod, in_flight;
  for (const auto& ep : pool ? pool->endpoints : std::vector<router::Endpoint>{}) {
    const std::string_view addr = ep.address;
    pods.insert(addr.substr(0, addr.rfind(':')));
    const std::string label = metrics::escapeLabel(ep.address);
    in_flight +=
        fmt::format("sluice_epp_endpoint_in_flight_requests{{name=\"{}\",endpoint=\"{}\"}} {}\n",
                    name, label, ep.state->in_flight.load(std::memory_order_relaxed));
    const auto* m = view ? view->find(ep.address) : nullptr;
    if (m == nullptr || !m->scraped) {
      continue;
    }
    ++scraped;
    kv += std::max(0.0, m->kv_usage);
    queue += std::max(0.0, m->waiting);
    running += std::max(0.0, m->running);
    per_pod +=
        fmt::format("inference_pool_per_pod_queue_size{{name=\"{}\",model_server_pod=\"{}\"}} {}\n",
                    name, label, std::max(0.0, m->waiting));
  }
  const double n = scraped > 0 ? static_cast<double>(scraped) : 1.0;
  metrics::appendHeader(out, "inference_pool_ready_pods", "gauge",
                        "Ready Pods of the pool (distinct addresses).");
  out += fmt::format("inference_pool_ready_pods{{name=\"{}\"}} {}\n", name, pods.size());
  metrics::appendHeader(out, "inference_pool_average_kv_cache_utilization", "gauge",
                        "Mean KV-cache utilization (0-1) over the pool's scraped endpoints.");
  out +=
      fmt::format("inference_pool_average_kv_cache_utilization{{name=\"{}\"}} {}\n", name, kv / n);
  metrics::appendHeader(out, "inference_pool_average_queue_size", "gauge",
                        "Mean waiting requests over the pool's scraped endpoints.");
  out += fmt::format("inference_pool_average_queue_size{{name=\"{}\"}} {}\n", name, queue / n);
  metrics::appendHeader(out, "inference_pool_average_running_requests", "gauge",
                        "Mean running requests over the pool's scraped endpoints.");
  out +=
      fmt::format("inference_pool_average_running_requests{{name=\"{}\"}} {}\n", name, running / n);
  metrics::appendHeader(out, "inference_pool_per_pod_queue_size", "gauge",
                        "Waiting requests per endpoint (model_server_pod is its address).");
  out += per_pod;
  metrics::appendHeader(out, "sluice_epp_endpoint_in_flight_requests", "gauge",
                        "Requests the picker sent to the endpoint that have not completed.");
  out += in_flight;
}

}  // namespace sluice::server
