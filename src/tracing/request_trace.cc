#include "tracing/request_trace.h"

#include <algorithm>
#include <cstdint>

namespace sluice::tracing {

RequestTrace::RequestTrace(const ParentContext* parent, const TraceId& trace_id,
                           const SpanId& server_span, int64_t mono_ns, int64_t wall_ns,
                           std::string_view tracestate)
    : trace_id_(parent ? parent->trace_id : trace_id),
      mono_ns_(mono_ns),
      wall_ns_(wall_ns),
      tracestate_(parent ? tracestate : std::string_view()) {
  spans_.reserve(8);
  SpanData& s = spans_.emplace_back();
  s.id = server_span;
  if (parent) {
    s.parent = parent->span_id;
  }
  s.name = "request";
  s.kind = SpanKind::Server;
  s.start_ns = mono_ns;
}

size_t RequestTrace::open(std::string_view name, SpanKind kind, const SpanId& id,
                          int64_t start_ns) {
  if (spans_.size() >= kMaxSpans) {
    return SIZE_MAX;
  }
  SpanData& s = spans_.emplace_back();
  s.id = id;
  s.parent = spans_.front().id;
  s.name = name;
  s.kind = kind;
  s.start_ns = start_ns;
  return spans_.size() - 1;
}

void RequestTrace::close(size_t index, int64_t end_ns, bool error) {
  if (index >= spans_.size() || spans_[index].end_ns != 0) {
    return;
  }
  spans_[index].end_ns = end_ns;
  spans_[index].error = spans_[index].error || error;
}

void RequestTrace::drop(size_t index) {
  if (index != 0 && index + 1 == spans_.size()) {
    spans_.pop_back();
  }
}

void RequestTrace::nameServer(std::string name) {
  server_name_ = std::move(name);
  spans_.front().name = server_name_;
}

void RequestTrace::finish(int64_t end_ns) {
  for (size_t i = spans_.size(); i-- > 0;) {
    if (spans_[i].end_ns == 0) {
      spans_[i].end_ns = std::max(end_ns, spans_[i].start_ns);
    }
  }
}

}  // namespace sluice::tracing
