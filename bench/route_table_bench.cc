// Route configuration at scale: 10,000 HTTPRoutes, 1,000 InferencePools and 20,000 Pods (plus
// Gateways with hostnames). Measures parsing the manifests, a full rebuild of the route table
// from the object store, and route matching (with p50/p99 per match, timed call by call).
#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <fmt/core.h>

#include "base/random.h"
#include "config/manifest.h"
#include "config/object_store.h"
#include "router/route_table.h"

namespace {

using namespace sluice;

constexpr int kRoutes = 10000;
constexpr int kPools = 1000;
constexpr int kPodsPerPool = 20;
constexpr int kNamespaces = 100;

// The manifests as YAML text, as a manifest directory would hold them.
std::string manifests() {
  std::string out;
  out.reserve(32 << 20);
  out += R"(apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: sluice
  listeners:
  - {name: http, port: 8080, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
  - {name: tenants, port: 8080, protocol: HTTP, hostname: "*.tenants.example.com", allowedRoutes: {namespaces: {from: All}}}
---
)";
  for (int p = 0; p < kPools; ++p) {
    std::string ns = fmt::format("ns-{}", p % kNamespaces);
    out += fmt::format(
        "apiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\nmetadata: {{name: "
        "pool-{}, namespace: {}}}\nspec:\n  selector: {{matchLabels: {{app: pool-{}, tier: "
        "gpu}}}}\n  targetPorts: [{{number: 8000}}]\n---\n",
        p, ns, p);
    for (int i = 0; i < kPodsPerPool; ++i) {
      int n = p * kPodsPerPool + i;
      out += fmt::format(
          "apiVersion: v1\nkind: Pod\nmetadata: {{name: pod-{}-{}, namespace: {}, labels: {{app: "
          "pool-{}, tier: gpu}}}}\nstatus: {{podIP: 10.{}.{}.{}, phase: Running, conditions: "
          "[{{type: Ready, status: \"True\"}}]}}\n---\n",
          p, i, ns, p, n / 65536, (n / 256) % 256, n % 256);
    }
  }
  for (int r = 0; r < kRoutes; ++r) {
    std::string ns = fmt::format("ns-{}", r % kNamespaces);
    int pool = r % kPools;
    std::string hostnames =
        r % 4 == 0 ? fmt::format("  hostnames: [t{}.tenants.example.com]\n", r) : "";
    out += fmt::format(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: route-{}, "
        "namespace: {}}}\nspec:\n  parentRefs: [{{name: gw, namespace: infra}}]\n{}  rules:\n"
        "  - matches:\n    - path: {{type: PathPrefix, value: /tenant-{}/v1}}\n      headers: "
        "[{{name: X-Gateway-Model-Name, value: model-{}}}]\n    - path: {{type: Exact, value: "
        "/tenant-{}/health}}\n    backendRefs: [{{group: inference.networking.k8s.io, kind: "
        "InferencePool, name: pool-{}, namespace: ns-{}}}]\n  - matches: [{{path: {{type: "
        "PathPrefix, value: /tenant-{}/v1}}}}]\n    backendRefs: [{{group: "
        "inference.networking.k8s.io, kind: InferencePool, name: pool-{}, namespace: ns-{}}}]\n"
        "---\n",
        r, ns, hostnames, r, r % 7, r, pool, pool % kNamespaces, r, pool, pool % kNamespaces);
  }
  return out;
}

struct Fixture {
  Fixture() {
    text = manifests();
    auto parsed = config::parseManifests(text, "bench.yaml");
    if (!parsed.errors.empty()) {
      fmt::print(stderr, "bench manifests invalid: {}\n", parsed.errors[0].message);
      std::abort();
    }
    objects = parsed.objects.size();
    store.applySource("bench.yaml", std::move(parsed));
    table = router::buildRouteTable(store, options, registry);
  }
  std::string text;
  size_t objects = 0;
  config::ObjectStore store;
  router::EndpointRegistry registry;
  router::RouteBuildOptions options;
  std::shared_ptr<router::RouteTable> table;
};

Fixture& fixture() {
  static Fixture f;
  return f;
}

void BM_ParseManifests(benchmark::State& state) {
  auto& f = fixture();
  for (auto _ : state) {
    auto parsed = config::parseManifests(f.text, "bench.yaml");
    benchmark::DoNotOptimize(parsed.objects.data());
  }
  state.counters["objects"] = static_cast<double>(f.objects);
  state.counters["MB"] = static_cast<double>(f.text.size()) / 1e6;
}
BENCHMARK(BM_ParseManifests)->Unit(benchmark::kMillisecond)->Iterations(2);

void BM_FullRebuild(benchmark::State& state) {
  auto& f = fixture();
  size_t endpoints = 0;
  for (auto _ : state) {
    auto t = router::buildRouteTable(f.store, f.options, f.registry);
    endpoints = 0;
    for (const auto& b : t->backends)
      endpoints += b->endpoints.size();
    benchmark::DoNotOptimize(t.get());
  }
  state.counters["routes"] = kRoutes;
  state.counters["pools"] = kPools;
  state.counters["pods"] = kPools * kPodsPerPool;
  state.counters["endpoints"] = static_cast<double>(endpoints);
}
BENCHMARK(BM_FullRebuild)->Unit(benchmark::kMillisecond)->Iterations(5);

class MapHeaders final : public router::HeaderLookup {
 public:
  std::optional<std::string_view> get(std::string_view) const override { return std::nullopt; }
};

// One match per iteration over a mix of requests: tenant paths with and without hostnames, a
// model header from the body, exact health paths and misses. Each call is also timed alone
// for the percentiles.
void BM_RouteMatch(benchmark::State& state) {
  auto& f = fixture();
  struct Req {
    std::string path, host, model;
  };
  std::vector<Req> reqs;
  base::Xoshiro rnd(42);
  for (int i = 0; i < 4096; ++i) {
    int r = static_cast<int>(rnd.uniform(kRoutes));
    switch (i % 4) {
      case 0:
        reqs.push_back({fmt::format("/tenant-{}/v1/chat/completions", r), "api.example.com",
                        fmt::format("model-{}", r % 7)});
        break;
      case 1:
        reqs.push_back({fmt::format("/tenant-{}/v1/completions", r),
                        fmt::format("t{}.tenants.example.com", r - r % 4), "other"});
        break;
      case 2:
        reqs.push_back({fmt::format("/tenant-{}/health", r), "api.example.com", ""});
        break;
      default:
        reqs.push_back({"/nothing/here", "api.example.com", "x"});
        break;
    }
  }
  MapHeaders headers;
  std::vector<double> ns;
  ns.reserve(1 << 20);
  size_t i = 0, hits = 0;
  for (auto _ : state) {
    const auto& q = reqs[i++ & 4095];
    auto t0 = std::chrono::steady_clock::now();
    const auto* l = f.table->listenerFor(8080, q.host);
    router::RequestView v;
    v.method = "POST";
    v.path = q.path;
    v.host = q.host;
    v.headers = &headers;
    v.model = q.model;
    auto m = router::RouteTable::matchHttp(*l, v);
    auto t1 = std::chrono::steady_clock::now();
    hits += m.action != nullptr;
    if (ns.size() < ns.capacity()) {
      ns.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count());
    }
    benchmark::DoNotOptimize(m);
  }
  std::sort(ns.begin(), ns.end());
  if (!ns.empty()) {
    state.counters["p50_ns"] = ns[ns.size() / 2];
    state.counters["p99_ns"] = ns[ns.size() * 99 / 100];
    state.counters["p999_ns"] = ns[ns.size() * 999 / 1000];
  }
  state.counters["hit_ratio"] = static_cast<double>(hits) / static_cast<double>(i);
}
BENCHMARK(BM_RouteMatch);

}  // namespace

BENCHMARK_MAIN();
