#include "tracing/span_record.h"

#include <cstring>

#include "tracing/otlp_wire.h"
#include "tracing/request_trace.h"

namespace sluice::tracing {

namespace {

namespace f = otlp_field;

template <size_t N>
std::string_view bytesOf(const std::array<uint8_t, N>& id) {
  return {reinterpret_cast<const char*>(id.data()), N};
}

void encodeSpan(WireWriter& w, const RequestTrace& t, const SpanData& s, bool has_parent,
                const std::function<void(WireWriter&)>* attributes) {
  const size_t span = w.begin(f::kSpans);
  w.bytesField(f::kTraceId, bytesOf(t.traceId()));
  w.bytesField(f::kSpanId, bytesOf(s.id));
  if (!t.tracestate().empty()) {
    w.bytesField(f::kTraceState, t.tracestate());
  }
  if (has_parent) {
    w.bytesField(f::kParentSpanId, bytesOf(s.parent));
  }
  w.bytesField(f::kName, s.name);
  w.varintField(f::kKind, static_cast<uint64_t>(s.kind));
  w.fixed64Field(f::kStart, static_cast<uint64_t>(t.wallNs(s.start_ns)));
  w.fixed64Field(f::kEnd, static_cast<uint64_t>(t.wallNs(s.end_ns)));
  for (const Attribute& a : s.attributes) {
    if (a.is_int) {
      w.attribute(a.key, a.number);
    } else {
      w.attribute(a.key, a.text);
    }
  }
  if (attributes != nullptr && *attributes) {
    (*attributes)(w);
  }
  if (s.error) {
    const size_t status = w.begin(f::kStatus);
    if (!s.error_message.empty()) {
      w.bytesField(f::kStatusMessage, s.error_message);
    }
    w.varintField(f::kStatusCode, 2);  // STATUS_CODE_ERROR
    w.end(status);
  }
  w.fixed32Field(f::kFlags, 1);  // W3C flags: sampled (only recorded traces are exported)
  w.end(span);
}

}  // namespace

namespace {

void encodeRecord(WireWriter& w, const RequestTrace& trace,
                  const std::function<void(WireWriter&)>& server_attributes) {
  const size_t at = w.reserveRaw(2 * sizeof(uint32_t));  // the body's length, the span count
  const auto& spans = trace.spans();
  for (size_t i = 0; i < spans.size(); ++i) {
    const bool has_parent = i > 0 || spans[0].parent != SpanId{};
    encodeSpan(w, trace, spans[i], has_parent, i == 0 ? &server_attributes : nullptr);
  }
  const auto len = static_cast<uint32_t>(w.size() - at - sizeof(uint32_t));
  const auto count = static_cast<uint32_t>(spans.size());
  std::memcpy(w.at(at), &len, sizeof(len));
  std::memcpy(w.at(at + sizeof(len)), &count, sizeof(count));
}

}  // namespace

void encodeTrace(const RequestTrace& trace, std::string& out,
                 const std::function<void(WireWriter&)>& server_attributes) {
  WireWriter w(out);
  encodeRecord(w, trace, server_attributes);
}

std::string_view encodeTraceInto(const RequestTrace& trace, std::string& arena,
                                 const std::function<void(WireWriter&)>& server_attributes) {
  WireWriter w(arena, WireWriter::Arena{});
  encodeRecord(w, trace, server_attributes);
  return {w.data(), w.size()};
}

bool forEachRecord(std::string_view bytes,
                   const std::function<void(std::string_view spans, uint32_t count)>& record) {
  while (!bytes.empty()) {
    uint32_t len = 0;
    uint32_t count = 0;
    if (bytes.size() < sizeof(len)) {
      return false;
    }
    std::memcpy(&len, bytes.data(), sizeof(len));
    if (len < sizeof(count) || bytes.size() - sizeof(len) < len) {
      return false;
    }
    std::memcpy(&count, bytes.data() + sizeof(len), sizeof(count));
    record(bytes.substr(sizeof(len) + sizeof(count), len - sizeof(count)), count);
    bytes.remove_prefix(sizeof(len) + len);
  }
  return true;
}

}  // namespace sluice::tracing
