#include "tracing/span_record.h"

#include <cstdint>
#include <cstring>

#include "opentelemetry/proto/trace/v1/trace.pb.h"
#include "tracing/request_trace.h"

namespace sluice::tracing {

namespace {

namespace otlp = opentelemetry::proto;

template <class T>
void put(std::string& out, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.append(b, sizeof(T));
}

void putText(std::string& out, std::string_view s, size_t max) {
  s = s.substr(0, max);
  put<uint16_t>(out, static_cast<uint16_t>(s.size()));
  out.append(s);
}

// Reads a record front to back; any read past the end marks it bad.
class Reader {
 public:
  explicit Reader(std::string_view b) : b_(b) {}
  template <class T>
  T get() {
    T v{};
    if (b_.size() < sizeof(T)) {
      bad_ = true;
      return v;
    }
    std::memcpy(&v, b_.data(), sizeof(T));
    b_.remove_prefix(sizeof(T));
    return v;
  }
  std::string_view bytes(size_t n) {
    if (b_.size() < n) {
      bad_ = true;
      return {};
    }
    auto s = b_.substr(0, n);
    b_.remove_prefix(n);
    return s;
  }
  std::string_view text() { return bytes(get<uint16_t>()); }
  bool bad() const { return bad_; }

 private:
  std::string_view b_;
  bool bad_ = false;
};

void encodeSpan(const RequestTrace& trace, const SpanData& s, bool root, std::string& out) {
  out.append(reinterpret_cast<const char*>(s.id.data()), s.id.size());
  put<uint8_t>(out, root ? 0 : 1);  // has a parent
  out.append(reinterpret_cast<const char*>(s.parent.data()), s.parent.size());
  put<uint8_t>(out, static_cast<uint8_t>(s.kind));
  put<uint8_t>(out, s.error ? 1 : 0);
  put<uint64_t>(out, static_cast<uint64_t>(trace.wallNs(s.start_ns)));
  put<uint64_t>(out, static_cast<uint64_t>(trace.wallNs(s.end_ns)));
  putText(out, s.name, 256);
  putText(out, s.error_message, 1024);
  const size_t n = std::min<size_t>(s.attributes.size(), 64);
  put<uint8_t>(out, static_cast<uint8_t>(n));
  for (size_t i = 0; i < n; ++i) {
    const Attribute& a = s.attributes[i];
    putText(out, a.key, 128);
    put<uint8_t>(out, a.is_int ? 1 : 0);
    if (a.is_int) {
      put<int64_t>(out, a.number);
    } else {
      putText(out, a.text, 4096);
    }
  }
}

bool decodeSpan(Reader& r, std::string_view trace_id, std::string_view tracestate,
                otlp::trace::v1::Span& span) {
  span.set_trace_id(std::string(trace_id));
  span.set_span_id(std::string(r.bytes(8)));
  const bool has_parent = r.get<uint8_t>() != 0;
  auto parent = r.bytes(8);
  if (has_parent) {
    span.set_parent_span_id(std::string(parent));
  }
  span.set_trace_state(std::string(tracestate));
  span.set_flags(1);  // W3C flags: sampled (only recorded traces are exported)
  const auto kind = r.get<uint8_t>();
  span.set_kind(static_cast<otlp::trace::v1::Span::SpanKind>(kind <= 3 ? kind : 1));
  const bool error = r.get<uint8_t>() != 0;
  span.set_start_time_unix_nano(r.get<uint64_t>());
  span.set_end_time_unix_nano(r.get<uint64_t>());
  span.set_name(std::string(r.text()));
  auto message = r.text();
  if (error) {
    span.mutable_status()->set_code(otlp::trace::v1::Status::STATUS_CODE_ERROR);
    span.mutable_status()->set_message(std::string(message));
  }
  const auto n = r.get<uint8_t>();
  for (size_t i = 0; i < n && !r.bad(); ++i) {
    auto* kv = span.add_attributes();
    kv->set_key(std::string(r.text()));
    if (r.get<uint8_t>() != 0) {
      kv->mutable_value()->set_int_value(r.get<int64_t>());
    } else {
      kv->mutable_value()->set_string_value(std::string(r.text()));
    }
  }
  return !r.bad();
}

}  // namespace

void encodeTrace(const RequestTrace& trace, std::string& out) {
  const size_t at = out.size();
  put<uint32_t>(out, 0);  // the record's length, set below
  out.append(reinterpret_cast<const char*>(trace.traceId().data()), trace.traceId().size());
  putText(out, trace.tracestate(), 512);
  const auto& spans = trace.spans();
  put<uint8_t>(out, static_cast<uint8_t>(spans.size()));
  for (size_t i = 0; i < spans.size(); ++i) {
    encodeSpan(trace, spans[i], i == 0 && spans[i].parent == SpanId{}, out);
  }
  const auto len = static_cast<uint32_t>(out.size() - at - sizeof(uint32_t));
  std::memcpy(out.data() + at, &len, sizeof(len));
}

size_t decodeTraces(std::string_view bytes, otlp::trace::v1::ScopeSpans& scope) {
  size_t added = 0;
  Reader all(bytes);
  while (true) {
    const auto len = all.get<uint32_t>();
    Reader r(all.bytes(len));
    if (all.bad()) {
      break;  // the end (or a torn record)
    }
    auto trace_id = r.bytes(16);
    auto tracestate = r.text();
    const auto n = r.get<uint8_t>();
    for (size_t i = 0; i < n && !r.bad(); ++i) {
      auto* span = scope.add_spans();
      if (!decodeSpan(r, trace_id, tracestate, *span)) {
        scope.mutable_spans()->RemoveLast();
        return added;
      }
      ++added;
    }
  }
  return added;
}

}  // namespace sluice::tracing
