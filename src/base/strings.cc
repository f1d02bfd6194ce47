#include "base/strings.h"

#include <arpa/inet.h>
#include <charconv>
#include <cmath>

namespace sluice::base {

char asciiLower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (asciiLower(a[i]) != asciiLower(b[i])) {
      return false;
    }
  }
  return true;
}

std::string toLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    c = asciiLower(c);
  }
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

std::string_view trimWhitespace(std::string_view s) {
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (!s.empty() && space(s.front())) {
    s.remove_prefix(1);
  }
  while (!s.empty() && space(s.back())) {
    s.remove_suffix(1);
  }
  return s;
}

std::optional<uint64_t> parseUint(std::string_view text) {
  uint64_t v = 0;
  if (text.empty()) {
    return std::nullopt;
  }
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || ptr != text.data() + text.size()) {
    return std::nullopt;
  }
  return v;
}

namespace {

// Splits "12.5ms" into 12.5 and "ms".
bool splitNumber(std::string_view text, double& number, std::string_view& unit) {
  size_t i = 0;
  while (i < text.size() && ((text[i] >= '0' && text[i] <= '9') || text[i] == '.')) {
    ++i;
  }
  if (i == 0) {
    return false;
  }
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + i, number);
  if (ec != std::errc() || ptr != text.data() + i || !std::isfinite(number) || number < 0) {
    return false;
  }
  unit = trim(text.substr(i));
  return true;
}

}  // namespace

std::optional<std::chrono::milliseconds> parseDuration(std::string_view text) {
  double n = 0;
  std::string_view unit;
  if (!splitNumber(trim(text), n, unit)) {
    return std::nullopt;
  }
  double ms = 0;
  if (unit == "ms") {
    ms = n;
  } else if (unit == "s") {
    ms = n * 1e3;
  } else if (unit == "m") {
    ms = n * 60e3;
  } else if (unit == "h") {
    ms = n * 3600e3;
  } else {
    return std::nullopt;
  }
  if (ms > 1e15) {
    return std::nullopt;
  }
  return std::chrono::milliseconds(static_cast<int64_t>(std::llround(ms)));
}

std::optional<uint64_t> parseByteSize(std::string_view text) {
  double n = 0;
  std::string_view unit;
  if (!splitNumber(trim(text), n, unit)) {
    return std::nullopt;
  }
  double mult = 0;
  if (unit.empty() || unit == "B") {
    mult = 1;
  } else if (unit == "KiB" || unit == "Ki") {
    mult = 1024.0;
  } else if (unit == "MiB" || unit == "Mi") {
    mult = 1024.0 * 1024;
  } else if (unit == "GiB" || unit == "Gi") {
    mult = 1024.0 * 1024 * 1024;
  } else if (unit == "KB" || unit == "k") {
    mult = 1e3;
  } else if (unit == "MB" || unit == "M") {
    mult = 1e6;
  } else if (unit == "GB" || unit == "G") {
    mult = 1e9;
  } else {
    return std::nullopt;
  }
  double v = n * mult;
  if (v > 1e18) {
    return std::nullopt;
  }
  return static_cast<uint64_t>(v);
}

bool isIpLiteral(std::string_view text) {
  if (text.empty() || text.size() > 45) {
    return false;
  }
  const std::string s(text);
  unsigned char buf[16];
  return inet_pton(AF_INET, s.c_str(), buf) == 1 || inet_pton(AF_INET6, s.c_str(), buf) == 1;
}

std::optional<HostPort> parseHostPort(std::string_view text) {
  HostPort hp;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return std::nullopt;
    }
    hp.host = std::string(text.substr(1, close - 1));
    port_text = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos || text.find(':') != colon) {
      return std::nullopt;
    }
    hp.host = std::string(text.substr(0, colon));
    port_text = text.substr(colon + 1);
  }
  auto port = parseUint(port_text);
  if (hp.host.empty() || !port || *port == 0 || *port > 65535) {
    return std::nullopt;
  }
  for (char c : hp.host) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == ':' || c == '_';
    if (!ok) {
      return std::nullopt;
    }
  }
  hp.port = static_cast<uint16_t>(*port);
  return hp;
}

std::vector<std::string> splitList(std::string_view s) {
  std::vector<std::string> out;
  while (!s.empty()) {
    size_t comma = s.find(',');
    std::string_view item = trim(s.substr(0, comma));
    if (!item.empty()) {
      out.emplace_back(item);
    }
    if (comma == std::string_view::npos) {
      break;
    }
    s.remove_prefix(comma + 1);
  }
  return out;
}

namespace {

// The length of the well-formed UTF-8 sequence at s[i] (RFC 3629: no overlong forms, no
// surrogates, nothing above U+10FFFF), or 0 when the bytes there are not one.
size_t utf8SequenceAt(std::string_view s, size_t i) {
  auto at = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b0 = at(i);
  size_t len = 0;
  unsigned char lo = 0x80;
  unsigned char hi = 0xbf;
  if (b0 >= 0xc2 && b0 <= 0xdf) {
    len = 2;
  } else if (b0 >= 0xe0 && b0 <= 0xef) {
    len = 3;
    lo = b0 == 0xe0 ? 0xa0 : 0x80;
    hi = b0 == 0xed ? 0x9f : 0xbf;
  } else if (b0 >= 0xf0 && b0 <= 0xf4) {
    len = 4;
    lo = b0 == 0xf0 ? 0x90 : 0x80;
    hi = b0 == 0xf4 ? 0x8f : 0xbf;
  } else {
    return 0;
  }
  if (i + len > s.size()) {
    return 0;
  }
  if (at(i + 1) < lo || at(i + 1) > hi) {
    return 0;
  }
  for (size_t k = 2; k < len; ++k) {
    if (at(i + k) < 0x80 || at(i + k) > 0xbf) {
      return 0;
    }
  }
  return len;
}

}  // namespace

// Runs of bytes that need no escaping are appended whole; a byte that is not part of a
// well-formed UTF-8 sequence becomes U+FFFD, so the output is always valid JSON and UTF-8
// whatever bytes the input carried.
void appendJsonEscaped(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  size_t run = 0;  // start of the pending run of bytes copied as they are
  size_t i = 0;
  auto flush = [&] { out.append(s.data() + run, i - run); };
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
      ++i;
      continue;
    }
    if (c >= 0x80) {
      if (size_t len = utf8SequenceAt(s, i); len > 0) {
        i += len;
        continue;
      }
      flush();
      out += "\\ufffd";
      run = ++i;
      continue;
    }
    flush();
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default: {
        const char esc[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0xf]};
        out.append(esc, sizeof esc);
      }
    }
    run = ++i;
  }
  flush();
}

void appendInt(std::string& out, int64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

void appendFixed3(std::string& out, double v) {
  char buf[48];
  auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed, 3);
  out.append(buf, r.ptr);
}

std::string jsonQuote(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out += '"';
  appendJsonEscaped(out, s);
  out += '"';
  return out;
}

std::optional<std::string> base64Decode(std::string_view in, bool lenient) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z')
      return c - 'A';
    if (c >= 'a' && c <= 'z')
      return c - 'a' + 26;
    if (c >= '0' && c <= '9')
      return c - '0' + 52;
    if (c == '+' || c == '-')
      return 62;
    if (c == '/' || c == '_')
      return 63;
    return -1;
  };
  if (!lenient && in.size() % 4 == 1) {
    return std::nullopt;
  }
  std::string out;
  out.reserve(in.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (lenient && (c == '=' || c == '\n' || c == '\r' || c == ' ')) {
      continue;
    }
    int v = value(c);
    if (v < 0) {
      return std::nullopt;
    }
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return out;
}

std::string base64UrlEncode(std::string_view in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  out.reserve((in.size() * 4 + 2) / 3);
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned char c : in) {
    acc = (acc << 8) | c;
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out.push_back(kAlphabet[(acc >> bits) & 63]);
    }
  }
  if (bits > 0) {
    out.push_back(kAlphabet[(acc << (6 - bits)) & 63]);
  }
  return out;
}

}  // namespace sluice::base
