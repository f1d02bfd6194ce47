#pragma once

// W3C Trace Context (https://www.w3.org/TR/trace-context/): the traceparent header a request
// arrives with, and the one sent upstream.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sluice::tracing {

using TraceId = std::array<uint8_t, 16>;
using SpanId = std::array<uint8_t, 8>;

struct ParentContext {
  TraceId trace_id{};
  SpanId span_id{};  // the caller's span: our server span's parent
  uint8_t flags = 0;
  bool sampled() const { return (flags & 1) != 0; }
};

// A traceparent value, or nullopt when it is not one a participant may continue: not
// "version-traceid-parentid-flags" in lower-case hex, version ff, an all-zero trace or parent
// id, or a version-00 value with anything after the flags. Later versions may carry more
// fields after a '-'; the first four are read.
std::optional<ParentContext> parseTraceparent(std::string_view value);

// "00-<trace>-<span>-<flags>", 55 characters.
std::string formatTraceparent(const TraceId& trace, const SpanId& span, uint8_t flags);
constexpr size_t kTraceparentSize = 55;
// Where the span id starts in a formatted traceparent (rewritten per upstream attempt).
constexpr size_t kTraceparentSpanOffset = 36;

// The same, appended to `out` (no string of its own).
void appendTraceparent(std::string& out, const TraceId& trace, const SpanId& span, uint8_t flags);

// Lower-case hex of the bytes: written at `to` (2n characters), or appended to `out` (ids in
// logs and headers).
void writeHex(char* to, const uint8_t* bytes, size_t n);
void appendHex(std::string& out, const uint8_t* bytes, size_t n);
template <size_t N>
std::string hex(const std::array<uint8_t, N>& id) {
  std::string out;
  appendHex(out, id.data(), N);
  return out;
}

}  // namespace sluice::tracing
