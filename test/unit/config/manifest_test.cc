#include "config/manifest.h"

#include <gtest/gtest.h>

#include "config/object_store.h"

namespace sluice::config {
namespace {

bool hasError(const ParseResult& r, const std::string& text) {
  for (const auto& e : r.errors) {
    if (e.message.find(text) != std::string::npos)
      return true;
  }
  return false;
}

std::string allErrors(const ParseResult& r) {
  std::string out;
  for (const auto& e : r.errors)
    out += e.where + " " + e.object + ": " + e.message + "\n";
  return out;
}

TEST(Manifest, FieldPathErrors) {
  auto r = parseManifests(R"(
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: app}
spec:
  parentRefs: [{name: gw}]
  hostnames: ["bad_host"]
  rules:
  - matches: [{path: {type: Exact, value: "no-slash"}, headers: [{name: "bad header", value: x}]}]
    backendRefs:
    - {name: a, port: 80}
    - {name: b, port: 80, weight: 2000000}
    - {name: c}
    timeouts: {request: 1s, backendRequest: 5s}
    filters:
    - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /x}}}
    - {type: RequestRedirect, requestRedirect: {statusCode: 307}}
)",
                          "r.yaml");
  EXPECT_TRUE(r.objects.empty());
  std::string all = allErrors(r);
  EXPECT_TRUE(hasError(r, "spec.hostnames[0]: \"bad_host\" is not a valid hostname")) << all;
  EXPECT_TRUE(hasError(r, "spec.rules[0].matches[0].path.value: must start with '/'")) << all;
  EXPECT_TRUE(hasError(r, "spec.rules[0].matches[0].headers[0].name")) << all;
  EXPECT_TRUE(hasError(r, "spec.rules[0].backendRefs[1].weight: must be 0..1000000")) << all;
  EXPECT_TRUE(hasError(r, "spec.rules[0].backendRefs[2].port: is required")) << all;
  EXPECT_TRUE(hasError(r, "spec.rules[0].timeouts.backendRequest: must not exceed")) << all;
  EXPECT_TRUE(hasError(r, "URLRewrite and RequestRedirect cannot be used together")) << all;
  EXPECT_TRUE(hasError(r, "requestRedirect.statusCode: must be 301..302")) << all;
  EXPECT_TRUE(hasError(r, "ReplacePrefixMatch needs exactly one match, of type PathPrefix")) << all;
  ASSERT_FALSE(r.errors.empty());
  EXPECT_EQ(r.errors[0].object, "HTTPRoute/app/r");
}

TEST(Manifest, BadDocumentsAreRejectedAlone) {
  auto r = parseManifests(R"(
apiVersion: v1
kind: Pod
metadata: {name: good, namespace: app, labels: {app: a}}
status: {podIP: 10.0.0.1}
---
apiVersion: example.com/v1
kind: Widget
metadata: {name: w}
---
just a string
---
apiVersion: networking.serving.volcano.sh/v1alpha1
kind: ModelServer
metadata: {name: ms}
spec:
  inferenceEngine: Triton
  workloadSelector: {matchLabels: {}}
  workloadPort: {port: 70000}
---
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: p}
spec:
  selector: {matchLabels: {app: a}}
  targetPorts: [{number: 8000}, {number: 8000}]
  endpointPickerRef: {name: epp}
)",
                          "mixed.yaml");
  ASSERT_EQ(r.objects.size(), 1u);
  EXPECT_EQ(r.objects[0].key(), "Pod/app/good");
  EXPECT_TRUE(r.objects[0].meta.labels.count("app"));
  std::string all = allErrors(r);
  // Another group's kind is skipped with a note, not an error; each document is named by the
  // line it starts on.
  EXPECT_FALSE(hasError(r, "Widget")) << all;
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_TRUE(r.warnings[0].skipped);
  EXPECT_EQ(r.warnings[0].where, "mixed.yaml:7");
  EXPECT_EQ(r.warnings[0].message, "Widget (example.com/v1) is not used by Sluice; skipped");
  EXPECT_TRUE(hasError(r, "must be an object with apiVersion and kind")) << all;
  EXPECT_TRUE(hasError(r, "spec.inferenceEngine: must be one of vLLM, SGLang")) << all;
  EXPECT_TRUE(hasError(r, "spec.workloadPort.port: must be 1..65535")) << all;
  EXPECT_TRUE(hasError(r, "spec.targetPorts[1].number: port number must be unique")) << all;
  EXPECT_TRUE(hasError(r, "spec.endpointPickerRef.port: is required when kind is Service")) << all;
}

TEST(Manifest, UnknownKindsOfOurGroupsAreErrors) {
  auto r = parseManifests(R"(apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g}
---
apiVersion: inference.networking.k8s.io/v1
kind: InferencePol
metadata: {name: p}
)",
                          "typo.yaml");
  EXPECT_TRUE(r.warnings.empty());
  ASSERT_EQ(r.errors.size(), 2u) << allErrors(r);
  EXPECT_EQ(r.errors[0].where, "typo.yaml:1");
  EXPECT_EQ(r.errors[1].where, "typo.yaml:5");
  EXPECT_TRUE(hasError(r, "unsupported kind InferencePol in inference.networking.k8s.io/v1"));
}

TEST(Manifest, BrokenYamlAndHugeFiles) {
  auto r = parseManifests("kind: [unclosed", "broken.yaml");
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_NE(r.errors[0].message.find("line 1"), std::string::npos) << r.errors[0].message;
  std::string huge(kMaxManifestBytes + 1, ' ');
  r = parseManifests(huge, "huge.yaml");
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_NE(r.errors[0].message.find("the limit is"), std::string::npos);
  // Deep nesting is an error, not a stack overflow.
  std::string deep(100000, '[');
  r = parseManifests(deep, "deep.yaml");
  EXPECT_FALSE(r.errors.empty());
}

TEST(Manifest, JsonListAndV1alpha2Pool) {
  auto r = parseManifests(R"({"apiVersion":"v1","kind":"List","items":[
    {"apiVersion":"inference.networking.x-k8s.io/v1alpha2","kind":"InferencePool",
     "metadata":{"name":"old","namespace":"ml"},
     "spec":{"selector":{"app":"x"},"targetPortNumber":8000,"extensionRef":{"name":"epp"}}},
    {"apiVersion":"v1","kind":"Namespace","metadata":{"name":"ml","labels":{"team":"a"}}}]})",
                          "list.json");
  ASSERT_TRUE(r.errors.empty()) << allErrors(r);
  ASSERT_EQ(r.objects.size(), 2u);
  const auto& pool = std::get<InferencePool>(r.objects[0].spec);
  EXPECT_TRUE(pool.from_v1alpha2);
  EXPECT_EQ(pool.selector.at("app"), "x");
  EXPECT_EQ(pool.target_ports, std::vector<uint16_t>{8000});
  ASSERT_TRUE(pool.endpoint_picker);
  EXPECT_EQ(pool.endpoint_picker->port, 9002);  // the v1alpha2 default
  EXPECT_EQ(r.objects[1].key(), "Namespace/ml");
}

TEST(Manifest, UnknownFieldsWarn) {
  auto r = parseManifests(R"(
apiVersion: networking.serving.volcano.sh/v1alpha1
kind: ModelRoute
metadata: {name: mr, namespace: app, creationTimestamp: "2026-03-04T05:06:07Z"}
spec:
  modelName: llama
  rulez: []
  rules:
  - targetModels: [{modelServerName: a, weight: 50}, {modelServerName: b}]
)",
                          "mr.yaml");
  EXPECT_TRUE(hasError(r, "spec.rules[0].targetModels: weights must be set on all targets"))
      << allErrors(r);
  ASSERT_EQ(r.warnings.size(), 1u);
  EXPECT_NE(r.warnings[0].message.find("spec.rulez: unknown field"), std::string::npos);
}

// A copy kept current from events ends up equal to the store it follows: objects (shared, not
// copied), deletions, errors.
TEST(ObjectStore, FollowKeepsACopyCurrent) {
  ObjectStore source;
  source.applySource("a.yaml", parseManifests("apiVersion: v1\nkind: Namespace\nmetadata: "
                                              "{name: one}\n---\napiVersion: v1\nkind: "
                                              "Namespace\nmetadata: {name: two}\n",
                                              "a.yaml"));
  ObjectStore copy = source;
  std::vector<StoreEvent> events = source.applySource(
      "a.yaml", parseManifests("apiVersion: v1\nkind: Namespace\nmetadata: {name: one, labels: "
                               "{x: y}}\n---\nkind: Bogus\n",
                               "a.yaml"));
  events.push_back(
      source.put(parseManifests("apiVersion: v1\nkind: Namespace\nmetadata: {name: three}\n", "api")
                     .objects.at(0)));
  copy.follow(source, events);
  ASSERT_EQ(copy.objects().size(), source.objects().size());
  for (const auto& [key, ptr] : source.objects()) {
    ASSERT_EQ(copy.objects().count(key), 1u) << key;
    EXPECT_EQ(copy.objects().at(key).get(), ptr.get()) << key;
  }
  EXPECT_EQ(copy.find("Namespace/two"), nullptr);
  EXPECT_EQ(copy.errorCount(), source.errorCount());
  EXPECT_GT(copy.errorCount(), 0u);
  EXPECT_EQ(copy.generation(), source.generation());
}

TEST(ObjectStore, SourcesReplaceTheirObjects) {
  ObjectStore store;
  auto a = parseManifests(R"(
apiVersion: v1
kind: Namespace
metadata: {name: one}
---
apiVersion: v1
kind: Namespace
metadata: {name: two}
)",
                          "a.yaml");
  auto ev = store.applySource("a.yaml", std::move(a));
  EXPECT_EQ(ev.size(), 2u);
  uint64_t seq = store.find("Namespace/one")->meta.seq;
  // Same object from another file: refused, the first owner keeps it.
  ev = store.applySource(
      "b.yaml",
      parseManifests("apiVersion: v1\nkind: Namespace\nmetadata: {name: one}\n", "b.yaml"));
  EXPECT_TRUE(ev.empty());
  EXPECT_EQ(store.errors().at("b.yaml").size(), 1u);
  // An update keeps the first-seen order; a missing object is deleted.
  ev = store.applySource(
      "a.yaml", parseManifests("apiVersion: v1\nkind: Namespace\nmetadata: {name: one, labels: "
                               "{x: y}}\n",
                               "a.yaml"));
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(store.find("Namespace/one")->meta.seq, seq);
  EXPECT_EQ(store.find("Namespace/two"), nullptr);
  ev = store.removeSource("a.yaml");
  EXPECT_EQ(store.objects().size(), 0u);
}

}  // namespace
}  // namespace sluice::config
