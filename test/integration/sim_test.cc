// sluice-sim's HTTP surface: the OpenAI API, LoRA adapters, fault injection and /admin.
#include <set>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "backends/engine_metrics.h"
#include "backends/prometheus.h"
#include "base/asio.h"
#include "fakes/test_client.h"
#include "sim/sim_server.h"

namespace sluice {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::postRequest;
using testing::TestConnection;

class SimTest : public ::testing::Test {
 protected:
  ~SimTest() override {
    ioc_.stop();
    if (thread_.joinable()) {
      thread_.join();
    }
  }
  void start(sim::SimOptions o = {}) {
    if (o.served_names == std::vector<std::string>{"sim-model"}) {
      o.served_names = {"base"};
    }
    sim_ = std::make_unique<sim::SimServer>(ioc_, o, std::make_shared<sim::SimControl>());
    ASSERT_FALSE(sim_->listen(tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)));
    sim_->start();
    thread_ = std::thread([this] {
      auto guard = asio::make_work_guard(ioc_);
      ioc_.run();
    });
    port_ = sim_->port();
  }
  std::optional<testing::HttpResponse> post(const std::string& path, const std::string& body) {
    return testing::request(port_, "POST", path, body);
  }

  asio::io_context ioc_{1};
  std::thread thread_;
  std::unique_ptr<sim::SimServer> sim_;
  uint16_t port_ = 0;
};

TEST_F(SimTest, ServesChatAndCompletionsWithUsage) {
  start();
  auto chat =
      post("/v1/chat/completions",
           R"({"model":"base","messages":[{"role":"user","content":"hi"}],"max_tokens":3})");
  ASSERT_TRUE(chat);
  EXPECT_EQ(chat->status, 200);
  EXPECT_EQ(chat->header("x-sim-engine"), "sim");
  EXPECT_THAT(chat->body, HasSubstr("\"object\":\"chat.completion\""));
  EXPECT_THAT(chat->body, HasSubstr("\"completion_tokens\":3"));
  auto stream = post("/v1/completions",
                     R"({"model":"base","prompt":"abcdefgh","max_tokens":2,"stream":true,
                         "stream_options":{"include_usage":true}})");
  ASSERT_TRUE(stream);
  EXPECT_THAT(stream->body, HasSubstr("\"text\":\"tok1 \""));
  EXPECT_THAT(stream->body, HasSubstr("\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":2"));
  EXPECT_THAT(stream->body, HasSubstr("data: [DONE]"));
  auto unknown = post("/v1/completions", R"({"model":"other","prompt":"x"})");
  EXPECT_EQ(unknown->status, 404);
  EXPECT_THAT(unknown->body, HasSubstr("model_not_found"));
}

TEST_F(SimTest, TokenIdPromptsAreUsedAsTheyAre) {
  start();
  auto r = post("/v1/completions", R"({"model":"base","prompt":[1,2,3,4,5],"max_tokens":1})");
  ASSERT_TRUE(r);
  EXPECT_THAT(r->body, HasSubstr("\"prompt_tokens\":5"));
}

TEST_F(SimTest, ListsAdaptersAndServesThem) {
  sim::SimOptions o;
  o.engine.lora_adapters = {"sql-lora", "chat-lora"};
  o.engine.lora_load_ms = 1;
  start(o);
  auto models = testing::request(port_, "GET", "/v1/models");
  ASSERT_TRUE(models);
  EXPECT_THAT(backends::parseModelIds(models->body), ElementsAre("base", "sql-lora", "chat-lora"));
  EXPECT_THAT(models->body, HasSubstr("\"id\":\"sql-lora\",\"object\":\"model\""));
  EXPECT_THAT(models->body, HasSubstr("\"parent\":\"base\""));
  auto r = post("/v1/completions", R"({"model":"sql-lora","prompt":"select","max_tokens":2})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_THAT(r->body, HasSubstr("\"model\":\"sql-lora\""));
}

TEST_F(SimTest, RefusesContextsLongerThanTheModel) {
  sim::SimOptions o;
  o.engine.max_model_len = 64;
  start(o);
  auto r = post("/v1/completions",
                R"({"model":"base","prompt":")" + std::string(400, 'x') + R"(","max_tokens":10})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_THAT(r->body, HasSubstr("maximum context length is 64"));
}

TEST_F(SimTest, ErrorRateInjection) {
  start();
  sim_->control().error_rate = 1.0;
  sim_->control().error_status = 429;
  auto r = post("/v1/completions", R"({"model":"base","prompt":"x"})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 429);
  EXPECT_THAT(r->body, HasSubstr("\"code\":\"rate_limit_exceeded\""));
  sim_->control().error_types = sim::parseErrorTypes("500,503");
  std::set<int> seen;
  for (int i = 0; i < 40; ++i) {
    seen.insert(post("/v1/completions", R"({"model":"base","prompt":"x"})")->status);
  }
  EXPECT_EQ(seen, (std::set<int>{500, 503}));  // both types, from a fixed seed
  EXPECT_EQ(sim::parseErrorTypes("429,404"), -1);
  sim_->control().error_rate = 0.0;
  EXPECT_EQ(post("/v1/completions", R"({"model":"base","prompt":"x"})")->status, 200);
}

TEST_F(SimTest, SlowStartAnswers503UntilReady) {
  start();
  sim_->control().ready_at_ms = 1e12;
  EXPECT_EQ(testing::request(port_, "GET", "/health")->status, 503);
  EXPECT_EQ(post("/v1/completions", R"({"model":"base","prompt":"x"})")->status, 503);
  sim_->control().ready_at_ms = 0;
  EXPECT_EQ(testing::request(port_, "GET", "/health")->status, 200);
}

TEST_F(SimTest, DisconnectInjectionCutsStreams) {
  start();
  sim_->control().disconnect_rate = 1.0;
  TestConnection c(port_);
  ASSERT_TRUE(c.send(postRequest(
      "/v1/completions", R"({"model":"base","prompt":"x","stream":true,"max_tokens":20})")));
  auto r = c.readResponse();
  EXPECT_FALSE(r);  // the chunked body never finishes
  EXPECT_TRUE(c.waitClosed());
}

TEST_F(SimTest, StallInjectionPausesThenFinishes) {
  start();
  sim_->control().stall_rate = 1.0;
  sim_->control().stall_ms = 50;
  auto r = post("/v1/completions", R"({"model":"base","prompt":"x","stream":true,"max_tokens":5})");
  ASSERT_TRUE(r);
  EXPECT_THAT(r->body, HasSubstr("tok4"));
  EXPECT_THAT(r->body, HasSubstr("[DONE]"));
}

TEST_F(SimTest, AdminSwitchesFaultsAtRunTime) {
  start();
  auto set = post("/admin", R"({"fault":"503"})");
  ASSERT_TRUE(set);
  EXPECT_EQ(set->status, 200);
  EXPECT_THAT(set->body, HasSubstr("\"fault\":3"));
  EXPECT_EQ(post("/v1/completions", R"({"model":"base","prompt":"x"})")->status, 503);
  post("/admin", R"({"fault":"none","error_rate":0.0,"metrics_down":1})");
  EXPECT_EQ(post("/v1/completions", R"({"model":"base","prompt":"x"})")->status, 200);
  EXPECT_EQ(testing::request(port_, "GET", "/metrics")->status, 500);
  auto state = testing::request(port_, "GET", "/admin");
  EXPECT_THAT(state->body, HasSubstr("\"requests\":"));
  EXPECT_EQ(post("/admin", "not json")->status, 400);
}

TEST_F(SimTest, MetricsUseTheEnginesNames) {
  const std::pair<sim::EngineKind, std::vector<std::string>> kinds[] = {
      {sim::EngineKind::Vllm,
       {"vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
        "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total",
        "vllm:time_to_first_token_seconds_bucket", "vllm:inter_token_latency_seconds_sum",
        "vllm:e2e_request_latency_seconds_count", "vllm:lora_requests_info",
        "vllm:cache_config_info"}},
      {sim::EngineKind::VllmV0,
       {"vllm:gpu_cache_usage_perc", "vllm:time_per_output_token_seconds_count"}},
      {sim::EngineKind::Sglang,
       {"sglang:num_running_reqs", "sglang:num_queue_reqs", "sglang:token_usage",
        "sglang:cache_hit_rate", "sglang:time_to_first_token_seconds_count",
        "sglang:inter_token_latency_seconds_count"}},
  };
  for (const auto& [kind, names] : kinds) {
    asio::io_context ioc;
    sim::SimOptions o;
    o.kind = kind;
    sim::SimServer s(ioc, o, std::make_shared<sim::SimControl>());
    std::string text = s.renderMetrics();
    std::set<std::string> seen;
    auto r = backends::parsePrometheusText(text, [&](const backends::PromSample& p) {
      seen.insert(std::string(p.name));
      if (p.name == "vllm:num_requests_running" || p.name == "sglang:num_running_reqs") {
        EXPECT_EQ(backends::promLabel(p.labels, "model_name").value_or(""), "sim-model");
      }
    });
    ASSERT_TRUE(r) << r.error().message;
    for (const auto& n : names) {
      EXPECT_TRUE(seen.count(n)) << n;
    }
  }
}

}  // namespace
}  // namespace sluice
