// ExternalModelProvider targets of ModelRoutes: the router reaches a TLS "provider" (a fake
// OpenAI or Anthropic API on loopback) with the provider's credential and model, never the
// client's credentials, streams its answers back with the client's model name, verifies its
// certificate, keeps connections alive, and splits traffic with in-cluster ModelServers.
#include <filesystem>
#include <fstream>
#include <functional>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "fakes/fake_provider.h"
#include "fakes/metric_sample.h"
#include "fakes/sim_fleet.h"
#include "fakes/test_client.h"
#include "router/route_table.h"
#include "server/server.h"

namespace sluice {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
namespace fs = std::filesystem;

std::string chatBody(const std::string& model, bool stream = false) {
  return R"({"model":")" + model + R"(","max_tokens":4,"stream":)" + (stream ? "true" : "false") +
         R"(,"messages":[{"role":"user","content":"hello"}]})";
}

// Answers like the public APIs do; the model it names is the one it was asked for.
testing::ProviderResponse answer(const testing::ProviderRequest& r) {
  testing::ProviderResponse res;
  if (r.method == "GET") {  // an engine's metrics or model list, scraped by the router
    res.content_type = "text/plain";
    res.body = r.target == "/metrics" ? "vllm:num_requests_running 0\nvllm:num_requests_waiting 0\n"
                                      : R"({"object":"list","data":[]})";
    return res;
  }
  const bool stream = r.body.find(R"("stream":true)") != std::string::npos;
  std::string model = "unknown";
  if (auto at = r.body.find(R"("model":")"); at != std::string::npos) {
    auto start = at + 9;
    model = r.body.substr(start, r.body.find('"', start) - start);
  }
  if (r.target.find("/messages") != std::string::npos) {  // Anthropic
    if (!stream) {
      res.body =
          R"({"id":"msg_1","type":"message","role":"assistant","model":")" + model +
          R"(","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":11,"output_tokens":3}})";
      return res;
    }
    res.events = {
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\","
        "\"model\":\"" +
            model + "\",\"usage\":{\"input_tokens\":11,\"output_tokens\":1}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
        "\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
        "\"end_turn\"},\"usage\":{\"output_tokens\":3}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"};
    return res;
  }
  if (!stream) {
    res.body =
        R"({"id":"c1","object":"chat.completion","model":")" + model +
        R"(","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}})";
    return res;
  }
  res.events = {"data: {\"id\":\"c1\",\"model\":\"" + model +
                    "\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n",
                "data: {\"id\":\"c1\",\"model\":\"" + model +
                    "\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2,"
                    "\"total_tokens\":9}}\n\n",
                "data: [DONE]\n\n"};
  return res;
}

class ProvidersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("sluice-providers-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "manifests");
    provider_ = std::make_unique<testing::FakeProvider>("localhost", answer);
    ca_file_ = (dir_ / "ca.pem").string();
    std::ofstream(ca_file_) << provider_->certificate().cert_pem;
  }
  void TearDown() override {
    router_.reset();
    fs::remove_all(dir_);
  }

  void start(const std::string& manifests, bool trust = true,
             const std::function<void(config::RouterConfig&)>& tweak = {}) {
    std::ofstream(dir_ / "manifests" / "all.yaml") << manifests;
    auto c = testing::loopbackConfig({});
    c.models.clear();
    c.manifests = (dir_ / "manifests").string();
    if (trust) {
      c.upstream.ca_file = ca_file_;
    }
    if (tweak) {
      tweak(c);
    }
    router_ = std::make_unique<server::Server>(c, base::RealTimeSource::instance(), 5);
    auto r = router_->start();
    ASSERT_TRUE(r) << r.error().message;
  }

  // A provider `name` of `type` at the fake, its key in Secret `name`-key, and a ModelRoute for
  // `model` to it.
  std::string provider(const std::string& name, const std::string& type, const std::string& model,
                       const std::string& extra_spec = "", const std::string& base_path = "/v1") {
    std::string port = std::to_string(provider_->port());
    return "apiVersion: v1\nkind: Secret\nmetadata: {name: " + name +
           "-key, namespace: default}\nstringData: {token: sk-" + name +
           "}\n---\napiVersion: networking.serving.volcano.sh/v1alpha1\nkind: "
           "ExternalModelProvider\nmetadata: {name: " +
           name + ", namespace: default}\nspec:\n  providerType: " + type +
           "\n  baseURL: https://localhost:" + port + base_path +
           "\n  auth: {scheme: " + (type == "Anthropic" ? "APIKey" : "Bearer") +
           ", secretRef: {name: " + name + "-key, key: token}}\n" + extra_spec +
           "---\napiVersion: networking.serving.volcano.sh/v1alpha1\nkind: ModelRoute\nmetadata: "
           "{name: " +
           name + "-route, namespace: default}\nspec:\n  modelName: " + model +
           "\n  rules: [{targetModels: [{externalModelProviderName: " + name + "}]}]\n---\n";
  }

  uint16_t port() { return router_->listenerPort(); }

  fs::path dir_;
  std::string ca_file_;
  std::unique_ptr<testing::FakeProvider> provider_;
  std::unique_ptr<server::Server> router_;
};

TEST_F(ProvidersTest, OpenAIProviderGetsItsCredentialAndModelNotTheClients) {
  start(provider("openai", "OpenAI", "gpt",
                 "  model: gpt-4o-mini\n  headers: {OpenAI-Organization: org-1}\n"));
  auto r = testing::request(port(), "POST", "/v1/chat/completions?x=1", chatBody("gpt"),
                            "Authorization: Bearer client-secret\r\nCookie: session=1\r\n"
                            "x-api-key: other\r\ntraceparent: 00-abc-def-01\r\n");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  // The client sees the name it asked for.
  EXPECT_THAT(r->body, HasSubstr(R"("model":"gpt")"));
  EXPECT_THAT(r->body, Not(HasSubstr("gpt-4o-mini")));
  auto reqs = provider_->requests();
  ASSERT_EQ(reqs.size(), 1u);
  const auto& got = reqs[0];
  EXPECT_EQ(got.target, "/v1/chat/completions?x=1");  // base path /v1 + the path without /v1
  EXPECT_EQ(got.header("host"), "localhost:" + std::to_string(provider_->port()));
  EXPECT_EQ(got.header("authorization"), "Bearer sk-openai");
  EXPECT_EQ(got.header("x-api-key"), "");
  EXPECT_EQ(got.header("cookie"), "");
  EXPECT_EQ(got.header("openai-organization"), "org-1");
  EXPECT_EQ(got.header("traceparent"), "00-abc-def-01");
  EXPECT_FALSE(got.header("x-request-id").empty());
  EXPECT_THAT(got.body, HasSubstr(R"("model":"gpt-4o-mini")"));
  EXPECT_EQ(got.header("content-length"), std::to_string(got.body.size()));
  // Status says where requests go.
  auto st = testing::request(router_->adminPort(), "GET", "/debug/status");
  ASSERT_TRUE(st);
  EXPECT_THAT(st->body, HasSubstr("requests go to https://localhost:"));
}

TEST_F(ProvidersTest, OpenAIStreamsRelayWithUsageCountedAndHidden) {
  start(provider("openai", "OpenAI", "gpt", "  model: gpt-4o-mini\n", ""));
  auto r = testing::request(port(), "POST", "/v1/chat/completions", chatBody("gpt", true));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->header("content-type"), "text/event-stream");
  EXPECT_THAT(r->body, HasSubstr(R"("model":"gpt")"));
  EXPECT_THAT(r->body, HasSubstr("data: [DONE]"));
  // The router asked for usage; the client did not, so the usage chunk is not shown.
  EXPECT_THAT(r->body, Not(HasSubstr("usage")));
  auto reqs = provider_->requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].target, "/v1/chat/completions");  // no base path: the path as it came...
  EXPECT_THAT(reqs[0].body, HasSubstr(R"("include_usage":true)"));
  // ...and the tokens were counted.
  EXPECT_TRUE(testing::waitFor([&] {
    auto m = testing::request(router_->metricsPort(), "GET", "/metrics");
    return m &&
           testing::hasSample(
               m->body, "sluice_tokens_total",
               {R"(model="gpt")", R"(backend="ExternalModelProvider/)", R"(type="output")"}, "2");
  }));
}

TEST_F(ProvidersTest, AnthropicProviderTakesMessagesWithAnApiKey) {
  start(provider("claude", "Anthropic", "claude"));
  auto r = testing::request(
      port(), "POST", "/v1/messages",
      R"({"model":"claude","max_tokens":4,"stream":true,"messages":[{"role":"user","content":"hi"}]})",
      "Authorization: Bearer client-secret\r\n");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_THAT(r->body, HasSubstr("message_stop"));
  auto reqs = provider_->requests();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].target, "/v1/messages");  // base /v1: the version is not doubled
  EXPECT_EQ(reqs[0].header("x-api-key"), "sk-claude");
  EXPECT_EQ(reqs[0].header("authorization"), "");
  EXPECT_EQ(reqs[0].header("anthropic-version"), "2023-06-01");
  // Input from message_start, output from message_delta.
  EXPECT_TRUE(testing::waitFor([&] {
    auto m = testing::request(router_->metricsPort(), "GET", "/metrics");
    return m &&
           testing::hasSample(m->body, "sluice_tokens_total",
                              {R"(model="claude")", R"(type="input")"}, "11") &&
           testing::hasSample(m->body, "sluice_tokens_total",
                              {R"(model="claude")", R"(type="output")"}, "3");
  }));
  // The OpenAI path is not an Anthropic API: a clear 404, nothing sent.
  auto wrong = testing::request(port(), "POST", "/v1/chat/completions", chatBody("claude"));
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 404);
  EXPECT_THAT(wrong->body, HasSubstr("external Anthropic provider"));
  EXPECT_EQ(provider_->requests().size(), 1u);
}

TEST_F(ProvidersTest, KeepsTheTlsConnectionAlive) {
  start(provider("openai", "OpenAI", "gpt"));
  for (int i = 0; i < 5; ++i) {
    auto r = testing::request(port(), "POST", "/v1/chat/completions", chatBody("gpt"));
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
  }
  EXPECT_EQ(provider_->requests().size(), 5u);
  // One worker may open one connection; loopbackConfig runs one or two workers.
  EXPECT_LE(provider_->connections(), 2u);
}

TEST_F(ProvidersTest, AnUntrustedCertificateIsRefusedUnlessVerificationIsSkipped) {
  start(provider("strict", "OpenAI", "strict") +
            provider("lax", "OpenAI", "lax", "  insecureSkipVerify: true\n"),
        /*trust=*/false);
  auto strict = testing::request(port(), "POST", "/v1/chat/completions", chatBody("strict"));
  ASSERT_TRUE(strict);
  EXPECT_EQ(strict->status, 502);
  EXPECT_THAT(strict->body, HasSubstr("TLS handshake"));
  auto lax = testing::request(port(), "POST", "/v1/chat/completions", chatBody("lax"));
  ASSERT_TRUE(lax);
  EXPECT_EQ(lax->status, 200) << lax->body;
  EXPECT_EQ(provider_->requests().size(), 1u);
}

TEST_F(ProvidersTest, MissingCredentialsAre500AndReported) {
  start(R"(apiVersion: networking.serving.volcano.sh/v1alpha1
kind: ExternalModelProvider
metadata: {name: nokey, namespace: default}
spec:
  baseURL: https://localhost:1/v1
  auth: {secretRef: {name: absent, key: token}}
---
apiVersion: networking.serving.volcano.sh/v1alpha1
kind: ModelRoute
metadata: {name: r, namespace: default}
spec:
  modelName: m
  rules: [{targetModels: [{externalModelProviderName: nokey}]}]
)");
  auto r = testing::request(port(), "POST", "/v1/chat/completions", chatBody("m"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 500);
  EXPECT_THAT(r->body, HasSubstr("credentials"));
  auto st = testing::request(router_->adminPort(), "GET", "/debug/status");
  ASSERT_TRUE(st);
  EXPECT_THAT(st->body, HasSubstr("SecretNotFound"));
}

TEST_F(ProvidersTest, ARuleSplitsBetweenAModelServerAndAProvider) {
  testing::SimFleet fleet;
  fleet.start(1, {}, {"local-model"});
  std::string port_text = std::to_string(provider_->port());
  start(R"(apiVersion: v1
kind: Secret
metadata: {name: k, namespace: default}
stringData: {token: sk-split}
---
apiVersion: networking.serving.volcano.sh/v1alpha1
kind: ExternalModelProvider
metadata: {name: cloud, namespace: default}
spec:
  baseURL: https://localhost:)" +
        port_text + R"(/v1
  model: cloud-model
  auth: {secretRef: {name: k, key: token}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: default, labels: {app: a}}
status: {podIP: 127.0.0.1}
---
apiVersion: networking.serving.volcano.sh/v1alpha1
kind: ModelServer
metadata: {name: local, namespace: default}
spec:
  model: local-model
  inferenceEngine: vLLM
  workloadSelector: {matchLabels: {app: a}}
  workloadPort: {port: )" +
        std::to_string(fleet.sims[0]->port()) + R"(}
---
apiVersion: networking.serving.volcano.sh/v1alpha1
kind: ModelRoute
metadata: {name: hybrid, namespace: default}
spec:
  modelName: hybrid
  rules: [{targetModels: [{modelServerName: local, weight: 50}, {externalModelProviderName: cloud, weight: 50}]}]
)");
  int ok = 0;
  for (int i = 0; i < 40; ++i) {
    auto r = testing::request(port(), "POST", "/v1/chat/completions", chatBody("hybrid"));
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_THAT(r->body, HasSubstr(R"("model":"hybrid")"));
    ++ok;
  }
  const size_t cloud = provider_->requests().size();
  // 40 draws at 50/50: both sides get traffic (the chance of a side getting none is 2^-39).
  EXPECT_GT(cloud, 0u);
  EXPECT_LT(cloud, 40u);
  EXPECT_EQ(ok, 40);
}

// What a misbehaving provider does reaches the client as a clear error and nothing else breaks:
// garbage instead of HTTP is a 502, a stream cut in the middle ends with an SSE error event.
TEST_F(ProvidersTest, AMisbehavingProviderGivesClearErrors) {
  provider_ =
      std::make_unique<testing::FakeProvider>("localhost", [](const testing::ProviderRequest& r) {
        testing::ProviderResponse res;
        if (r.body.find("garbage") != std::string::npos) {
          res.raw = "this is not HTTP\r\n\r\n";
        } else if (r.body.find("framing") != std::string::npos) {
          // A chunk whose size is wrong: the relay cannot even pass the first event on.
          res.raw =
              "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: "
              "chunked\r\n\r\n2a\r\ndata: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n\r\n";
        } else if (r.body.find("cut") != std::string::npos) {
          res.raw =
              "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: "
              "chunked\r\n\r\n2f\r\ndata: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n\r\n";
        } else {
          res = answer(r);
        }
        return res;
      });
  std::ofstream(ca_file_) << provider_->certificate().cert_pem;
  start(provider("openai", "OpenAI", "gpt"));
  auto garbage =
      testing::request(port(), "POST", "/v1/chat/completions",
                       R"({"model":"gpt","messages":[{"role":"user","content":"garbage"}]})");
  ASSERT_TRUE(garbage);
  EXPECT_EQ(garbage->status, 502);
  EXPECT_THAT(garbage->body, HasSubstr("upstream_unavailable"));
  auto cut = testing::request(
      port(), "POST", "/v1/chat/completions",
      R"({"model":"gpt","stream":true,"messages":[{"role":"user","content":"cut"}]})");
  ASSERT_TRUE(cut);
  EXPECT_EQ(cut->status, 200);
  EXPECT_THAT(cut->body, HasSubstr(R"("content":"a")"));
  EXPECT_THAT(cut->body, HasSubstr("event: error"));
  // Broken framing before the first event could go out: a whole 502, not a 200 that breaks off.
  auto framing = testing::request(
      port(), "POST", "/v1/chat/completions",
      R"({"model":"gpt","stream":true,"messages":[{"role":"user","content":"framing"}]})");
  ASSERT_TRUE(framing);
  EXPECT_EQ(framing->status, 502);
  EXPECT_THAT(framing->body, HasSubstr("broke off"));
  // The router and the provider are fine for the next request.
  auto ok = testing::request(port(), "POST", "/v1/chat/completions", chatBody("gpt"));
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
}

// A ModelServer whose workloadPort.protocol is https: an in-cluster engine reached over TLS.
std::string tlsModelServer(uint16_t port) {
  return R"(apiVersion: v1
kind: Pod
metadata: {name: engine, namespace: default, labels: {app: tls}}
status: {podIP: 127.0.0.1}
---
apiVersion: networking.serving.volcano.sh/v1alpha1
kind: ModelServer
metadata: {name: secure, namespace: default}
spec:
  model: real-model
  inferenceEngine: vLLM
  workloadSelector: {matchLabels: {app: tls}}
  workloadPort: {port: )" +
         std::to_string(port) + R"(, protocol: https}
---
apiVersion: networking.serving.volcano.sh/v1alpha1
kind: ModelRoute
metadata: {name: secure, namespace: default}
spec:
  modelName: secure
  rules: [{targetModels: [{modelServerName: secure}]}]
)";
}

TEST_F(ProvidersTest, ModelServerWorkloadsSpeakTls) {
  testing::FakeProvider engine("localhost", answer);  // a name the Pod IP does not carry
  start(tlsModelServer(engine.port()), true,
        [](config::RouterConfig& c) { c.metrics_fetcher.enabled = true; });
  for (int i = 0; i < 3; ++i) {
    auto r = testing::request(port(), "POST", "/v1/chat/completions", chatBody("secure", i == 1));
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_THAT(r->body, HasSubstr(R"("model":"secure")"));
  }
  bool posted = false;
  for (const auto& req : engine.requests()) {
    if (req.method == "POST") {
      posted = true;
      EXPECT_THAT(req.body, HasSubstr(R"("model":"real-model")"));
      EXPECT_EQ(req.header("host"), "127.0.0.1:" + std::to_string(engine.port()));
    }
  }
  EXPECT_TRUE(posted);
  // Requests share a kept-alive connection; metrics are scraped over TLS as well.
  EXPECT_TRUE(testing::waitFor([&] {
    for (const auto& req : engine.requests()) {
      if (req.target == "/metrics")
        return true;
    }
    return false;
  }));
}

TEST_F(ProvidersTest, VerifiedWorkloadTlsWantsTheCertificateToNameThePodIp) {
  testing::FakeProvider by_name("localhost", answer);
  testing::FakeProvider by_ip("127.0.0.1", answer);
  const std::string both = (dir_ / "both.pem").string();
  std::ofstream(both) << by_name.certificate().cert_pem << by_ip.certificate().cert_pem;
  auto verify = [&](config::RouterConfig& c) {
    c.upstream.verify_workload_tls = true;
    c.upstream.ca_file = both;
  };
  start(tlsModelServer(by_name.port()), true, verify);
  auto refused = testing::request(port(), "POST", "/v1/chat/completions", chatBody("secure"));
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 502);
  EXPECT_THAT(refused->body, HasSubstr("TLS handshake failed"));
  router_.reset();
  start(tlsModelServer(by_ip.port()), true, verify);
  auto ok = testing::request(port(), "POST", "/v1/chat/completions", chatBody("secure"));
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200) << ok->body;
}

}  // namespace
}  // namespace sluice
