#pragma once

// A protobuf wire-format writer for the OTLP messages Sluice sends: workers encode their spans
// straight into OTLP `Span` bytes (no message objects, no allocation beyond the reused buffer),
// and the exporter wraps them in the request envelope without decoding them again. Field
// numbers are those of proto/ (OpenTelemetry's); unit tests decode the output with libprotobuf.

#include <cstdint>
#include <string>
#include <string_view>

namespace sluice::tracing {

class WireWriter {
 public:
  explicit WireWriter(std::string& out) : out_(out) {}

  void varintField(uint32_t field, uint64_t v);
  void fixed32Field(uint32_t field, uint32_t v);
  void fixed64Field(uint32_t field, uint64_t v);
  void bytesField(uint32_t field, std::string_view v);
  // A length-delimited submessage: begin() returns a mark, end(mark) writes its length (the
  // body is moved down over the unused part of the length's room: canonical varints).
  size_t begin(uint32_t field);
  void end(size_t mark);

  // Span.attributes (field 9): a KeyValue with a string or an integer AnyValue.
  void attribute(std::string_view key, std::string_view value);
  void attribute(std::string_view key, int64_t value);

  static void appendVarint(std::string& out, uint64_t v);

 private:
  void tag(uint32_t field, uint32_t wire_type) { appendVarint(out_, (field << 3) | wire_type); }
  std::string& out_;
};

// OTLP field numbers used by the encoder and the exporter.
namespace otlp_field {
// ExportTraceServiceRequest / ResourceSpans / ScopeSpans
constexpr uint32_t kResourceSpans = 1, kResource = 1, kScopeSpans = 2, kScope = 1, kSpans = 2;
// Span
constexpr uint32_t kTraceId = 1, kSpanId = 2, kTraceState = 3, kParentSpanId = 4, kName = 5,
                   kKind = 6, kStart = 7, kEnd = 8, kAttributes = 9, kStatus = 15, kFlags = 16;
// Status, KeyValue, AnyValue
constexpr uint32_t kStatusMessage = 2, kStatusCode = 3, kKey = 1, kValue = 2, kStringValue = 1,
                   kIntValue = 3;
}  // namespace otlp_field

}  // namespace sluice::tracing
