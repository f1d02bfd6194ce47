#pragma once

#include <string_view>

namespace sluice::http {

// RFC 9110 section 7.6.1 hop-by-hop headers, plus the legacy proxy ones. Case-insensitive.
bool isHopByHop(std::string_view name);
// True if the comma-separated Connection header value lists `token` (case-insensitive).
bool connectionListsToken(std::string_view connection_value, std::string_view token);
// Content types that carry Server-Sent Events.
bool isEventStream(std::string_view content_type);

}  // namespace sluice::http
