#include "k8s/status_writer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "k8s/convert.h"

namespace sluice::k8s {
namespace {

using json = nlohmann::json;

const ResourceType& typeOf(config::Kind kind, std::string_view version = "") {
  for (const auto& t : watchedResources()) {
    if (t.kind == kind && (version.empty() || t.version == version)) {
      return t;
    }
  }
  throw std::runtime_error("no such resource");
}

StatusContext context(std::string now = "2026-12-01T00:00:00Z") {
  StatusContext ctx;
  ctx.controller_name = "sluice.dev/gateway-controller";
  ctx.now = std::move(now);
  ctx.our_gateway = [](std::string_view ns, std::string_view name) {
    return ns == "default" && name == "ours";
  };
  return ctx;
}

router::ObjectStatus routeStatus(bool resolved) {
  router::ObjectStatus st;
  st.key = "HTTPRoute/default/r";
  st.parents.push_back({"Gateway/default/ours",
                        {{"Accepted", true, "Accepted", ""},
                         {"ResolvedRefs", resolved, resolved ? "ResolvedRefs" : "BackendNotFound",
                          resolved ? "" : "Service default/x not found"}}});
  st.parents.push_back({"Gateway/default/theirs", {{"Accepted", true, "Accepted", ""}}});
  return st;
}

Observed routeObserved(json status) {
  Observed o;
  o.type = &typeOf(config::Kind::HTTPRoute);
  o.ns = "default";
  o.name = "r";
  o.resource_version = "7";
  o.generation = 3;
  o.status = std::move(status);
  o.parent_refs = json::parse(R"([{"name":"ours"},{"name":"theirs","sectionName":"x"}])");
  return o;
}

TEST(StatusWriter, RouteParentsOnlyForOurGatewaysAndOthersKept) {
  json held = json::parse(R"({"parents":[{"parentRef":{"name":"theirs","namespace":"default"},
      "controllerName":"example.com/other","conditions":[]}]})");
  auto desired = desiredStatus(routeStatus(true), routeObserved(held), context());
  ASSERT_TRUE(desired);
  const auto& parents = (*desired)["parents"];
  ASSERT_EQ(parents.size(), 2u);
  EXPECT_EQ(parents[0]["controllerName"], "example.com/other");  // untouched
  EXPECT_EQ(parents[1]["controllerName"], "sluice.dev/gateway-controller");
  EXPECT_EQ(parents[1]["parentRef"], json::parse(R"({"name":"ours","namespace":"default"})"));
  const auto& conds = parents[1]["conditions"];
  ASSERT_EQ(conds.size(), 2u);
  EXPECT_EQ(conds[0]["type"], "Accepted");
  EXPECT_EQ(conds[0]["status"], "True");
  EXPECT_EQ(conds[0]["observedGeneration"], 3);
  EXPECT_EQ(conds[0]["lastTransitionTime"], "2026-12-01T00:00:00Z");
  EXPECT_EQ(conds[1]["reason"], "ResolvedRefs");
}

TEST(StatusWriter, UnchangedStatusIsNotWrittenAgainAndTransitionsKeepTheirTime) {
  auto first = desiredStatus(routeStatus(true), routeObserved(json()), context());
  ASSERT_TRUE(first);
  // The server now holds what we wrote; later the same status at a later time.
  auto again =
      desiredStatus(routeStatus(true), routeObserved(*first), context("2026-12-01T01:00:00Z"));
  ASSERT_TRUE(again);
  EXPECT_FALSE(statusDiffers(*again, *first));
  // ResolvedRefs turns False: that condition moves, Accepted keeps its time.
  auto changed =
      desiredStatus(routeStatus(false), routeObserved(*first), context("2026-12-01T02:00:00Z"));
  ASSERT_TRUE(changed);
  EXPECT_TRUE(statusDiffers(*changed, *first));
  const auto& conds = (*changed)["parents"][0]["conditions"];
  EXPECT_EQ(conds[0]["lastTransitionTime"], "2026-12-01T00:00:00Z");
  EXPECT_EQ(conds[1]["lastTransitionTime"], "2026-12-01T02:00:00Z");
  EXPECT_EQ(conds[1]["reason"], "BackendNotFound");
}

TEST(StatusWriter, NothingOwedOnRoutesOfOtherGateways) {
  router::ObjectStatus st;
  st.key = "HTTPRoute/default/r";
  st.parents.push_back({"Gateway/default/theirs", {{"Accepted", true, "Accepted", ""}}});
  EXPECT_FALSE(desiredStatus(st, routeObserved(json()), context()));
}

TEST(StatusWriter, GatewayListenersAndAddresses) {
  router::ObjectStatus st;
  st.key = "Gateway/default/ours";
  st.conditions = {{"Accepted", true, "Accepted", ""}, {"Programmed", true, "Programmed", ""}};
  st.listeners.push_back({"http", 2, {{"Accepted", true, "Accepted", ""}}});
  Observed o;
  o.type = &typeOf(config::Kind::Gateway);
  o.ns = "default";
  o.name = "ours";
  o.generation = 1;
  o.listeners = json::parse(R"([{"name":"http","port":80,"protocol":"HTTP"}])");
  auto ctx = context();
  ctx.addresses = {{"IPAddress", "10.1.2.3"}};
  auto desired = desiredStatus(st, o, ctx);
  ASSERT_TRUE(desired);
  EXPECT_EQ((*desired)["addresses"][0]["value"], "10.1.2.3");
  EXPECT_EQ((*desired)["listeners"][0]["attachedRoutes"], 2);
  EXPECT_EQ((*desired)["listeners"][0]["supportedKinds"][0]["kind"], "HTTPRoute");
  EXPECT_EQ((*desired)["conditions"][1]["type"], "Programmed");
  o.ns = "elsewhere";  // not ours: nothing written
  EXPECT_FALSE(desiredStatus(st, o, ctx));
}

TEST(StatusWriter, PoolParentsUseTheVersionsListName) {
  router::ObjectStatus st;
  st.key = "InferencePool/default/p";
  st.parents.push_back(
      {"Gateway/default/ours",
       {{"Accepted", true, "Accepted", ""}, {"ResolvedRefs", true, "ResolvedRefs", ""}}});
  Observed o;
  o.type = &typeOf(config::Kind::InferencePool, "v1");
  o.ns = "default";
  o.name = "p";
  auto v1 = desiredStatus(st, o, context());
  ASSERT_TRUE(v1);
  EXPECT_EQ((*v1)["parents"][0]["parentRef"]["namespace"], "default");
  EXPECT_EQ((*v1)["parents"][0]["parentRef"]["kind"], "Gateway");
  o.type = &typeOf(config::Kind::InferencePool, "v1alpha2");
  auto v1alpha2 = desiredStatus(st, o, context());
  ASSERT_TRUE(v1alpha2);
  EXPECT_TRUE(v1alpha2->contains("parent"));
}

TEST(StatusWriter, InvalidObjectsAreRejectedOnTheirOwnStatus) {
  router::ObjectStatus st;
  st.key = "HTTPRoute/default/r";
  st.errors.push_back("spec.rules[0].matches[0].path.value: must start with /");
  auto desired = desiredStatus(st, routeObserved(json()), context());
  ASSERT_TRUE(desired);
  const auto& parents = (*desired)["parents"];
  ASSERT_EQ(parents.size(), 1u);  // only the parentRef naming our Gateway
  const auto& c = parents[0]["conditions"][0];
  EXPECT_EQ(c["type"], "Accepted");
  EXPECT_EQ(c["status"], "False");
  EXPECT_EQ(c["reason"], "UnsupportedValue");
  EXPECT_THAT(c["message"].get<std::string>(), ::testing::HasSubstr("must start with /"));

  router::ObjectStatus ms;
  ms.key = "ModelServer/default/m";
  ms.conditions.push_back({"Accepted", true, "Accepted", ""});
  ms.errors.push_back("spec.workloadPort.port: must be 1..65535");
  Observed o;
  o.type = &typeOf(config::Kind::ModelServer);
  o.ns = "default";
  o.name = "m";
  auto server = desiredStatus(ms, o, context());
  ASSERT_TRUE(server);
  EXPECT_EQ((*server)["conditions"][0]["reason"], "Invalid");
  EXPECT_THAT((*server)["conditions"][0]["message"].get<std::string>(),
              ::testing::HasSubstr("the last valid version is still served"));
}

TEST(StatusWriter, PatchCarriesTheResourceVersion) {
  auto patch = json::parse(statusPatch(json{{"conditions", json::array()}}, "42"));
  EXPECT_EQ(patch["metadata"]["resourceVersion"], "42");
  EXPECT_TRUE(patch["status"]["conditions"].is_array());
  EXPECT_EQ(rfc3339(0), "1970-01-01T00:00:00Z");
  EXPECT_EQ(rfc3339Micro(1'500'000), "1970-01-01T00:00:01.500000Z");
}

TEST(Convert, ListItemsWithoutKindAndHostileFields) {
  const auto& pods = typeOf(config::Kind::Pod);
  auto ok = convertObject(pods, json::parse(R"({"metadata":{"name":"p","namespace":"ns",
      "resourceVersion":"9","labels":{"app":"x"},"managedFields":[{"manager":"kubectl"}]},
      "spec":{"containers":[{"name":"c","ports":[{"name":"http","containerPort":8000}]}]},
      "status":{"podIP":"10.0.0.5","phase":"Running",
      "conditions":[{"type":"Ready","status":"True"}]}})"));
  ASSERT_TRUE(ok.object) << (ok.errors.empty() ? "" : ok.errors[0].message);
  EXPECT_EQ(ok.key, "Pod/ns/p");
  EXPECT_EQ(ok.resource_version, "9");
  const auto& pod = std::get<config::Pod>(ok.object->spec);
  EXPECT_TRUE(pod.ready);
  EXPECT_EQ(pod.ip, "10.0.0.5");
  EXPECT_EQ(pod.named_ports.at("http"), 8000);
  // Wrong types everywhere: reported, never thrown.
  auto bad = convertObject(typeOf(config::Kind::HTTPRoute),
                           json::parse(R"({"metadata":{"name":"r","namespace":7,"labels":[1]},
                           "spec":{"rules":"x","parentRefs":{"a":null}}})"));
  EXPECT_FALSE(bad.object);
  EXPECT_FALSE(bad.errors.empty());
  EXPECT_FALSE(convertObject(pods, json::parse("[1,2]")).object);
  EXPECT_EQ(storeKey(pods, json::parse(R"({"metadata":{"name":5}})")), "");
}

}  // namespace
}  // namespace sluice::k8s
