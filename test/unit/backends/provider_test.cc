#include "backends/provider.h"

#include <gtest/gtest.h>

namespace sluice::backends {
namespace {

using router::ProviderTarget;

TEST(ProviderUrl, ParsesHostPortAndPath) {
  auto a = router::parseProviderUrl("https://api.openai.com/v1/");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->host, "api.openai.com");
  EXPECT_EQ(a->port, 443);
  EXPECT_EQ(a->path, "/v1");
  auto b = router::parseProviderUrl("https://LOCALHOST:8443");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->host, "localhost");
  EXPECT_EQ(b->port, 8443);
  EXPECT_EQ(b->path, "");
  auto c = router::parseProviderUrl("https://[::1]:9000/openai/v1");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->host, "::1");
  EXPECT_EQ(c->port, 9000);
  for (const char* bad :
       {"http://api.openai.com", "https://", "https://u:p@host/v1", "https://host:0",
        "https://host:99999", "https://host/v1?x=1", "https://ho st/", "https://[::1/v1"}) {
    EXPECT_FALSE(router::parseProviderUrl(bad)) << bad;
  }
}

TEST(ProviderPaths, JoinBaseAndRequestWithoutDoublingTheVersion) {
  ProviderTarget openai;
  openai.base_path = "/v1";
  EXPECT_EQ(providerRequestTarget(openai, "/v1/chat/completions", ""), "/v1/chat/completions");
  openai.base_path = "/openai/v1";
  EXPECT_EQ(providerRequestTarget(openai, "/v1/responses", "a=b"), "/openai/v1/responses?a=b");
  openai.base_path = "";
  EXPECT_EQ(providerRequestTarget(openai, "/v1/completions", ""), "/v1/completions");
  ProviderTarget anthropic;
  anthropic.type = ProviderTarget::Type::Anthropic;
  anthropic.base_path = "/v1";
  EXPECT_EQ(providerRequestTarget(anthropic, "/v1/messages", ""), "/v1/messages");
  anthropic.base_path = "/proxy";  // a base without a version keeps the request's
  EXPECT_EQ(providerRequestTarget(anthropic, "/v1/messages", ""), "/proxy/v1/messages");
}

TEST(ProviderPaths, EachTypeServesItsOwnApi) {
  EXPECT_TRUE(providerServesPath(ProviderTarget::Type::OpenAI, "/v1/chat/completions"));
  EXPECT_TRUE(providerServesPath(ProviderTarget::Type::OpenAI, "/v1/embeddings"));
  EXPECT_FALSE(providerServesPath(ProviderTarget::Type::OpenAI, "/v1/messages"));
  EXPECT_FALSE(providerServesPath(ProviderTarget::Type::OpenAI, "/v1/models"));
  EXPECT_TRUE(providerServesPath(ProviderTarget::Type::Anthropic, "/v1/messages"));
  EXPECT_FALSE(providerServesPath(ProviderTarget::Type::Anthropic, "/v1/chat/completions"));
}

TEST(ProviderHeaders, OnlyTheAllowListLeaves) {
  for (const char* ok : {"content-type", "accept", "anthropic-version", "traceparent"}) {
    EXPECT_TRUE(forwardsToProvider(ok)) << ok;
  }
  for (const char* no : {"authorization", "x-api-key", "cookie", "accept-encoding", "host",
                         "x-forwarded-for", "x-gateway-inference-objective"}) {
    EXPECT_FALSE(forwardsToProvider(no)) << no;
  }
}

}  // namespace
}  // namespace sluice::backends
