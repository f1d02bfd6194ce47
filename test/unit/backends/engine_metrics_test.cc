#include "backends/engine_metrics.h"

#include <cmath>
#include <fstream>
#include <iterator>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "backends/metrics_fetcher.h"
#include "backends/prometheus.h"

namespace sluice::backends {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string readData(const std::string& name) {
  std::ifstream in(std::string(SLUICE_TEST_DATA) + "/metrics/" + name);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::vector<PromSample> parseAll(std::string_view text, std::string* error = nullptr) {
  std::vector<PromSample> out;
  auto r = parsePrometheusText(text, [&](const PromSample& s) { out.push_back(s); });
  if (!r && error) {
    *error = r.error().message;
  }
  return out;
}

TEST(Prometheus, ParsesTheReferenceExample) {
  const std::string text = readData("text_format_example.txt");
  std::string error;
  auto samples = parseAll(text, &error);
  ASSERT_TRUE(error.empty()) << error;
  ASSERT_EQ(samples.size(), 16u);
  EXPECT_EQ(samples[0].name, "http_requests_total");
  EXPECT_EQ(samples[0].value, 1027);
  EXPECT_EQ(*samples[0].timestamp_ms, 1395066363000);
  EXPECT_EQ(*promLabel(samples[0].labels, "code"), "200");
  EXPECT_EQ(samples[1].value, 3);
  EXPECT_EQ(*promLabel(samples[2].labels, "path"), "C:\\DIR\\FILE.TXT");
  EXPECT_EQ(*promLabel(samples[2].labels, "error"), "Cannot find file:\n\"FILE.TXT\"");
  EXPECT_EQ(samples[3].labels, "");
  EXPECT_TRUE(std::isinf(samples[4].value));
  EXPECT_EQ(*samples[4].timestamp_ms, -3982045);
  EXPECT_TRUE(std::isnan(samples[11].value));
  EXPECT_EQ(samples[14].name, "foo_bucket");  // exemplar ignored
  EXPECT_EQ(samples[14].value, 0);
  EXPECT_EQ(*promLabel(samples[15].labels, "a"), "1");
  EXPECT_FALSE(promLabel(samples[15].labels, "b"));
}

TEST(Prometheus, RejectsGarbageWithTheLineNumber) {
  const std::pair<std::string, std::string> cases[] = {
      {"ok 1\nbad line here\n", "line 2: malformed sample"},
      {"m{a=\"unterminated} 1\n", "line 1: malformed sample"},
      {"m{a=1} 1\n", "line 1: malformed sample"},
      {"m{=\"x\"} 1\n", "line 1: malformed sample"},
      {"m 1 2 3\n", "line 1: malformed sample"},
      {"m abc\n", "line 1: malformed sample"},
      {"9metric 1\n", "line 1: malformed sample"},
      {"m{a=\"\\q\"} 1\n", "line 1: malformed sample"},
      {"# TYPE m sometype\n", "line 1: malformed HELP or TYPE comment"},
      {"# TYPE\n", "line 1: malformed HELP or TYPE comment"},
      {"m\n", "line 1: malformed sample"},
  };
  for (const auto& [text, want] : cases) {
    std::string error;
    parseAll(text, &error);
    EXPECT_EQ(error, want) << text;
  }
}

TEST(Prometheus, AcceptsCrLfAndBlankLines) {
  std::string error;
  auto s = parseAll("\r\n# HELP a b\r\na 1\r\n\r\nb{x=\"y\"} -2.5e-3\r\n", &error);
  ASSERT_TRUE(error.empty()) << error;
  ASSERT_EQ(s.size(), 2u);
  EXPECT_DOUBLE_EQ(s[1].value, -2.5e-3);
}

TEST(EngineSignals, VllmV1) {
  auto s = extractSignals(readData("vllm_v1.txt"), defaultMapping(EngineType::Vllm));
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(*s->running, 7);
  EXPECT_EQ(*s->waiting, 2);
  EXPECT_DOUBLE_EQ(*s->kv_usage, 0.4215);
  EXPECT_TRUE(s->ttft.present);
  EXPECT_EQ(s->ttft.count, 20);
  EXPECT_DOUBLE_EQ(s->ttft.sum, 2.5);
  EXPECT_EQ(s->itl.count, 400);
  EXPECT_EQ(*s->block_size, 16u);
  EXPECT_EQ(*s->num_blocks, 27880u);
  // The newest lora_requests_info series wins.
  EXPECT_EQ(s->max_loras, 4);
  EXPECT_THAT(s->running_loras, ElementsAre("sql-lora", "chat-lora"));
  EXPECT_THAT(s->waiting_loras, ElementsAre("tool-lora"));
}

TEST(EngineSignals, VllmV0NamesThroughTheSameMapping) {
  auto s = extractSignals(readData("vllm_v0.txt"), defaultMapping(EngineType::Vllm));
  ASSERT_TRUE(s);
  EXPECT_EQ(*s->running, 4);
  EXPECT_DOUBLE_EQ(*s->kv_usage, 0.125);
  EXPECT_EQ(s->itl.count, 10);
  EXPECT_FALSE(s->ttft.present);
  EXPECT_FALSE(s->has_lora);
}

TEST(EngineSignals, Sglang) {
  auto s = extractSignals(readData("sglang.txt"), defaultMapping(EngineType::Sglang));
  ASSERT_TRUE(s);
  EXPECT_EQ(*s->running, 12);
  EXPECT_EQ(*s->waiting, 3);
  EXPECT_DOUBLE_EQ(*s->kv_usage, 0.28);
  EXPECT_DOUBLE_EQ(s->ttft.sum, 9);
}

TEST(EngineSignals, TritonLabelFilteredFamilies) {
  auto s = extractSignals(readData("triton.txt"), defaultMapping(EngineType::Triton));
  ASSERT_TRUE(s);
  EXPECT_EQ(*s->waiting, 2);
  EXPECT_EQ(*s->running, 5);
  EXPECT_DOUBLE_EQ(*s->kv_usage, 0.5);
  EXPECT_EQ(*s->block_size, 64u);
  EXPECT_EQ(*s->num_blocks, 1000u);
}

TEST(EngineSignals, TrtllmServe) {
  auto s = extractSignals(readData("trtllm_serve.txt"), defaultMapping(EngineType::Trtllm));
  ASSERT_TRUE(s);
  EXPECT_EQ(*s->waiting, 4);
  EXPECT_EQ(*s->running, 9);
  EXPECT_EQ(*s->block_size, 32u);
  EXPECT_EQ(*s->num_blocks, 4096u);
}

TEST(EngineSignals, GarbageIsAnError) {
  EXPECT_FALSE(extractSignals("<html>502 Bad Gateway</html>", defaultMapping(EngineType::Vllm)));
}

TEST(EngineType, Parses) {
  EXPECT_EQ(parseEngineType("vLLM"), EngineType::Vllm);
  EXPECT_EQ(parseEngineType("SGLang"), EngineType::Sglang);
  EXPECT_EQ(parseEngineType("trtllm-serve"), EngineType::Trtllm);
  EXPECT_EQ(parseEngineType("triton"), EngineType::Triton);
  EXPECT_FALSE(parseEngineType("tgi"));
}

EngineSignals withHist(double ttft_sum, double ttft_count) {
  EngineSignals s;
  s.waiting = 1;
  s.running = 2;
  s.kv_usage = 0.5;
  s.ttft = {true, ttft_sum, ttft_count};
  return s;
}

TEST(EndpointTracker, LatencyComesFromHistogramDeltas) {
  base::FakeTimeSource time;
  EndpointTracker t;
  t.onScrape(withHist(10, 100), time.monotonicNow());  // lifetime mean 0.1
  EXPECT_DOUBLE_EQ(t.metrics().ttft_s, 0.1);
  time.advance(std::chrono::milliseconds(50));
  t.onScrape(withHist(12, 104), time.monotonicNow());  // 4 new, 2 s: mean 0.5
  EXPECT_DOUBLE_EQ(t.metrics().ttft_s, 0.5);
  t.onScrape(withHist(12, 104), time.monotonicNow());  // nothing new: keep 0.5
  EXPECT_DOUBLE_EQ(t.metrics().ttft_s, 0.5);
  EXPECT_EQ(t.metrics().updated, time.monotonicNow());
}

TEST(EndpointTracker, CounterResetsAreNotNegative) {
  base::FakeTimeSource time;
  EndpointTracker t;
  t.onScrape(withHist(100, 1000), time.monotonicNow());
  t.onScrape(withHist(0.6, 3), time.monotonicNow());  // the engine restarted
  EXPECT_DOUBLE_EQ(t.metrics().ttft_s, 0.2);
}

TEST(EndpointTracker, UnhealthyAfterRepeatedFailuresUntilASuccess) {
  base::FakeTimeSource time;
  EndpointTracker t;
  t.onScrape(withHist(1, 1), time.monotonicNow());
  t.onFailure("timed out", 3);
  t.onFailure("timed out", 3);
  EXPECT_TRUE(t.metrics().healthy);
  t.onFailure("connection refused", 3);
  EXPECT_FALSE(t.metrics().healthy);
  EXPECT_EQ(t.metrics().last_error, "connection refused");
  EXPECT_EQ(t.metrics().consecutive_failures, 3u);
  // The last good values stay visible, with their age, while unhealthy.
  EXPECT_EQ(t.metrics().waiting, 1);
  t.onScrape(withHist(2, 2), time.monotonicNow());
  EXPECT_TRUE(t.metrics().healthy);
  EXPECT_EQ(t.metrics().consecutive_failures, 0u);
}

TEST(EngineSignals, OverridesReplaceOrDisableSignals) {
  auto mapping = withOverrides(defaultMapping(EngineType::Vllm),
                               {{"waiting", "my:queue{pool=\"a\"}"}, {"kv_usage", ""}});
  auto s = extractSignals(
      "my:queue{pool=\"a\"} 5\nmy:queue{pool=\"b\"} 7\nvllm:num_requests_waiting 9\n"
      "vllm:kv_cache_usage_perc 0.5\nvllm:num_requests_running 2\n",
      mapping);
  ASSERT_TRUE(s);
  EXPECT_EQ(*s->waiting, 5);  // the override, with its label filter
  EXPECT_FALSE(s->kv_usage);  // turned off
  EXPECT_EQ(*s->running, 2);  // untouched default
  auto ref = parseMetricRef("nv_metric{kind=\"x\"}");
  EXPECT_EQ(ref.name, "nv_metric");
  EXPECT_EQ(ref.label_key, "kind");
  EXPECT_EQ(ref.label_value, "x");
}

TEST(MetricsView, JsonShowsTheAgeOfEachEndpointsData) {
  base::FakeTimeSource time;
  MetricsView view;
  EndpointTracker t;
  t.onScrape(withHist(1, 1), time.monotonicNow());
  view.endpoints["10.0.0.1:8000"] = t.metrics();
  view.endpoints["10.0.0.2:8000"] = EndpointTracker().metrics();
  time.advance(std::chrono::milliseconds(250));
  std::string json = metricsViewJson(view, time.monotonicNow());
  EXPECT_THAT(json, HasSubstr("\"address\":\"10.0.0.1:8000\",\"healthy\":true,\"scraped\":true,"
                              "\"age_seconds\":0.25,\"waiting\":1,\"running\":2,\"kv_usage\":0.5"));
  EXPECT_THAT(json, HasSubstr("\"address\":\"10.0.0.2:8000\",\"healthy\":true,\"scraped\":false,"
                              "\"age_seconds\":null"));
}

TEST(ModelIds, FromV1Models) {
  EXPECT_THAT(
      parseModelIds(R"({"object":"list","data":[{"id":"base"},{"id":"lora-a","parent":"base"}]})"),
      ElementsAre("base", "lora-a"));
  EXPECT_TRUE(parseModelIds("not json").empty());
  // Only ids with a parent are LoRA adapters: the base model is not one.
  std::vector<std::string> loras;
  parseModelIds(R"({"data":[{"id":"base","parent":null},{"id":"lora-a","parent":"base"}]})",
                &loras);
  EXPECT_THAT(loras, ElementsAre("lora-a"));
}

}  // namespace
}  // namespace sluice::backends
