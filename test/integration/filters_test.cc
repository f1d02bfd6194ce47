// The filters on the request path: authentication modes, credential hygiene, model access,
// rate limits with Retry-After, and reconciliation against real usage from the engines.
#include <atomic>
#include <mutex>
#include <netinet/in.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/hmac.h>

#include "base/strings.h"
#include "fakes/metric_sample.h"
#include "fakes/sim_fleet.h"
#include "fakes/test_client.h"
#include "filters/auth.h"
#include "server/server.h"
#include "sim/sim_server.h"

namespace sluice {
namespace {

using ::testing::HasSubstr;

std::string body(const std::string& model, int max_tokens = 4) {
  return R"({"model":")" + model + R"(","max_tokens":)" + std::to_string(max_tokens) +
         R"(,"messages":[{"role":"user","content":"hello there"}]})";
}

class FiltersTest : public ::testing::Test {
 protected:
  void start(const std::function<void(config::RouterConfig&)>& edit, sim::SimOptions o = {}) {
    fleet_.start(1, o, {"m", "other"});
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

// GET /v1/models is behind the same authentication, and a key limited to some models lists
// (and finds) only those.
TEST_F(FiltersTest, ModelListIsAuthenticatedAndFilteredByKey) {
  start([](config::RouterConfig& c) {
    c.auth.mode = "required";
    config::RouterConfig::Auth::ApiKey alice;
    alice.id = "alice";
    alice.key_sha256 = hashOf("sk-alice");
    alice.models = {"m"};
    c.auth.api_keys.push_back(alice);
    config::RouterConfig::Auth::ApiKey bob;
    bob.id = "bob";
    bob.key_sha256 = hashOf("sk-bob");
    c.auth.api_keys.push_back(bob);
  });
  const uint16_t port = router_->listenerPort();
  auto anonymous = testing::request(port, "GET", "/v1/models");
  ASSERT_TRUE(anonymous);
  EXPECT_EQ(anonymous->status, 401);
  EXPECT_EQ(anonymous->header("www-authenticate"), "Bearer");
  EXPECT_THAT(anonymous->body, ::testing::Not(HasSubstr(R"("id":"m")")));
  auto wrong = testing::request(port, "GET", "/v1/models", "", "x-api-key: sk-nope\r\n");
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 401);
  auto limited =
      testing::request(port, "GET", "/v1/models", "", "Authorization: Bearer sk-alice\r\n");
  ASSERT_TRUE(limited);
  EXPECT_EQ(limited->status, 200);
  EXPECT_THAT(limited->body, HasSubstr(R"("id":"m")"));
  EXPECT_THAT(limited->body, ::testing::Not(HasSubstr(R"("id":"other")")));
  auto all = testing::request(port, "GET", "/v1/models", "", "Authorization: Bearer sk-bob\r\n");
  ASSERT_TRUE(all);
  EXPECT_EQ(all->status, 200);
  EXPECT_THAT(all->body, HasSubstr(R"("id":"m")"));
  EXPECT_THAT(all->body, HasSubstr(R"("id":"other")"));
  auto one = testing::request(port, "GET", "/v1/models/other", "", "x-api-key: sk-alice\r\n");
  ASSERT_TRUE(one);
  EXPECT_EQ(one->status, 404);
  one = testing::request(port, "GET", "/v1/models/m", "", "x-api-key: sk-alice\r\n");
  ASSERT_TRUE(one);
  EXPECT_EQ(one->status, 200);
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
  // Kthena's name for the refusals, under the request's model, by what the limit counts: the
  // three 429s above all came from the token limit (it runs out before the request count).
  std::string metrics_text;
  EXPECT_TRUE(testing::waitFor([&] {
    auto m = testing::request(router_->metricsPort(), "GET", "/metrics");
    metrics_text = m ? m->body : "";
    return m && testing::hasSample(m->body, "kthena_router_rate_limit_exceeded_total",
                                   {R"(model="m")", R"(limit_type="total_tokens")"}, "3");
  })) << metrics_text;
  EXPECT_THAT(metrics_text, ::testing::Not(HasSubstr(R"(limit_type="requests")")));
}

// stop_streams_over_budget: a stream that goes on past the output tokens its limit reserved
// (here: no max_tokens, so 256 are reserved, and the engine writes 400) is ended with an SSE
// error event.
TEST_F(FiltersTest, StreamStoppedOverItsOutputBudget) {
  sim::SimOptions o;
  o.default_max_tokens = 400;
  start(
      [](config::RouterConfig& c) {
        c.stop_streams_over_budget = true;
        config::RouterConfig::RateLimit rl;
        rl.name = "output";
        rl.spec.output_tokens = 1'000'000;
        rl.spec.unit = "hour";
        c.rate_limits.push_back(rl);
      },
      o);
  testing::TestConnection conn(router_->listenerPort());
  conn.send(testing::postRequest(
      "/v1/chat/completions",
      R"({"model":"m","stream":true,"messages":[{"role":"user","content":"go on"}]})"));
  auto head = conn.readHead();
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  auto text = conn.readUntil("event: error");
  ASSERT_TRUE(text);
  size_t events = 0;
  for (size_t pos = 0; (pos = text->find("data: {\"id\"", pos)) != std::string::npos; ++pos) {
    ++events;
  }
  EXPECT_LE(events, 256u);
  EXPECT_GE(events, 200u);
  auto rest = conn.readUntil("\r\n0\r\n\r\n");
  ASSERT_TRUE(rest);
  EXPECT_THAT(*rest, HasSubstr("exceeded the output tokens"));
}

// A JWKS endpoint for tests: answers every request with the current document.
class JwksServer {
 public:
  JwksServer() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    ::listen(fd_, 16);
    socklen_t len = sizeof(addr);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] {
      while (true) {
        int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0)
          return;
        char buf[4096];
        std::string req;
        while (req.find("\r\n\r\n") == std::string::npos) {
          ssize_t n = ::read(c, buf, sizeof(buf));
          if (n <= 0)
            break;
          req.append(buf, static_cast<size_t>(n));
        }
        std::string body;
        {
          std::lock_guard<std::mutex> lock(mu_);
          body = body_;
        }
        fetches_.fetch_add(1);
        std::string resp = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                           std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
        ssize_t w = ::write(c, resp.data(), resp.size());
        (void)w;
        ::close(c);
      }
    });
  }
  ~JwksServer() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
  }
  void set(std::string body) {
    std::lock_guard<std::mutex> lock(mu_);
    body_ = std::move(body);
  }
  uint16_t port() const { return port_; }
  int fetches() const { return fetches_.load(); }

 private:
  int fd_;
  uint16_t port_ = 0;
  std::mutex mu_;
  std::string body_;
  std::atomic<int> fetches_{0};
  std::thread thread_;
};

std::string b64url(std::string_view in) {
  return base::base64UrlEncode(in);
}

std::string hs256(const std::string& kid, const std::string& secret) {
  std::string signing = b64url(R"({"alg":"HS256","kid":")" + kid + R"("})") + "." +
                        b64url(R"({"sub":"carol","exp":4102444800})");
  unsigned char mac[32];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(signing.data()), signing.size(), mac, &len);
  return signing + "." + b64url(std::string(reinterpret_cast<char*>(mac), len));
}

std::string jwks(const std::string& kid, const std::string& secret) {
  return R"({"keys":[{"kty":"oct","kid":")" + kid + R"(","k":")" + b64url(secret) + R"("}]})";
}

// Keys come from a JWKS URL, fetched before serving and refreshed in the background: a
// rotated key set takes over without a restart.
TEST_F(FiltersTest, JwksUrlFetchedAndRotated) {
  JwksServer jwks_server;
  jwks_server.set(jwks("k1", "first-secret-0123456789abcdef"));
  start([&](config::RouterConfig& c) {
    c.auth.mode = "required";
    c.auth.jwt.jwks_url = "http://127.0.0.1:" + std::to_string(jwks_server.port()) + "/jwks";
    c.auth.jwt.jwks_refresh = std::chrono::milliseconds(50);
  });
  const std::string t1 = hs256("k1", "first-secret-0123456789abcdef");
  const std::string t2 = hs256("k2", "second-secret-0123456789abcdef");
  auto r = post("m", "Authorization: Bearer " + t1 + "\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  r = post("m", "Authorization: Bearer " + t2 + "\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  jwks_server.set(jwks("k2", "second-secret-0123456789abcdef"));
  EXPECT_TRUE(testing::waitFor([&] {
    auto x = post("m", "Authorization: Bearer " + t2 + "\r\n");
    return x && x->status == 200;
  }));
  r = post("m", "Authorization: Bearer " + t1 + "\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
}

}  // namespace
}  // namespace sluice
