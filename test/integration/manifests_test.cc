// The router on a manifest directory: Gateways open listeners, HTTPRoutes and ModelRoutes send
// requests to simulated engines chosen by the rules, and rewriting the directory under load
// loses no request.
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "fakes/metric_sample.h"
#include "fakes/sim_fleet.h"
#include "fakes/test_client.h"
#include "fakes/tls_certs.h"
#include "router/route_table.h"
#include "server/server.h"

namespace sluice {
namespace {

using ::testing::HasSubstr;
using testing::waitFor;

namespace fs = std::filesystem;

using testing::freePort;

std::string chatBody(const std::string& model, bool stream = false) {
  return R"({"model":")" + model + R"(","max_tokens":4,"stream":)" + (stream ? "true" : "false") +
         R"(,"messages":[{"role":"user","content":"hello"}]})";
}

class ManifestsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("sluice-manifests-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    fleet_.start(3, {}, {"base-model", "sql-lora"});
    gw_port_ = freePort();
  }
  void TearDown() override {
    router_.reset();
    fs::remove_all(dir_);
  }

  void write(const std::string& name, const std::string& text) {
    // Written aside and renamed in, as tools that update config atomically do.
    auto tmp = dir_ / (".tmp-" + name);
    {
      std::ofstream out(tmp);
      out << text;
    }
    fs::rename(tmp, dir_ / name);
  }

  void startRouter() {
    auto c = testing::loopbackConfig({});
    c.models.clear();
    c.manifests = dir_.string();
    c.manifests_debounce = std::chrono::milliseconds(5);
    router_ = std::make_unique<server::Server>(c, base::RealTimeSource::instance(), 99);
    auto r = router_->start();
    ASSERT_TRUE(r) << r.error().message;
  }

  uint64_t version() { return router_->snapshot()->version; }

  // Waits until the router has applied a change made after `before`.
  bool applied(uint64_t before) {
    return waitFor([&] { return version() > before; });
  }

  std::string gateway(uint16_t port, const std::string& name = "gw") {
    return "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: " + name +
           ", namespace: default}\nspec:\n  gatewayClassName: sluice\n  listeners:\n  - {name: "
           "http, port: " +
           std::to_string(port) + ", protocol: HTTP}\n---\n";
  }

  // One Pod on 127.0.0.1 and a pool whose target ports are the sims' ports (data-parallel
  // ranks: each port an endpoint).
  std::string poolAndPod(const std::string& pool, const std::vector<size_t>& sims) {
    std::string ports;
    for (size_t i : sims) {
      ports += (ports.empty() ? "" : ", ") +
               ("{number: " + std::to_string(fleet_.sims[i]->port()) + "}");
    }
    return "apiVersion: v1\nkind: Pod\nmetadata: {name: pod-" + pool +
           ", namespace: default, labels: {app: " + pool +
           "}}\nstatus: {podIP: 127.0.0.1, phase: Running, conditions: [{type: Ready, status: "
           "\"True\"}]}\n---\napiVersion: inference.networking.k8s.io/v1\nkind: "
           "InferencePool\nmetadata: {name: " +
           pool + ", namespace: default}\nspec:\n  selector: {matchLabels: {app: " + pool +
           "}}\n  targetPorts: [" + ports + "]\n---\n";
  }

  std::optional<testing::HttpResponse> chat(uint16_t port, const std::string& model,
                                            const std::string& path = "/v1/chat/completions",
                                            const std::string& headers = "") {
    return testing::request(port, "POST", path, chatBody(model), headers);
  }

  // Flow control with one slot on a one-endpoint pool behind an HTTPRoute (plus `extra`).
  void startFlowControl(std::chrono::milliseconds ttl, const std::string& extra = "") {
    write("all.yaml", gateway(gw_port_) + poolAndPod("pool", {0}) + R"(
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: pool}]}]
---
)" + extra);
    auto c = testing::loopbackConfig({});
    c.models.clear();
    c.manifests = dir_.string();
    c.flow_control.max_in_flight_per_endpoint = 1;
    c.flow_control.queue_ttl = ttl;
    router_ = std::make_unique<server::Server>(c, base::RealTimeSource::instance(), 7);
    ASSERT_TRUE(router_->start());
  }
  // Holds the only slot with a stream that waits after its first event.
  void holdTheSlot(testing::TestConnection& held) {
    fleet_.sims[0]->control().hold_after_first = true;
    held.send(testing::postRequest("/v1/chat/completions", chatBody("base-model", true)));
    ASSERT_TRUE(held.readHead());
    ASSERT_TRUE(held.readUntil("data:"));
  }

  fs::path dir_;
  testing::SimFleet fleet_;
  std::unique_ptr<server::Server> router_;
  uint16_t gw_port_ = 0;
};

TEST_F(ManifestsTest, HttpRouteToPoolWithRewriteAndWriteBack) {
  write("gw.yaml", gateway(gw_port_) + poolAndPod("pool-a", {0, 1}) + R"(
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v1}}]
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier: {set: [{name: x-route, value: r}]}
    backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: pool-a, port: 1}]
  - matches: [{path: {type: PathPrefix, value: /openai/v1}}]
    filters:
    - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v1}}}
    backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: pool-a}]
  - matches: [{path: {type: Exact, value: /old}}]
    filters:
    - {type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /v1/models}, statusCode: 301}}
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModelRewrite
metadata: {name: alias, namespace: default}
spec:
  poolRef: {name: pool-a}
  rules:
  - matches: [{model: {value: friendly}}]
    targets: [{modelRewrite: base-model}]
)");
  startRouter();
  auto r = chat(gw_port_, "friendly");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_THAT(r->body, HasSubstr(R"("model":"friendly")"));  // written back
  EXPECT_EQ(r->header("x-route"), "r");
  EXPECT_THAT(r->header("x-sim-engine"), ::testing::AnyOf("sim-0", "sim-1"));
  // The same model through the rewritten path.
  r = chat(gw_port_, "base-model", "/openai/v1/chat/completions");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  // Redirect.
  r = testing::request(gw_port_, "GET", "/old?x=1");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 301);
  EXPECT_THAT(r->header("location"), HasSubstr("/v1/models?x=1"));
  // /v1/models lists what this Gateway serves.
  r = testing::request(gw_port_, "GET", "/v1/models");
  ASSERT_TRUE(r);
  EXPECT_THAT(r->body, HasSubstr(R"("id":"friendly")"));
  // The default listener is gone: the Gateway replaced it.
  EXPECT_FALSE(testing::request(router_->listenerPort(), "GET", "/v1/models"));
  // Metric labels: served names as themselves, the client's name for a pool (bounded per
  // worker), with the gateway, route and backend beside it.
  EXPECT_TRUE(waitFor([&] {
    auto m = testing::request(router_->metricsPort(), "GET", "/metrics");
    return m &&
           testing::hasSample(m->body, "sluice_requests_total",
                              {R"(model="friendly")", R"(code="200")"}, "1") &&
           testing::hasSample(m->body, "sluice_requests_total",
                              {R"(model=")", R"(gateway=")", R"(route="HTTPRoute/)",
                               R"(backend="InferencePool/default/pool-a")", R"(code="200")"},
                              "1") &&
           !testing::hasSample(m->body, "sluice_requests_total", {R"(model="InferencePool)"}, "1");
  }));
  // Status is served.
  auto st = testing::request(router_->adminPort(), "GET", "/debug/status");
  ASSERT_TRUE(st);
  EXPECT_THAT(st->body, HasSubstr(R"("object":"InferencePool/default/pool-a")"));
}

TEST_F(ManifestsTest, ModelRouteToModelServerAndErrors) {
  write("all.yaml", gateway(gw_port_) + R"(
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: default, labels: {app: a}}
status: {podIP: 127.0.0.1}
---
apiVersion: networking.serving.volcano.sh/v1alpha1
kind: ModelServer
metadata: {name: ms, namespace: default}
spec:
  model: base-model
  inferenceEngine: vLLM
  workloadSelector: {matchLabels: {app: a}}
  workloadPort: {port: )" +
                        std::to_string(fleet_.sims[2]->port()) +
                        R"(}
---
apiVersion: networking.serving.volcano.sh/v1alpha1
kind: ModelServer
metadata: {name: empty, namespace: default}
spec:
  inferenceEngine: SGLang
  workloadSelector: {matchLabels: {app: nobody}}
  workloadPort: {port: 8000}
---
apiVersion: networking.serving.volcano.sh/v1alpha1
kind: ModelRoute
metadata: {name: llama, namespace: default}
spec:
  modelName: llama
  loraAdapters: [sql-lora]
  rules: [{targetModels: [{modelServerName: ms}]}]
---
apiVersion: networking.serving.volcano.sh/v1alpha1
kind: ModelRoute
metadata: {name: nobody, namespace: default}
spec:
  modelName: ghost
  rules: [{targetModels: [{modelServerName: empty}]}]
---
apiVersion: networking.serving.volcano.sh/v1alpha1
kind: ModelRoute
metadata: {name: broken, namespace: default}
spec:
  modelName: broken
  rules: [{targetModels: [{modelServerName: not-there}]}]
)");
  startRouter();
  auto r = chat(gw_port_, "llama");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->header("x-sim-engine"), "sim-2");
  EXPECT_THAT(r->body, HasSubstr(R"("model":"llama")"));
  // A LoRA adapter keeps its name (no ModelServer model rewrite).
  r = chat(gw_port_, "sql-lora");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  r = chat(gw_port_, "ghost");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503) << r->body;
  r = chat(gw_port_, "broken");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 500) << r->body;
  EXPECT_THAT(r->body, HasSubstr("not-there"));
  r = chat(gw_port_, "unknown");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
}

// ModelRoute vs HTTPRoute on one listener: a ModelRoute claims its model names first; the
// HTTPRoute takes other models (and requests without one).
TEST_F(ManifestsTest, ModelRouteBeforeHttpRoute) {
  write("all.yaml", gateway(gw_port_) + poolAndPod("pool", {0}) + R"(
apiVersion: v1
kind: Pod
metadata: {name: ms-pod, namespace: default, labels: {app: ms}}
status: {podIP: 127.0.0.1}
---
apiVersion: networking.serving.volcano.sh/v1alpha1
kind: ModelServer
metadata: {name: ms, namespace: default}
spec:
  model: base-model
  inferenceEngine: vLLM
  workloadSelector: {matchLabels: {app: ms}}
  workloadPort: {port: )" +
                        std::to_string(fleet_.sims[1]->port()) + R"(}
---
apiVersion: networking.serving.volcano.sh/v1alpha1
kind: ModelRoute
metadata: {name: llama, namespace: default}
spec:
  modelName: llama
  rules: [{targetModels: [{modelServerName: ms}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: pool}]
)");
  startRouter();
  auto r = chat(gw_port_, "llama");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->header("x-sim-engine"), "sim-1");  // the ModelRoute's ModelServer
  r = chat(gw_port_, "base-model");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->header("x-sim-engine"), "sim-0");  // the HTTPRoute's pool
}

// HTTPRoute retry: attempts and codes bound the retries down the fallback list.
TEST_F(ManifestsTest, HttpRouteRetry) {
  write("all.yaml", gateway(gw_port_) + poolAndPod("pool", {0, 1, 2}) + R"(
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {value: /v1/chat}}]
    backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: pool}]
    retry: {codes: [503], attempts: 1}
  - matches: [{path: {value: /v1/completions}}]
    backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: pool}]
    retry: {codes: [500], attempts: 2}
)");
  auto c = testing::loopbackConfig({});
  c.models.clear();
  c.manifests = dir_.string();
  c.upstream.eject_after_failures = 0;
  router_ = std::make_unique<server::Server>(c, base::RealTimeSource::instance(), 3);
  ASSERT_TRUE(router_->start());
  for (auto& sim : fleet_.sims)
    sim->control().setFault(sim::Fault::Status503);
  auto total = [&] {
    int n = 0;
    for (auto& sim : fleet_.sims)
      n += sim->control().requests.load();
    return n;
  };
  auto r = chat(gw_port_, "base-model");  // 503 is retried once: two attempts
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(total(), 2);
  r = testing::request(gw_port_, "POST", "/v1/completions",
                       R"({"model":"base-model","prompt":"x","max_tokens":1})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);  // 503 is not in this rule's codes: no retry
  EXPECT_EQ(total(), 3);
}

TEST_F(ManifestsTest, RequestTimeoutFromHttpRoute) {
  write("gw.yaml", gateway(gw_port_) + poolAndPod("slow", {0}) + R"(
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: slow}]
    timeouts: {request: 300ms}
)");
  fleet_.sims[0]->control().fault = static_cast<int>(sim::Fault::Hang);
  startRouter();
  auto r = chat(gw_port_, "base-model");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 504) << r->body;
}

// RequestMirror sends a copy to the mirror pool and the response comes from the real one;
// RequestHeaderModifier edits what the engine receives.
TEST_F(ManifestsTest, MirrorAndRequestHeaders) {
  write("gw.yaml", gateway(gw_port_) + poolAndPod("main", {0}) + poolAndPod("shadow", {1}) + R"(
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
  - filters:
    - type: RequestMirror
      requestMirror: {backendRef: {group: inference.networking.k8s.io, kind: InferencePool, name: shadow}}
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-team, value: blue}], add: [{name: x-added, value: "1"}], remove: [x-secret]}
    backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: main}]
)");
  startRouter();
  auto r = chat(gw_port_, "base-model", "/v1/chat/completions",
                "x-team: red\r\nx-secret: s3cr3t\r\nx-gateway-inference-objective: gold\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->header("x-sim-engine"), "sim-0");
  auto head = fleet_.sims[0]->control().lastRequestHead();
  EXPECT_THAT(head, HasSubstr("x-team: blue"));
  EXPECT_THAT(head, ::testing::Not(HasSubstr("red")));
  EXPECT_THAT(head, HasSubstr("x-added: 1"));
  EXPECT_THAT(head, ::testing::Not(HasSubstr("s3cr3t")));
  EXPECT_THAT(head, ::testing::Not(HasSubstr("x-gateway-inference-objective")));
  EXPECT_TRUE(waitFor([&] { return fleet_.sims[1]->control().completed.load() == 1; }));
  EXPECT_THAT(fleet_.sims[1]->control().lastRequestBody(), HasSubstr("base-model"));
  auto m = testing::request(router_->metricsPort(), "GET", "/metrics");
  ASSERT_TRUE(m);
  EXPECT_THAT(m->body, HasSubstr("sluice_mirror_requests_total{outcome=\"sent\"} 1"));
}

// Flow control on a saturated pool: sheddable requests get 429, queued ones are served by
// priority (InferenceObjective) when the slot frees, and a request that waits past the TTL
// gets 503.
TEST_F(ManifestsTest, FlowControlPriorityShedAndTtl) {
  startFlowControl(std::chrono::seconds(10), R"(
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata: {name: premium, namespace: default}
spec: {priority: 10, poolRef: {name: pool}}
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata: {name: batch, namespace: default}
spec: {priority: -1, poolRef: {name: pool}}
)");
  auto queued = [&]() -> int {
    auto m = testing::request(router_->metricsPort(), "GET", "/metrics");
    if (!m)
      return -1;
    auto pos = m->body.find("sluice_flow_control_total{outcome=\"queued\"} ");
    return pos == std::string::npos ? -1 : std::atoi(m->body.c_str() + pos + 44);
  };
  testing::TestConnection held(gw_port_);
  holdTheSlot(held);
  // Sheddable: refused at once.
  auto r = chat(gw_port_, "base-model", "/v1/chat/completions",
                "x-gateway-inference-objective: batch\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 429) << r->body;
  // A normal request queues first, then a premium one; the premium one is served first.
  std::mutex mu;
  std::vector<std::string> order;
  std::thread normal([&] {
    auto x = chat(gw_port_, "base-model");
    std::lock_guard<std::mutex> lock(mu);
    order.push_back(x && x->status == 200 ? "normal" : "normal-failed");
  });
  ASSERT_TRUE(waitFor([&] { return queued() == 1; }));
  std::thread premium([&] {
    auto x = chat(gw_port_, "base-model", "/v1/chat/completions",
                  "x-gateway-inference-objective: premium\r\n");
    std::lock_guard<std::mutex> lock(mu);
    order.push_back(x && x->status == 200 ? "premium" : "premium-failed");
  });
  ASSERT_TRUE(waitFor([&] { return queued() == 2; }));
  EXPECT_TRUE(order.empty());
  fleet_.sims[0]->release();
  ASSERT_TRUE(held.readUntil("[DONE]"));
  normal.join();
  premium.join();
  EXPECT_EQ(order, (std::vector<std::string>{"premium", "normal"}));
  auto m = testing::request(router_->metricsPort(), "GET", "/metrics");
  ASSERT_TRUE(m);
  EXPECT_THAT(
      m->body,
      HasSubstr(
          "sluice_flow_control_wait_seconds_count{model=\"base-model\",gateway=\"default/gw\","
          "route=\"HTTPRoute/default/r\",backend=\"InferencePool/default/pool\"} 2"));
  EXPECT_THAT(m->body, HasSubstr("sluice_flow_control_total{outcome=\"shed\"} 1"));
}

// Fairness within a priority band: a tenant's flood cannot starve another tenant; flows are
// served in turn (x-gateway-inference-fairness-id).
TEST_F(ManifestsTest, FlowControlFloodDoesNotStarveAnotherTenant) {
  startFlowControl(std::chrono::seconds(30));
  auto queued = [&]() -> int {
    auto m = testing::request(router_->metricsPort(), "GET", "/metrics");
    if (!m)
      return -1;
    auto pos = m->body.find("\nsluice_flow_control_queued ");
    return pos == std::string::npos ? -1 : std::atoi(m->body.c_str() + pos + 28);
  };
  testing::TestConnection held(gw_port_);
  holdTheSlot(held);
  std::mutex mu;
  std::vector<std::string> order;
  std::vector<std::thread> threads;
  auto send = [&](const std::string& tenant, int n) {
    threads.emplace_back([&, tenant, n] {
      auto x = chat(gw_port_, "base-model", "/v1/chat/completions",
                    "x-gateway-inference-fairness-id: " + tenant + "\r\n");
      std::lock_guard<std::mutex> lock(mu);
      order.push_back(x && x->status == 200 ? tenant + std::to_string(n) : "failed");
    });
  };
  for (int i = 0; i < 6; ++i) {
    send("flood", i);
    ASSERT_TRUE(waitFor([&] { return queued() == i + 1; }));
  }
  send("quiet", 0);
  ASSERT_TRUE(waitFor([&] { return queued() == 7; }));
  fleet_.sims[0]->release();
  ASSERT_TRUE(held.readUntil("[DONE]"));
  for (auto& t : threads)
    t.join();
  ASSERT_EQ(order.size(), 7u);
  // The quiet tenant goes second, right after the flood's first request, not seventh.
  EXPECT_EQ(order[0], "flood0");
  EXPECT_EQ(order[1], "quiet0");
}

TEST_F(ManifestsTest, FlowControlQueueTtl) {
  startFlowControl(std::chrono::milliseconds(200));
  testing::TestConnection held(gw_port_);
  holdTheSlot(held);
  auto r = chat(gw_port_, "base-model");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503) << r->body;
  EXPECT_THAT(r->body, HasSubstr("waited 200 ms"));
  fleet_.sims[0]->release();
  ASSERT_TRUE(held.readUntil("[DONE]"));
  // The slot is free again.
  r = chat(gw_port_, "base-model");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
}

// ModelServer trafficPolicy: retry.attempts bounds the attempts, retryInterval spaces them,
// and the Pods are real addresses on one port.
TEST(ManifestsRetry, ModelServerRetryPolicy) {
  testing::SimFleet fleet;
  fleet.start(2, {}, {"base-model"}, true);
  fleet.sims[0]->control().setFault(sim::Fault::Status503);
  fleet.sims[1]->control().setFault(sim::Fault::Status503);
  auto dir = fs::temp_directory_path() / ("sluice-retry-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const uint16_t port = fleet.sims[0]->port();
  std::string pods;
  for (int i = 0; i < 2; ++i) {
    pods += "apiVersion: v1\nkind: Pod\nmetadata: {name: p" + std::to_string(i) +
            ", namespace: default, labels: {app: a}}\nstatus: {podIP: 127.0.0." +
            std::to_string(11 + i) + "}\n---\n";
  }
  auto server = [&](const std::string& policy) {
    std::ofstream(dir / "all.yaml")
        << pods
        << "apiVersion: networking.serving.volcano.sh/v1alpha1\nkind: ModelServer\nmetadata: "
           "{name: ms, namespace: default}\nspec:\n  inferenceEngine: vLLM\n  "
           "workloadSelector: {matchLabels: {app: a}}\n  workloadPort: {port: "
        << port << "}\n"
        << policy
        << "---\napiVersion: networking.serving.volcano.sh/v1alpha1\nkind: ModelRoute\n"
           "metadata: {name: r, namespace: default}\nspec:\n  modelName: base-model\n  rules: "
           "[{targetModels: [{modelServerName: ms}]}]\n";
  };
  server("  trafficPolicy: {retry: {attempts: 0}}\n");
  auto c = testing::loopbackConfig({});
  c.models.clear();
  c.manifests = dir.string();
  c.upstream.eject_after_failures = 0;
  {
    server::Server router(c, base::RealTimeSource::instance(), 5);
    ASSERT_TRUE(router.start());
    auto r = testing::request(router.listenerPort(), "POST", "/v1/chat/completions",
                              chatBody("base-model"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 503);
    EXPECT_EQ(fleet.sims[0]->control().requests + fleet.sims[1]->control().requests, 1);
  }
  server("  trafficPolicy: {retry: {attempts: 1, retryInterval: 150ms}}\n");
  {
    server::Server router(c, base::RealTimeSource::instance(), 5);
    ASSERT_TRUE(router.start());
    const auto start = std::chrono::steady_clock::now();
    auto r = testing::request(router.listenerPort(), "POST", "/v1/chat/completions",
                              chatBody("base-model"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 503);
    EXPECT_EQ(fleet.sims[0]->control().requests + fleet.sims[1]->control().requests, 3);
    // The interval is a lower bound on the time taken (no upper bound is asserted).
    EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(150));
  }
  fs::remove_all(dir);
}

// HTTPS listeners: two hostnames on one port, each with its own certificate chosen by SNI;
// requests over TLS are routed like any other.
TEST_F(ManifestsTest, HttpsListenersWithSni) {
  auto a = testing::selfSigned("a.example.com");
  auto b = testing::selfSigned("b.example.com");
  auto secret = [](const std::string& name, const testing::Certificate& c) {
    auto indent = [](const std::string& pem) {
      std::string out;
      size_t start = 0;
      while (start < pem.size()) {
        size_t nl = pem.find('\n', start);
        if (nl == std::string::npos)
          nl = pem.size();
        out += "      " + pem.substr(start, nl - start) + "\n";
        start = nl + 1;
      }
      return out;
    };
    return "apiVersion: v1\nkind: Secret\nmetadata: {name: " + name +
           ", namespace: default}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n" +
           indent(c.cert_pem) + "  tls.key: |\n" + indent(c.key_pem) + "---\n";
  };
  write("tls.yaml", secret("cert-a", a) + secret("cert-b", b) + poolAndPod("p", {0}) +
                        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: "
                        "{name: gw, namespace: default}\nspec:\n  gatewayClassName: sluice\n"
                        "  listeners:\n"
                        "  - {name: a, port: " +
                        std::to_string(gw_port_) +
                        ", protocol: HTTPS, hostname: a.example.com, tls: {certificateRefs: "
                        "[{name: cert-a}]}}\n"
                        "  - {name: b, port: " +
                        std::to_string(gw_port_) +
                        ", protocol: HTTPS, hostname: b.example.com, tls: {certificateRefs: "
                        "[{name: cert-b}]}}\n---\n" +
                        R"(
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: b}]
  rules:
  - backendRefs: [{group: inference.networking.k8s.io, kind: InferencePool, name: p}]
)");
  startRouter();
  std::string body = chatBody("base-model");
  auto req = [&](const std::string& host) {
    return "POST /v1/chat/completions HTTP/1.1\r\nHost: " + host +
           "\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\n\r\n" + body;
  };
  auto rb = testing::tlsRequest(gw_port_, "b.example.com", req("b.example.com"));
  ASSERT_TRUE(rb);
  EXPECT_EQ(rb->peer_cn, "b.example.com");
  EXPECT_THAT(rb->response, HasSubstr("HTTP/1.1 200"));
  EXPECT_EQ(fleet_.sims[0]->control().requests.load(), 1);
  EXPECT_THAT(fleet_.sims[0]->control().lastRequestHead(), HasSubstr("X-Forwarded-Proto: https"));
  // Listener a has the other certificate and no route.
  auto ra = testing::tlsRequest(gw_port_, "a.example.com", req("a.example.com"));
  ASSERT_TRUE(ra);
  EXPECT_EQ(ra->peer_cn, "a.example.com");
  EXPECT_THAT(ra->response, HasSubstr("HTTP/1.1 404"));
  // A server name no listener accepts fails the handshake; plain HTTP gets nothing.
  EXPECT_FALSE(testing::tlsRequest(gw_port_, "c.example.com", req("c.example.com")));
  EXPECT_FALSE(chat(gw_port_, "base-model") && chat(gw_port_, "base-model")->status == 200);
}

// Listeners open and close as Gateways come and go; a broken file keeps the last good
// objects; 100 rewrites of the directory under load fail no request.
TEST_F(ManifestsTest, HotReloadUnderLoad) {
  const uint16_t second = freePort();
  auto route = [](const std::string& pool, int wa, int wb) {
    return "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, "
           "namespace: default}\nspec:\n  parentRefs: [{name: gw}]\n  rules:\n  - backendRefs:\n"
           "    - {group: inference.networking.k8s.io, kind: InferencePool, name: " +
           pool + ", weight: " + std::to_string(wa) +
           "}\n    - {group: inference.networking.k8s.io, kind: InferencePool, name: pool-b, "
           "weight: " +
           std::to_string(wb) + "}\n";
  };
  write("pools.yaml", poolAndPod("pool-a", {0}) + poolAndPod("pool-b", {1, 2}));
  write("gw.yaml", gateway(gw_port_));
  write("route.yaml", route("pool-a", 1, 0));
  startRouter();
  auto r = chat(gw_port_, "base-model");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->header("x-sim-engine"), "sim-0");

  // A second Gateway opens its port; removing it closes the port.
  uint64_t v = version();
  write("gw2.yaml", gateway(second, "gw2"));
  ASSERT_TRUE(applied(v));
  EXPECT_TRUE(waitFor([&] {
    auto m = testing::request(second, "GET", "/v1/models");
    return m && m->status == 200;
  }));
  v = version();
  fs::remove(dir_ / "gw2.yaml");
  ASSERT_TRUE(applied(v));
  EXPECT_TRUE(waitFor([&] { return !testing::request(second, "GET", "/v1/models"); }));

  // A broken route file keeps the last good route.
  v = version();
  write("route.yaml",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: "
        "{name: r, namespace: default}\nspec:\n  rules: [{backendRefs: [{name: x, "
        "weight: nope}]}]\n");
  ASSERT_TRUE(applied(v));
  r = chat(gw_port_, "base-model");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  auto st = testing::request(router_->adminPort(), "GET", "/debug/status");
  ASSERT_TRUE(st);
  EXPECT_THAT(st->body, HasSubstr("weight: must be an integer"));

  // Load from two clients on keep-alive connections while the route flips 100 times.
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, failed{0};
  std::vector<std::thread> clients;
  for (int c = 0; c < 2; ++c) {
    clients.emplace_back([&] {
      while (!stop.load()) {
        testing::TestConnection conn(gw_port_);
        for (int i = 0; i < 20 && !stop.load(); ++i) {
          conn.send(testing::postRequest("/v1/chat/completions", chatBody("base-model")));
          auto resp = conn.readResponse();
          if (resp && resp->status == 200) {
            ok.fetch_add(1);
          } else {
            failed.fetch_add(1);
            break;
          }
        }
      }
    });
  }
  for (int i = 0; i < 100; ++i) {
    v = version();
    const int before = ok.load();
    write("route.yaml", route(i % 2 ? "pool-a" : "pool-b", 1 + i % 3, i % 2 ? 0 : 5));
    ASSERT_TRUE(applied(v)) << "rewrite " << i;
    // Requests keep flowing between rewrites (so every snapshot serves some).
    ASSERT_TRUE(waitFor([&] { return ok.load() >= before + 2 || failed.load() > 0; }));
  }
  stop = true;
  for (auto& t : clients) {
    t.join();
  }
  EXPECT_EQ(failed.load(), 0);
  EXPECT_GE(ok.load(), 200);
}

}  // namespace
}  // namespace sluice
