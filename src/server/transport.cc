#include "server/transport.h"

#include <iterator>

#include <boost/asio/ssl/error.hpp>
#include <fmt/format.h>

#include "server/relay.h"
#include "server/worker.h"

namespace sluice::server {

namespace {

// The head for one endpoint attempt: the shared prefix, then Host and Content-Length.
std::vector<asio::const_buffer> endpointBuffers(const OutgoingRequest& req, const Target& t,
                                                std::string& head) {
  head = req.head;
  fmt::format_to(std::back_inserter(head), "Host: {}\r\nContent-Length: {}\r\n\r\n",
                 req.host_override.empty() ? std::string_view(t.address) : req.host_override,
                 req.body_size);
  std::vector<asio::const_buffer> bufs;
  bufs.reserve(req.pieces.size() + 1);
  bufs.push_back(asio::buffer(head));
  for (auto p : req.pieces) {
    bufs.push_back(asio::buffer(p.data(), p.size()));
  }
  return bufs;
}

bool staleHttp1(const error_code& ec) {
  return isStaleConnectionError(ec) || ec == asio::ssl::error::stream_truncated;
}

// An HTTP/1.1 response relayed from `conn`; whether the connection may carry another request.
template <class Conn>
awaitable<bool> relayHttp1(Exchange& x, const RouteChoice& route, RelayArgs args, Conn& conn,
                           bhttp::response_parser<bhttp::buffer_body>& parser, ClientWatch& watch) {
  Http1Body body(conn, parser);
  // Results into locals, not returned or tested in place: g++ 12 mishandles those temporaries.
  const bool keep =
      co_await relayResponse(x, parser.get(), body, watch, args.hide_usage,
                             std::move(args.write_back_from), route, args.client_model, args.held);
  co_return keep;
}

void count(Worker& w, bool reused) {
  (reused ? w.shard().upstream_connections_reused : w.shard().upstream_connections_opened)
      .fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

// --- HTTP/1.1 over TCP ------------------------------------------------------------------------

awaitable<void> Http1Transport::send(const Target& t, bool fresh, std::chrono::milliseconds connect,
                                     std::chrono::milliseconds head, SendResult& r) {
  address_ = t.address;
  conn_ = fresh ? nullptr : w_.pool().takeIdle(t.address);
  r.reused = conn_ != nullptr;
  if (!conn_) {
    conn_ = co_await w_.pool().connect(*t.endpoint, connect, r.ec);
    if (r.ec) {
      r.connect_failed = true;
      co_return;
    }
  }
  count(w_, r.reused);
  watch_.upstream = &conn_->stream;
  std::string text;
  auto bufs = endpointBuffers(req_, t, text);
  co_await sendAndReadHead(*conn_, bufs, parser_, head, r.ec);
}

bool Http1Transport::stale(const error_code& ec) const {
  return staleHttp1(ec);
}

void Http1Transport::drop() {
  watch_.upstream = nullptr;
  conn_.reset();
}

awaitable<void> Http1Transport::relay(Exchange& x, const RouteChoice& route, RelayArgs args) {
  const bool keep = co_await relayHttp1(x, route, std::move(args), *conn_, *parser_, watch_);
  if (keep) {
    w_.pool().release(address_, std::move(conn_));
  }
}

// --- HTTP/1.1 over TLS ------------------------------------------------------------------------

awaitable<void> TlsTransport::send(const Target& t, bool fresh, std::chrono::milliseconds connect,
                                   std::chrono::milliseconds head, SendResult& r) {
  auto& pool = w_.providerPool();
  key_ = provider_ ? provider_->pool_key : verify_ ? t.address : t.address + "#unverified";
  conn_ = fresh ? nullptr : pool.takeIdle(key_);
  r.reused = conn_ != nullptr;
  if (!conn_) {
    // No co_await inside a conditional expression: g++ 12 mishandles its temporaries.
    if (provider_ != nullptr) {
      conn_ = co_await pool.connect(*provider_, connect, r.ec, r.why);
    } else {
      conn_ = co_await pool.connectEndpoint(*t.endpoint, verify_, connect, r.ec, r.why);
    }
    if (r.ec) {
      r.connect_failed = true;
      co_return;
    }
  }
  count(w_, r.reused);
  watch_.upstream = &beast::get_lowest_layer(conn_->stream);
  std::string text;
  std::vector<asio::const_buffer> bufs;
  if (provider_) {
    bufs.reserve(req_.pieces.size() + 1);
    bufs.push_back(asio::buffer(req_.head));
    for (auto p : req_.pieces) {
      bufs.push_back(asio::buffer(p.data(), p.size()));
    }
  } else {
    bufs = endpointBuffers(req_, t, text);
  }
  co_await sendAndReadHead(*conn_, bufs, parser_, head, r.ec);
}

bool TlsTransport::stale(const error_code& ec) const {
  return staleHttp1(ec);
}

void TlsTransport::drop() {
  watch_.upstream = nullptr;
  conn_.reset();
}

awaitable<void> TlsTransport::relay(Exchange& x, const RouteChoice& route, RelayArgs args) {
  const bool keep = co_await relayHttp1(x, route, std::move(args), *conn_, *parser_, watch_);
  if (keep) {
    w_.providerPool().release(key_, std::move(conn_));
  }
}

// --- HTTP/2 -----------------------------------------------------------------------------------

H2Transport::H2Transport(Worker& w, const OutgoingRequest& req, ClientWatch& watch)
    : w_(w), req_(req), watch_(watch), h2_(h2RequestOf(req.head)) {
  h2_.headers.push_back({"content-length", std::to_string(req.body_size)});
}

awaitable<void> H2Transport::send(const Target& t, bool fresh, std::chrono::milliseconds connect,
                                  std::chrono::milliseconds head, SendResult& r) {
  // A stream on a shared connection to the endpoint.
  auto conn = co_await w_.h2Pool().acquire(*t.endpoint, connect, fresh, r.reused, r.ec);
  if (r.ec) {
    r.connect_failed = true;
    co_return;
  }
  count(w_, r.reused);
  const std::string_view authority =
      req_.host_override.empty() ? std::string_view(t.address) : req_.host_override;
  stream_ = conn->submit(h2_.method, authority, h2_.path, h2_.headers, req_.pieces, req_.body_size);
  if (!stream_) {
    r.ec = asio::error::connection_reset;  // the connection could not take the stream
    co_return;
  }
  watch_.h2 = stream_.get();
  co_await stream_->waitHead(head, r.ec);
}

// A refused stream (REFUSED_STREAM, GOAWAY) was not processed, and a connection that died under
// it is the HTTP/1.1 stale case: both are resent on a fresh connection. A stream the endpoint
// reset is a failed attempt.
bool H2Transport::stale(const error_code& ec) const {
  return stream_ ? stream_->refused() || stream_->connectionFailed() : staleHttp1(ec);
}

void H2Transport::drop() {
  watch_.h2 = nullptr;
  if (stream_) {
    stream_->cancel();
    stream_.reset();
  }
}

awaitable<void> H2Transport::relay(Exchange& x, const RouteChoice& route, RelayArgs args) {
  // The stream ends here whatever happened; the connection stays for other requests.
  co_await relayResponse(x, stream_->head(), *stream_, watch_, args.hide_usage,
                         std::move(args.write_back_from), route, args.client_model, args.held);
  watch_.h2 = nullptr;
  stream_->cancel();
}

}  // namespace sluice::server
