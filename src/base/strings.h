#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::base {

bool iequals(std::string_view a, std::string_view b);
char asciiLower(char c);
std::string toLower(std::string_view s);
std::string_view trim(std::string_view s);
// Also line breaks: for values read from files (tokens, namespaces).
std::string_view trimWhitespace(std::string_view s);

// "250ms", "10s", "5m", "1h", "1.5s". Returns nullopt on anything else.
std::optional<std::chrono::milliseconds> parseDuration(std::string_view text);
// "32MiB", "64KiB", "1GiB", "1024", "10MB". Returns nullopt on anything else.
std::optional<uint64_t> parseByteSize(std::string_view text);
std::optional<uint64_t> parseUint(std::string_view text);

struct HostPort {
  std::string host;
  uint16_t port = 0;
};
// "127.0.0.1:8000", "[::1]:8000", "localhost:80". Port is required and must be 1..65535.
std::optional<HostPort> parseHostPort(std::string_view text);
// An IPv4 dotted quad or an IPv6 address (no brackets, no port, no zone).
bool isIpLiteral(std::string_view text);

// "a, b,,c" -> {"a", "b", "c"}: comma-separated items, trimmed, empty ones dropped.
std::vector<std::string> splitList(std::string_view s);

// Appends `s` as the body of a JSON string (without quotes), escaping as RFC 8259 requires.
void appendJsonEscaped(std::string& out, std::string_view s);
std::string jsonQuote(std::string_view s);

// Appends a number in decimal (std::to_chars: no format string to parse on hot paths).
void appendInt(std::string& out, int64_t v);
// Appends `v` with three decimals (milliseconds in logs).
void appendFixed3(std::string& out, double v);

// Base64 (standard or URL alphabet, padding optional). `lenient` also skips whitespace and
// '=' anywhere (Kubernetes Secret data); strict mode refuses them and impossible lengths (JWT).
std::optional<std::string> base64Decode(std::string_view in, bool lenient);
// Base64 with the URL alphabet and no padding (JWT segments, JWK key material).
std::string base64UrlEncode(std::string_view in);

}  // namespace sluice::base
