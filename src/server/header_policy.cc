#include "server/header_policy.h"

#include <algorithm>
#include <iterator>

#include <fmt/format.h>

#include "backends/provider.h"
#include "base/strings.h"
#include "http/headers.h"
#include "server/client_io.h"
#include "server/trace_stage.h"

namespace sluice::server {

// Headers routing consumes; they never reach the model server.
bool controlHeader(std::string_view name) {
  return base::iequals(name, router::kObjectiveHeader) ||
         base::iequals(name, "x-gateway-inference-fairness-id") ||
         base::iequals(name, "x-gateway-model-name-rewrite") ||
         base::iequals(name, "x-gateway-destination-endpoint") ||
         base::iequals(name, "x-gateway-destination-endpoint-served");
}

bool listedIn(const std::vector<std::string>& names, std::string_view name) {
  return std::any_of(names.begin(), names.end(),
                     [&](const std::string& n) { return base::iequals(n, name); });
}

bool listedIn(const std::vector<std::pair<std::string, std::string>>& pairs,
              std::string_view name) {
  return std::any_of(pairs.begin(), pairs.end(),
                     [&](const auto& p) { return base::iequals(p.first, name); });
}

namespace {

// Every hop-by-hop name (RFC 9110 7.6.1, plus the proxy-* and keep-alive of RFC 2616) is one
// Beast knows, so the field code decides without comparing strings.
bool hopByHop(bhttp::field f) {
  switch (f) {
    case bhttp::field::connection:
    case bhttp::field::keep_alive:
    case bhttp::field::proxy_connection:
    case bhttp::field::proxy_authenticate:
    case bhttp::field::proxy_authorization:
    case bhttp::field::te:
    case bhttp::field::trailer:
    case bhttp::field::transfer_encoding:
    case bhttp::field::upgrade:
      return true;
    default:
      return false;
  }
}

void appendField(std::string& head, std::string_view name, std::string_view value) {
  head += name;
  head += ": ";
  head += value;
  head += "\r\n";
}

// A header an HTTPRoute header modifier removes or replaces.
bool modifiedAway(const config::HeaderModifier* mod, std::string_view name) {
  return mod != nullptr && (listedIn(mod->remove, name) || listedIn(mod->set, name));
}

}  // namespace

void appendHeaderEdits(std::string& head, const config::HeaderModifier& mod) {
  for (const auto& [name, value] : mod.set) {
    appendField(head, name, value);
  }
  for (const auto& [name, value] : mod.add) {
    appendField(head, name, value);
  }
}

namespace {

// How many lines of `field` the head has, and the value of the last.
size_t countField(const bhttp::fields& head, bhttp::field field, std::string_view& value) {
  size_t count = 0;
  for (const auto& f : head) {
    if (f.name() == field) {
      ++count;
      value = f.value();
    }
  }
  return count;
}

}  // namespace

std::optional<std::string> framingProblem(const bhttp::fields& head) {
  std::string_view value;
  const size_t codings = countField(head, bhttp::field::transfer_encoding, value);
  if (codings == 0) {
    return std::nullopt;
  }
  if (codings > 1) {
    return std::string("Transfer-Encoding appears more than once");
  }
  if (!base::iequals(base::trim(value), "chunked")) {
    return fmt::format("unsupported Transfer-Encoding '{}': only chunked is accepted", value);
  }
  if (head.find(bhttp::field::content_length) != head.end()) {
    return std::string("a request with both Transfer-Encoding and Content-Length is refused");
  }
  return std::nullopt;
}

namespace {

// RFC 3986 3.2.2 reg-name and IP-literal characters, and ':' before a port.
bool validHostValue(std::string_view v) {
  if (v.empty()) {
    return true;  // allowed when the target has no authority (RFC 9110 7.2)
  }
  for (char c : v) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    std::string_view("-._~%!$&'()*+,;=:[]").find(c) != std::string_view::npos;
    if (!ok) {
      return false;
    }
  }
  if (v.front() == '[') {
    const size_t close = v.find(']');
    return close != std::string_view::npos && (close + 1 == v.size() || v[close + 1] == ':') &&
           v.find_first_of("[]", close + 1) == std::string_view::npos;
  }
  return v.find_first_of("[]") == std::string_view::npos;
}

}  // namespace

std::optional<std::string> hostProblem(const bhttp::fields& head, unsigned version) {
  std::string_view value;
  const size_t count = countField(head, bhttp::field::host, value);
  if (count > 1) {
    return std::string("the request has more than one Host header");
  }
  if (count == 0) {
    if (version >= 11) {
      return std::string("an HTTP/1.1 request must carry a Host header");
    }
    return std::nullopt;
  }
  if (!validHostValue(value)) {
    return std::string("the Host header is not a valid host[:port]");
  }
  return std::nullopt;
}

std::optional<TargetParts> splitTarget(std::string_view target, std::string& owned) {
  TargetParts out;
  out.origin = target;
  size_t scheme = 0;
  if (target.size() > 7 && base::iequals(target.substr(0, 7), "http://")) {
    scheme = 7;
  } else if (target.size() > 8 && base::iequals(target.substr(0, 8), "https://")) {
    scheme = 8;
  } else {
    return out;
  }
  const size_t end = target.find_first_of("/?#", scheme);
  out.authority =
      target.substr(scheme, end == std::string_view::npos ? std::string_view::npos : end - scheme);
  if (out.authority.empty() || out.authority.find('@') != std::string_view::npos) {
    return std::nullopt;  // no host, or userinfo (RFC 9110 4.2.4: treat it as an error)
  }
  if (end == std::string_view::npos || target[end] == '#') {
    out.origin = "/";
  } else if (target[end] == '?') {
    owned = "/";
    owned += target.substr(end);
    out.origin = owned;
  } else {
    out.origin = target.substr(end);
  }
  return out;
}

// The request line and forwarded headers, without Host and Content-Length (set per attempt).
std::string upstreamHeadPrefix(const Exchange& x, const RouteChoice& route) {
  const Request& req = x.req;
  const config::HeaderModifier* mod =
      route.action && route.action->request_headers ? &*route.action->request_headers : nullptr;
  std::string head;
  head.reserve(512);
  head += x.method;
  head += ' ';
  head += route.rewritten_path.empty() ? x.target : std::string_view(route.rewritten_path);
  head += " HTTP/1.1\r\n";
  std::string_view connection_value;
  if (auto it = req.find(bhttp::field::connection); it != req.end()) {
    connection_value = it->value();
  }
  std::string_view forwarded_for;
  for (const auto& f : req) {
    std::string_view name = f.name_string();
    const bhttp::field code = f.name();
    if (hopByHop(code) ||
        (!connection_value.empty() && http::connectionListsToken(connection_value, name))) {
      continue;
    }
    switch (code) {
      case bhttp::field::host:
        continue;
      case bhttp::field::content_length:
      case bhttp::field::expect:
        continue;
      default:
        break;
    }
    // The forwarding and control headers are all names Beast does not know.
    if (code == bhttp::field::unknown) {
      if (base::iequals(name, "x-forwarded-for")) {
        forwarded_for = f.value();
        continue;
      }
      if (base::iequals(name, "x-request-id") || base::iequals(name, "x-forwarded-proto") ||
          base::iequals(name, "x-forwarded-host") || controlHeader(name)) {
        continue;
      }
      // A traced request sends its own traceparent (and the tracestate it continues).
      if (x.trace && (base::iequals(name, "traceparent") || base::iequals(name, "tracestate"))) {
        continue;
      }
    }
    if (modifiedAway(mod, name)) {
      continue;
    }
    if (x.strip_credentials &&
        (f.name() == bhttp::field::authorization || base::iequals(name, "x-api-key"))) {
      continue;
    }
    appendField(head, name, f.value());
  }
  head += "X-Forwarded-For: ";
  if (!forwarded_for.empty()) {
    head += forwarded_for;
    head += ", ";
  }
  head += x.session.client_ip;
  head += x.session.tls ? "\r\nX-Forwarded-Proto: https\r\n" : "\r\nX-Forwarded-Proto: http\r\n";
  if (!x.authority.empty()) {
    head += "X-Forwarded-Host: ";
    head += x.authority;
    head += "\r\n";
  }
  head += "x-request-id: ";
  head += x.request_id;
  head += "\r\n";
  appendUpstreamTrace(x, head);
  if (mod != nullptr) {
    appendHeaderEdits(head, *mod);
  }
  return head;
}

// Response headers for the client, from the upstream's.
std::string clientHead(const Exchange& x, const bhttp::response_header<>& res,
                       std::optional<uint64_t> content_length, bool chunked, bool close,
                       const config::HeaderModifier* mod, const config::HeaderModifier* picker) {
  std::string head;
  head.reserve(512);
  int status = static_cast<int>(res.result_int());
  head += "HTTP/1.1 ";
  base::appendInt(head, status);
  head += ' ';
  head += reasonFor(status);
  head += "\r\n";
  std::string_view connection_value;
  if (auto it = res.find(bhttp::field::connection); it != res.end()) {
    connection_value = it->value();
  }
  for (const auto& f : res) {
    std::string_view name = f.name_string();
    if (hopByHop(f.name()) || f.name() == bhttp::field::content_length ||
        (!connection_value.empty() && http::connectionListsToken(connection_value, name)) ||
        (f.name() == bhttp::field::unknown && base::iequals(name, "x-request-id"))) {
      continue;
    }
    if (modifiedAway(mod, name) || modifiedAway(picker, name)) {
      continue;
    }
    appendField(head, name, f.value());
  }
  head += "x-request-id: ";
  head += x.request_id;
  head += "\r\n";
  if (mod != nullptr) {
    appendHeaderEdits(head, *mod);
  }
  if (picker != nullptr) {
    appendHeaderEdits(head, *picker);
  }
  if (chunked) {
    head += "Transfer-Encoding: chunked\r\n";
  } else if (content_length) {
    head += "Content-Length: ";
    base::appendInt(head, static_cast<int64_t>(*content_length));
    head += "\r\n";
  }
  if (close) {
    head += "Connection: close\r\n";
  }
  head += "\r\n";
  return head;
}

H2Request h2RequestOf(std::string_view head) {
  H2Request out;
  size_t line_end = head.find("\r\n");
  std::string_view line = head.substr(0, line_end);
  const size_t sp1 = line.find(' ');
  const size_t sp2 = line.rfind(' ');
  out.method = std::string(line.substr(0, sp1));
  out.path = std::string(line.substr(sp1 + 1, sp2 - sp1 - 1));
  size_t pos = line_end == std::string_view::npos ? head.size() : line_end + 2;
  while (pos < head.size()) {
    size_t end = head.find("\r\n", pos);
    if (end == std::string_view::npos) {
      end = head.size();
    }
    std::string_view h = head.substr(pos, end - pos);
    pos = end + 2;
    const size_t colon = h.find(':');
    if (colon == std::string_view::npos) {
      continue;
    }
    std::string name = base::toLower(h.substr(0, colon));
    std::string_view value = base::trim(h.substr(colon + 1));
    if (name == "host" || name == "connection" || name == "keep-alive" ||
        name == "proxy-connection" || name == "transfer-encoding" || name == "upgrade" ||
        name == "content-length" || (name == "te" && value != "trailers")) {
      continue;
    }
    out.headers.push_back({std::move(name), std::string(value)});
  }
  return out;
}

// The request head for an external provider: its path and Host, the allow-listed client headers,
// the static headers and the credential (the client's own never leave the router).
std::string providerHead(const Exchange& x, const router::ProviderTarget& p,
                         std::string_view target, size_t body_size) {
  std::string head;
  head.reserve(512);
  fmt::format_to(std::back_inserter(head), "{} {} HTTP/1.1\r\nHost: {}\r\n", x.method, target,
                 p.authority);
  bool content_type = false;
  bool anthropic_version = false;
  for (const auto& [name, value] : p.headers) {
    content_type = content_type || base::iequals(name, "content-type");
    anthropic_version = anthropic_version || base::iequals(name, "anthropic-version");
  }
  for (const auto& f : x.req) {
    const std::string_view name = f.name_string();
    if (!backends::forwardsToProvider(name) || listedIn(p.headers, name) ||
        (x.trace && (base::iequals(name, "traceparent") || base::iequals(name, "tracestate")))) {
      continue;  // a traced request sends its own trace context
    }
    content_type = content_type || base::iequals(name, "content-type");
    anthropic_version = anthropic_version || base::iequals(name, "anthropic-version");
    fmt::format_to(std::back_inserter(head), "{}: {}\r\n", f.name_string(), f.value());
  }
  appendUpstreamTrace(x, head);
  for (const auto& [name, value] : p.headers) {
    fmt::format_to(std::back_inserter(head), "{}: {}\r\n", name, value);
  }
  if (!p.auth_header.empty()) {
    fmt::format_to(std::back_inserter(head), "{}: {}\r\n", p.auth_header, p.auth_value);
  }
  if (!content_type) {
    head += "Content-Type: application/json\r\n";
  }
  if (p.type == router::ProviderTarget::Type::Anthropic && !anthropic_version) {
    head += "anthropic-version: 2023-06-01\r\n";  // required by the API; clients may set theirs
  }
  fmt::format_to(std::back_inserter(head), "x-request-id: {}\r\nContent-Length: {}\r\n\r\n",
                 x.request_id, body_size);
  return head;
}

}  // namespace sluice::server
