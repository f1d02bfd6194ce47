#include "config/router_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace sluice::config {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(RouterConfig, EmptyIsDefaults) {
  ConfigErrors errors;
  auto c = parseRouterConfig("", errors);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->listener.port, 8080);
  EXPECT_EQ(c->admin.address, "127.0.0.1");
  EXPECT_EQ(c->admin.port, 15000);
  EXPECT_EQ(c->metrics.port, 9090);
  EXPECT_EQ(c->limits.max_body_bytes, 32u * 1024 * 1024);
  EXPECT_EQ(c->timeouts.drain.count(), 30000);
}

TEST(RouterConfig, ParsesEverything) {
  ConfigErrors errors;
  auto c = parseRouterConfig(R"(
listener: {address: 127.0.0.1, port: 18080}
workers: 3
limits: {max_header_bytes: 16KiB, max_body_bytes: 1MiB, max_connections: 100}
timeouts: {header_read: 2s, idle: 30s, upstream_connect: 250ms, upstream_response: 1m, stream_idle: 10s, client_write: 5s, drain: 1s, request_body: 9s}
upstream: {max_idle_per_endpoint: 8, idle_timeout: 20s, retries: 1, retry_on_status: [503]}
access_log: {path: "off"}
models:
  - name: llama
    upstream_model: meta-llama/Llama-3.1-8B
    endpoints: [127.0.0.11:8000, "[::1]:8001"]
)",
                             errors);
  ASSERT_TRUE(c) << ::testing::PrintToString(errors.errors);
  EXPECT_EQ(c->listener.port, 18080);
  EXPECT_EQ(c->workers, 3);
  EXPECT_EQ(c->limits.max_header_bytes, 16u * 1024);
  EXPECT_EQ(c->timeouts.upstream_connect.count(), 250);
  EXPECT_EQ(c->timeouts.upstream_response.count(), 60000);
  EXPECT_EQ(c->upstream.retries, 1u);
  EXPECT_THAT(c->upstream.retry_on_status, ElementsAre(503));
  EXPECT_EQ(c->access_log.path, "off");
  ASSERT_EQ(c->models.size(), 1u);
  EXPECT_EQ(c->models[0].upstream_model, "meta-llama/Llama-3.1-8B");
  ASSERT_EQ(c->models[0].endpoints.size(), 2u);
  EXPECT_EQ(c->models[0].endpoints[1].host, "::1");
}

TEST(RouterConfig, KubernetesSection) {
  ConfigErrors errors;
  auto c = parseRouterConfig(R"(
kubernetes:
  namespace: team
  controller_name: example.com/router
  qps: 5
  burst: 10
  debounce: 50ms
  write_status: false
  gateway_addresses: [10.0.0.9, lb.example.com]
  leader_election: {enabled: false, lease_name: x, lease_duration: 6s, renew_deadline: 4s,
                    retry_period: 1s}
)",
                             errors);
  ASSERT_TRUE(c) << (errors.errors.empty() ? "" : errors.errors[0]);
  const auto& k = c->kubernetes;
  EXPECT_EQ(k.ns, "team");
  EXPECT_EQ(k.controller_name, "example.com/router");
  EXPECT_EQ(k.qps, 5u);
  EXPECT_EQ(k.debounce.count(), 50);
  EXPECT_FALSE(k.write_status);
  EXPECT_THAT(k.gateway_addresses, ElementsAre("10.0.0.9", "lb.example.com"));
  EXPECT_FALSE(k.leader_election.enabled);
  EXPECT_EQ(k.leader_election.lease_duration.count(), 6000);
  EXPECT_FALSE(k.enabled());  // no kubeconfig and not in a cluster

  ConfigErrors bad;
  EXPECT_FALSE(parseRouterConfig(R"(
kubernetes:
  controller_name: nodomain
  qps: 0
  flavour: x
  leader_election: {lease_duration: 2s, renew_deadline: 5s}
)",
                                 bad));
  EXPECT_THAT(bad.errors, ::testing::Contains(HasSubstr("kubernetes.controller_name")));
  EXPECT_THAT(bad.errors, ::testing::Contains(HasSubstr("kubernetes.qps")));
  EXPECT_THAT(bad.errors, ::testing::Contains(HasSubstr("kubernetes.flavour: unknown field")));
  EXPECT_THAT(bad.errors, ::testing::Contains(HasSubstr("retry_period < renew_deadline")));
}

TEST(RouterConfig, ReportsEveryErrorWithItsPath) {
  ConfigErrors errors;
  auto c = parseRouterConfig(R"(
listener: {port: 99999}
limits: {max_body_bytes: lots}
timeouts: {idle: forever}
colour: blue
models:
  - name: a
    endpoints: [127.0.0.1:0, nohost]
  - name: a
    endpoints: []
  - endpoints: [127.0.0.1:1]
    wat: 1
)",
                             errors);
  EXPECT_FALSE(c);
  EXPECT_THAT(errors.errors,
              ::testing::UnorderedElementsAre(
                  HasSubstr("listener.port: must be an integer in 0..65535"),
                  HasSubstr("limits.max_body_bytes: must be a size"),
                  HasSubstr("timeouts.idle: must be a positive duration"), "colour: unknown field",
                  HasSubstr("models[0].endpoints[0]: must be host:port"),
                  HasSubstr("models[0].endpoints[1]: must be host:port"),
                  HasSubstr("models[1].name: duplicate model name \"a\""),
                  HasSubstr("models[1].endpoints: must be a non-empty list"),
                  "models[2].wat: unknown field", "models[2].name: is required"));
}

TEST(RouterConfig, FetcherAndEngineOverrides) {
  ConfigErrors errors;
  auto c = parseRouterConfig(R"(
metrics_fetcher:
  interval: 100ms
  unhealthy_after: 5
  engines:
    vllm: {waiting: 'my:queue{pool="a"}', kv_usage: ""}
models: [{name: m, engine: sglang, endpoints: ["127.0.0.1:9"]}]
)",
                             errors);
  ASSERT_TRUE(c) << ::testing::PrintToString(errors.errors);
  EXPECT_EQ(c->metrics_fetcher.interval.count(), 100);
  EXPECT_EQ(c->metrics_fetcher.unhealthy_after, 5u);
  EXPECT_EQ(c->metrics_fetcher.engines["vllm"]["waiting"], "my:queue{pool=\"a\"}");
  EXPECT_EQ(c->metrics_fetcher.engines["vllm"]["kv_usage"], "");
  EXPECT_EQ(c->models[0].engine, "sglang");

  ConfigErrors bad;
  EXPECT_FALSE(parseRouterConfig(R"(
metrics_fetcher:
  enabled: maybe
  engines:
    tgi: {}
    vllm: {waiting: "9bad", queue: x}
models: [{name: m, engine: tgi, endpoints: ["127.0.0.1:9"]}]
)",
                                 bad));
  EXPECT_THAT(bad.errors,
              ::testing::UnorderedElementsAre(
                  "metrics_fetcher.enabled: must be true or false",
                  "metrics_fetcher.engines.tgi: unknown field",
                  HasSubstr("metrics_fetcher.engines.vllm.waiting: must be a metric name"),
                  "metrics_fetcher.engines.vllm.queue: unknown field",
                  HasSubstr("models[0].engine: must be one of vllm, sglang")));
}

TEST(RouterConfig, SchedulerProfilesInTheEndpointPickerShape) {
  ConfigErrors errors;
  auto c = parseRouterConfig(R"(
scheduler:
  candidates: 2
  plugins:
    - type: saturation-filter
      parameters: {maxWaiting: 8, maxKvUsage: 0.9}
    - {type: queue-scorer, name: q}
    - {type: prefix-cache-scorer, parameters: {loadThresholdTokens: 16000}}
    - {type: max-score-picker}
  schedulingProfiles:
    - name: cache-first
      plugins:
        - {pluginRef: saturation-filter}
        - {pluginRef: q, weight: 1}
        - {pluginRef: prefix-cache-scorer, weight: 4}
        - {pluginRef: max-score-picker}
  defaultProfile: cache-first
models:
  - {name: a, endpoints: ["127.0.0.1:9"]}
  - {name: b, scheduler: random, endpoints: ["127.0.0.1:9"]}
)",
                             errors);
  ASSERT_TRUE(c) << ::testing::PrintToString(errors.errors);
  const auto& sc = c->scheduler;
  EXPECT_EQ(sc.candidates, 2u);
  ASSERT_EQ(sc.plugins.size(), 4u);
  EXPECT_EQ(sc.plugins[0].name, "saturation-filter");  // the name defaults to the type
  EXPECT_EQ(sc.plugins[0].parameters.at("maxKvUsage"), 0.9);
  ASSERT_EQ(sc.profiles.size(), 1u);
  EXPECT_EQ(sc.profiles[0].plugins[2].weight, 4);
  EXPECT_EQ(sc.default_profile, "cache-first");
  EXPECT_EQ(c->models[1].scheduler, "random");
}

TEST(RouterConfig, SchedulerProfileErrorsHaveFieldPaths) {
  ConfigErrors errors;
  EXPECT_FALSE(parseRouterConfig(R"(
scheduler:
  plugins:
    - {type: magic-scorer}
    - {type: queue-scorer, parameters: {depth: 3}}
    - {type: health-filter}
    - {type: health-filter}
    - {type: max-score-picker}
    - {type: weighted-random-picker}
  schedulingProfiles:
    - name: p
      plugins:
        - {pluginRef: health-filter, weight: 2}
        - {pluginRef: nothing}
        - {pluginRef: max-score-picker}
        - {pluginRef: weighted-random-picker}
    - name: random
      plugins: [{pluginRef: queue-scorer}]
  defaultProfile: nope
models: [{name: m, scheduler: mystery, endpoints: ["127.0.0.1:9"]}]
)",
                                 errors));
  EXPECT_THAT(
      errors.errors,
      ::testing::UnorderedElementsAre(
          HasSubstr("scheduler.plugins[0].type: unknown plugin type \"magic-scorer\""),
          "scheduler.plugins[1].parameters.depth: unknown parameter for queue-scorer",
          "scheduler.plugins[3].name: duplicate plugin name \"health-filter\"",
          "scheduler.schedulingProfiles[0].plugins[0].weight: only scorers take a weight",
          HasSubstr("scheduler.schedulingProfiles[0].plugins[1].pluginRef: no plugin named"),
          "scheduler.schedulingProfiles[0].plugins: at most one picker",
          "scheduler.schedulingProfiles[0].plugins: needs at least one scorer",
          HasSubstr("scheduler.schedulingProfiles[1].name: \"random\" is already a preset"),
          "scheduler.defaultProfile: no preset or profile named \"nope\"",
          HasSubstr("models[0].scheduler: must be a profile")));
}

TEST(RouterConfig, BrokenYamlIsAnErrorNotACrash) {
  ConfigErrors errors;
  EXPECT_FALSE(parseRouterConfig("models: [ {name: a", errors));
  ASSERT_EQ(errors.errors.size(), 1u);
  EXPECT_THAT(errors.errors[0], HasSubstr("invalid YAML"));
  ConfigErrors errors2;
  EXPECT_FALSE(parseRouterConfig("- just\n- a list\n", errors2));
  EXPECT_THAT(errors2.errors[0], HasSubstr("must be a mapping"));
}

TEST(RouterConfig, JsonDumpRoundTripsTheEssentials) {
  ConfigErrors errors;
  auto c = parseRouterConfig("models: [{name: m, endpoints: [\"127.0.0.1:9\"]}]", errors);
  ASSERT_TRUE(c);
  std::string json = toJson(*c);
  EXPECT_THAT(json, HasSubstr("\"models\":[{\"name\":\"m\",\"upstream_model\":\"\",\"engine\":"
                              "\"vllm\",\"scheduler\":\"\",\"endpoints\":[\"127.0.0.1:9\"]}]"));
  EXPECT_THAT(json, HasSubstr("\"drain\":\"30000ms\""));
}

}  // namespace
}  // namespace sluice::config

namespace sluice::config {
namespace {

TEST(RouterConfig, RedisAuthAndUpstreamTls) {
  ConfigErrors errors;
  auto c = parseRouterConfig(R"(
redis_auth: {username: limiter, password_file: /run/secrets/redis}
upstream: {ca_file: /etc/sluice/ca.pem, verify_workload_tls: true}
)",
                             errors);
  ASSERT_TRUE(c) << (errors.errors.empty() ? "" : errors.errors[0]);
  EXPECT_EQ(c->redis_auth.username, "limiter");
  EXPECT_EQ(c->redis_auth.password_file, "/run/secrets/redis");
  EXPECT_EQ(c->upstream.ca_file, "/etc/sluice/ca.pem");
  EXPECT_TRUE(c->upstream.verify_workload_tls);
  ConfigErrors bad_errors;
  auto bad = parseRouterConfig(
      "redis_auth: {username: x}\nupstream: {verify_workload_tls: maybe}\n", bad_errors);
  EXPECT_FALSE(bad);
  EXPECT_THAT(bad_errors.errors,
              ::testing::UnorderedElementsAre(HasSubstr("redis_auth.password_file: is required"),
                                              HasSubstr("upstream.verify_workload_tls: must be")));
}

}  // namespace
}  // namespace sluice::config
