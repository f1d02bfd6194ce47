#include "tracing/trace_context.h"

#include <algorithm>

namespace sluice::tracing {

namespace {

int hexValue(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  return -1;  // upper case is not allowed either
}

template <size_t N>
bool readHex(std::string_view text, std::array<uint8_t, N>& out) {
  if (text.size() != 2 * N) {
    return false;
  }
  for (size_t i = 0; i < N; ++i) {
    const int hi = hexValue(text[2 * i]);
    const int lo = hexValue(text[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      return false;
    }
    out[i] = static_cast<uint8_t>(hi * 16 + lo);
  }
  return true;
}

template <size_t N>
bool allZero(const std::array<uint8_t, N>& id) {
  return std::all_of(id.begin(), id.end(), [](uint8_t b) { return b == 0; });
}

}  // namespace

std::optional<ParentContext> parseTraceparent(std::string_view value) {
  // Surrounding whitespace is allowed in a header value.
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) {
    value.remove_prefix(1);
  }
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) {
    value.remove_suffix(1);
  }
  if (value.size() < kTraceparentSize || value[2] != '-' || value[35] != '-' || value[52] != '-') {
    return std::nullopt;
  }
  std::array<uint8_t, 1> version{};
  std::array<uint8_t, 1> flags{};
  ParentContext ctx;
  if (!readHex(value.substr(0, 2), version) || version[0] == 0xff ||
      !readHex(value.substr(3, 32), ctx.trace_id) || !readHex(value.substr(36, 16), ctx.span_id) ||
      !readHex(value.substr(53, 2), flags) || allZero(ctx.trace_id) || allZero(ctx.span_id)) {
    return std::nullopt;
  }
  if (value.size() > kTraceparentSize && (version[0] == 0 || value[kTraceparentSize] != '-')) {
    return std::nullopt;
  }
  ctx.flags = flags[0];
  return ctx;
}

void appendHex(std::string& out, const uint8_t* bytes, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; ++i) {
    out += kDigits[bytes[i] >> 4];
    out += kDigits[bytes[i] & 15];
  }
}

std::string formatTraceparent(const TraceId& trace, const SpanId& span, uint8_t flags) {
  std::string out;
  out.reserve(kTraceparentSize);
  out += "00-";
  appendHex(out, trace.data(), trace.size());
  out += '-';
  appendHex(out, span.data(), span.size());
  out += '-';
  appendHex(out, &flags, 1);
  return out;
}

}  // namespace sluice::tracing
