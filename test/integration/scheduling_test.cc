// Scheduling end to end: the router in-process, in front of simulated engines.
#include <algorithm>
#include <map>
#include <set>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "base/asio.h"
#include "fakes/sim_fleet.h"
#include "fakes/test_client.h"
#include "server/server.h"
#include "sim/sim_server.h"

namespace sluice {
namespace {

using testing::postRequest;
using testing::TestConnection;

class SchedulingTest : public ::testing::Test {
 protected:
  void start(int sims, const std::string& preset, sim::SimOptions o = {}) {
    fleet_.start(sims, o, {"m"});
    config::RouterConfig c = testing::loopbackConfig(fleet_.endpoints());
    c.workers = 2;
    c.metrics_fetcher.enabled = true;
    c.metrics_fetcher.interval = std::chrono::milliseconds(20);
    c.scheduler.preset = preset;
    c.scheduler.decisions = 32;
    router_ = std::make_unique<server::Server>(c, base::RealTimeSource::instance(), 99);
    ASSERT_TRUE(router_->start());
  }

  testing::SimFleet fleet_;  // declared first: outlives the router
  std::vector<std::unique_ptr<sim::SimServer>>& sims_ = fleet_.sims;
  std::unique_ptr<server::Server> router_;
};

std::string chat(const std::string& system, const std::string& question, int max_tokens) {
  return R"({"model":"m","max_tokens":)" + std::to_string(max_tokens) +
         R"(,"messages":[{"role":"system","content":")" + system +
         R"("},{"role":"user","content":")" + question + R"("}]})";
}

TEST_F(SchedulingTest, RequestsSharingAPrefixStayTogether) {
  start(4, "sluice-default");
  const std::string system(4000, 'S');
  std::map<std::string, int> engines;
  for (int i = 0; i < 12; ++i) {
    auto r = testing::request(router_->listenerPort(), "POST", "/v1/chat/completions",
                              chat(system, "question " + std::to_string(i), 2));
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200);
    engines[r->header("x-sim-engine")]++;
  }
  EXPECT_EQ(engines.size(), 1u) << "all turns of one prefix on one engine";
  std::string text;
  ASSERT_TRUE(testing::waitFor([&] {
    auto r = testing::request(router_->metricsPort(), "GET", "/metrics");
    text = r ? r->body : "";
    return text.find("sluice_prefix_match_ratio_count{model=\"m\"} 12") != std::string::npos;
  }));
  // The first turn was a miss; the other eleven hit most of their prompt.
  EXPECT_THAT(text,
              ::testing::HasSubstr("sluice_prefix_match_ratio_bucket{model=\"m\",le=\"0\"} 1\n"));
  EXPECT_THAT(
      text, ::testing::HasSubstr("sluice_prefix_match_ratio_bucket{model=\"m\",le=\"0.75\"} 1\n"));
  EXPECT_THAT(text,
              ::testing::HasSubstr("sluice_scheduler_duration_seconds_count{model=\"m\"} 12"));
  EXPECT_THAT(text, ::testing::HasSubstr("sluice_endpoint_picks_total{endpoint=\"127.0.0.1:"));
  EXPECT_THAT(text, ::testing::HasSubstr("sluice_prefix_index_entries "));
  EXPECT_THAT(
      text,
      ::testing::HasSubstr(
          "sluice_scheduler_plugin_duration_seconds_count{plugin=\"prefix-cache-scorer\"} 12"));
  EXPECT_THAT(text,
              ::testing::HasSubstr(
                  "sluice_scheduler_plugin_duration_seconds_count{plugin=\"health-filter\"} 12"));
}

TEST_F(SchedulingTest, ABurstOfColdRequestsSpreadsInsteadOfHerding) {
  sim::SimOptions o;
  o.engine.step_overhead_ms = 10;
  start(4, "sluice-default", o);
  // Every stream is held after its first event until all 64 are in flight, so the spread
  // depends on the router's load accounting only, not on how fast this machine is.
  for (auto& sim : sims_)
    sim->control().hold_after_first = true;
  std::vector<std::unique_ptr<TestConnection>> clients;
  for (int i = 0; i < 64; ++i) {
    clients.push_back(std::make_unique<TestConnection>(router_->listenerPort()));
    // 64 different prompts arriving together: no engine has any of them cached.
    std::string body =
        chat(std::string(600, static_cast<char>('A' + i % 26)) + std::to_string(i), "q", 20);
    body.insert(1, R"("stream":true,)");
    ASSERT_TRUE(clients.back()->send(postRequest("/v1/chat/completions", body)));
  }
  ASSERT_TRUE(testing::waitFor([&] {
    int n = 0;
    for (auto& sim : sims_)
      n += sim->control().requests.load();
    return n == 64;
  }));
  for (auto& sim : sims_)
    sim->release();
  std::map<std::string, int> engines;
  for (auto& c : clients) {
    auto r = c->readResponse();
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200);
    engines[r->header("x-sim-engine")]++;
  }
  ASSERT_EQ(engines.size(), 4u);
  for (const auto& [engine, n] : engines) {
    EXPECT_GE(n, 10) << engine << " got too few of 64";
    EXPECT_LE(n, 22) << engine << " got too many of 64";
  }
}

// Affinity lets go of a saturated warm endpoint: same-prefix streams stay on the engine that
// has the prefix until the tokens in flight there pass sluice-default's threshold, then the
// next ones go elsewhere. Streams are held open so the load is exact.
TEST_F(SchedulingTest, ASaturatedWarmEndpointIsReleased) {
  start(4, "sluice-default");
  for (auto& sim : sims_)
    sim->control().hold_after_first = true;
  const std::string system(4000, 'S');
  std::vector<std::unique_ptr<TestConnection>> clients;
  std::vector<std::string> engines;
  for (int i = 0; i < 24; ++i) {
    clients.push_back(std::make_unique<TestConnection>(router_->listenerPort()));
    // Each reserves its prompt (~1,000 tokens) plus 3,000 output tokens while it runs.
    std::string body = chat(system, "question " + std::to_string(i), 3000);
    body.insert(1, R"("stream":true,)");
    ASSERT_TRUE(clients.back()->send(postRequest("/v1/chat/completions", body)));
    auto head = clients.back()->readHead();
    ASSERT_TRUE(head);
    ASSERT_EQ(head->status, 200);
    engines.push_back(head->header("x-sim-engine"));
  }
  // The first ones stay together on the warm engine...
  for (int i = 1; i < 6; ++i) {
    EXPECT_EQ(engines[i], engines[0]) << "request " << i;
  }
  // ...and once it carries ~32k tokens more than the others, new ones go elsewhere.
  int elsewhere = 0;
  for (const auto& e : engines)
    elsewhere += e != engines[0];
  EXPECT_GE(elsewhere, 4);
  EXPECT_LE(std::count(engines.begin(), engines.end(), engines[0]), 12);
  // The clients hang up; the router cancels the streams upstream.
  clients.clear();
  for (auto& sim : sims_)
    sim->release();
}

TEST_F(SchedulingTest, AFailingEndpointIsRetriedAroundAndEjected) {
  start(2, "sluice-default");
  sims_[1]->control().setFault(sim::Fault::Reset);
  for (int i = 0; i < 30; ++i) {
    auto r = testing::request(
        router_->listenerPort(), "POST", "/v1/completions",
        R"({"model":"m","prompt":"p)" + std::to_string(i) + R"(","max_tokens":1})");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << "every request is retried on the healthy endpoint";
  }
  // Five consecutive failures eject it; after that it is not tried again (the ejection lasts
  // 10 s, far longer than this test).
  EXPECT_LE(sims_[1]->control().requests.load(), 5);
  EXPECT_EQ(sims_[0]->control().requests.load(), 30);
  auto m = testing::request(router_->metricsPort(), "GET", "/metrics");
  EXPECT_THAT(m->body, ::testing::HasSubstr("sluice_endpoint_ejections_total 1\n"));
}

TEST_F(SchedulingTest, DecisionsAreExplainedAtTheAdminEndpoint) {
  start(3, "gie-default");
  for (int i = 0; i < 3; ++i) {
    auto r = testing::request(router_->listenerPort(), "POST", "/v1/completions",
                              R"({"model":"m","prompt":"x","max_tokens":1})",
                              "x-request-id: explain-" + std::to_string(i) + "\r\n");
    ASSERT_TRUE(r);
  }
  auto d = testing::request(router_->adminPort(), "GET", "/debug/decisions");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->status, 200);
  EXPECT_THAT(d->body, ::testing::HasSubstr("\"request_id\":\"explain-2\",\"model\":\"m\","
                                            "\"decision\":{\"profile\":\"gie-default\""));
  EXPECT_THAT(d->body, ::testing::HasSubstr("\"scores\":{\"queue\":"));
}

TEST_F(SchedulingTest, ASessionHeaderKeepsASessionOnOneEngine) {
  fleet_.start(4, {}, {"m"});
  config::ConfigErrors errors;
  std::string yaml = R"(
listener: {address: 127.0.0.1, port: 0}
admin: {address: 127.0.0.1, port: 0}
metrics: {address: 127.0.0.1, port: 0}
workers: 2
access_log: {path: "off"}
metrics_fetcher: {enabled: false}
scheduler:
  plugins: [{type: session-affinity-scorer}, {type: token-load-scorer}]
  schedulingProfiles:
    - name: sticky
      plugins: [{pluginRef: session-affinity-scorer, weight: 10}, {pluginRef: token-load-scorer}]
  defaultProfile: sticky
models:
  - name: m
    endpoints: [)";
  for (size_t i = 0; i < sims_.size(); ++i) {
    yaml += (i ? ", " : "") + std::string("127.0.0.1:") + std::to_string(sims_[i]->port());
  }
  yaml += "]\n";
  auto cfg = config::parseRouterConfig(yaml, errors);
  ASSERT_TRUE(cfg) << ::testing::PrintToString(errors.errors);
  router_ = std::make_unique<server::Server>(*cfg, base::RealTimeSource::instance(), 5);
  ASSERT_TRUE(router_->start());
  std::map<std::string, std::set<std::string>> engines_by_session;
  for (int i = 0; i < 24; ++i) {
    const std::string session = "user-" + std::to_string(i % 6);
    auto r = testing::request(router_->listenerPort(), "POST", "/v1/completions",
                              R"({"model":"m","prompt":"x","max_tokens":1})",
                              "x-session-id: " + session + "\r\n");
    ASSERT_TRUE(r);
    engines_by_session[session].insert(r->header("x-sim-engine"));
  }
  std::set<std::string> all;
  for (const auto& [session, engines] : engines_by_session) {
    EXPECT_EQ(engines.size(), 1u) << session;
    all.insert(engines.begin(), engines.end());
  }
  EXPECT_GE(all.size(), 2u);  // six sessions do not all land on one engine
}

// LoRA requests go where the adapter can be served: only one of three engines has the adapter;
// the router learns it from the engines' /v1/models and never sends the adapter elsewhere.
TEST(SchedulingLora, AdapterRequestsGoWhereTheAdapterIs) {
  testing::SimFleet with_adapter, without;
  sim::SimOptions lora;
  lora.engine.lora_adapters = {"sql-lora"};
  with_adapter.start(1, lora, {"m"});
  without.start(2, {}, {"m"});
  std::vector<base::HostPort> endpoints = with_adapter.endpoints();
  for (const auto& ep : without.endpoints())
    endpoints.push_back(ep);
  config::RouterConfig c = testing::loopbackConfig(endpoints);
  c.models[0].name = "sql-lora";  // clients ask for the adapter by name
  c.metrics_fetcher.enabled = true;
  c.metrics_fetcher.interval = std::chrono::milliseconds(20);
  c.metrics_fetcher.models_interval = std::chrono::milliseconds(20);
  c.scheduler.preset = "sluice-default";
  server::Server router(c, base::RealTimeSource::instance(), 11);
  ASSERT_TRUE(router.start());
  // Wait until the fetcher has read the adapter list.
  ASSERT_TRUE(testing::waitFor([&] {
    auto r = testing::request(router.adminPort(), "GET", "/debug/endpoints");
    return r && r->body.find("sql-lora") != std::string::npos;
  }));
  for (int i = 0; i < 12; ++i) {
    auto r = testing::request(router.listenerPort(), "POST", "/v1/completions",
                              R"({"model":"sql-lora","prompt":"select","max_tokens":1})");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << r->body;
  }
  EXPECT_EQ(with_adapter.sims[0]->control().requests.load(), 12);
  EXPECT_EQ(without.sims[0]->control().requests.load() + without.sims[1]->control().requests.load(),
            0);
}

TEST_F(SchedulingTest, RandomPresetStillServes) {
  start(3, "random");
  for (int i = 0; i < 6; ++i) {
    auto r = testing::request(router_->listenerPort(), "POST", "/v1/completions",
                              R"({"model":"m","prompt":"x","max_tokens":1})");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
  }
}

}  // namespace
}  // namespace sluice
