#include <gtest/gtest.h>

#include "config/router_config.h"
#include "opentelemetry/proto/trace/v1/trace.pb.h"
#include "tracing/otlp_http.h"
#include "tracing/otlp_wire.h"
#include "tracing/request_trace.h"
#include "tracing/span_record.h"
#include "tracing/trace_context.h"

namespace sluice::tracing {
namespace {

constexpr std::string_view kValid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

TEST(Traceparent, ParsesTheW3CExample) {
  auto p = parseTraceparent(kValid);
  ASSERT_TRUE(p);
  EXPECT_EQ(hex(p->trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(hex(p->span_id), "00f067aa0ba902b7");
  EXPECT_TRUE(p->sampled());
  EXPECT_FALSE(
      parseTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")->sampled());
  EXPECT_EQ(formatTraceparent(p->trace_id, p->span_id, 1), kValid);
  // Surrounding whitespace is not part of the value.
  EXPECT_TRUE(parseTraceparent(" \t" + std::string(kValid) + " "));
}

TEST(Traceparent, RefusesWhatMayNotBeContinued) {
  for (std::string_view bad : {
           "",
           "garbage",
           "00-00000000000000000000000000000000-00f067aa0ba902b7-01",    // zero trace id
           "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",    // zero parent id
           "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",    // upper case
           "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",    // version ff
           "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",  // v00 with more
           "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",     // short trace id
           "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
           "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
       }) {
    EXPECT_FALSE(parseTraceparent(bad)) << bad;
  }
}

TEST(Traceparent, ReadsTheKnownFieldsOfLaterVersions) {
  auto p = parseTraceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future");
  ASSERT_TRUE(p);
  EXPECT_TRUE(p->sampled());
  EXPECT_FALSE(parseTraceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"));
}

// What the exporter sends, decoded by libprotobuf: each record's spans are ScopeSpans.spans
// entries, so they parse (and merge) as a ScopeSpans.
size_t decodeTraces(std::string_view bytes, opentelemetry::proto::trace::v1::ScopeSpans& scope) {
  size_t spans = 0;
  bool whole = forEachRecord(bytes, [&](std::string_view entries, uint32_t count) {
    EXPECT_TRUE(scope.MergeFromString(std::string(entries)));
    spans += count;
  });
  EXPECT_EQ(static_cast<size_t>(scope.spans_size()), spans);
  return whole ? spans : 0;
}

SpanId id(uint8_t b) {
  SpanId s{};
  s.fill(b);
  return s;
}

TEST(SpanRecord, RoundTripsATraceIntoOtlpSpans) {
  auto parent = parseTraceparent(kValid);
  RequestTrace t(&*parent, TraceId{}, id(1), /*mono*/ 1000, /*wall*/ 1'700'000'000'000'000'000,
                 "vendor=x");
  t.nameServer("POST /v1/chat/completions");
  size_t up = t.open("upstream", SpanKind::Client, id(2), 1500);
  t.span(up).error_message = "refused";
  t.close(up, 2500, true);
  size_t q = t.open("queue", SpanKind::Internal, id(3), 2600);
  t.drop(q);  // not applicable: forgotten
  t.finish(4000);
  std::string bytes;
  auto server_attributes = [](WireWriter& w) {
    w.attribute("http.response.status_code", int64_t{200});
    w.attribute("gen_ai.request.model", "m");
  };
  encodeTrace(t, bytes, server_attributes);
  encodeTrace(t, bytes, server_attributes);  // two records back to back
  opentelemetry::proto::trace::v1::ScopeSpans scope;
  ASSERT_EQ(decodeTraces(bytes, scope), 4u);
  const auto& server = scope.spans(0);
  // The caller's trace, with the caller's span as the parent (the argument trace id unused).
  EXPECT_EQ(server.trace_id(),
            std::string(reinterpret_cast<const char*>(parent->trace_id.data()), 16));
  EXPECT_EQ(server.parent_span_id(),
            std::string(reinterpret_cast<const char*>(parent->span_id.data()), 8));
  EXPECT_EQ(server.span_id(), std::string(8, '\1'));
  EXPECT_EQ(server.name(), "POST /v1/chat/completions");
  EXPECT_EQ(server.kind(), opentelemetry::proto::trace::v1::Span::SPAN_KIND_SERVER);
  EXPECT_EQ(server.trace_state(), "vendor=x");
  EXPECT_EQ(server.start_time_unix_nano(), 1'700'000'000'000'000'000u);
  EXPECT_EQ(server.end_time_unix_nano(), 1'700'000'000'000'003'000u);
  ASSERT_EQ(server.attributes_size(), 2);
  EXPECT_EQ(server.attributes(0).value().int_value(), 200);
  EXPECT_EQ(server.attributes(1).value().string_value(), "m");
  const auto& client = scope.spans(1);
  EXPECT_EQ(client.parent_span_id(), server.span_id());
  EXPECT_EQ(client.kind(), opentelemetry::proto::trace::v1::Span::SPAN_KIND_CLIENT);
  EXPECT_EQ(client.status().code(), opentelemetry::proto::trace::v1::Status::STATUS_CODE_ERROR);
  EXPECT_EQ(client.status().message(), "refused");
  EXPECT_EQ(client.end_time_unix_nano() - client.start_time_unix_nano(), 1000u);
}

TEST(SpanRecord, AServerSpanContinuingACallerNamesItsParent) {
  auto parent = parseTraceparent(kValid);
  RequestTrace t(&*parent, TraceId{}, id(1), 0, 0, "");
  t.finish(1);
  std::string bytes;
  encodeTrace(t, bytes);
  opentelemetry::proto::trace::v1::ScopeSpans scope;
  ASSERT_EQ(decodeTraces(bytes, scope), 1u);
  EXPECT_EQ(hex(parent->span_id), "00f067aa0ba902b7");
  std::string want(reinterpret_cast<const char*>(parent->span_id.data()), 8);
  EXPECT_EQ(scope.spans(0).parent_span_id(), want);
  // A new trace's server span is a root.
  RequestTrace root(nullptr, TraceId{1}, id(1), 0, 0, "ignored without a parent");
  root.finish(1);
  bytes.clear();
  encodeTrace(root, bytes);
  scope.Clear();
  ASSERT_EQ(decodeTraces(bytes, scope), 1u);
  EXPECT_TRUE(scope.spans(0).parent_span_id().empty());
  EXPECT_TRUE(scope.spans(0).trace_state().empty());
}

TEST(SpanRecord, TornRecordsStopTheDecoder) {
  RequestTrace t(nullptr, TraceId{1}, id(1), 0, 0, "");
  t.finish(1);
  std::string bytes;
  encodeTrace(t, bytes);
  opentelemetry::proto::trace::v1::ScopeSpans scope;
  for (size_t cut = 1; cut < bytes.size(); ++cut) {
    size_t records = 0;
    EXPECT_FALSE(forEachRecord(std::string_view(bytes).substr(0, cut), [&](std::string_view,
                                                                           uint32_t) {
      ++records;
    })) << cut;
    EXPECT_EQ(records, 0u);
  }
}

TEST(SpanRecord, ChildrenPastTheBoundAreNotRecorded) {
  RequestTrace t(nullptr, TraceId{1}, id(1), 0, 0, "");
  size_t opened = 0;
  for (size_t i = 0; i < 100; ++i) {
    opened += t.open("upstream", SpanKind::Client, id(2), 1) != SIZE_MAX ? 1 : 0;
  }
  EXPECT_EQ(opened, RequestTrace::kMaxSpans - 1);
}

TEST(WireWriter, LengthsAreCanonicalVarints) {
  // Submessages whose lengths need one, two and three bytes decode exactly.
  for (size_t n : {1, 127, 128, 300, 20000}) {
    std::string out;
    {
      WireWriter w(out);
      const size_t m = w.begin(otlp_field::kStatus);
      w.bytesField(otlp_field::kStatusMessage, std::string(n, 'x'));
      w.end(m);
    }  // the writer trims the string when it closes
    opentelemetry::proto::trace::v1::Span span;
    ASSERT_TRUE(span.ParseFromString(out)) << n;
    EXPECT_EQ(span.status().message().size(), n);
    std::string canonical;
    span.SerializeToString(&canonical);
    EXPECT_EQ(out, canonical) << n;
  }
}

TEST(OtlpUrl, SplitsHostPortAndPath) {
  auto u = parseOtlpUrl("http://otel-collector.observability:4318/v1/traces");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "otel-collector.observability");
  EXPECT_EQ(u->port, "4318");
  EXPECT_EQ(u->path, "/v1/traces");
  auto v6 = parseOtlpUrl("http://[::1]:4318");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->path, "/v1/traces");
  EXPECT_FALSE(parseOtlpUrl("https://collector:4318"));
  EXPECT_FALSE(parseOtlpUrl("http://collector"));
}

TEST(TracingConfig, ParsesAndRefusesWithFieldPaths) {
  config::ConfigErrors errors;
  auto cfg = config::parseRouterConfig(
      "tracing: {endpoint: 'http://127.0.0.1:4318', sampling: 0.25, flush_interval: 200ms}\n",
      errors);
  ASSERT_TRUE(cfg) << (errors.errors.empty() ? "" : errors.errors[0]);
  EXPECT_EQ(cfg->tracing.endpoint, "http://127.0.0.1:4318/v1/traces");
  EXPECT_DOUBLE_EQ(cfg->tracing.sampling, 0.25);
  EXPECT_EQ(cfg->tracing.flush_interval.count(), 200);
  EXPECT_TRUE(cfg->tracing.enabled());
  config::ConfigErrors bad;
  EXPECT_FALSE(config::parseRouterConfig(
      "tracing: {endpoint: 'grpc://x:4317', sampling: 2, service_name: '', colour: red}\n", bad));
  std::string all;
  for (const auto& e : bad.errors) {
    all += e + "\n";
  }
  EXPECT_NE(all.find("tracing.endpoint: must be an OTLP/HTTP URL"), std::string::npos) << all;
  EXPECT_NE(all.find("tracing.sampling: must be a ratio in 0..1"), std::string::npos) << all;
  EXPECT_NE(all.find("tracing.service_name: must not be empty"), std::string::npos) << all;
  EXPECT_NE(all.find("colour"), std::string::npos) << all;
}

}  // namespace
}  // namespace sluice::tracing
