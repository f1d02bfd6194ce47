// The metrics fetcher against simulated engines in-process, and the router using what it finds.
#include <future>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "backends/metrics_fetcher.h"
#include "base/asio.h"
#include "fakes/sim_fleet.h"
#include "fakes/test_client.h"
#include "router/snapshot.h"
#include "server/server.h"
#include "sim/sim_server.h"

namespace sluice {
namespace {

using ::testing::HasSubstr;
using testing::postRequest;
using testing::TestConnection;
using testing::waitFor;

class FetcherTest : public ::testing::Test {
 protected:
  ~FetcherTest() override {
    fetcher_.reset();
    router_.reset();
  }

  void startSims(int n, sim::SimOptions options = {}) { fleet_.start(n, options, {"m"}); }

  router::Endpoint endpointOf(size_t i) {
    config::RouterConfig c;
    c.models.push_back({"m", "", "vllm", "", {{"127.0.0.1", sims_[i]->port()}}});
    auto snap = router::buildSnapshot(c, 1, registry_);
    return (*snap)->findModel("m")->endpoints[0];
  }

  void startFetcher(std::vector<backends::FetchTarget> targets) {
    backends::FetcherConfig fc;
    fc.interval = std::chrono::milliseconds(10);
    fc.timeout = std::chrono::milliseconds(500);
    fc.unhealthy_after = 3;
    fetcher_ =
        std::make_unique<backends::MetricsFetcher>(fc, base::RealTimeSource::instance(), nullptr);
    fetcher_->setTargets(std::move(targets));
    fetcher_->start();
  }

  // Reads engine state on the simulator's own thread.
  sim::EngineStats statsOf(size_t i) {
    std::promise<sim::EngineStats> p;
    asio::post(sim_ioc_, [&] { p.set_value(sims_[i]->engineStats()); });
    return p.get_future().get();
  }

  const backends::EndpointMetrics* viewOf(const std::string& address) {
    view_ = fetcher_->latest();
    return view_->find(address);
  }

  testing::SimFleet fleet_;
  std::vector<std::unique_ptr<sim::SimServer>>& sims_ = fleet_.sims;
  asio::io_context& sim_ioc_ = fleet_.ioc;
  router::EndpointRegistry registry_;
  std::unique_ptr<backends::MetricsFetcher> fetcher_;
  std::unique_ptr<server::Server> router_;
  backends::MetricsViewPtr view_;
};

TEST_F(FetcherTest, ViewMatchesTheEnginesState) {
  sim::SimOptions o;
  o.engine.max_num_seqs = 2;
  o.engine.step_overhead_ms = 20;
  o.engine.block_size = 32;
  o.engine.num_gpu_blocks = 5000;
  startSims(1, o);
  auto ep = endpointOf(0);
  startFetcher({{ep, backends::EngineType::Vllm}});
  // Five long streams: two run, three wait, for seconds.
  std::vector<std::unique_ptr<TestConnection>> clients;
  for (int i = 0; i < 5; ++i) {
    clients.push_back(std::make_unique<TestConnection>(sims_[0]->port()));
    ASSERT_TRUE(clients.back()->send(
        postRequest("/v1/completions", R"({"model":"m","prompt":")" + std::string(400, 'a' + i) +
                                           R"(","stream":true,"max_tokens":5000})")));
  }
  ASSERT_TRUE(waitFor([&] { return statsOf(0).running == 2 && statsOf(0).waiting == 3; }));
  ASSERT_TRUE(waitFor([&] {
    const auto* m = viewOf(ep.address);
    return m && m->scraped && m->running == 2 && m->waiting == 3;
  }));
  const auto* m = viewOf(ep.address);
  const auto st = statsOf(0);
  EXPECT_TRUE(m->healthy);
  EXPECT_NEAR(m->kv_usage, st.kv_usage, 0.01);
  EXPECT_GT(m->kv_usage, 0);
  EXPECT_EQ(m->block_size, 32u);
  EXPECT_EQ(m->num_blocks, 5000u);
  EXPECT_EQ(m->max_loras, 4);
  // TTFT and ITL means come from histogram deltas once tokens flow.
  ASSERT_TRUE(waitFor([&] {
    const auto* v = viewOf(ep.address);
    return v && v->ttft_s > 0 && v->itl_s > 0;
  }));
  // A step never takes less than its modelled 20 ms, so neither does a token.
  EXPECT_GE(viewOf(ep.address)->itl_s, 0.0199);
  EXPECT_THAT(viewOf(ep.address)->adapters, ::testing::ElementsAre("m"));
  EXPECT_GT(fetcher_->scrapes(), 0u);
}

TEST_F(FetcherTest, SglangNamesAreReadWithTheSglangMapping) {
  sim::SimOptions o;
  o.kind = sim::EngineKind::Sglang;
  o.engine.max_num_seqs = 1;
  o.engine.step_overhead_ms = 20;
  startSims(1, o);
  auto ep = endpointOf(0);
  startFetcher({{ep, backends::EngineType::Sglang}});
  std::vector<std::unique_ptr<TestConnection>> clients;
  for (int i = 0; i < 3; ++i) {
    clients.push_back(std::make_unique<TestConnection>(sims_[0]->port()));
    ASSERT_TRUE(clients.back()->send(postRequest(
        "/v1/completions", R"({"model":"m","prompt":"hello","stream":true,"max_tokens":5000})")));
  }
  ASSERT_TRUE(waitFor([&] {
    const auto* m = viewOf(ep.address);
    return m && m->running == 1 && m->waiting == 2 && m->kv_usage > 0;
  }));
}

TEST_F(FetcherTest, RepeatedFailuresMarkUnhealthyAndASuccessRecovers) {
  startSims(2);
  auto good = endpointOf(0);
  auto broken = endpointOf(1);
  startFetcher({{good, backends::EngineType::Vllm}, {broken, backends::EngineType::Vllm}});
  ASSERT_TRUE(waitFor([&] {
    const auto* m = viewOf(broken.address);
    return m && m->scraped;
  }));
  sims_[1]->control().metrics_down = true;
  ASSERT_TRUE(waitFor([&] {
    const auto* m = viewOf(broken.address);
    return m && !m->healthy;
  }));
  EXPECT_THAT(viewOf(broken.address)->last_error, HasSubstr("500"));
  EXPECT_TRUE(viewOf(good.address)->healthy);
  sims_[1]->control().metrics_down = false;
  EXPECT_TRUE(waitFor([&] {
    const auto* m = viewOf(broken.address);
    return m && m->healthy && m->consecutive_failures == 0;
  }));
}

TEST_F(FetcherTest, AnUnreachableEndpointIsUnhealthy) {
  startSims(0);
  config::RouterConfig c;
  c.models.push_back({"m", "", "vllm", "", {{"127.0.0.1", 1}}});  // nothing listens on port 1
  auto snap = router::buildSnapshot(c, 1, registry_);
  auto ep = (*snap)->findModel("m")->endpoints[0];
  startFetcher({{ep, backends::EngineType::Vllm}});
  ASSERT_TRUE(waitFor([&] {
    const auto* m = viewOf(ep.address);
    return m && !m->healthy;
  }));
  EXPECT_FALSE(viewOf(ep.address)->scraped);
  auto json = backends::metricsViewJson(*fetcher_->latest(), std::chrono::steady_clock::now());
  EXPECT_THAT(json, HasSubstr("\"address\":\"127.0.0.1:1\",\"healthy\":false,\"scraped\":false"));
}

TEST_F(FetcherTest, TheRouterSteersAwayFromUnhealthyEndpoints) {
  startSims(2);
  config::RouterConfig c = testing::loopbackConfig(fleet_.endpoints());
  c.metrics_fetcher.enabled = true;
  c.metrics_fetcher.interval = std::chrono::milliseconds(10);
  router_ = std::make_unique<server::Server>(c, base::RealTimeSource::instance(), 7);
  ASSERT_TRUE(router_->start());
  sims_[1]->control().metrics_down = true;
  const std::string bad = "127.0.0.1:" + std::to_string(sims_[1]->port());
  ASSERT_TRUE(waitFor([&] {
    auto r = testing::request(router_->adminPort(), "GET", "/debug/endpoints");
    return r && r->body.find("\"address\":\"" + bad + "\",\"healthy\":false") != std::string::npos;
  }));
  // Workers receive the view by message; give them the next publication too.
  const int before0 = sims_[0]->control().requests.load();
  const int before1 = sims_[1]->control().requests.load();
  ASSERT_TRUE(waitFor([&] {
    auto r = testing::request(router_->listenerPort(), "POST", "/v1/completions",
                              R"({"model":"m","prompt":"x","max_tokens":1})");
    return r && r->status == 200 && sims_[1]->control().requests.load() == before1;
  }));
  for (int i = 0; i < 10; ++i) {
    auto r = testing::request(router_->listenerPort(), "POST", "/v1/completions",
                              R"({"model":"m","prompt":"x","max_tokens":1})");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
  }
  EXPECT_GE(sims_[0]->control().requests.load(), before0 + 10);
  EXPECT_EQ(sims_[1]->control().requests.load(), before1);
}

}  // namespace
}  // namespace sluice
