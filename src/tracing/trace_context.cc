#include "tracing/trace_context.h"

#include <algorithm>
#include <cstring>

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

void writeHex(char* to, const uint8_t* bytes, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; ++i) {
    to[2 * i] = kDigits[bytes[i] >> 4];
    to[2 * i + 1] = kDigits[bytes[i] & 15];
  }
}

void appendHex(std::string& out, const uint8_t* bytes, size_t n) {
  char buf[64];
  while (n > 0) {  // a stack buffer and one append per 32 bytes, not one per digit
    const size_t take = std::min<size_t>(n, sizeof(buf) / 2);
    writeHex(buf, bytes, take);
    out.append(buf, 2 * take);
    bytes += take;
    n -= take;
  }
}

void appendTraceparent(std::string& out, const TraceId& trace, const SpanId& span, uint8_t flags) {
  char buf[kTraceparentSize];
  std::memcpy(buf, "00-", 3);
  writeHex(buf + 3, trace.data(), trace.size());
  buf[35] = '-';
  writeHex(buf + kTraceparentSpanOffset, span.data(), span.size());
  buf[52] = '-';
  writeHex(buf + 53, &flags, 1);
  out.append(buf, sizeof(buf));
}

std::string formatTraceparent(const TraceId& trace, const SpanId& span, uint8_t flags) {
  std::string out;
  appendTraceparent(out, trace, span, flags);
  return out;
}

}  // namespace sluice::tracing
