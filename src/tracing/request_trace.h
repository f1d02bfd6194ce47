#pragma once

// The spans of one request while it is served: the server span and its children (admission,
// queueing, scheduling, each upstream attempt, time to first token). Allocated only for a
// request that is recorded; times are monotonic nanoseconds, turned into Unix time once, when
// the trace is encoded for the exporter.

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tracing/trace_context.h"

namespace sluice::tracing {

enum class SpanKind : uint8_t { Internal = 1, Server = 2, Client = 3 };

struct Attribute {
  std::string_view key;  // a literal: attribute names are fixed in the code
  std::string text;      // when !is_int
  int64_t number = 0;
  bool is_int = false;
};

struct SpanData {
  SpanId id{};
  SpanId parent{};
  std::string_view name;  // a literal, or the server span's "METHOD /path" (owned by the trace)
  SpanKind kind = SpanKind::Internal;
  int64_t start_ns = 0;  // monotonic
  int64_t end_ns = 0;    // 0: still open
  bool error = false;
  std::string error_message;
  std::vector<Attribute> attributes;

  void set(std::string_view key, std::string_view value) {
    attributes.push_back({key, std::string(value), 0, false});
  }
  void set(std::string_view key, int64_t value) { attributes.push_back({key, {}, value, true}); }
};

class RequestTrace {
 public:
  // `parent` continues the caller's trace (null: a new trace, `trace_id` is used).
  RequestTrace(const ParentContext* parent, const TraceId& trace_id, const SpanId& server_span,
               int64_t mono_ns, int64_t wall_ns, std::string_view tracestate);

  const TraceId& traceId() const { return trace_id_; }
  uint8_t flags() const { return 1; }  // recorded traces are sampled
  const std::string& tracestate() const { return tracestate_; }
  SpanData& server() { return spans_.front(); }
  const std::vector<SpanData>& spans() const { return spans_; }
  int64_t wallNs(int64_t mono_ns) const { return wall_ns_ + (mono_ns - mono_ns_); }

  // A child of the server span, open from `start_ns`; its index for close() and span().
  size_t open(std::string_view name, SpanKind kind, const SpanId& id, int64_t start_ns);
  void close(size_t index, int64_t end_ns, bool error = false);
  // Forgets the last span opened (a stage that turned out not to apply).
  void drop(size_t index);
  SpanData& span(size_t index) { return spans_[index]; }
  // The server span's name, owned here.
  void nameServer(std::string name);
  // Ends every span still open (at `end_ns`), the server span last.
  void finish(int64_t end_ns);

  static constexpr size_t kMaxSpans = 24;  // more children are not recorded

 private:
  TraceId trace_id_;
  int64_t mono_ns_;
  int64_t wall_ns_;
  std::string tracestate_;
  std::string server_name_;
  std::vector<SpanData> spans_;  // [0] is the server span
};

}  // namespace sluice::tracing
