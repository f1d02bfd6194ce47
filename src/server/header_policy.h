#pragma once

// Header policy for the request path, in one place: which request headers go upstream (hop-by-
// hop and control headers dropped, X-Forwarded-* and x-request-id set, HTTPRoute header
// modifiers applied, consumed credentials stripped), which response headers reach the client,
// the HTTP/2 form of an upstream head, and the head sent to an external provider.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/beast/http/message.hpp>

#include "backends/h2_client.h"
#include "config/router_config.h"
#include "router/snapshot.h"
#include "server/exchange.h"

namespace sluice::server {

// Where routing sent a request: see RouteChoice in exchange.h.
// Headers routing consumes; they never reach the model server.
bool controlHeader(std::string_view name);
bool listedIn(const std::vector<std::string>& names, std::string_view name);
bool listedIn(const std::vector<std::pair<std::string, std::string>>& pairs, std::string_view name);
void appendHeaderEdits(std::string& head, const config::HeaderModifier& mod);
// The request line and forwarded headers, without Host and Content-Length (set per attempt).
std::string upstreamHeadPrefix(const Exchange& x, const RouteChoice& route);
// Response headers for the client, from the upstream's.
// `mod` is the route's ResponseHeaderModifier, `picker` the endpoint picker's mutation.
std::string clientHead(const Exchange& x, const bhttp::response_header<>& res,
                       std::optional<uint64_t> content_length, bool chunked, bool close,
                       const config::HeaderModifier* mod,
                       const config::HeaderModifier* picker = nullptr);

// The HTTP/2 form of a request head built for HTTP/1.1 (the request line and header lines of
// upstreamHeadPrefix): method and path become pseudo-headers, names go to lower case, and the
// headers HTTP/2 forbids (connection-specific ones) are left out. Host becomes :authority, set
// per attempt; Content-Length is set here from the body.
struct H2Request {
  std::string method;
  std::string path;
  std::vector<backends::H2Connection::Header> headers;
};

H2Request h2RequestOf(std::string_view head);

// Request framing the router refuses (RFC 9112 sections 6.1 and 6.3), as the message for the
// 400, or nullopt. The only transfer coding accepted is one "chunked": anything else
// (identity, gzip, a list, an empty value, the header twice) cannot be framed safely, and
// Transfer-Encoding with Content-Length is a smuggling attempt. The connection must close
// after the 400, so the bytes after the head are never read as another request.
std::optional<std::string> framingProblem(const bhttp::fields& head);

// RFC 9112 3.2: an HTTP/1.1 request carries exactly one Host field, and a Host value is a
// uri-host with an optional port (RFC 3986 3.2.2). Returns why the request breaks that.
std::optional<std::string> hostProblem(const bhttp::fields& head, unsigned version);

// The request target split as a gateway serves it (RFC 9112 3.2.1-3.2.2): origin-form
// ("/path?query") as it is, or absolute-form ("http://host:port/path?query"), whose authority
// replaces Host and whose path and query are forwarded. `owned` holds the origin-form when it
// is not a slice of the target ("http://host?q" becomes "/?q"). Nothing for an absolute-form
// without a host or with userinfo.
struct TargetParts {
  std::string_view origin;
  std::string_view authority;  // set for absolute-form only
};
std::optional<TargetParts> splitTarget(std::string_view target, std::string& owned);

// The request head for an external provider: its authority, the forwarded headers it accepts,
// its static headers and credential.
std::string providerHead(const Exchange& x, const router::ProviderTarget& p,
                         std::string_view target, size_t body_size);

}  // namespace sluice::server
