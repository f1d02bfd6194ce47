#include "tracing/span_record.h"

#include <cstring>

#include "tracing/otlp_wire.h"
#include "tracing/request_trace.h"

namespace sluice::tracing {

namespace {

namespace f = otlp_field;

template <class T>
void put(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}

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

void encodeTrace(const RequestTrace& trace, std::string& out,
                 const std::function<void(WireWriter&)>& server_attributes) {
  const size_t at = out.size();
  put<uint32_t>(out, 0);  // the body's length, set below
  const auto& spans = trace.spans();
  put<uint32_t>(out, static_cast<uint32_t>(spans.size()));
  WireWriter w(out);
  for (size_t i = 0; i < spans.size(); ++i) {
    const bool has_parent = i > 0 || spans[0].parent != SpanId{};
    encodeSpan(w, trace, spans[i], has_parent, i == 0 ? &server_attributes : nullptr);
  }
  const auto len = static_cast<uint32_t>(out.size() - at - sizeof(uint32_t));
  std::memcpy(out.data() + at, &len, sizeof(len));
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
