// Endpoint-only updates (router/endpoint_update.h): a Pod or EndpointSlice change moves just
// the endpoints of the backends it can affect, and the result always equals a full rebuild.
#include "router/endpoint_update.h"

#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "base/random.h"
#include "config/manifest.h"
#include "config/object_store.h"
#include "router/route_table.h"

namespace sluice::router {
namespace {

constexpr std::string_view kObjects = R"(
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: app}
spec:
  gatewayClassName: sluice
  listeners: [{name: http, port: 8080, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: app}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {value: /p0}}]
    backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: p0}]
  - matches: [{path: {value: /selected}}]
    backendRefs: [{name: selected, port: 80}]
  - matches: [{path: {value: /sliced}}]
    backendRefs: [{name: sliced, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: selected, namespace: app}
spec:
  selector: {app: p1}
  ports: [{name: http, port: 80, targetPort: 8000}]
---
apiVersion: v1
kind: Service
metadata: {name: sliced, namespace: app}
spec:
  ports: [{name: http, port: 80, targetPort: 8000}]
---
apiVersion: networking.serving.volcano.sh/v1alpha1
kind: ModelServer
metadata: {name: ms, namespace: app}
spec:
  inferenceEngine: vLLM
  workloadSelector: {matchLabels: {app: p2}}
  workloadPort: {port: 8000}
---
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: p0, namespace: app}
spec:
  selector: {matchLabels: {app: p0}}
  targetPorts: [{number: 8000}]
---
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: p1, namespace: app}
spec:
  selector: {matchLabels: {app: p1}}
  targetPorts: [{number: 8000}, {number: 8001}]
---
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: other, namespace: elsewhere}
spec:
  selector: {matchLabels: {app: p0}}
  targetPorts: [{number: 8000}]
---
)";

std::string podYaml(int i, const std::string& app, bool ready, const std::string& ns = "app") {
  return "apiVersion: v1\nkind: Pod\nmetadata: {name: pod-" + std::to_string(i) +
         ", namespace: " + ns + ", labels: {app: " + app + "}}\nstatus:\n  podIP: 10.0.0." +
         std::to_string(i + 1) + "\n  conditions: [{type: Ready, status: \"" +
         (ready ? "True" : "False") + "\"}]\n";
}

std::string sliceYaml(int n, bool ready) {
  std::string out =
      "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: sliced-1, "
      "namespace: app, labels: {kubernetes.io/service-name: sliced}}\naddressType: IPv4\nports: "
      "[{name: http, port: 9000}]\nendpoints:\n";
  for (int i = 0; i < n; ++i) {
    out += "- addresses: [10.9.0." + std::to_string(i + 1) +
           "]\n  conditions: {ready: " + (ready || i == 0 ? "true" : "false") + "}\n";
  }
  return out;
}

config::Object parseOne(const std::string& yaml) {
  auto parsed = config::parseManifests(yaml, "test.yaml");
  EXPECT_TRUE(parsed.errors.empty()) << parsed.errors[0].message;
  return parsed.objects.at(0);
}

// Endpoint addresses per backend key, as a snapshot serves them.
std::map<std::string, std::vector<std::string>> served(const Snapshot& s) {
  std::map<std::string, std::vector<std::string>> out;
  for (const auto& b : s.routes->backends) {
    auto& list = out[b->kind + "/" + b->name];
    for (const auto& ep : s.current(*b).endpoints) {
      list.push_back(ep.address);
    }
  }
  return out;
}

std::string readyMessage(const Snapshot& s, const std::string& key) {
  for (const auto& st : s.statuses()) {
    if (st.key == key) {
      for (const auto& c : st.conditions) {
        if (c.type == "Ready") {
          return c.message;
        }
      }
    }
  }
  return "(none)";
}

class EndpointUpdateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string yaml(kObjects);
    for (int i = 0; i < 6; ++i) {
      yaml += podYaml(i, "p" + std::to_string(i % 3), true) + "---\n";
    }
    yaml += sliceYaml(2, true) + "---\n";
    auto parsed = config::parseManifests(yaml, "test.yaml");
    ASSERT_TRUE(parsed.errors.empty()) << parsed.errors[0].object << parsed.errors[0].message;
    store.applySource("test.yaml", std::move(parsed));
    snap = rebuild();
  }

  std::shared_ptr<const Snapshot> rebuild() {
    auto built = buildSnapshot(config, ++version, registry, &store);
    EXPECT_TRUE(built) << built.error().message;
    return *built;
  }

  // Applies `objects` (puts) and `deletes` to the store and the update to `snap`; false when
  // the update refused (a full rebuild would be needed).
  bool change(const std::vector<std::string>& objects,
              const std::vector<std::string>& deletes = {}) {
    config::ObjectStore before = store;
    std::vector<config::StoreEvent> events;
    for (const auto& y : objects) {
      events.push_back(store.put(parseOne(y)));
    }
    for (const auto& key : deletes) {
      for (auto& e : store.erase(key)) {
        events.push_back(std::move(e));
      }
    }
    if (events.empty() && !objects.empty()) {
      return false;
    }
    if (events.empty()) {
      return true;  // deletes of Pods that did not exist: nothing changed
    }
    auto u = updateEndpoints(*snap, ++version, before, store, events, registry);
    if (!u) {
      return false;
    }
    last_changed = u->backends_changed;
    total_changed += u->backends_changed;
    if (u->snapshot) {
      snap = u->snapshot;
    }
    return true;
  }

  config::RouterConfig config;
  config::ObjectStore store;
  EndpointRegistry registry;
  uint64_t version = 0;
  std::shared_ptr<const Snapshot> snap;
  size_t last_changed = 0;
  size_t total_changed = 0;
};

TEST_F(EndpointUpdateTest, PodTurningUnreadyLeavesOnlyItsPool) {
  ASSERT_TRUE(change({podYaml(0, "p0", false)}));
  EXPECT_EQ(last_changed, 1u);
  auto eps = served(*snap);
  EXPECT_EQ(eps["InferencePool/app/p0"], (std::vector<std::string>{"10.0.0.4:8000"}));
  EXPECT_EQ(eps["InferencePool/elsewhere/other"], std::vector<std::string>{});
  EXPECT_EQ(readyMessage(*snap, "InferencePool/app/p0"), "1 ready endpoint(s)");
  // The route table is shared; backends that did not change are the same objects.
  for (const auto& b : snap->routes->backends) {
    if (b->name != "app/p0") {
      EXPECT_EQ(&snap->current(*b), b.get()) << b->name;
    }
  }
  EXPECT_EQ(eps, served(*rebuild()));
}

TEST_F(EndpointUpdateTest, ServiceAndModelServerFollowTheirPods) {
  ASSERT_TRUE(change({podYaml(1, "p1", false), podYaml(2, "p2", false)}));
  EXPECT_EQ(last_changed, 3u);  // pool p1, Service selected (same selector), ModelServer ms
  auto eps = served(*snap);
  EXPECT_EQ(eps["Service/app/selected"], (std::vector<std::string>{"10.0.0.5:8000"}));
  EXPECT_EQ(eps["ModelServer/app/ms"], (std::vector<std::string>{"10.0.0.6:8000"}));
  EXPECT_EQ(readyMessage(*snap, "ModelServer/app/ms"), "1 ready endpoint(s)");
  EXPECT_EQ(eps, served(*rebuild()));
}

TEST_F(EndpointUpdateTest, EndpointSliceChangesMoveServiceEndpoints) {
  ASSERT_TRUE(change({sliceYaml(3, false)}));
  EXPECT_EQ(served(*snap)["Service/app/sliced"], (std::vector<std::string>{"10.9.0.1:9000"}));
  ASSERT_TRUE(change({}, {"EndpointSlice/app/sliced-1"}));
  // Without slices the Service has no selector, so no endpoints.
  EXPECT_EQ(served(*snap)["Service/app/sliced"], std::vector<std::string>{});
  EXPECT_EQ(served(*snap), served(*rebuild()));
}

TEST_F(EndpointUpdateTest, ChangesThatMoveNoEndpointPublishNothing) {
  const auto before = snap;
  ASSERT_TRUE(change({podYaml(0, "p0", true) + "  phase: Running\n"}));
  EXPECT_EQ(last_changed, 0u);
  EXPECT_EQ(snap, before);
}

TEST_F(EndpointUpdateTest, OtherKindsNeedTheFullRebuild) {
  EXPECT_FALSE(
      change({"apiVersion: inference.networking.k8s.io/v1\nkind: InferencePool\n"
              "metadata: {name: p9, namespace: app}\nspec:\n  selector: {matchLabels: "
              "{app: p9}}\n  targetPorts: [{number: 8000}]\n"}));
  config::ObjectStore same = store;
  EXPECT_FALSE(updateEndpoints(*snap, 99, same, store, {}, registry));  // no events
}

TEST_F(EndpointUpdateTest, NewValidationErrorsNeedTheFullRebuild) {
  config::ObjectStore before = store;
  store.setErrors("api:Pod/app/pod-0", {{"Pod/app/pod-0", "Pod/app/pod-0", "status.podIP: bad"}});
  auto event = store.put(parseOne(podYaml(0, "p0", false)));
  EXPECT_FALSE(updateEndpoints(*snap, 99, before, store, {event}, registry));
}

// Random Pod and slice churn (labels moving Pods between pools and namespaces, readiness,
// deletion, new Pods): after every step the updated snapshot serves exactly what a full
// rebuild of the same objects serves, with the same Ready conditions.
TEST_F(EndpointUpdateTest, AlwaysEqualsAFullRebuild) {
  base::Xoshiro random(20261201);
  for (int step = 0; step < 300; ++step) {
    std::vector<std::string> puts;
    std::vector<std::string> deletes;
    const int n = 1 + static_cast<int>(random.uniform(3));
    for (int k = 0; k < n; ++k) {
      const int i = static_cast<int>(random.uniform(10));
      switch (random.uniform(4)) {
        case 0:
          deletes.push_back("Pod/app/pod-" + std::to_string(i));
          break;
        case 1:
          puts.push_back(sliceYaml(1 + static_cast<int>(random.uniform(3)), random.uniform(2)));
          break;
        default:
          puts.push_back(podYaml(i, "p" + std::to_string(random.uniform(4)), random.uniform(3) != 0,
                                 random.uniform(5) == 0 ? "elsewhere" : "app"));
      }
    }
    ASSERT_TRUE(change(puts, deletes)) << "step " << step;
    auto full = rebuild();
    ASSERT_EQ(served(*snap), served(*full)) << "step " << step;
    for (const char* key : {"InferencePool/app/p0", "InferencePool/app/p1",
                            "InferencePool/elsewhere/other", "ModelServer/app/ms"}) {
      ASSERT_EQ(readyMessage(*snap, key), readyMessage(*full, key)) << key << " step " << step;
    }
  }
  EXPECT_GT(total_changed, 150u);  // the churn did move endpoints, step after step
}

}  // namespace
}  // namespace sluice::router
