#include "server/pool_metrics.h"

#include <set>

#include <fmt/format.h>

#include "metrics/metrics.h"
#include "server/epp_pick.h"

namespace sluice::server {

namespace {

struct PoolGauges {
  std::string labels;  // name="...",namespace="..."
  size_t pods = 0;
  double kv = 0, queue = 0, running = 0;  // means over the scraped endpoints
};

PoolGauges poolGauges(const router::Backend& pool, const backends::MetricsView* view,
                      std::string& per_pod, std::string& in_flight) {
  PoolGauges g;
  const std::string_view key = pool.name;  // ns/name
  const size_t slash = key.find('/');
  const std::string name = metrics::escapeLabel(key.substr(slash + 1));
  g.labels =
      fmt::format("name=\"{}\",namespace=\"{}\"", name,
                  metrics::escapeLabel(key.substr(0, slash == std::string::npos ? 0 : slash)));
  std::set<std::string_view> pods;
  size_t scraped = 0;
  for (const auto& ep : pool.endpoints) {
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
    g.kv += std::max(0.0, m->kv_usage);
    g.queue += std::max(0.0, m->waiting);
    g.running += std::max(0.0, m->running);
    per_pod += fmt::format("inference_pool_per_pod_queue_size{{{},model_server_pod=\"{}\"}} {}\n",
                           g.labels, label, std::max(0.0, m->waiting));
  }
  const double n = scraped > 0 ? static_cast<double>(scraped) : 1.0;
  g.pods = pods.size();
  g.kv /= n;
  g.queue /= n;
  g.running /= n;
  return g;
}

}  // namespace

void appendPoolMetrics(std::string& out, const router::Snapshot& snap,
                       const backends::MetricsView* view) {
  const bool epp = snap.config.epp.enabled;
  std::vector<const router::Backend*> pools;
  if (epp) {
    if (const router::Backend* pool = servedPool(snap)) {
      pools.push_back(pool);
    }
  } else if (snap.routes) {
    for (const auto& b : snap.routes->backends) {
      if (b && b->kind == "InferencePool") {
        pools.push_back(&snap.current(*b));
      }
    }
  }
  metrics::appendHeader(out, "inference_extension_info", "gauge",
                        "The build of the router or endpoint picker.");
  out += fmt::format("inference_extension_info{{commit=\"{}\",build_ref=\"sluice-{}\"}} 1\n",
                     metrics::escapeLabel(metrics::buildCommit()),
                     metrics::escapeLabel(metrics::buildVersion()));
  std::string per_pod, in_flight;
  std::vector<PoolGauges> gauges;
  for (const auto* pool : pools) {
    gauges.push_back(poolGauges(*pool, view, per_pod, in_flight));
  }
  struct Family {
    std::string_view name, help;
    double (*value)(const PoolGauges&);
  };
  static constexpr Family kFamilies[] = {
      {"inference_pool_ready_pods", "Ready Pods of the pool (distinct addresses).",
       [](const PoolGauges& g) { return static_cast<double>(g.pods); }},
      {"inference_pool_average_kv_cache_utilization",
       "Mean KV-cache utilization (0-1) over the pool's scraped endpoints.",
       [](const PoolGauges& g) { return g.kv; }},
      {"inference_pool_average_queue_size",
       "Mean waiting requests over the pool's scraped endpoints.",
       [](const PoolGauges& g) { return g.queue; }},
      {"inference_pool_average_running_requests",
       "Mean running requests over the pool's scraped endpoints.",
       [](const PoolGauges& g) { return g.running; }},
  };
  for (const auto& f : kFamilies) {
    metrics::appendHeader(out, f.name, "gauge", f.help);
    for (const auto& g : gauges) {
      out += fmt::format("{}{{{}}} {}\n", f.name, g.labels, f.value(g));
    }
  }
  metrics::appendHeader(out, "inference_pool_per_pod_queue_size", "gauge",
                        "Waiting requests per endpoint (model_server_pod is its address).");
  out += per_pod;
  if (epp) {
    metrics::appendHeader(out, "sluice_epp_endpoint_in_flight_requests", "gauge",
                          "Requests the picker sent to the endpoint that have not completed.");
    out += in_flight;
  }
}

}  // namespace sluice::server
