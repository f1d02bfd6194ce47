// Golden tests: manifests in, routing decisions and status out. Cases follow the Gateway API
// and Inference Extension conformance tests named in each test's comment.
#include "router/route_table.h"

#include <map>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "base/random.h"
#include "config/manifest.h"
#include "config/object_store.h"

namespace sluice::router {
namespace {

class Headers final : public HeaderLookup {
 public:
  std::map<std::string, std::string> values;
  std::optional<std::string_view> get(std::string_view name) const override {
    auto it = values.find(std::string(name));
    if (it == values.end())
      return std::nullopt;
    return std::string_view(it->second);
  }
};

constexpr std::string_view kGateway = R"(
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: sluice
  listeners:
  - {name: http, port: 8080, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
---
)";

std::string pool(const std::string& name, const std::string& ns, const std::string& app,
                 const std::string& ports = "[{number: 8000}]") {
  return "apiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\nmetadata: {name: " +
         name + ", namespace: " + ns + "}\nspec:\n  selector: {matchLabels: {app: " + app +
         "}}\n  targetPorts: " + ports + "\n---\n";
}

std::string pod(const std::string& name, const std::string& ns, const std::string& app,
                const std::string& ip, bool ready = true) {
  return "apiVersion: v1\nkind: Pod\nmetadata: {name: " + name + ", namespace: " + ns +
         ", labels: {app: " + app + "}}\nstatus:\n  podIP: " + ip +
         "\n  conditions: [{type: Ready, status: \"" + (ready ? "True" : "False") + "\"}]\n---\n";
}

class RouteTableTest : public ::testing::Test {
 protected:
  void load(const std::string& yaml) {
    auto parsed = config::parseManifests(yaml, "test.yaml");
    for (const auto& e : parsed.errors) {
      errors.push_back(e.object + ": " + e.message);
    }
    store.applySource("test.yaml", std::move(parsed));
    table = buildRouteTable(store, options, registry);
  }

  // "ns/name#rule -> backend" for the route a request takes, or "404".
  std::string route(const std::string& path, const std::string& host = "any.example.com",
                    std::map<std::string, std::string> headers = {},
                    const std::string& method = "GET", const std::string& model = "",
                    uint16_t port = 8080) {
    const auto* l = table->listenerFor(port, host);
    if (l == nullptr)
      return "no-listener";
    Headers h;
    h.values = std::move(headers);
    RequestView req;
    req.method = method;
    auto q = path.find('?');
    req.path = std::string_view(path).substr(0, q);
    if (q != std::string::npos)
      req.query = std::string_view(path).substr(q + 1);
    req.host = host;
    req.headers = &h;
    req.model = model;
    auto m = RouteTable::matchHttp(*l, req);
    if (m.action == nullptr)
      return "404";
    std::string out = m.action->route + "#" + std::to_string(m.action->rule);
    if (!m.action->targets.empty()) {
      const auto& t = m.action->targets[0];
      out += " -> " + (t.backend ? t.backend->name : "invalid");
    }
    return out;
  }

  const ObjectStatus* status(const std::string& key) const {
    for (const auto& s : table->status) {
      if (s.key == key)
        return &s;
    }
    return nullptr;
  }

  // "Type=Status/Reason" of a parent's (or the object's) condition.
  std::string cond(const std::string& key, const std::string& type, int parent = -1) const {
    const auto* s = status(key);
    if (s == nullptr)
      return "missing";
    const auto& conds =
        parent < 0 ? s->conditions : s->parents.at(static_cast<size_t>(parent)).conditions;
    for (const auto& c : conds) {
      if (c.type == type)
        return (c.status ? "True/" : "False/") + c.reason;
    }
    return "none";
  }

  config::ObjectStore store;
  EndpointRegistry registry;
  RouteBuildOptions options;
  std::shared_ptr<RouteTable> table;
  std::vector<std::string> errors;
};

std::string httpRoute(const std::string& name, const std::string& ns, const std::string& rules,
                      const std::string& extra = "", const std::string& created = "") {
  return "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: " + name +
         ", namespace: " + ns +
         (created.empty() ? "" : ", creationTimestamp: \"" + created + "\"") +
         "}\nspec:\n  parentRefs: [{name: gw, namespace: infra}]\n" + extra + "  rules:\n" + rules +
         "---\n";
}

// HTTPRoutePathMatchOrder / HTTPRouteMatching: Exact beats prefixes, the longest prefix wins,
// and prefixes match whole path segments only.
TEST_F(RouteTableTest, PathPrecedence) {
  load(std::string(kGateway) + pool("p", "app", "a") +
       httpRoute("exact", "app",
                 "  - matches: [{path: {type: Exact, value: /v1/chat/completions}}]\n"
                 "    backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, "
                 "name: p}]\n") +
       httpRoute("long", "app",
                 "  - matches: [{path: {type: PathPrefix, value: /v1/chat/}}]\n"
                 "    backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, "
                 "name: p}]\n") +
       httpRoute("short", "app",
                 "  - matches: [{path: {type: PathPrefix, value: /v1}}]\n"
                 "    backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, "
                 "name: p}]\n") +
       httpRoute("regex", "app",
                 "  - matches: [{path: {type: RegularExpression, value: '/x/[0-9]+'}}]\n"
                 "    backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, "
                 "name: p}]\n"));
  ASSERT_TRUE(errors.empty()) << errors[0];
  EXPECT_EQ(route("/v1/chat/completions"), "app/exact#0 -> app/p");
  EXPECT_EQ(route("/v1/chat/completions/"), "app/long#0 -> app/p");
  EXPECT_EQ(route("/v1/chat"), "app/long#0 -> app/p");  // trailing '/' of the prefix ignored
  EXPECT_EQ(route("/v1/chatty"), "app/short#0 -> app/p");
  EXPECT_EQ(route("/v1"), "app/short#0 -> app/p");
  EXPECT_EQ(route("/v10"), "404");
  EXPECT_EQ(route("/v1/chat//x"), "app/long#0 -> app/p");  // an empty segment
  EXPECT_EQ(route("/v1//chat"), "app/short#0 -> app/p");
  EXPECT_EQ(route("/x/42"), "app/regex#0 -> app/p");
  EXPECT_EQ(route("/x/4a"), "404");
}

// HTTPRouteMatchingAcrossRoutes: method, then header count, then query count; then the oldest
// route; then namespace/name.
TEST_F(RouteTableTest, TieBreaksAcrossRoutes) {
  const std::string be =
      "    backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: p}]\n";
  load(std::string(kGateway) + pool("p", "app", "a") +
       httpRoute("plain", "app", "  - matches: [{path: {value: /v1}}]\n" + be, "",
                 "2026-01-01T00:00:00Z") +
       httpRoute("method", "app", "  - matches: [{path: {value: /v1}, method: POST}]\n" + be) +
       httpRoute("one-header", "app",
                 "  - matches: [{path: {value: /v1}, headers: [{name: X-A, value: '1'}]}]\n" + be) +
       httpRoute("two-headers", "app",
                 "  - matches: [{path: {value: /v1}, headers: [{name: x-a, value: '1'}, {name: "
                 "x-b, type: RegularExpression, value: 'b.*'}]}]\n" +
                     be) +
       httpRoute(
           "query", "app",
           "  - matches: [{path: {value: /v1}, queryParams: [{name: q, value: '1'}]}]\n" + be) +
       httpRoute("older", "app", "  - matches: [{path: {value: /v2}}]\n" + be, "",
                 "2025-01-01T00:00:00Z") +
       httpRoute("aaa-newer", "app", "  - matches: [{path: {value: /v2}}]\n" + be, "",
                 "2026-06-01T00:00:00Z") +
       httpRoute("zzz", "app", "  - matches: [{path: {value: /v3}}]\n" + be, "",
                 "2026-06-01T00:00:00Z") +
       httpRoute("aaa", "app", "  - matches: [{path: {value: /v3}}]\n" + be, "",
                 "2026-06-01T00:00:00Z"));
  ASSERT_TRUE(errors.empty()) << errors[0];
  EXPECT_EQ(route("/v1/x", "h", {}, "POST"), "app/method#0 -> app/p");
  EXPECT_EQ(route("/v1/x", "h", {{"x-a", "1"}, {"x-b", "bee"}}), "app/two-headers#0 -> app/p");
  EXPECT_EQ(route("/v1/x", "h", {{"x-a", "1"}, {"x-b", "c"}}), "app/one-header#0 -> app/p");
  EXPECT_EQ(route("/v1/x?q=1"), "app/query#0 -> app/p");
  EXPECT_EQ(route("/v1/x?q=2"), "app/plain#0 -> app/p");
  EXPECT_EQ(route("/v2"), "app/older#0 -> app/p");
  EXPECT_EQ(route("/v3"), "app/aaa#0 -> app/p");
}

// HTTPRouteHostnameIntersection / HTTPRouteListenerHostnameMatching.
TEST_F(RouteTableTest, HostnameIntersectionAndListenerSelection) {
  load(R"(
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: sluice
  listeners:
  - {name: wild, port: 8080, protocol: HTTP, hostname: "*.example.com", allowedRoutes: {namespaces: {from: All}}}
  - {name: exact, port: 8080, protocol: HTTP, hostname: "api.example.com", allowedRoutes: {namespaces: {from: All}}}
  - {name: other, port: 8080, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
---
)" + pool("p", "app", "a") +
       httpRoute("wild-sub", "app",
                 "  - backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, "
                 "name: p}]\n",
                 "  hostnames: [\"*.example.com\"]\n") +
       httpRoute("foo", "app",
                 "  - backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, "
                 "name: p}]\n",
                 "  hostnames: [foo.example.com, bar.other.org]\n") +
       httpRoute("nohost", "app",
                 "  - matches: [{path: {value: /only}}]\n"
                 "    backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, "
                 "name: p}]\n") +
       httpRoute("elsewhere", "app",
                 "  - backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, "
                 "name: p}]\n",
                 "  hostnames: [nowhere.test]\n"));
  ASSERT_TRUE(errors.empty()) << errors[0];
  EXPECT_EQ(table->listenerFor(8080, "api.example.com")->name, "exact");
  EXPECT_EQ(table->listenerFor(8080, "x.example.com")->name, "wild");
  EXPECT_EQ(table->listenerFor(8080, "example.com")->name, "other");
  EXPECT_EQ(table->listenerFor(9090, "example.com"), nullptr);
  // A non-wildcard hostname beats a wildcard one.
  EXPECT_EQ(route("/", "foo.example.com"), "app/foo#0 -> app/p");
  EXPECT_EQ(route("/", "baz.example.com"), "app/wild-sub#0 -> app/p");
  EXPECT_EQ(route("/", "bar.other.org"), "app/foo#0 -> app/p");  // on the no-hostname listener
  EXPECT_EQ(route("/", "zzz.other.org"), "404");
  EXPECT_EQ(route("/only", "zzz.other.org"), "app/nohost#0 -> app/p");
  // Routes whose hostnames intersect no listener are not accepted there, but the catch-all
  // listener takes any hostname.
  EXPECT_EQ(route("/", "nowhere.test"), "app/elsewhere#0 -> app/p");
  EXPECT_EQ(cond("HTTPRoute/app/foo", "Accepted", 0), "True/Accepted");
}

TEST_F(RouteTableTest, NoMatchingListenerHostname) {
  load(R"(
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: sluice
  listeners:
  - {name: http, port: 8080, protocol: HTTP, hostname: "*.example.com", allowedRoutes: {namespaces: {from: All}}}
---
)" + httpRoute("r", "app", "  - backendRefs: [{name: s, port: 80}]\n",
               "  hostnames: [foo.other.org]\n"));
  EXPECT_EQ(cond("HTTPRoute/app/r", "Accepted", 0), "False/NoMatchingListenerHostname");
  EXPECT_EQ(route("/", "foo.other.org"), "no-listener");
}

// HTTPRouteWeight / GatewayWeightedAcrossTwoInferencePools: shares follow the weights, and a
// weight of 0 gets nothing.
TEST_F(RouteTableTest, WeightedBackends) {
  load(std::string(kGateway) + pool("a", "app", "a") + pool("b", "app", "b") +
       pool("c", "app", "c") +
       httpRoute("r", "app",
                 "  - backendRefs:\n"
                 "    - {group: inference.networking.k8s.io, kind: InferencePool, name: a, "
                 "weight: 70}\n"
                 "    - {group: inference.networking.k8s.io, kind: InferencePool, name: b, "
                 "weight: 30}\n"
                 "    - {group: inference.networking.k8s.io, kind: InferencePool, name: c, "
                 "weight: 0}\n"));
  ASSERT_TRUE(errors.empty()) << errors[0];
  const auto* l = table->listenerFor(8080, "h");
  RequestView req;
  req.method = "POST";
  req.path = "/v1/completions";
  auto m = RouteTable::matchHttp(*l, req);
  ASSERT_NE(m.action, nullptr);
  base::Xoshiro random(7);
  std::map<std::string, int> counts;
  for (int i = 0; i < 10000; ++i) {
    counts[RouteTable::pickTarget(*m.action, random)->backend->name]++;
  }
  EXPECT_NEAR(counts["app/a"], 7000, 300);
  EXPECT_NEAR(counts["app/b"], 3000, 300);
  EXPECT_EQ(counts["app/c"], 0);
}

// HTTPRouteInvalidInferencePoolRef, HTTPRouteInvalidCrossNamespaceBackendRef and ReferenceGrant.
TEST_F(RouteTableTest, InvalidRefsAndReferenceGrant) {
  load(std::string(kGateway) + pool("p", "models", "a") +
       httpRoute("missing", "app",
                 "  - backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, "
                 "name: nope}]\n") +
       httpRoute("cross", "app",
                 "  - matches: [{path: {value: /cross}}]\n"
                 "    backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, "
                 "name: p, namespace: models}]\n") +
       httpRoute("kind", "app",
                 "  - matches: [{path: {value: /kind}}]\n"
                 "    backendRefs: [{group: example.com, kind: Bucket, name: b}]\n"));
  ASSERT_TRUE(errors.empty()) << errors[0];
  EXPECT_EQ(cond("HTTPRoute/app/missing", "Accepted", 0), "True/Accepted");
  EXPECT_EQ(cond("HTTPRoute/app/missing", "ResolvedRefs", 0), "False/BackendNotFound");
  EXPECT_EQ(route("/"), "app/missing#0 -> invalid");
  EXPECT_EQ(cond("HTTPRoute/app/cross", "ResolvedRefs", 0), "False/RefNotPermitted");
  EXPECT_EQ(route("/cross"), "app/cross#0 -> invalid");
  EXPECT_EQ(cond("HTTPRoute/app/kind", "ResolvedRefs", 0), "False/InvalidKind");

  // The grant allows exactly HTTPRoutes from "app" to pools in "models".
  load(std::string(kGateway) + pool("p", "models", "a") +
       httpRoute("cross", "app",
                 "  - matches: [{path: {value: /cross}}]\n"
                 "    backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, "
                 "name: p, namespace: models}]\n") +
       R"(apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: g, namespace: models}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: app}]
  to: [{group: inference.networking.k8s.io, kind: InferencePool}]
)");
  ASSERT_TRUE(errors.empty()) << errors[0];
  EXPECT_EQ(cond("HTTPRoute/app/cross", "ResolvedRefs", 0), "True/ResolvedRefs");
  EXPECT_EQ(route("/cross"), "app/cross#0 -> models/p");
}

// InferencePoolHTTPRoutePortValidation, HTTPRouteMultipleGatewaysDifferentPools,
// InferencePoolResolvedRefsCondition (one pool behind two Gateways), InferencePoolAccepted.
TEST_F(RouteTableTest, InferenceExtensionCases) {
  std::string gws = R"(
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: primary, namespace: infra}
spec:
  gatewayClassName: sluice
  listeners: [{name: http, port: 8080, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: secondary, namespace: infra}
spec:
  gatewayClassName: sluice
  listeners: [{name: http, port: 8081, protocol: HTTP, hostname: secondary.example.com, allowedRoutes: {namespaces: {from: All}}}]
---
)";
  auto routeTo = [](const std::string& name, const std::string& gw, const std::string& pool,
                    const std::string& port) {
    return "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: " + name +
           ", namespace: app}\nspec:\n  parentRefs: [{name: " + gw +
           ", namespace: infra}]\n  rules:\n  - backendRefs: [{group: "
           "inference.networking.k8s.io, kind: InferencePool, name: " +
           pool + port + "}]\n---\n";
  };
  load(gws + pool("one", "app", "one", "[{number: 3000}, {number: 3002}, {number: 3004}]") +
       pool("two", "app", "two") + pod("p1", "app", "one", "10.0.0.1") +
       pod("p2", "app", "one", "10.0.0.2", false) + pod("p3", "app", "two", "10.0.0.3") +
       pod("p4", "other", "one", "10.0.0.4") + routeTo("r1", "primary", "one", ", port: 9999") +
       routeTo("r2", "secondary", "two", "") + routeTo("r3", "secondary", "one", ""));
  ASSERT_TRUE(errors.empty()) << errors[0];
  // Port ignored, data-parallel ports each an endpoint, only ready pods of the namespace.
  EXPECT_EQ(route("/", "x"), "app/r1#0 -> app/one");
  const auto* l = table->listenerFor(8080, "x");
  RequestView req;
  req.method = "GET";
  req.path = "/";
  const auto& b = *RouteTable::matchHttp(*l, req).action->targets[0].backend;
  ASSERT_EQ(b.endpoints.size(), 3u);
  EXPECT_EQ(b.endpoints[0].address, "10.0.0.1:3000");
  EXPECT_EQ(b.endpoints[2].address, "10.0.0.1:3004");
  // Two Gateways, two pools; r2 is older than r3 so it wins on the secondary.
  EXPECT_EQ(route("/", "secondary.example.com", {}, "GET", "", 8081), "app/r2#0 -> app/two");
  // The pool behind both Gateways has one parent entry for each.
  const auto* st = status("InferencePool/app/one");
  ASSERT_NE(st, nullptr);
  ASSERT_EQ(st->parents.size(), 2u);
  EXPECT_EQ(st->parents[0].ref, "Gateway/infra/primary");
  EXPECT_EQ(st->parents[1].ref, "Gateway/infra/secondary");
  EXPECT_EQ(cond("InferencePool/app/one", "Accepted", 0), "True/Accepted");
  EXPECT_EQ(cond("InferencePool/app/one", "ResolvedRefs", 1), "True/ResolvedRefs");

  // Deleting r1 removes the primary parent; the secondary stays.
  load(gws + pool("one", "app", "one") + routeTo("r3", "secondary", "one", ""));
  st = status("InferencePool/app/one");
  ASSERT_EQ(st->parents.size(), 1u);
  EXPECT_EQ(st->parents[0].ref, "Gateway/infra/secondary");
  EXPECT_EQ(route("/", "x"), "404");
}

// InferencePoolInvalidEPPService / InferencePoolMissingEPPRef.
TEST_F(RouteTableTest, EndpointPickerRef) {
  load(std::string(kGateway) + R"(apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: p, namespace: app}
spec:
  selector: {matchLabels: {app: a}}
  targetPorts: [{number: 8000}]
  endpointPickerRef: {name: missing-epp, port: {number: 9002}}
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: app}
spec: {type: ExternalName, externalName: example.com}
---
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: q, namespace: app}
spec:
  selector: {matchLabels: {app: a}}
  targetPorts: [{number: 8000}]
  endpointPickerRef: {name: ext, port: {number: 9002}, failureMode: FailOpen}
---
)" +
       httpRoute("r", "app",
                 "  - backendRefs: [{group: inference.networking.k8s.io, kind: "
                 "InferencePool, name: p}]\n") +
       httpRoute("s", "app",
                 "  - matches: [{path: {value: /q}}]\n"
                 "    backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, "
                 "name: q}]\n"));
  ASSERT_TRUE(errors.empty()) << errors[0];
  EXPECT_EQ(cond("HTTPRoute/app/r", "Accepted", 0), "True/Accepted");
  EXPECT_EQ(cond("InferencePool/app/p", "ResolvedRefs", 0), "False/InvalidExtensionRef");
  EXPECT_EQ(cond("InferencePool/app/q", "ResolvedRefs", 0), "False/InvalidExtensionRef");
  // FailClose with a broken picker fails requests (5xx); FailOpen serves them.
  const auto* l = table->listenerFor(8080, "h");
  RequestView req;
  req.method = "GET";
  req.path = "/";
  EXPECT_FALSE(RouteTable::matchHttp(*l, req).action->targets[0].backend->error.empty());
  req.path = "/q";
  EXPECT_TRUE(RouteTable::matchHttp(*l, req).action->targets[0].backend->error.empty());
}

// Backend protocol: an InferencePool's appProtocol, and a Service port's (GEP-1911), choose h2c.
TEST_F(RouteTableTest, BackendProtocolFromAppProtocol) {
  load(std::string(kGateway) + pod("a0", "app", "a", "10.0.0.1") + R"(apiVersion: v1
kind: Service
metadata: {name: grpcish, namespace: app}
spec:
  selector: {app: a}
  ports: [{name: h2, port: 80, targetPort: 8000, appProtocol: kubernetes.io/h2c}]
---
apiVersion: v1
kind: Service
metadata: {name: plain, namespace: app}
spec:
  selector: {app: a}
  ports: [{port: 80, targetPort: 8000}]
---
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: p, namespace: app}
spec:
  selector: {matchLabels: {app: a}}
  targetPorts: [{number: 8000}]
  appProtocol: kubernetes.io/h2c
---
)" +
       httpRoute("r", "app",
                 "  - matches: [{path: {value: /svc}}]\n"
                 "    backendRefs: [{name: grpcish, port: 80}]\n"
                 "  - matches: [{path: {value: /plain}}]\n"
                 "    backendRefs: [{name: plain, port: 80}]\n"
                 "  - backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, "
                 "name: p}]\n"));
  ASSERT_TRUE(errors.empty()) << errors[0];
  const auto* l = table->listenerFor(8080, "h");
  ASSERT_NE(l, nullptr);
  auto backendFor = [&](const char* path) {
    RequestView req;
    req.method = "POST";
    req.path = path;
    auto m = RouteTable::matchHttp(*l, req);
    return m.action != nullptr ? m.action->targets[0].backend : nullptr;
  };
  ASSERT_TRUE(backendFor("/svc"));
  EXPECT_TRUE(backendFor("/svc")->h2c);
  EXPECT_TRUE(backendFor("/svc")->error.empty());
  EXPECT_FALSE(backendFor("/plain")->h2c);
  EXPECT_TRUE(backendFor("/v1/chat/completions")->h2c);
  EXPECT_TRUE(backendFor("/v1/chat/completions")->error.empty());
}

// Service backends take their endpoints from the Service's EndpointSlices when it has any
// (ready endpoints, the port named like the Service port, each address once), and from the
// Pods its selector matches otherwise.
TEST_F(RouteTableTest, ServiceEndpointsFromEndpointSlices) {
  load(std::string(kGateway) + pod("a0", "app", "a", "10.0.0.1") + R"(apiVersion: v1
kind: Service
metadata: {name: sliced, namespace: app}
spec:
  ports: [{name: http, port: 80, targetPort: 8000}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: sliced-1, namespace: app, labels: {kubernetes.io/service-name: sliced}}
addressType: IPv4
ports: [{name: http, port: 9000}, {name: other, port: 9001}]
endpoints:
- addresses: [10.1.0.1]
  conditions: {ready: true}
- addresses: [10.1.0.2]
  conditions: {ready: false}
- addresses: [10.1.0.3]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: sliced-2, namespace: app, labels: {kubernetes.io/service-name: sliced}}
addressType: IPv4
ports: [{name: http, port: 9000}]
endpoints:
- addresses: [10.1.0.3, 10.1.0.4]
---
apiVersion: v1
kind: Service
metadata: {name: selected, namespace: app}
spec:
  selector: {app: a}
  ports: [{name: http, port: 80, targetPort: 8000}]
---
)" +
       httpRoute("r", "app",
                 "  - matches: [{path: {value: /sliced}}]\n"
                 "    backendRefs: [{name: sliced, port: 80}]\n"
                 "  - backendRefs: [{name: selected, port: 80}]\n"));
  ASSERT_TRUE(errors.empty()) << errors[0];
  const auto* l = table->listenerFor(8080, "h");
  ASSERT_NE(l, nullptr);
  auto endpoints = [&](const char* path) {
    RequestView req;
    req.method = "POST";
    req.path = path;
    auto m = RouteTable::matchHttp(*l, req);
    std::vector<std::string> out;
    for (const auto& ep : m.action->targets[0].backend->endpoints)
      out.push_back(ep.address);
    return out;
  };
  EXPECT_THAT(endpoints("/sliced"),
              ::testing::ElementsAre("10.1.0.1:9000", "10.1.0.3:9000", "10.1.0.4:9000"));
  EXPECT_THAT(endpoints("/other"), ::testing::ElementsAre("10.0.0.1:8000"));
}

// allowedRoutes: Same (the default), Selector on Namespace labels, and kinds.
TEST_F(RouteTableTest, AllowedRoutes) {
  load(R"(
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: sluice
  listeners:
  - {name: same, port: 8080, protocol: HTTP}
  - {name: sel, port: 8081, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {team: ml}}}}}
  - {name: grpc-only, port: 8082, protocol: HTTP, allowedRoutes: {namespaces: {from: All}, kinds: [{kind: GRPCRoute}]}}
---
apiVersion: v1
kind: Namespace
metadata: {name: ml, labels: {team: ml}}
---
)" + httpRoute("r", "app", "  - backendRefs: [{name: s, port: 80}]\n") +
       httpRoute("r", "ml", "  - backendRefs: [{name: s, port: 80}]\n") +
       httpRoute("r", "infra", "  - backendRefs: [{name: s, port: 80}]\n"));
  ASSERT_TRUE(errors.empty()) << errors[0];
  EXPECT_EQ(cond("HTTPRoute/app/r", "Accepted", 0), "False/NotAllowedByListeners");
  EXPECT_EQ(cond("HTTPRoute/ml/r", "Accepted", 0), "True/Accepted");
  EXPECT_EQ(route("/", "h", {}, "GET", "", 8081), "ml/r#0 -> invalid");
  EXPECT_EQ(route("/", "h", {}, "GET", "", 8080), "infra/r#0 -> invalid");
  EXPECT_EQ(route("/", "h", {}, "GET", "", 8082), "404");
  const auto* gw = status("Gateway/infra/gw");
  ASSERT_NE(gw, nullptr);
  EXPECT_EQ(gw->listeners[0].attached_routes, 1u);
  EXPECT_EQ(gw->listeners[1].attached_routes, 1u);
  EXPECT_EQ(gw->listeners[2].attached_routes, 0u);
}

// Body-based routing: the body's model is matched as X-Gateway-Model-Name.
TEST_F(RouteTableTest, ModelNameHeaderFromBody) {
  load(std::string(kGateway) + pool("a", "app", "a") + pool("b", "app", "b") +
       httpRoute("r", "app",
                 "  - matches: [{headers: [{name: X-Gateway-Model-Name, value: llama}]}]\n"
                 "    backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, "
                 "name: a}]\n"
                 "  - backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, "
                 "name: b}]\n"));
  ASSERT_TRUE(errors.empty()) << errors[0];
  EXPECT_EQ(route("/v1/completions", "h", {}, "POST", "llama"), "app/r#0 -> app/a");
  EXPECT_EQ(route("/v1/completions", "h", {}, "POST", "qwen"), "app/r#1 -> app/b");
}

std::string modelServer(const std::string& name, const std::string& app,
                        const std::string& model = "") {
  return "apiVersion: networking.serving.volcano.sh/v1alpha1\nkind: ModelServer\nmetadata: "
         "{name: " +
         name + ", namespace: app}\nspec:\n  inferenceEngine: vLLM\n" +
         (model.empty() ? "" : "  model: " + model + "\n") +
         "  workloadSelector: {matchLabels: {app: " + app +
         "}}\n  workloadPort: {port: 8000}\n---\n";
}

std::string modelRoute(const std::string& name, const std::string& body,
                       const std::string& created = "2026-01-01T00:00:00Z") {
  return "apiVersion: networking.serving.volcano.sh/v1alpha1\nkind: ModelRoute\nmetadata: "
         "{name: " +
         name + ", namespace: app, creationTimestamp: \"" + created + "\"}\nspec:\n" + body +
         "---\n";
}

class ModelRouteTest : public RouteTableTest {
 protected:
  std::string pick(const std::string& model, std::map<std::string, std::string> headers = {},
                   uint16_t port = 8080, const std::string& path = "/v1/chat/completions") {
    const auto* l = table->listenerFor(port, "h");
    if (l == nullptr)
      return "no-listener";
    Headers h;
    h.values = std::move(headers);
    RequestView req;
    req.method = "POST";
    req.path = path;
    req.host = "h";
    req.headers = &h;
    req.model = model;
    auto t = RouteTable::matchModel(*l, req, random);
    if (t.target == nullptr)
      return "none";
    return t.route->key + " -> " + (t.target->backend ? t.target->backend->name : "invalid") +
           (t.lora ? " (lora)" : "");
  }
  base::Xoshiro random{1};
};

// Oldest wins among duplicates; rules fall through to the next route; LoRA names; headers,
// uri and weights.
TEST_F(ModelRouteTest, MatchingAndFallThrough) {
  options.default_port = 8080;
  load(modelServer("ms-a", "a", "meta/llama") + modelServer("ms-b", "b") +
       modelRoute("newer",
                  "  modelName: llama\n  rules:\n  - targetModels: "
                  "[{modelServerName: ms-b}]\n",
                  "2026-05-01T00:00:00Z") +
       modelRoute("older",
                  "  modelName: llama\n  loraAdapters: [sql-lora]\n  rules:\n"
                  "  - modelMatch: {headers: {x-tier: {exact: gold}}}\n"
                  "    targetModels: [{modelServerName: ms-a}]\n"
                  "  - modelMatch: {uri: {prefix: /v1/completions}}\n"
                  "    targetModels: [{modelServerName: ms-a}]\n",
                  "2026-01-01T00:00:00Z") +
       modelRoute("split",
                  "  modelName: mix\n  rules:\n  - targetModels:\n"
                  "    - {modelServerName: ms-a, weight: 80}\n"
                  "    - {modelServerName: ms-b, weight: 20}\n"));
  ASSERT_TRUE(errors.empty()) << errors[0];
  EXPECT_EQ(pick("llama", {{"x-tier", "gold"}}), "app/older -> app/ms-a");
  // The older route's rules do not match: fall through to the newer one.
  EXPECT_EQ(pick("llama"), "app/newer -> app/ms-b");
  EXPECT_EQ(pick("llama", {}, 8080, "/v1/completions"), "app/older -> app/ms-a");
  EXPECT_EQ(pick("sql-lora", {{"x-tier", "gold"}}), "app/older -> app/ms-a (lora)");
  EXPECT_EQ(pick("unknown"), "none");
  std::map<std::string, int> counts;
  for (int i = 0; i < 5000; ++i)
    counts[pick("mix")]++;
  EXPECT_NEAR(counts["app/split -> app/ms-a"], 4000, 200);
  // /v1/models on the default listener lists the names.
  const auto& names = table->listenerFor(8080, "h")->space->names;
  EXPECT_EQ(names, (std::vector<std::string>{"llama", "mix", "sql-lora"}));
}

// The router file's models: compile into ModelRoutes (one rule, one target) that every
// listener shares and that come after its own ModelRoutes; each gets a status entry.
TEST_F(ModelRouteTest, ConfigModelsAreModelRoutesOnEveryListenerConsultedLast) {
  auto config_backend = std::make_shared<Backend>();
  config_backend->model = "llama";
  config_backend->name = "config";
  auto only_config = std::make_shared<Backend>(*config_backend);
  only_config->model = "phi";
  options.config_models = {config_backend, only_config};
  options.default_port = 8080;
  load(modelServer("ms-a", "a") + modelRoute("llama",
                                             "  modelName: llama\n  rules:\n  - targetModels: "
                                             "[{modelServerName: ms-a}]\n"));
  ASSERT_TRUE(errors.empty()) << errors[0];
  const auto* l = table->listenerFor(8080, "h");
  ASSERT_NE(l, nullptr);
  ASSERT_TRUE(l->config_space);
  Headers h;
  RequestView req;
  req.method = "POST";
  req.path = "/v1/chat/completions";
  req.headers = &h;
  // A ModelRoute for the name wins; the models: entry stays behind it.
  req.model = "llama";
  auto own = RouteTable::matchModel(*l, req, random);
  ASSERT_NE(own.target, nullptr);
  EXPECT_EQ(own.target->backend->name, "app/ms-a");
  auto fallback = RouteTable::matchConfigModel(*l, req, random);
  ASSERT_NE(fallback.target, nullptr);
  EXPECT_EQ(fallback.target->backend.get(), config_backend.get());
  // A name only models: serves is found there.
  req.model = "phi";
  EXPECT_EQ(RouteTable::matchModel(*l, req, random).target, nullptr);
  auto phi = RouteTable::matchConfigModel(*l, req, random);
  ASSERT_NE(phi.target, nullptr);
  EXPECT_EQ(phi.target->backend.get(), only_config.get());
  EXPECT_EQ(phi.route->key, "models[1]");
  EXPECT_EQ(cond("RouterConfig/models/phi", "Accepted"), "True/Accepted");
  // Listed by /v1/models, and scraped like any backend.
  EXPECT_TRUE(std::binary_search(l->space->names.begin(), l->space->names.end(), "phi"));
  EXPECT_NE(std::find(table->backends.begin(), table->backends.end(), only_config),
            table->backends.end());
}

// Per-Gateway model spaces: one name, two Gateways, two backends; sectionName picks the
// listener the request must arrive on.
TEST_F(ModelRouteTest, PerGatewaySpaces) {
  load(R"(
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: team-a, namespace: app}
spec:
  gatewayClassName: sluice
  listeners:
  - {name: main, port: 8080, protocol: HTTP}
  - {name: side, port: 8090, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: team-b, namespace: app}
spec:
  gatewayClassName: sluice
  listeners: [{name: main, port: 8081, protocol: HTTP}]
---
)" + modelServer("ms-a", "a") +
       modelServer("ms-b", "b") +
       modelRoute("a",
                  "  modelName: llama\n  parentRefs: [{name: team-a, sectionName: main}]\n"
                  "  rules: [{targetModels: [{modelServerName: ms-a}]}]\n") +
       modelRoute("b",
                  "  modelName: llama\n  parentRefs: [{name: team-b}]\n"
                  "  rules: [{targetModels: [{modelServerName: ms-b}]}]\n") +
       modelRoute("missing",
                  "  modelName: qwen\n  parentRefs: [{name: team-b}]\n"
                  "  rules: [{targetModels: [{modelServerName: nope}]}]\n"));
  ASSERT_TRUE(errors.empty()) << errors[0];
  EXPECT_EQ(pick("llama", {}, 8080), "app/a -> app/ms-a");
  EXPECT_EQ(pick("llama", {}, 8081), "app/b -> app/ms-b");
  EXPECT_EQ(pick("llama", {}, 8090), "none");  // sectionName main only
  EXPECT_EQ(pick("qwen", {}, 8081), "app/missing -> invalid");
  EXPECT_EQ(cond("ModelRoute/app/missing", "ResolvedRefs"), "False/BackendNotFound");
  EXPECT_EQ(table->listenerFor(8080, "h")->space->names, (std::vector<std::string>{"llama"}));
  EXPECT_EQ(table->listenerFor(8081, "h")->space->names,
            (std::vector<std::string>{"llama", "qwen"}));
}

// InferenceModelRewrite: Exact beats catch-all, the oldest object wins, weights split; the
// legacy InferenceModel converts; InferenceObjective priorities by name.
TEST_F(RouteTableTest, RewritesAndObjectives) {
  auto rewrite = [](const std::string& name, const std::string& created, const std::string& rules) {
    return "apiVersion: inference.networking.x-k8s.io/v1alpha2\nkind: "
           "InferenceModelRewrite\nmetadata: {name: " +
           name + ", namespace: app, creationTimestamp: \"" + created +
           "\"}\nspec:\n  poolRef: {name: p}\n  rules:\n" + rules + "---\n";
  };
  load(std::string(kGateway) + pool("p", "app", "a") +
       httpRoute("r", "app",
                 "  - backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, "
                 "name: p}]\n") +
       rewrite("catch", "2025-01-01T00:00:00Z", "  - targets: [{modelRewrite: base}]\n") +
       rewrite("newer", "2026-02-01T00:00:00Z",
               "  - matches: [{model: {value: chat}}]\n    targets: [{modelRewrite: v3}]\n") +
       rewrite("older", "2026-01-01T00:00:00Z",
               "  - matches: [{model: {value: chat}}]\n    targets: [{modelRewrite: v1, weight: "
               "90}, {modelRewrite: v2, weight: 10}]\n") +
       R"(apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata: {name: premium, namespace: app}
spec: {priority: 10, poolRef: {name: p}}
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata: {name: orphan, namespace: app}
spec: {priority: 1, poolRef: {name: nope}}
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModel
metadata: {name: legacy, namespace: app}
spec: {modelName: old-name, criticality: Sheddable, poolRef: {name: p}, targetModels: [{name: new-name}]}
)");
  ASSERT_TRUE(errors.empty()) << errors[0];
  const auto* l = table->listenerFor(8080, "h");
  RequestView req;
  req.method = "POST";
  req.path = "/v1/completions";
  const auto& pool = *RouteTable::matchHttp(*l, req).action->targets[0].backend;
  base::Xoshiro random(3);
  std::map<std::string, int> counts;
  for (int i = 0; i < 2000; ++i) {
    counts[std::string(RouteTable::pickModel(*RouteTable::rewriteFor(pool, "chat"), random))]++;
  }
  EXPECT_EQ(counts.count("v3"), 0u);
  EXPECT_NEAR(counts["v1"], 1800, 80);
  EXPECT_EQ(RouteTable::pickModel(*RouteTable::rewriteFor(pool, "other"), random), "base");
  EXPECT_EQ(RouteTable::pickModel(*RouteTable::rewriteFor(pool, "old-name"), random), "new-name");
  EXPECT_EQ(pool.objectives.at("premium"), 10);
  EXPECT_EQ(pool.model_priority.at("old-name"), -1);
  EXPECT_EQ(cond("InferenceObjective/app/orphan", "Accepted"), "False/PoolNotFound");
  // The Gateway lists the names its pools answer to.
  EXPECT_EQ(l->space->names, (std::vector<std::string>{"chat", "old-name"}));
}

TEST_F(RouteTableTest, ListenerProblemsAndDefaultListener) {
  options.default_port = 7000;
  load("");
  ASSERT_NE(table->listenerFor(7000, "anything"), nullptr);
  EXPECT_FALSE(table->has_gateways);
  load(R"(
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: sluice
  listeners:
  - {name: a, port: 8080, protocol: HTTP}
  - {name: b, port: 8080, protocol: HTTP}
  - {name: c, port: 9000, protocol: TCP}
  - name: d
    port: 8443
    protocol: HTTPS
    tls: {certificateRefs: [{name: missing-cert}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: theirs, namespace: infra}
spec:
  gatewayClassName: istio
  listeners: [{name: a, port: 8085, protocol: HTTP}]
)");
  ASSERT_TRUE(errors.empty()) << errors[0];
  EXPECT_EQ(table->listenerFor(7000, "h"), nullptr);  // Gateways replace the default
  EXPECT_NE(table->listenerFor(8080, "h"), nullptr);
  EXPECT_EQ(table->listenerFor(8085, "h"), nullptr);  // another controller's Gateway
  EXPECT_EQ(status("Gateway/infra/theirs"), nullptr);
  const auto* gw = status("Gateway/infra/gw");
  ASSERT_NE(gw, nullptr);
  ASSERT_EQ(gw->listeners.size(), 4u);
  EXPECT_EQ(gw->listeners[1].conditions[0].reason, "HostnameConflict");
  EXPECT_EQ(gw->listeners[2].conditions[0].reason, "UnsupportedProtocol");
  EXPECT_EQ(gw->listeners[3].conditions[0].reason, "InvalidCertificateRef");
  EXPECT_EQ(cond("Gateway/infra/gw", "Programmed"), "False/Invalid");
}

// sluice.dev/scheduler picks a pool's scheduling profile; an unknown name is reported.
TEST_F(RouteTableTest, SchedulerAnnotation) {
  options.profiles = {"random", "sluice-default"};
  load(std::string(kGateway) + R"(apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: p, namespace: app, annotations: {sluice.dev/scheduler: random}}
spec: {selector: {matchLabels: {app: a}}, targetPorts: [{number: 8000}]}
---
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: q, namespace: app, annotations: {sluice.dev/scheduler: fastest}}
spec: {selector: {matchLabels: {app: a}}, targetPorts: [{number: 8000}]}
)");
  ASSERT_TRUE(errors.empty()) << errors[0];
  std::map<std::string, std::string> by_name;
  for (const auto& b : table->backends)
    by_name[b->name] = b->scheduler;
  EXPECT_EQ(by_name["app/p"], "random");
  EXPECT_EQ(by_name["app/q"], "");
  EXPECT_EQ(cond("InferencePool/app/q", "ResolvedRefs"), "False/UnknownSchedulingProfile");
}

TEST_F(RouteTableTest, FilterAnnotations) {
  options.rate_limits = {"per-user"};
  load(R"(
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra, annotations: {sluice.dev/auth: required, sluice.dev/rate-limits: per-user}}
spec:
  gatewayClassName: sluice
  listeners: [{name: http, port: 8080, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: open, namespace: app, annotations: {sluice.dev/auth: "off", sluice.dev/rate-limits: none}}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  rules: [{backendRefs: [{name: s, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: typo, namespace: app, annotations: {sluice.dev/auth: maybe, sluice.dev/rate-limits: nope}}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  rules: [{matches: [{path: {value: /typo}}], backendRefs: [{name: s, port: 80}]}]
)");
  ASSERT_TRUE(errors.empty()) << errors[0];
  const auto* l = table->listenerFor(8080, "h");
  EXPECT_EQ(l->auth_mode, "required");
  EXPECT_EQ(l->rate_limits, ",per-user,");
  RequestView req;
  req.method = "GET";
  req.path = "/";
  const auto* open = RouteTable::matchHttp(*l, req).action;
  EXPECT_EQ(open->auth_mode, "off");
  EXPECT_EQ(open->rate_limits, "none");
  req.path = "/typo";
  const auto* typo = RouteTable::matchHttp(*l, req).action;
  EXPECT_EQ(typo->auth_mode, "");
  EXPECT_EQ(typo->rate_limits, "");
  const auto* st = status("HTTPRoute/app/typo");
  ASSERT_NE(st, nullptr);
  std::string reasons;
  for (const auto& c : st->conditions)
    reasons += c.reason + " ";
  EXPECT_THAT(reasons, ::testing::HasSubstr("InvalidAuthAnnotation"));
  EXPECT_THAT(reasons, ::testing::HasSubstr("InvalidRateLimitAnnotation"));
}

TEST(RewritePath, PrefixAndFull) {
  MatchEntry e;
  e.path = "/v1";
  config::HttpPathModifier prefix{config::HttpPathModifier::Type::ReplacePrefixMatch, "/api"};
  EXPECT_EQ(rewritePath(prefix, e, "/v1/chat"), "/api/chat");
  EXPECT_EQ(rewritePath(prefix, e, "/v1"), "/api");
  config::HttpPathModifier slash{config::HttpPathModifier::Type::ReplacePrefixMatch, "/"};
  EXPECT_EQ(rewritePath(slash, e, "/v1/chat"), "/chat");
  EXPECT_EQ(rewritePath(slash, e, "/v1"), "/");
  MatchEntry root;
  root.path = "/";
  EXPECT_EQ(rewritePath(prefix, root, "/x"), "/api/x");
  config::HttpPathModifier full{config::HttpPathModifier::Type::ReplaceFullPath, "/fixed"};
  EXPECT_EQ(rewritePath(full, e, "/v1/anything"), "/fixed");
}

// A broken update keeps the object's last good version; other objects apply.
TEST_F(RouteTableTest, BrokenUpdateKeepsLastGood) {
  load(std::string(kGateway) + pool("p", "app", "a") +
       httpRoute("r", "app",
                 "  - backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, "
                 "name: p}]\n"));
  ASSERT_TRUE(errors.empty()) << errors[0];
  load(std::string(kGateway) + pool("p", "app", "a") +
       httpRoute("r", "app",
                 "  - backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, "
                 "name: p, weight: -3}]\n") +
       httpRoute("new", "app",
                 "  - matches: [{path: {value: /new}}]\n"
                 "    backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, "
                 "name: p}]\n"));
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_NE(errors[0].find("spec.rules[0].backendRefs[0].weight: must be 0..1000000"),
            std::string::npos)
      << errors[0];
  EXPECT_EQ(route("/"), "app/r#0 -> app/p");
  EXPECT_EQ(route("/new"), "app/new#0 -> app/p");
  ASSERT_NE(status("HTTPRoute/app/r"), nullptr);
  EXPECT_EQ(status("HTTPRoute/app/r")->errors.size(), 1u);
}

}  // namespace
}  // namespace sluice::router
