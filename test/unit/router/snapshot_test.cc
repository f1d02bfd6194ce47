#include "router/snapshot.h"

#include <gtest/gtest.h>

#include "base/random.h"

namespace sluice::router {
namespace {

config::RouterConfig twoModels() {
  config::RouterConfig c;
  c.models.push_back({"b-model", "", "vllm", "", {{"127.0.0.1", 9001}, {"127.0.0.2", 9002}}});
  c.models.push_back({"a-model", "real", "vllm", "", {{"::1", 9003}}});
  return c;
}

TEST(Snapshot, BuildsModelsAndListing) {
  EndpointRegistry reg;
  auto snap = buildSnapshot(twoModels(), 7, reg);
  ASSERT_TRUE(snap) << snap.error().message;
  const auto& s = **snap;
  EXPECT_EQ(s.version, 7u);
  ASSERT_NE(s.findModel("a-model"), nullptr);
  EXPECT_EQ(s.findModel("a-model")->upstream_model, "real");
  EXPECT_EQ(s.findModel("a-model")->endpoints[0].address, "[::1]:9003");
  EXPECT_TRUE(s.findModel("a-model")->endpoints[0].v6);
  EXPECT_EQ(s.findModel("b-model")->endpoints[1].address, "127.0.0.2:9002");
  EXPECT_EQ(s.findModel("nope"), nullptr);
  EXPECT_EQ(s.models_json,
            "{\"object\":\"list\",\"data\":[{\"id\":\"a-model\",\"object\":\"model\",\"created\":0,"
            "\"owned_by\":\"sluice\"},{\"id\":\"b-model\",\"object\":\"model\",\"created\":0,"
            "\"owned_by\":\"sluice\"}]}");
}

TEST(Snapshot, EndpointStateSurvivesRebuilds) {
  EndpointRegistry reg;
  auto a = buildSnapshot(twoModels(), 1, reg);
  (*a)->findModel("b-model")->endpoints[0].state->in_flight = 5;
  auto b = buildSnapshot(twoModels(), 2, reg);
  EXPECT_EQ((*b)->findModel("b-model")->endpoints[0].state->in_flight.load(), 5);
}

TEST(Snapshot, UnresolvableHostIsAnError) {
  EndpointRegistry reg;
  config::RouterConfig c;
  c.models.push_back({"m", "", "vllm", "", {{"no-such-host.invalid", 1}}});
  auto snap = buildSnapshot(c, 1, reg);
  ASSERT_FALSE(snap);
  EXPECT_NE(snap.error().message.find("models[0].endpoints[0]: cannot resolve"), std::string::npos);
}

}  // namespace
}  // namespace sluice::router
