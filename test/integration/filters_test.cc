// The filters on the request path: authentication modes, credential hygiene, model access,
// rate limits with Retry-After, and reconciliation against real usage from the engines.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "fakes/sim_fleet.h"
#include "fakes/test_client.h"
#include "filters/auth.h"
#include "server/server.h"

namespace sluice {
namespace {

using ::testing::HasSubstr;

std::string body(const std::string& model, int max_tokens = 4) {
  return R"({"model":")" + model + R"(","max_tokens":)" + std::to_string(max_tokens) +
         R"(,"messages":[{"role":"user","content":"hello there"}]})";
}

class FiltersTest : public ::testing::Test {
 protected:
  void start(const std::function<void(config::RouterConfig&)>& edit) {
    fleet_.start(1, {}, {"m", "other"});
    auto c = testing::loopbackConfig(fleet_.endpoints());
    config::RouterConfig::Model other = c.models[0];
    other.name = "other";
    c.models.push_back(other);
    edit(c);
    router_ = std::make_unique<server::Server>(c, base::RealTimeSource::instance(), 3);
    auto r = router_->start();
    ASSERT_TRUE(r) << r.error().message;
  }
  std::optional<testing::HttpResponse> post(const std::string& model,
                                            const std::string& headers = "", int max_tokens = 4) {
    return testing::request(router_->listenerPort(), "POST", "/v1/chat/completions",
                            body(model, max_tokens), headers);
  }
  static std::string hashOf(const std::string& key) {
    auto h = filters::sha256(key);
    return filters::toHex(h.data(), h.size());
  }

  testing::SimFleet fleet_;
  std::unique_ptr<server::Server> router_;
};

TEST_F(FiltersTest, ApiKeysModelsAndCredentialHygiene) {
  start([](config::RouterConfig& c) {
    c.auth.mode = "required";
    config::RouterConfig::Auth::ApiKey k;
    k.id = "alice";
    k.key_sha256 = hashOf("sk-alice");
    k.models = {"m"};
    c.auth.api_keys.push_back(k);
  });
  auto r = post("m");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(r->header("www-authenticate"), "Bearer");
  EXPECT_THAT(r->body, HasSubstr(R"("code":"invalid_api_key")"));
  r = post("m", "Authorization: Bearer sk-nope\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_THAT(r->body, ::testing::Not(HasSubstr("sk-nope")));
  // An unknown model is not revealed to an unauthenticated client either.
  r = post("no-such-model");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  r = post("m", "Authorization: Bearer sk-alice\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  // The key is not forwarded to the model server.
  EXPECT_THAT(fleet_.sims[0]->control().lastRequestHead(), ::testing::Not(HasSubstr("sk-alice")));
  r = post("other", "x-api-key: sk-alice\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 403);
  EXPECT_THAT(r->body, HasSubstr(R"("code":"model_not_allowed")"));
  auto m = testing::request(router_->metricsPort(), "GET", "/metrics");
  ASSERT_TRUE(m);
  EXPECT_THAT(m->body, HasSubstr(R"(sluice_filter_rejections_total{reason="unauthorized"} 3)"));
  EXPECT_THAT(m->body, HasSubstr(R"(sluice_filter_rejections_total{reason="forbidden"} 1)"));
  EXPECT_THAT(m->body, ::testing::Not(HasSubstr("sk-alice")));
  auto dbg = testing::request(router_->adminPort(), "GET", "/debug/config");
  ASSERT_TRUE(dbg);
  EXPECT_THAT(dbg->body, ::testing::Not(HasSubstr("sk-alice")));
}

TEST_F(FiltersTest, TokenLimitReservesThenReconciles) {
  // 100 total tokens per hour per identity. A request reserves its prompt estimate plus
  // max_tokens before it is admitted; a failed one gives its reservation back.
  start([](config::RouterConfig& c) {
    c.auth.mode = "optional";
    c.upstream.eject_after_failures = 0;
    config::RouterConfig::RateLimit rl;
    rl.name = "per-identity";
    rl.per = {"identity"};
    rl.spec.total_tokens = 100;
    rl.spec.unit = "hour";
    c.rate_limits.push_back(rl);
    config::RouterConfig::RateLimit req;
    req.name = "requests";
    req.spec.requests = 6;
    req.spec.unit = "hour";
    c.rate_limits.push_back(req);
  });
  fleet_.sims[0]->control().setFault(sim::Fault::Status503);
  auto r = post("m", "", 60);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 503) << r->body;
  fleet_.sims[0]->control().setFault(sim::Fault::None);
  // Refunded: ~70 tokens fit again (they would not on top of the failed request's 70).
  std::string last_body;
  EXPECT_TRUE(testing::waitFor([&] {
    auto again = post("m", "", 60);
    last_body = again ? again->body : "";
    return again && again->status == 200;
  })) << last_body;
  // Served and used: now the next 70 do not fit.
  r = post("m", "", 60);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 429) << r->body;
  EXPECT_FALSE(r->header("retry-after").empty());
  // A request that can never fit is refused without a Retry-After.
  r = post("m", "", 500);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 429);
  EXPECT_THAT(r->body, HasSubstr("more than the limit"));
  EXPECT_EQ(r->header("retry-after"), "");
  // The request count limit (6 per hour) runs out, with a Retry-After.
  int last = 0;
  std::string retry_after;
  for (int i = 0; i < 6 && last != 429; ++i) {
    auto x = post("m", "", 1);
    ASSERT_TRUE(x);
    last = x->status;
    retry_after = x->header("retry-after");
  }
  EXPECT_EQ(last, 429);
  EXPECT_FALSE(retry_after.empty());
}

}  // namespace
}  // namespace sluice
