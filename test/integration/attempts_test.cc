// The attempt stage (server/attempts.h) driven through a fake transport: which targets are
// tried in which order, when a request is resent on a fresh connection, what the client gets
// when every attempt fails, and what counts against an endpoint. The session is a real socket
// pair on loopback; time is a FakeTimeSource.
#include "server/attempts.h"

#include <deque>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "base/asio.h"
#include "metrics/access_log.h"
#include "metrics/metrics.h"
#include "router/snapshot.h"
#include "server/context.h"
#include "server/worker.h"

namespace sluice::server {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// What one send() does.
struct Step {
  error_code ec;
  bool reused = false;
  bool connect_failed = false;
  int status = 200;
  bool stale = false;
};

class FakeTransport final : public Transport {
 public:
  std::deque<Step> script;
  std::vector<std::string> sends;  // "address" or "address fresh"
  int drops = 0;
  bool relayed = false;

  awaitable<void> send(const Target& t, bool fresh, std::chrono::milliseconds,
                       std::chrono::milliseconds, SendResult& r) override {
    sends.push_back(fresh ? t.address + " fresh" : t.address);
    current_ = script.empty() ? Step{} : script.front();
    if (!script.empty()) {
      script.pop_front();
    }
    r.ec = current_.ec;
    r.reused = current_.reused;
    r.connect_failed = current_.connect_failed;
    co_return;
  }
  int status() const override { return current_.status; }
  const bhttp::response_header<>& head() const override { return head_; }
  bool stale(const error_code&) const override { return current_.stale; }
  void drop() override { ++drops; }
  awaitable<void> relay(Exchange& x, const RouteChoice&, RelayArgs) override {
    relayed = true;
    x.status = current_.status;
    co_return;
  }

 private:
  Step current_;
  bhttp::response_header<> head_;
};

class AttemptsTest : public ::testing::Test {
 protected:
  AttemptsTest()
      : registry_(1),
        log_("off", 1, dropped_),
        scheduler_(std::make_shared<scheduler::PrefixIndex>()),
        ctx_{time_, registry_, log_, &scheduler_, {}, {}, {}, {}, {}},
        worker_(0, ctx_, 7) {
    config::RouterConfig c;
    c.upstream.eject_after_failures = 1;
    c.models.push_back({"m", "", "vllm", "", {{"127.0.0.1", 9001}, {"127.0.0.2", 9002}}});
    auto snap = router::buildSnapshot(c, 1, endpoints_);
    EXPECT_TRUE(snap);
    auto gen = std::make_shared<Generation>();
    gen->snapshot = *snap;
    gen_ = gen;
    for (const auto& ep : gen_->snapshot->findModel("m")->endpoints) {
      plan_.targets.push_back({&ep, ep.address, {}});
    }
    static const std::vector<int> kRetried = {503};
    plan_.retry_codes = &kRetried;
    plan_.attempt_timeout = std::chrono::seconds(5);
  }

  // Runs the attempts for one request; returns what the client received.
  std::string run(FakeTransport& t) {
    asio::io_context ioc;
    tcp::acceptor acceptor(ioc, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    tcp::socket client(ioc);
    client.connect(acceptor.local_endpoint());
    tcp::socket server = acceptor.accept();
    Session s(worker_, std::move(server), 8080);
    bhttp::request<http::PaddedBody> req;
    Exchange x(s, req, gen_);
    x.request_id = "req-1";
    x.start = time_.monotonicNow();
    x.deadline = deadline_;
    ClientWatch watch(s);
    asio::co_spawn(ioc, runAttempts(x, route_, t, watch, plan_, RelayArgs{}), asio::detached);
    ioc.run();
    attempts_ = x.attempts;
    endpoint_ = x.endpoint;
    status_ = x.status;
    s.stream.socket().shutdown(tcp::socket::shutdown_send);
    std::string out;
    error_code ec;
    char buf[4096];
    while (true) {
      size_t n = client.read_some(asio::buffer(buf), ec);
      if (ec) {
        break;
      }
      out.append(buf, n);
    }
    return out;
  }

  uint32_t failuresOf(size_t i) const {
    return plan_.targets[i].endpoint->state->consecutive_failures.load() +
           plan_.targets[i].endpoint->state->ejections.load();
  }

  base::FakeTimeSource time_;
  std::atomic<uint64_t> dropped_{0};
  metrics::Registry registry_;
  metrics::AccessLog log_;
  scheduler::Scheduler scheduler_;
  ServerContext ctx_;
  Worker worker_;
  router::EndpointRegistry endpoints_;
  GenerationPtr gen_;
  AttemptPlan plan_;
  RouteChoice route_;
  std::optional<base::MonoTime> deadline_;
  int attempts_ = 0;
  int status_ = 0;
  std::string endpoint_;
};

TEST_F(AttemptsTest, AConnectFailureMovesToTheNextEndpointAndCountsAgainstIt) {
  FakeTransport t;
  t.script = {Step{asio::error::connection_refused, false, true}, Step{}};
  EXPECT_EQ(run(t), "");
  EXPECT_TRUE(t.relayed);
  EXPECT_THAT(t.sends, ElementsAre("127.0.0.1:9001", "127.0.0.2:9002"));
  EXPECT_EQ(attempts_, 2);
  EXPECT_EQ(endpoint_, "127.0.0.2:9002");
  EXPECT_EQ(failuresOf(0), 1u);  // ejected: eject_after_failures is 1
  EXPECT_EQ(failuresOf(1), 0u);
}

TEST_F(AttemptsTest, AStalePooledConnectionIsResentOnceOnAFreshOne) {
  FakeTransport t;
  t.script = {Step{asio::error::connection_reset, true, false, 200, true}, Step{}};
  run(t);
  EXPECT_TRUE(t.relayed);
  EXPECT_THAT(t.sends, ElementsAre("127.0.0.1:9001", "127.0.0.1:9001 fresh"));
  EXPECT_EQ(attempts_, 1);
  EXPECT_EQ(failuresOf(0), 0u);  // a closed pooled connection is not the endpoint's fault
}

TEST_F(AttemptsTest, AFreshConnectionThatFailsTooIsAFailedAttempt) {
  FakeTransport t;
  Step stale{asio::error::connection_reset, true, false, 200, true};
  t.script = {stale, stale, Step{}};
  run(t);
  EXPECT_THAT(t.sends, ElementsAre("127.0.0.1:9001", "127.0.0.1:9001 fresh", "127.0.0.2:9002"));
  EXPECT_EQ(failuresOf(0), 1u);
}

TEST_F(AttemptsTest, ARetriedStatusGoesToTheNextEndpointButTheLastIsRelayed) {
  FakeTransport t;
  t.script = {Step{{}, false, false, 503}, Step{{}, false, false, 503}};
  run(t);
  EXPECT_THAT(t.sends, ElementsAre("127.0.0.1:9001", "127.0.0.2:9002"));
  EXPECT_TRUE(t.relayed);
  EXPECT_EQ(status_, 503);  // nothing left to try: the client gets the endpoint's answer
  EXPECT_EQ(t.drops, 1);    // the first 503's connection was dropped
}

TEST_F(AttemptsTest, WhenEveryAttemptFailsTheClientGetsTheLastFailure) {
  FakeTransport t;
  t.script = {Step{asio::error::connection_refused, false, true},
              Step{asio::error::timed_out, false, false}};
  const std::string out = run(t);
  EXPECT_FALSE(t.relayed);
  EXPECT_THAT(out, HasSubstr("HTTP/1.1 504"));
  EXPECT_THAT(out, HasSubstr("endpoint 127.0.0.2:9002 did not answer in time"));
  EXPECT_THAT(out, HasSubstr("x-request-id: req-1"));
}

TEST_F(AttemptsTest, NoRetryPastTheRequestsDeadline) {
  deadline_ = time_.monotonicNow();  // already due when the second attempt would start
  FakeTransport t;
  t.script = {Step{asio::error::connection_refused, false, true}};
  const std::string out = run(t);
  EXPECT_THAT(t.sends, ElementsAre("127.0.0.1:9001"));
  EXPECT_THAT(out, HasSubstr("HTTP/1.1 504"));
  EXPECT_THAT(out, HasSubstr("the request's deadline passed before another attempt"));
}

TEST_F(AttemptsTest, AProviderFailureNamesTheProviderAndCountsAgainstNoEndpoint) {
  plan_.targets = {{nullptr, "api.example.com:443", "default/openai"}};
  FakeTransport t;
  t.script = {Step{asio::error::host_not_found, false, true}};
  const std::string out = run(t);
  EXPECT_THAT(out, HasSubstr("HTTP/1.1 502"));
  EXPECT_THAT(out, HasSubstr("connecting to external provider default/openai failed"));
  EXPECT_EQ(endpoint_, "api.example.com:443");
}

}  // namespace
}  // namespace sluice::server
