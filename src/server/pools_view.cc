#include "server/pools_view.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "router/route_table.h"

namespace sluice::server {

namespace {

using nlohmann::json;

// A negative signal is one the engine does not report: null, not a number to graph.
json signal(double v) {
  return v < 0 ? json(nullptr) : json(v);
}

json endpointJson(const router::Endpoint& ep, const backends::MetricsView* view,
                  base::MonoTime now) {
  const auto& st = *ep.state;
  const int64_t now_ns = now.time_since_epoch().count();
  const int64_t until = st.ejected_until_ns.load(std::memory_order_relaxed);
  json e = {{"address", ep.address},
            {"in_flight", st.in_flight.load(std::memory_order_relaxed)},
            {"in_flight_tokens", st.in_flight_tokens.load(std::memory_order_relaxed)},
            {"consecutive_failures", st.consecutive_failures.load(std::memory_order_relaxed)},
            {"ejections", st.ejections.load(std::memory_order_relaxed)},
            {"ejected", until > now_ns},
            {"ejected_seconds", until > now_ns ? static_cast<double>(until - now_ns) * 1e-9 : 0.0}};
  const auto* m = view ? view->find(ep.address) : nullptr;
  if (m == nullptr) {
    e["scrape"] = nullptr;  // not a fetch target (yet), or the fetcher is off
    return e;
  }
  e["scrape"] = {
      {"healthy", m->healthy},
      {"scraped", m->scraped},
      {"age_seconds", m->scraped ? json(base::secondsBetween(m->updated, now)) : json(nullptr)},
      {"waiting", signal(m->waiting)},
      {"running", signal(m->running)},
      {"kv_usage", signal(m->kv_usage)},
      {"ttft_seconds", signal(m->ttft_s)},
      {"itl_seconds", signal(m->itl_s)},
      {"consecutive_failures", m->consecutive_failures},
      {"last_error", m->last_error},
      {"running_loras", m->running_loras},
      {"waiting_loras", m->waiting_loras}};
  return e;
}

json backendJson(const router::Backend& b, const backends::MetricsView* view, base::MonoTime now) {
  json endpoints = json::array();
  for (const auto& ep : b.endpoints) {
    endpoints.push_back(endpointJson(ep, view, now));
  }
  json out = {{"kind", b.kind.empty() ? "models" : b.kind},
              {"name", b.name.empty() ? b.model : b.name},
              {"model", b.model},
              {"upstream_model", b.upstream_model},
              {"engine", b.engine},
              {"protocol", b.provider ? "https"
                           : b.h2c    ? "h2c"
                           : b.tls    ? "https"
                                      : "http/1.1"},
              {"error", b.error},
              {"endpoints", std::move(endpoints)}};
  if (b.provider) {
    out["provider"] = b.provider->authority;
  }
  if (b.picker) {
    json picker = json::array();
    for (const auto& ep : b.picker->endpoints) {
      picker.push_back(ep.address);
    }
    out["endpoint_picker"] = {{"service", b.picker->name},
                              {"endpoints", std::move(picker)},
                              {"fail_open", b.picker_fail_open},
                              {"tls", b.picker_tls}};
  }
  return out;
}

}  // namespace

std::string poolsJson(const router::Snapshot& snap, const backends::MetricsView* view,
                      base::MonoTime now) {
  json pools = json::array();
  std::vector<const router::Backend*> seen;
  auto add = [&](const router::Backend& b) {
    if (std::find(seen.begin(), seen.end(), &b) == seen.end()) {
      seen.push_back(&b);
      pools.push_back(backendJson(b, view, now));
    }
  };
  if (snap.routes) {
    for (const auto& b : snap.routes->backends) {
      add(snap.current(*b));
    }
  }
  std::vector<const router::Backend*> models;
  for (const auto& [name, b] : snap.models) {
    models.push_back(b.get());
  }
  std::sort(models.begin(), models.end(),
            [](const auto* a, const auto* b) { return a->model < b->model; });
  for (const auto* b : models) {
    add(*b);
  }
  return json{{"version", snap.version},
              {"metrics_fetcher", view != nullptr},
              {"pools", std::move(pools)}}
             .dump(-1, ' ', false, json::error_handler_t::replace) +
         "\n";
}

}  // namespace sluice::server
