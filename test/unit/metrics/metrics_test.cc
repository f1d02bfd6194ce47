#include "metrics/metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "metrics/access_log.h"

namespace sluice::metrics {
namespace {

using ::testing::HasSubstr;

TEST(Metrics, MergesShardsInPrometheusText) {
  Registry r(2);
  r.shard(0).model("llama").countRequest(200, 0.02);
  r.shard(1).model("llama").countRequest(200, 0.2);
  r.shard(1).model("llama").countRequest(502, 1.0);
  r.shard(0).model("llama").ttft.observe(0.004);
  r.shard(0).model("llama").output_tokens += 5;
  r.shard(1).model("llama").countUpstreamError(UpstreamError::ConnectFailed);
  r.shard(0).active_connections += 3;
  r.shard(1).active_connections += 1;
  std::string text = r.renderPrometheus();
  EXPECT_THAT(text, HasSubstr("# TYPE sluice_requests_total counter\n"));
  EXPECT_THAT(text, HasSubstr("sluice_requests_total{model=\"llama\",code=\"200\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("sluice_requests_total{model=\"llama\",code=\"502\"} 1\n"));
  EXPECT_THAT(
      text, HasSubstr("sluice_request_duration_seconds_bucket{model=\"llama\",le=\"0.025\"} 1\n"));
  EXPECT_THAT(text,
              HasSubstr("sluice_request_duration_seconds_bucket{model=\"llama\",le=\"0.25\"} 2\n"));
  EXPECT_THAT(text,
              HasSubstr("sluice_request_duration_seconds_bucket{model=\"llama\",le=\"+Inf\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("sluice_request_duration_seconds_count{model=\"llama\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("sluice_request_duration_seconds_sum{model=\"llama\"} 1.22\n"));
  EXPECT_THAT(
      text,
      HasSubstr("sluice_time_to_first_token_seconds_bucket{model=\"llama\",le=\"0.005\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("sluice_tokens_total{model=\"llama\",type=\"output\"} 5\n"));
  EXPECT_THAT(
      text, HasSubstr("sluice_upstream_errors_total{model=\"llama\",kind=\"connect_failed\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("sluice_active_connections 4\n"));
}

TEST(Metrics, EscapesLabelValues) {
  Registry r(1);
  r.shard(0).model("a\"b\\c").countRequest(200, 0.1);
  EXPECT_THAT(r.renderPrometheus(), HasSubstr("model=\"a\\\"b\\\\c\",code=\"200\""));
}

TEST(AccessLog, FormatsOneJsonLine) {
  AccessRecord r;
  r.request_id = "abc";
  r.method = "POST";
  r.path = "/v1/chat/completions";
  r.status = 200;
  r.model = "m";
  r.endpoint = "127.0.0.1:1";
  r.attempts = 1;
  r.input_tokens = 3;
  r.output_tokens = 4;
  r.ttft_ms = 1.5;
  r.duration_ms = 10;
  r.client = "127.0.0.1";
  r.stream = true;
  r.unix_ms = 5;
  std::string line;
  formatAccessRecord(r, line);
  EXPECT_EQ(line,
            "{\"ts_ms\":5,\"request_id\":\"abc\",\"method\":\"POST\",\"path\":\"/v1/chat/"
            "completions\",\"status\":200,\"model\":\"m\",\"endpoint\":\"127.0.0.1:1\","
            "\"attempts\":1,\"stream\":true,\"input_tokens\":3,\"output_tokens\":4,"
            "\"ttft_ms\":1.500,\"duration_ms\":10.000,\"error_type\":null,\"client\":"
            "\"127.0.0.1\"}\n");
}

TEST(AccessLog, CarriesTheDecisionWhenAskedTo) {
  AccessRecord r;
  r.decision = "p: chose 10.0.0.1:8000";
  std::string line;
  formatAccessRecord(r, line);
  EXPECT_THAT(line, HasSubstr(",\"decision\":\"p: chose 10.0.0.1:8000\"}\n"));
}

TEST(AccessLog, WritesThroughTheFlusher) {
  char path[] = "/tmp/sluice-access-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  std::atomic<uint64_t> dropped{0};
  {
    AccessLog log(path, 2, dropped);
    AccessRecord r;
    r.request_id = "one";
    log.write(0, r);
    r.request_id = "two";
    log.write(1, r);
    log.flush();
  }
  FILE* f = fopen(path, "r");
  char buf[4096] = {};
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  unlink(path);
  std::string text(buf, n);
  EXPECT_THAT(text, HasSubstr("\"request_id\":\"one\""));
  EXPECT_THAT(text, HasSubstr("\"request_id\":\"two\""));
  EXPECT_EQ(dropped.load(), 0u);
}

TEST(AccessLog, WritesTheGatewayAssociationWithKthenaKeys) {
  AccessRecord r;
  r.gateway = "infra/gw";
  r.listener = "http";
  r.http_route = "app/chat";
  r.route_rule = 1;
  r.backend_kind = "InferencePool";
  r.backend = "app/pool";
  r.inference_pool = "app/pool";
  r.model = "llama";
  r.upstream_model = "llama-v2";
  std::string line;
  formatAccessRecord(r, line);
  EXPECT_THAT(line, HasSubstr("\"gateway\":\"infra/gw\",\"listener\":\"http\",\"http_route\":"
                              "\"app/chat\",\"route_rule\":1,\"backend_kind\":\"InferencePool\","
                              "\"backend\":\"app/pool\",\"inference_pool\":\"app/pool\","
                              "\"upstream_model\":\"llama-v2\""));
  EXPECT_THAT(line, HasSubstr("\"model\":\"llama\""));
  EXPECT_EQ(line.find("model_route"), std::string::npos);  // empty: left out
}

TEST(AccessLog, TextFormatAndAChosenFieldList) {
  AccessRecord r;
  r.unix_ms = 1'700'000'000'123;
  r.method = "POST";
  r.path = "/v1/chat/completions";
  r.protocol = "HTTP/1.1";
  r.status = 200;
  r.gateway = "infra/gw";
  r.model = "a model\n\"x\"";
  AccessFormat f;
  f.text = true;
  f.fields = {AccessField::gateway, AccessField::model, AccessField::error_type};
  std::string line;
  formatAccessRecord(r, f, line);
  EXPECT_EQ(line,
            "2023-11-14T22:13:20.123Z \"POST /v1/chat/completions HTTP/1.1\" 200 gateway=infra/gw "
            "model=\"a model\\n\\\"x\\\"\"\n");
  f.text = false;
  formatAccessRecord(r, f, line);
  EXPECT_EQ(line,
            "{\"gateway\":\"infra/gw\",\"model\":\"a model\\n\\\"x\\\"\",\"error_type\":null}\n");
}

TEST(Metrics, LabelsSeriesByGatewayRouteAndBackendUnderBothNames) {
  Registry r(1);
  SeriesKey key{"llama", "infra/gw", "ModelRoute/app/chat", "InferencePool/app/pool"};
  r.shard(0).series(key).countRequest(200, 0.01);
  const std::string text = r.renderPrometheus();
  EXPECT_THAT(text, HasSubstr("sluice_requests_total{model=\"llama\",gateway=\"infra/gw\",route="
                              "\"ModelRoute/app/chat\",backend=\"InferencePool/app/pool\",code="
                              "\"200\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("kthena_router_requests_total{model=\"llama\",model_route=\"app/"
                              "chat\",backend_type=\"inference_pool\",backend_name=\"app/pool\","
                              "status_code=\"200\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("sluice_build_info{version="));
  EXPECT_THAT(text, HasSubstr("process_resident_memory_bytes "));
  r.names = kKthenaNames;
  EXPECT_EQ(r.renderPrometheus().find("sluice_requests_total"), std::string::npos);
}

TEST(Metrics, ClientNamedModelsAreBoundedPerWorker) {
  Registry r(1);
  for (size_t i = 0; i < Shard::kMaxClientModels + 5; ++i) {
    const std::string name = "m" + std::to_string(i);
    r.shard(0).series(SeriesKey{name, "", "", "InferencePool/a/p"}, true).countRequest(200, 0.01);
  }
  const std::string text = r.renderPrometheus();
  EXPECT_THAT(text, HasSubstr("sluice_requests_total{model=\"_other\",backend=\"InferencePool/a/"
                              "p\",code=\"200\"} 5\n"));
  EXPECT_THAT(text, HasSubstr("model=\"m0\""));
  EXPECT_EQ(text.find("model=\"m100\""), std::string::npos);
}

}  // namespace
}  // namespace sluice::metrics
