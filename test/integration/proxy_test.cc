// In-process integration tests: the real Server on 127.0.0.1:0 against simulated engines
// running on their own io_context thread, driven by a raw-socket client.
#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <fstream>
#include <iterator>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "base/asio.h"
#include "fakes/sim_fleet.h"
#include "fakes/test_client.h"
#include "server/server.h"
#include "sim/sim_server.h"

namespace sluice {
namespace {

using ::testing::HasSubstr;
using testing::HttpResponse;
using ::testing::Not;
using testing::postRequest;
using testing::TestConnection;
using testing::waitFor;

const std::string kChat = "/v1/chat/completions";

// A port on which nothing listens (connections are refused).
uint16_t closedPort() {
  return testing::freePort();
}

class ProxyTest : public ::testing::Test {
 protected:
  void startSims(int n, sim::SimOptions options = {}) { fleet_.start(n, options); }
  config::RouterConfig baseConfig() { return testing::loopbackConfig(fleet_.endpoints()); }

  void startRouter(const config::RouterConfig& c) {
    router_ = std::make_unique<server::Server>(c, base::RealTimeSource::instance(), 12345);
    auto r = router_->start();
    ASSERT_TRUE(r) << r.error().message;
    port_ = router_->listenerPort();
  }

  void startDefault(int sims = 1, sim::SimOptions options = {}) {
    startSims(sims, options);
    startRouter(baseConfig());
  }

  sim::SimControl& sim(size_t i = 0) { return sims_[i]->control(); }
  void expectRetriedOnAnotherEndpoint(sim::Fault fault, int status, size_t healed);
  std::string metricsText() {
    auto r = testing::request(router_->metricsPort(), "GET", "/metrics");
    return r ? r->body : "";
  }
  // Metrics are recorded just after the last byte goes out, so a test waits for them.
  bool metricsShow(const std::string& needle) {
    return waitFor([&] { return metricsText().find(needle) != std::string::npos; });
  }

  testing::SimFleet fleet_;  // declared first: outlives the router
  std::vector<std::unique_ptr<sim::SimServer>>& sims_ = fleet_.sims;
  std::unique_ptr<server::Server> router_;
  uint16_t port_ = 0;
};

TEST_F(ProxyTest, ProxiesANonStreamingRequest) {
  startDefault();
  auto r = testing::request(
      port_, "POST", kChat,
      R"({"model":"m","messages":[{"role":"user","content":"hello"}],"max_tokens":3})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->header("content-type"), "application/json");
  EXPECT_THAT(r->body, HasSubstr("\"content\":\"tok0 tok1 tok2 \""));
  EXPECT_EQ(r->header("x-sim-engine"), "sim-0");
  EXPECT_EQ(r->header("x-request-id").size(), 32u);
  EXPECT_FALSE(r->header("content-length").empty());
  EXPECT_EQ(sim().requests.load(), 1);
  EXPECT_TRUE(metricsShow("sluice_requests_total{model=\"m\",code=\"200\"} 1"));
  EXPECT_TRUE(metricsShow("sluice_tokens_total{model=\"m\",type=\"output\"} 3"));
  auto at = r->body.find("\"prompt_tokens\":");
  ASSERT_NE(at, std::string::npos);
  int prompt_tokens = std::stoi(r->body.substr(at + 16));
  EXPECT_GT(prompt_tokens, 0);
  EXPECT_TRUE(metricsShow("sluice_tokens_total{model=\"m\",type=\"input\"} " +
                          std::to_string(prompt_tokens) + "\n"));
}

TEST_F(ProxyTest, ForwardsHeadersAsAProxyShould) {
  startDefault();
  auto r = testing::request(
      port_, "POST", kChat + "?trace=1", R"({"model":"m","prompt":"x"})",
      "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n"
      "x-request-id: client-id-1\r\nX-Forwarded-For: 10.1.1.1\r\nConnection: keep-alive, "
      "X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\nAuthorization: Bearer k\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->header("x-request-id"), "client-id-1");
  std::string head = sim().lastRequestHead();
  EXPECT_THAT(head,
              HasSubstr("traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"));
  EXPECT_THAT(head, HasSubstr("x-request-id: client-id-1"));
  EXPECT_THAT(head, HasSubstr("X-Forwarded-For: 10.1.1.1, 127.0.0.1"));
  EXPECT_THAT(head, HasSubstr("X-Forwarded-Proto: http"));
  EXPECT_THAT(head, HasSubstr("X-Forwarded-Host: test"));
  EXPECT_THAT(head, HasSubstr("Host: 127.0.0.1:" + std::to_string(sims_[0]->port())));
  EXPECT_THAT(head, HasSubstr("Authorization: Bearer k"));
  EXPECT_THAT(head, Not(HasSubstr("X-Hop")));
  EXPECT_THAT(head, Not(HasSubstr("Keep-Alive")));
}

TEST_F(ProxyTest, GeneratesARequestIdWhenTheClientSentNone) {
  startDefault();
  auto r = testing::request(port_, "POST", kChat, R"({"model":"m","prompt":"x"})");
  ASSERT_TRUE(r);
  std::string id = r->header("x-request-id");
  EXPECT_EQ(id.size(), 32u);
  EXPECT_THAT(sim().lastRequestHead(), HasSubstr("x-request-id: " + id));
}

TEST_F(ProxyTest, RewritesTheModelWithoutReserialising) {
  startSims(1);
  auto c = baseConfig();
  c.models[0].upstream_model = "meta/llama-3";
  startRouter(c);
  std::string body = R"({ "model" : "m",  "prompt":"x", "temperature": 0.70})";
  auto r = testing::request(port_, "POST", "/v1/completions", body);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(sim().lastRequestBody(),
            R"({ "model" : "meta/llama-3",  "prompt":"x", "temperature": 0.70})");
  // The client sees its own model name back, with the body re-framed.
  EXPECT_THAT(r->body, HasSubstr("\"model\":\"m\""));
  EXPECT_THAT(r->body, Not(HasSubstr("meta/llama-3")));
  EXPECT_TRUE(r->chunked);
  auto s = testing::request(
      port_, "POST", "/v1/chat/completions",
      R"({"model":"m","messages":[{"role":"user","content":"x"}],"stream":true,"max_tokens":3})");
  ASSERT_TRUE(s);
  EXPECT_THAT(s->body, HasSubstr("\"model\":\"m\""));
  EXPECT_THAT(s->body, Not(HasSubstr("meta/llama-3")));
}

TEST_F(ProxyTest, StreamsEventsBeforeTheUpstreamFinishes) {
  startDefault();
  sim().hold_after_first = true;
  TestConnection c(port_);
  ASSERT_TRUE(
      c.send(postRequest(kChat, R"({"model":"m","prompt":"x","stream":true,"max_tokens":4})")));
  auto head = c.readHead();
  ASSERT_TRUE(head);
  EXPECT_EQ(head->status, 200);
  EXPECT_EQ(head->header("content-type"), "text/event-stream");
  EXPECT_EQ(head->header("transfer-encoding"), "chunked");
  auto first = c.readUntil("tok0");
  ASSERT_TRUE(first) << "the first event must reach the client while the engine holds the rest";
  EXPECT_EQ(sim().completed.load(), 0);
  EXPECT_THAT(*first, Not(HasSubstr("tok1")));
  sims_[0]->release();
  auto rest = c.readUntil("0\r\n\r\n");
  ASSERT_TRUE(rest);
  EXPECT_THAT(*rest, HasSubstr("tok3"));
  EXPECT_THAT(*rest, HasSubstr("data: [DONE]"));
  EXPECT_TRUE(waitFor([&] { return sim().completed.load() == 1; }));
  EXPECT_TRUE(metricsShow("sluice_time_to_first_token_seconds_count{model=\"m\"} 1"));
}

TEST_F(ProxyTest, InjectsUsageAndHidesItFromTheClient) {
  startDefault();
  auto r = testing::request(port_, "POST", kChat,
                            R"({"model":"m","prompt":"abcdefgh","stream":true,"max_tokens":2})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_THAT(r->body, Not(HasSubstr("\"usage\"")));
  EXPECT_THAT(r->body, HasSubstr("data: [DONE]"));
  EXPECT_THAT(sim().lastRequestBody(), HasSubstr("\"stream_options\":{\"include_usage\":true}"));
  EXPECT_TRUE(metricsShow("sluice_tokens_total{model=\"m\",type=\"output\"} 2"));
}

TEST_F(ProxyTest, PassesUsageWhenTheClientAskedForIt) {
  startDefault();
  auto r = testing::request(
      port_, "POST", kChat,
      R"({"model":"m","prompt":"x","stream":true,"max_tokens":2,"stream_options":{"include_usage":true}})");
  ASSERT_TRUE(r);
  EXPECT_THAT(r->body, HasSubstr("\"usage\":{\"prompt_tokens\""));
  EXPECT_TRUE(metricsShow("sluice_tokens_total{model=\"m\",type=\"output\"} 2"));
}

TEST_F(ProxyTest, ClientDisconnectCancelsTheUpstreamAtOnce) {
  sim::SimOptions slow;
  slow.engine.step_overhead_ms = 20;
  startDefault(1, slow);
  {
    TestConnection c(port_);
    ASSERT_TRUE(c.send(
        postRequest(kChat, R"({"model":"m","prompt":"x","stream":true,"max_tokens":30000})")));
    ASSERT_TRUE(c.readUntil("tok1"));
  }  // the client goes away mid-stream
  // The engine sees its connection close and abandons the response long before 100000 tokens.
  EXPECT_TRUE(waitFor([&] { return sim().cancelled.load() == 1; }, std::chrono::seconds(5)));
  EXPECT_EQ(sim().completed.load(), 0);
  EXPECT_TRUE(metricsShow("code=\"499\""));
}

TEST_F(ProxyTest, ClientDisconnectWhileWaitingForTheFirstTokenCancelsToo) {
  startDefault();
  sim().setFault(sim::Fault::Hang);
  {
    TestConnection c(port_);
    ASSERT_TRUE(c.send(postRequest(kChat, R"({"model":"m","prompt":"x"})")));
    ASSERT_TRUE(waitFor([&] { return sim().requests.load() == 1; }));
  }
  EXPECT_TRUE(waitFor([&] { return sim().cancelled.load() == 1; }, std::chrono::seconds(5)));
}

TEST_F(ProxyTest, RejectsOversizeBodies) {
  startSims(1);
  auto c = baseConfig();
  c.limits.max_body_bytes = 1024;
  startRouter(c);
  std::string big(4096, 'x');
  auto r = testing::request(port_, "POST", kChat, R"({"model":"m","prompt":")" + big + "\"}");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_THAT(r->body, HasSubstr("\"code\":\"payload_too_large\""));
  EXPECT_EQ(sim().requests.load(), 0);
}

TEST_F(ProxyTest, RejectsOversizeBodiesSentChunked) {
  startSims(1);
  auto c = baseConfig();
  c.limits.max_body_bytes = 1024;
  startRouter(c);
  TestConnection conn(port_);
  std::string part(800, 'x');
  std::string req = "POST " + kChat + " HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
  req += "320\r\n" + part + "\r\n320\r\n" + part + "\r\n0\r\n\r\n";
  ASSERT_TRUE(conn.send(req));
  auto r = conn.readResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
}

TEST_F(ProxyTest, RejectsOversizeHeaders) {
  startSims(1);
  auto c = baseConfig();
  c.limits.max_header_bytes = 2048;
  startRouter(c);
  auto r = testing::request(port_, "POST", kChat, R"({"model":"m"})",
                            "X-Big: " + std::string(4096, 'a') + "\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 431);
  EXPECT_THAT(r->body, HasSubstr("headers_too_large"));
}

TEST_F(ProxyTest, SlowClientGets408AndIsClosed) {
  startSims(1);
  auto c = baseConfig();
  c.timeouts.header_read = std::chrono::milliseconds(200);
  startRouter(c);
  TestConnection conn(port_);
  ASSERT_TRUE(conn.send("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"));  // never finishes
  auto r = conn.readResponse(std::chrono::seconds(5));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 408);
  EXPECT_EQ(r->header("connection"), "close");
  EXPECT_TRUE(conn.waitClosed());
}

TEST_F(ProxyTest, IdleKeepAliveConnectionsAreClosedQuietly) {
  startSims(1);
  auto c = baseConfig();
  c.timeouts.idle = std::chrono::milliseconds(100);
  startRouter(c);
  TestConnection conn(port_);
  EXPECT_TRUE(conn.waitClosed(std::chrono::seconds(5)));
}

TEST_F(ProxyTest, MalformedRequestsGetOpenAIErrors) {
  startDefault();
  auto bad_json = testing::request(port_, "POST", kChat, R"({"model":"m",)");
  ASSERT_TRUE(bad_json);
  EXPECT_EQ(bad_json->status, 400);
  EXPECT_THAT(bad_json->body,
              HasSubstr(R"("type":"invalid_request_error","param":null,"code":"invalid_request")"));
  auto no_model = testing::request(port_, "POST", kChat, R"({"messages":[]})");
  EXPECT_EQ(no_model->status, 400);
  EXPECT_THAT(no_model->body, HasSubstr("you must provide a model parameter"));
  auto unknown = testing::request(port_, "POST", kChat, R"({"model":"gpt-9"})");
  EXPECT_EQ(unknown->status, 404);
  EXPECT_THAT(unknown->body, HasSubstr("model_not_found"));
  auto path = testing::request(port_, "GET", "/nowhere");
  EXPECT_EQ(path->status, 404);
  auto method = testing::request(port_, "GET", kChat);
  EXPECT_EQ(method->status, 405);
  EXPECT_EQ(method->header("allow"), "POST");
  TestConnection garbage(port_);
  garbage.send("THIS IS NOT HTTP\r\n\r\n");
  auto g = garbage.readResponse();
  ASSERT_TRUE(g);
  EXPECT_EQ(g->status, 400);
  EXPECT_EQ(sim().requests.load(), 0);
}

// Request smuggling (RFC 9112 sections 6.1 and 6.3): a transfer coding other than one
// "chunked", or Transfer-Encoding with Content-Length, is a 400 and the connection closes. The
// body after the head carries a complete second request; it must never be read as one, and
// nothing reaches the engine.
TEST_F(ProxyTest, UntrustworthyFramingIs400AndClosesTheConnection) {
  startDefault();
  const std::string smuggled =
      "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\n\r\n"
      "{\"model\":\"m\"}";
  const std::vector<std::string> codings = {
      "Transfer-Encoding: identity\r\n",
      "Transfer-Encoding: gzip\r\n",
      "Transfer-Encoding: xchunked\r\n",
      "Transfer-Encoding: chunked, identity\r\n",
      "Transfer-Encoding: gzip, chunked\r\n",
      "Transfer-Encoding:\r\n",
      "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
      "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
  };
  for (const auto& te : codings) {
    TestConnection c(port_);
    ASSERT_TRUE(
        c.send("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + te + "\r\n" + smuggled));
    auto r = c.readResponse();
    ASSERT_TRUE(r) << te;
    EXPECT_EQ(r->status, 400) << te;
    EXPECT_EQ(r->header("connection"), "close") << te;
    EXPECT_THAT(r->body, HasSubstr("invalid_request_error")) << te;
    EXPECT_TRUE(c.waitClosed()) << te;
  }
  EXPECT_EQ(sim().requests.load(), 0);
  // One "chunked" (any case) is fine.
  TestConnection ok(port_);
  const std::string body = R"({"model":"m","prompt":"x"})";
  char size[16];
  std::snprintf(size, sizeof(size), "%zx", body.size());
  ASSERT_TRUE(
      ok.send("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
              "Chunked\r\nContent-Type: application/json\r\n\r\n" +
              std::string(size) + "\r\n" + body + "\r\n0\r\n\r\n"));
  auto r = ok.readResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(sim().requests.load(), 1);
}

TEST_F(ProxyTest, ListsModelsFromConfiguration) {
  startDefault();
  auto r = testing::request(port_, "GET", "/v1/models");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(
      r->body,
      R"({"object":"list","data":[{"id":"m","object":"model","created":0,"owned_by":"sluice"}]})");
  auto one = testing::request(port_, "GET", "/v1/models/m");
  EXPECT_EQ(one->status, 200);
  auto missing = testing::request(port_, "GET", "/v1/models/x");
  EXPECT_EQ(missing->status, 404);
}

TEST_F(ProxyTest, RefusedUpstreamGives502) {
  startSims(0);
  auto c = baseConfig();
  c.models[0].endpoints = {{"127.0.0.1", closedPort()}};
  startRouter(c);
  auto r = testing::request(port_, "POST", kChat, R"({"model":"m","prompt":"x"})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 502);
  EXPECT_THAT(r->body, HasSubstr("upstream_unavailable"));
  EXPECT_TRUE(metricsShow("kind=\"connect_failed\"} 1"));
}

TEST_F(ProxyTest, ResetBeforeHeadersGives502) {
  startDefault();
  sim().setFault(sim::Fault::Reset);
  auto r = testing::request(port_, "POST", kChat, R"({"model":"m","prompt":"x"})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 502);
}

TEST_F(ProxyTest, SilentUpstreamGives504) {
  startSims(1);
  auto c = baseConfig();
  c.timeouts.upstream_response = std::chrono::milliseconds(200);
  startRouter(c);
  sim().setFault(sim::Fault::Hang);
  auto r = testing::request(port_, "POST", kChat, R"({"model":"m","prompt":"x"})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 504);
  EXPECT_THAT(r->body, HasSubstr("upstream_timeout"));
}

TEST_F(ProxyTest, FailsOverToTheNextEndpoint) {
  startSims(1);
  auto c = baseConfig();
  // A refused endpoint first in the list half the time; the pick must fall back to the sim.
  c.models[0].endpoints.push_back({"127.0.0.1", closedPort()});
  startRouter(c);
  for (int i = 0; i < 10; ++i) {
    auto r = testing::request(port_, "POST", kChat, R"({"model":"m","prompt":"x"})");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
  }
  EXPECT_EQ(sim().requests.load(), 10);
}

// Both endpoints answer `fault`: the last one's own answer (`status`) is relayed after one
// attempt on each; once endpoint `healed` recovers, every request is served.
void ProxyTest::expectRetriedOnAnotherEndpoint(sim::Fault fault, int status, size_t healed) {
  sim(0).setFault(fault);
  sim(1).setFault(fault);
  auto all_fail = testing::request(port_, "POST", kChat, R"({"model":"m","prompt":"x"})");
  ASSERT_TRUE(all_fail);
  EXPECT_EQ(all_fail->status, status);
  EXPECT_EQ(sim(0).requests.load() + sim(1).requests.load(), 2);
  sim(healed).setFault(sim::Fault::None);
  for (int i = 0; i < 6; ++i) {
    auto r = testing::request(port_, "POST", kChat, R"({"model":"m","prompt":"x"})");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
  }
}

TEST_F(ProxyTest, RetriesA503OnAnotherEndpoint) {
  startDefault(2);
  expectRetriedOnAnotherEndpoint(sim::Fault::Status503, 503, 0);
}

TEST_F(ProxyTest, RetriesA500OnAnotherEndpointByDefault) {
  // Envoy's 5xx retry policy includes 500; before any byte reaches the client a retry is safe.
  startDefault(2);
  expectRetriedOnAnotherEndpoint(sim::Fault::Status500, 500, 1);
}

TEST_F(ProxyTest, Http11RequestsNeedExactlyOneValidHost) {
  // RFC 9112 3.2: 400 for an HTTP/1.1 request without Host, with two, or with an invalid one.
  startDefault();
  const std::string body = R"({"model":"m","prompt":"x"})";
  const std::string tail =
      "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
      "\r\n\r\n" + body;
  const std::vector<std::string> heads = {
      "POST /v1/chat/completions HTTP/1.1\r\n",
      "POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nHost: b\r\n",
      "POST /v1/chat/completions HTTP/1.1\r\nHost: a b\r\n",
      "POST /v1/chat/completions HTTP/1.1\r\nHost: a/b\r\n",
      "POST /v1/chat/completions HTTP/1.1\r\nHost: user@a\r\n",
  };
  for (const auto& head : heads) {
    TestConnection c(port_);
    ASSERT_TRUE(c.send(head + tail));
    auto r = c.readResponse();
    ASSERT_TRUE(r) << head;
    EXPECT_EQ(r->status, 400) << head;
    EXPECT_THAT(r->body, HasSubstr("Host")) << head;
    EXPECT_TRUE(c.waitClosed()) << head;
  }
  EXPECT_EQ(sim().requests.load(), 0);
  // HTTP/1.0 needs no Host; a port and an IPv6 literal are valid.
  for (const std::string head : {"POST /v1/chat/completions HTTP/1.0\r\n",
                                 "POST /v1/chat/completions HTTP/1.1\r\nHost: a.example:8080\r\n",
                                 "POST /v1/chat/completions HTTP/1.1\r\nHost: [::1]:80\r\n"}) {
    TestConnection c(port_);
    ASSERT_TRUE(c.send(head + tail));
    auto r = c.readResponse();
    ASSERT_TRUE(r) << head;
    EXPECT_EQ(r->status, 200) << head << r->body;
  }
}

TEST_F(ProxyTest, AcceptsAbsoluteFormTargets) {
  // RFC 9112 3.2.2: a server accepts absolute-form; its authority replaces Host, and the
  // upstream gets origin-form.
  startDefault();
  const std::string body = R"({"model":"m","prompt":"x"})";
  TestConnection c(port_);
  ASSERT_TRUE(
      c.send("POST http://Gateway.Example:80/v1/chat/completions?trace=1 HTTP/1.1\r\n"
             "Host: ignored\r\nContent-Type: application/json\r\nContent-Length: " +
             std::to_string(body.size()) + "\r\n\r\n" + body));
  auto r = c.readResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_THAT(sim().lastRequestHead(), HasSubstr("X-Forwarded-Host: Gateway.Example:80"));
  EXPECT_THAT(sim().lastRequestHead(), Not(HasSubstr("ignored")));
  // An absolute-form target with userinfo or without a host is refused.
  for (const std::string target : {"http://user@host/v1/chat/completions", "http:///v1/x"}) {
    TestConnection bad(port_);
    ASSERT_TRUE(bad.send("POST " + target + " HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"));
    auto b = bad.readResponse();
    ASSERT_TRUE(b) << target;
    EXPECT_EQ(b->status, 400) << target;
  }
}

TEST_F(ProxyTest, ASilentNewConnectionIsClosedAfterTheHeaderTimeout) {
  startSims(1);
  auto cfg = baseConfig();
  cfg.timeouts.header_read = std::chrono::milliseconds(200);
  cfg.timeouts.idle = std::chrono::seconds(60);
  startRouter(cfg);
  TestConnection c(port_);
  // Closed after the header timeout, not held for the 60 s idle timeout.
  EXPECT_TRUE(c.waitClosed(std::chrono::seconds(5)));
}

TEST_F(ProxyTest, ReusesUpstreamConnections) {
  startDefault();
  TestConnection c(port_);
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(c.send(postRequest(kChat, R"({"model":"m","prompt":"x"})")));
    auto r = c.readResponse();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
  }
  EXPECT_EQ(sim().connections.load(), 1);
  EXPECT_EQ(sim().requests.load(), 5);
  EXPECT_TRUE(metricsShow("sluice_upstream_connections_reused_total 4"));
}

TEST_F(ProxyTest, RecoversFromAStalePooledConnection) {
  startDefault();
  ASSERT_EQ(testing::request(port_, "POST", kChat, R"({"model":"m","prompt":"x"})")->status, 200);
  // The engine restarts: every pooled connection to it is now dead.
  sim().setFault(sim::Fault::Reset);
  ASSERT_EQ(testing::request(port_, "POST", kChat, R"({"model":"m","prompt":"x"})")->status, 502);
  sim().setFault(sim::Fault::None);
  auto r = testing::request(port_, "POST", kChat, R"({"model":"m","prompt":"x"})");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(ProxyTest, AnswersPipelinedRequestsInOrder) {
  startDefault();
  TestConnection c(port_);
  std::string two = postRequest(kChat, R"({"model":"m","prompt":"x","max_tokens":1})") +
                    postRequest(kChat, R"({"model":"m","prompt":"x","max_tokens":2})");
  ASSERT_TRUE(c.send(two));
  auto a = c.readResponse();
  auto b = c.readResponse();
  ASSERT_TRUE(a && b);
  EXPECT_THAT(a->body, HasSubstr("\"completion_tokens\":1"));
  EXPECT_THAT(b->body, HasSubstr("\"completion_tokens\":2"));
}

TEST_F(ProxyTest, BrokenStreamEndsWithAnSseErrorEvent) {
  startDefault();
  sim().setFault(sim::Fault::BreakMidStream);
  sim().break_after_events = 2;
  TestConnection c(port_);
  ASSERT_TRUE(
      c.send(postRequest(kChat, R"({"model":"m","prompt":"x","stream":true,"max_tokens":10})")));
  auto r = c.readResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_THAT(r->body, HasSubstr("tok1"));
  EXPECT_THAT(r->body, HasSubstr("event: error\ndata: {\"error\":"));
  // The stream's framing ended cleanly (error event, last chunk), so the keep-alive connection
  // is not lost: it serves the next request (#14: it used to close without Connection: close).
  EXPECT_EQ(r->header("connection"), "");
  sim().setFault(sim::Fault::None);
  ASSERT_TRUE(c.send(postRequest(kChat, R"({"model":"m","prompt":"x","max_tokens":1})")));
  auto next = c.readResponse();
  ASSERT_TRUE(next);
  EXPECT_EQ(next->status, 200);
}

TEST_F(ProxyTest, HonoursExpect100Continue) {
  startDefault();
  TestConnection c(port_);
  std::string body = R"({"model":"m","prompt":"x"})";
  ASSERT_TRUE(
      c.send("POST /v1/completions HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
             "Content-Length: " +
             std::to_string(body.size()) + "\r\n\r\n"));
  auto cont = c.readHead();
  ASSERT_TRUE(cont);
  EXPECT_EQ(cont->status, 100);
  ASSERT_TRUE(c.send(body));
  auto r = c.readResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_THAT(sim().lastRequestHead(), Not(HasSubstr("Expect")));
}

TEST_F(ProxyTest, Http10ClientsGetACloseDelimitedStream) {
  startDefault();
  TestConnection c(port_);
  std::string body = R"({"model":"m","prompt":"x","stream":true,"max_tokens":2})";
  ASSERT_TRUE(c.send("POST /v1/completions HTTP/1.0\r\nContent-Length: " +
                     std::to_string(body.size()) + "\r\n\r\n" + body));
  auto r = c.readResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_FALSE(r->chunked);
  EXPECT_THAT(r->body, HasSubstr("data: [DONE]"));
}

TEST_F(ProxyTest, EnforcesTheConnectionLimit) {
  startSims(1);
  auto c = baseConfig();
  c.limits.max_connections = 1;
  startRouter(c);
  TestConnection first(port_);
  ASSERT_TRUE(first.send(postRequest(kChat, R"({"model":"m","prompt":"x"})")));
  ASSERT_TRUE(first.readResponse());
  TestConnection second(port_);
  auto r = second.readResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_TRUE(metricsShow("sluice_connections_rejected_total 1"));
}

TEST_F(ProxyTest, AdminEndpoints) {
  startDefault();
  auto health = testing::request(router_->adminPort(), "GET", "/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(testing::request(router_->adminPort(), "GET", "/readyz")->status, 200);
  auto cfg = testing::request(router_->adminPort(), "GET", "/debug/config");
  EXPECT_THAT(cfg->body, HasSubstr("\"models\":[{\"name\":\"m\""));
  EXPECT_EQ(testing::request(router_->metricsPort(), "GET", "/healthz")->status, 404);
}

// Binds addr:port as another process would, with SO_REUSEADDR and SO_REUSEPORT; the errno.
int bindLikeAnotherProcess(const char* addr, uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  inet_pton(AF_INET, addr, &sa.sin_addr);
  int err = ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0 ? 0 : errno;
  ::close(fd);
  return err;
}

TEST_F(ProxyTest, NoOtherProcessCanShareTheInferencePort) {
  // #14: with SO_REUSEPORT on the listener, a second process bound the same port and took part
  // of the traffic. The workers now share one socket opened without it.
  startSims(1);
  auto cfg = baseConfig();
  cfg.workers = 2;
  startRouter(cfg);
  EXPECT_EQ(bindLikeAnotherProcess("127.0.0.1", port_), EADDRINUSE);
  for (int i = 0; i < 8; ++i) {
    auto r = testing::request(port_, "POST", kChat, R"({"model":"m","prompt":"x"})");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
  }
}

TEST_F(ProxyTest, AListenerAddressChangeIsAppliedOrRefusedNeverReportedFalsely) {
  startDefault();
  // 127.0.0.1 -> 127.0.0.2 on the same port: applied, the old socket closes.
  auto moved = baseConfig();
  moved.listener.address = "127.0.0.2";
  ASSERT_TRUE(router_->reload(moved));
  EXPECT_TRUE(waitFor([&] {
    TestConnection c(port_, "127.0.0.2");
    if (!c.send(postRequest(kChat, R"({"model":"m","prompt":"x"})"))) {
      return false;
    }
    auto r = c.readResponse();
    return r && r->status == 200;
  }));
  EXPECT_TRUE(waitFor([&] { return bindLikeAnotherProcess("127.0.0.1", port_) == 0; }));
  // 127.0.0.2 -> 0.0.0.0 on the same port cannot be bound while 127.0.0.2 listens: refused,
  // logged and counted; 127.0.0.2 keeps serving.
  auto wildcard = baseConfig();
  wildcard.listener.address = "0.0.0.0";
  ASSERT_TRUE(router_->reload(wildcard));
  EXPECT_TRUE(metricsShow("sluice_listener_failures_total 1"));
  TestConnection still(port_, "127.0.0.2");
  ASSERT_TRUE(still.send(postRequest(kChat, R"({"model":"m","prompt":"x"})")));
  auto r = still.readResponse();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(ProxyTest, ReloadPublishesANewSnapshot) {
  startDefault();
  auto c = baseConfig();
  c.models[0].name = "renamed";
  ASSERT_TRUE(router_->reload(c));
  EXPECT_TRUE(waitFor([&] {
    auto r = testing::request(port_, "POST", kChat, R"({"model":"renamed","prompt":"x"})");
    return r && r->status == 200;
  }));
  EXPECT_EQ(testing::request(port_, "POST", kChat, R"({"model":"m","prompt":"x"})")->status, 404);
  EXPECT_TRUE(metricsShow("sluice_config_snapshot_version 2"));
}

// One generation per request: 100 reloads while ten streams are held open, each stream
// started between two reloads. Every stream keeps the configuration it started with and ends
// complete; the generations it held are freed only when it ends (under ASan, a reference into
// a configuration that outlived its owner would be reported here).
TEST_F(ProxyTest, HundredReloadsDuringOpenStreamsLoseNothing) {
  startDefault();
  sim().hold_after_first = true;
  std::vector<std::unique_ptr<TestConnection>> streams;
  for (int i = 0; i < 100; ++i) {
    const bool open = i % 10 == 0;
    if (open) {
      streams.push_back(std::make_unique<TestConnection>(port_));
      ASSERT_TRUE(streams.back()->send(
          postRequest(kChat, R"({"model":"m","prompt":"x","stream":true,"max_tokens":8})")));
    }
    auto c = baseConfig();
    c.limits.max_body_bytes = (1u << 20) + static_cast<uint64_t>(i);  // a new configuration
    ASSERT_TRUE(router_->reload(c));
    if (open) {
      ASSERT_TRUE(streams.back()->readUntil("tok0")) << "stream " << streams.size();
    }
  }
  EXPECT_TRUE(metricsShow("sluice_config_snapshot_version 101"));
  sims_[0]->release();
  for (size_t i = 0; i < streams.size(); ++i) {
    auto rest = streams[i]->readUntil("0\r\n\r\n");
    ASSERT_TRUE(rest) << "stream " << i;
    EXPECT_THAT(*rest, HasSubstr("tok7")) << "stream " << i;
    EXPECT_THAT(*rest, HasSubstr("data: [DONE]")) << "stream " << i;
  }
  EXPECT_TRUE(waitFor([&] { return sim().completed.load() == 10; }));
  auto after = testing::request(port_, "POST", kChat, R"({"model":"m","prompt":"x"})");
  ASSERT_TRUE(after);
  EXPECT_EQ(after->status, 200);
}

TEST_F(ProxyTest, DrainFinishesInFlightStreamsAndRefusesNewConnections) {
  sim::SimOptions slow;
  slow.engine.step_overhead_ms = 10;
  startDefault(1, slow);
  TestConnection c(port_);
  ASSERT_TRUE(
      c.send(postRequest(kChat, R"({"model":"m","prompt":"x","stream":true,"max_tokens":30})")));
  ASSERT_TRUE(c.readUntil("tok0"));
  TestConnection idle(port_);  // an idle keep-alive connection is closed by the drain
  std::thread drain([&] { router_->drainAndStop(); });
  auto rest = c.readUntil("0\r\n\r\n");
  drain.join();
  ASSERT_TRUE(rest);
  EXPECT_THAT(*rest, HasSubstr("tok29"));
  EXPECT_TRUE(idle.waitClosed());
  TestConnection late(port_);
  EXPECT_FALSE(late.connected() && late.send(postRequest(kChat, R"({"model":"m"})")) &&
               late.readResponse(std::chrono::milliseconds(500)));
}

TEST_F(ProxyTest, WritesOneAccessLogRecordPerRequest) {
  startSims(1);
  auto c = baseConfig();
  char path[] = "/tmp/sluice-access-test-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  ::close(fd);
  c.access_log.path = path;
  startRouter(c);
  auto r = testing::request(port_, "POST", kChat, R"({"model":"m","prompt":"abcd","stream":true})",
                            "x-request-id: log-me\r\n");
  ASSERT_TRUE(r);
  std::string text;
  EXPECT_TRUE(waitFor([&] {
    router_->accessLog().flush();
    std::ifstream in(path);
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    return text.find("log-me") != std::string::npos;
  }));
  ::unlink(path);
  EXPECT_THAT(text,
              HasSubstr("\"request_id\":\"log-me\",\"method\":\"POST\",\"path\":\"/v1/chat/"
                        "completions\",\"status\":200,\"model\":\"m\",\"endpoint\":\"127.0.0.1:"));
  EXPECT_THAT(text,
              HasSubstr("\"attempts\":1,\"stream\":true,\"input_tokens\":1,\"output_tokens\":16"));
  EXPECT_THAT(text, HasSubstr("\"error_type\":null"));
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1);
}

TEST_F(ProxyTest, ReportsAllAttemptsWhenFailingOver) {
  startSims(1);
  auto c = baseConfig();
  // Only the dead endpoint is tried first when it has fewer requests in flight; load the sim so
  // the dead one sorts first, then check the retry counter.
  c.models[0].endpoints.insert(c.models[0].endpoints.begin(), {"127.0.0.1", closedPort()});
  c.upstream.retries = 1;
  startRouter(c);
  int retried = 0;
  for (int i = 0; i < 20; ++i) {
    auto r = testing::request(port_, "POST", kChat, R"({"model":"m","prompt":"x"})");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
  }
  std::string text = metricsText();
  auto pos = text.find("sluice_upstream_retries_total{model=\"m\"} ");
  ASSERT_NE(pos, std::string::npos);
  retried = std::stoi(
      text.substr(pos + std::string("sluice_upstream_retries_total{model=\"m\"} ").size()));
  EXPECT_GT(retried, 0);  // the dead endpoint came first some of the time (random tie-break)
  EXPECT_LT(retried, 20);
}

}  // namespace
}  // namespace sluice
