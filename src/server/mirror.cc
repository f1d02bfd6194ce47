#include "server/mirror.h"

#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <fmt/format.h>

#include "backends/h2_client.h"
#include "http/headers.h"
#include "server/header_policy.h"
#include "server/worker.h"

namespace sluice::server {

namespace {

// RequestMirror: a copy of the request to one endpoint of the mirror backend, fire and
// forget. Its response is read and dropped; it never delays or fails the real request. The
// copy owns its bytes and the snapshot (so the endpoint outlives a reload).
constexpr size_t kMaxMirrorsInFlight = 64;  // per worker

// Sends a mirror copy over HTTP/1.1 and reads the answer to its end.
awaitable<bool> exchangeMirror(backends::UpstreamConnection& conn, const std::string& request,
                               std::chrono::milliseconds timeout) {
  error_code ec;
  beast::get_lowest_layer(conn.stream).expires_after(timeout);
  co_await asio::async_write(conn.stream, asio::buffer(request),
                             asio::redirect_error(use_awaitable, ec));
  if (ec) {
    co_return false;
  }
  bhttp::response_parser<bhttp::buffer_body> parser;
  parser.header_limit(64 * 1024);
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  char scratch[8192];
  while (!parser.is_done()) {
    parser.get().body().data = scratch;
    parser.get().body().size = sizeof(scratch);
    co_await bhttp::async_read_some(conn.stream, conn.buffer, parser,
                                    asio::redirect_error(use_awaitable, ec));
    if (ec == bhttp::error::need_buffer) {
      ec = {};
    }
    if (ec) {
      co_return false;
    }
  }
  co_return parser.keep_alive();
}

// A RequestMirror copy, fire and forget: the answer is read and dropped. `request` is a whole
// HTTP/1.1 request (head and body); an h2c pool gets it over HTTP/2. (Mirrors go to HTTPRoute
// backends, InferencePools and Services, never to TLS ModelServers.)
awaitable<void> sendMirror(Worker& w, std::shared_ptr<const router::Snapshot> snapshot,
                           const router::Endpoint* ep, bool h2c, std::string request) {
  struct InFlight {
    explicit InFlight(Worker& worker) : w(worker) { ++w.mirrorsInFlight(); }
    ~InFlight() { --w.mirrorsInFlight(); }
    Worker& w;
  } in_flight(w);
  const auto& cfg = snapshot->config;
  const auto timeout = cfg.timeouts.upstream_response;
  error_code ec;
  if (h2c) {
    const size_t head_end = request.find("\r\n\r\n");
    if (head_end == std::string::npos) {
      co_return;
    }
    H2Request h2_request = h2RequestOf(std::string_view(request).substr(0, head_end + 2));
    std::string_view body = std::string_view(request).substr(head_end + 4);
    h2_request.headers.push_back({"content-length", std::to_string(body.size())});
    bool reused = false;
    const bool fresh = false;  // arguments hoisted out of co_await (g++ 12)
    auto h2conn =
        co_await w.h2Pool().acquire(*ep, cfg.timeouts.upstream_connect, fresh, reused, ec);
    if (ec) {
      co_return;
    }
    auto stream = h2conn->submit(h2_request.method, ep->address, h2_request.path,
                                 h2_request.headers, {body}, body.size());
    if (!stream) {
      co_return;
    }
    co_await stream->waitHead(timeout, ec);
    char scratch[8192];
    const size_t cap = sizeof(scratch);
    stream->expire(timeout);
    while (!ec && !stream->done()) {
      co_await stream->read(scratch, cap, ec);
    }
    stream->cancel();  // the body views `request`, which ends with this frame
    co_return;
  }
  auto conn = w.pool().takeIdle(ep->address);
  if (!conn) {
    conn = co_await w.pool().connect(*ep, cfg.timeouts.upstream_connect, ec);
    if (ec) {
      co_return;
    }
  }
  const bool keep = co_await exchangeMirror(*conn, request, timeout);
  if (keep) {
    w.pool().release(ep->address, std::move(conn));
  }
}

}  // namespace

void startMirrors(Exchange& x, const router::RouteAction& action,
                  const std::shared_ptr<const router::Snapshot>& snapshot,
                  std::string_view rewritten_target) {
  Worker& w = x.session.worker;
  for (const auto& m : action.mirrors) {
    if (m.fraction < 1.0 &&
        static_cast<double>(w.random().uniform(1'000'000)) >= m.fraction * 1'000'000) {
      continue;
    }
    const auto now = w.context().time.monotonicNow().time_since_epoch().count();
    std::vector<const router::Endpoint*> live;
    for (const auto& ep : snapshot->current(*m.backend).endpoints) {
      if (!ep.state->ejected(now)) {
        live.push_back(&ep);
      }
    }
    if (live.empty() || w.mirrorsInFlight() >= kMaxMirrorsInFlight) {
      w.shard().mirrors_dropped.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    const router::Endpoint* ep = live[w.random().uniform(live.size())];
    std::string_view body = x.req.body().view();
    std::string request;
    request.reserve(256 + body.size());
    request += x.method;
    request += ' ';
    request += rewritten_target.empty() ? x.target : rewritten_target;
    request += " HTTP/1.1\r\n";
    for (const auto& f : x.req) {
      std::string_view name = f.name_string();
      if (http::isHopByHop(name) || f.name() == bhttp::field::host ||
          f.name() == bhttp::field::content_length || f.name() == bhttp::field::expect ||
          controlHeader(name)) {
        continue;
      }
      request += name;
      request += ": ";
      request += f.value();
      request += "\r\n";
    }
    fmt::format_to(std::back_inserter(request),
                   "Host: {}\r\nx-request-id: {}\r\nContent-Length: {}\r\n\r\n", ep->address,
                   x.request_id, body.size());
    request += body;
    w.shard().mirrors_sent.fetch_add(1, std::memory_order_relaxed);
    asio::co_spawn(x.session.stream.get_executor(),
                   sendMirror(w, snapshot, ep, m.backend->h2c, std::move(request)), asio::detached);
  }
}

}  // namespace sluice::server
