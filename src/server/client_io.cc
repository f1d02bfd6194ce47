#include "server/client_io.h"

#include <boost/beast/http/status.hpp>
#include <fmt/format.h>

#include "backends/h2_client.h"
#include "server/worker.h"

namespace sluice::server {

using openai::ErrorKind;

std::string_view reasonFor(int status) {
  if (status == 499) {
    return "Client Closed Request";
  }
  return bhttp::obsolete_reason(static_cast<bhttp::status>(status));
}

// Client I/O goes through TLS on HTTPS listeners and straight to TCP otherwise; timeouts and
// cancellation always act on the TCP layer.
awaitable<size_t> clientReadSome(Session& s, asio::mutable_buffer buf, error_code& ec) {
  if (s.tls) {
    co_return co_await s.tls->async_read_some(buf, asio::redirect_error(use_awaitable, ec));
  }
  co_return co_await s.stream.async_read_some(buf, asio::redirect_error(use_awaitable, ec));
}

awaitable<bool> writeClient(Session& s, const std::vector<asio::const_buffer>& bufs,
                            std::chrono::milliseconds timeout) {
  error_code ec;
  s.stream.expires_after(timeout);
  if (s.tls) {
    // TLS writes one record per buffer: gather small pieces into one record first.
    size_t total = asio::buffer_size(bufs);
    if (bufs.size() > 1 && total <= 16384) {
      std::string joined;
      joined.reserve(total);
      for (const auto& b : bufs) {
        joined.append(static_cast<const char*>(b.data()), b.size());
      }
      co_await asio::async_write(*s.tls, asio::buffer(joined),
                                 asio::redirect_error(use_awaitable, ec));
    } else {
      co_await asio::async_write(*s.tls, bufs, asio::redirect_error(use_awaitable, ec));
    }
    co_return !ec;
  }
  co_await asio::async_write(s.stream, bufs, asio::redirect_error(use_awaitable, ec));
  co_return !ec;
}

std::string simpleHead(int status, std::string_view content_type, size_t length,
                       std::string_view request_id, bool close, std::string_view extra_headers) {
  std::string head = fmt::format("HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
                                 status, reasonFor(status), content_type, length);
  if (!request_id.empty()) {
    head += fmt::format("x-request-id: {}\r\n", request_id);
  }
  head += extra_headers;
  if (close) {
    head += "Connection: close\r\n";
  }
  head += "\r\n";
  return head;
}

awaitable<void> writeSimple(Exchange& x, int status, std::string_view content_type,
                            std::string_view body, std::string_view extra_headers) {
  x.status = status;
  const auto& cfg = x.gen->snapshot->config;
  std::string head =
      simpleHead(status, content_type, body.size(), x.request_id, !x.keep_alive, extra_headers);
  std::vector<asio::const_buffer> bufs{asio::buffer(head)};
  if (x.method != "HEAD" && !body.empty()) {
    bufs.push_back(asio::buffer(body.data(), body.size()));
  }
  if (!co_await writeClient(x.session, bufs, cfg.timeouts.client_write)) {
    x.keep_alive = false;
  }
}

awaitable<void> writeError(Exchange& x, ErrorKind kind, std::string_view message,
                           std::string_view extra_headers) {
  const auto& info = openai::errorInfo(kind);
  x.error_type = info.code;
  std::string body = openai::errorBody(kind, message);
  co_await writeSimple(x, info.status, "application/json", body, extra_headers);
}

// Errors raised before a request is parsed: no exchange exists yet.
awaitable<void> writeEarlyError(Session& s, ErrorKind kind, std::string_view message,
                                std::chrono::milliseconds timeout) {
  const auto& info = openai::errorInfo(kind);
  std::string body = openai::errorBody(kind, message);
  std::string head = simpleHead(info.status, "application/json", body.size(), {}, true);
  std::vector<asio::const_buffer> bufs{asio::buffer(head), asio::buffer(body)};
  co_await writeClient(s, bufs, timeout);
}

// --- watching the client while the upstream works ---------------------------------------------

namespace {

void clientGone(ClientWatch& w) {
  w.client_gone = true;
  if (w.upstream != nullptr) {
    w.upstream->close();
  }
  if (w.h2 != nullptr) {
    w.h2->cancel();
  }
}

// TLS: bytes must go through the TLS layer, so a coroutine reads them and stopWatch waits.
awaitable<void> watchTlsClient(Session& s, std::shared_ptr<ClientWatch> w) {
  while (!w->stopping && s.buffer.size() < kMaxPipelinedBytes) {
    error_code ec;
    size_t n = co_await clientReadSome(s, s.buffer.prepare(4096), ec);
    if (ec) {
      if (!w->stopping) {
        clientGone(*w);
      }
      break;
    }
    s.buffer.commit(n);
  }
  w->running = false;
  w->done->cancel();
}

// Plain TCP: no coroutine and no timer. Whatever the client has sent is read at once without
// blocking (pipelined bytes are kept in the session's buffer, EOF or an error means the client
// left); then one readiness wait is armed. Its handler only runs the session's code while the
// watch is not stopping, and stopWatch sets that synchronously before the session goes on, so
// the handler never touches a session that has moved on or gone.
void drainClient(const std::shared_ptr<ClientWatch>& w) {
  Session& s = *w->session;
  auto& socket = s.stream.socket();
  while (s.buffer.size() < kMaxPipelinedBytes) {
    error_code ec;
    size_t n = socket.read_some(s.buffer.prepare(4096), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      socket.async_wait(tcp::socket::wait_read, [w](const error_code& wait_ec) {
        if (w->stopping) {
          w->running = false;
          return;
        }
        if (wait_ec) {
          w->running = false;
          clientGone(*w);
          return;
        }
        drainClient(w);
      });
      return;
    }
    if (ec) {
      w->running = false;
      clientGone(*w);
      return;
    }
    s.buffer.commit(n);
  }
  w->running = false;  // enough pipelined bytes: the rest waits in the kernel
}

}  // namespace

void cutForShutdown(Session& s) {
  if (s.watch == nullptr || s.watch->stopping) {
    return;
  }
  s.cut_by_shutdown = true;
  if (s.watch->upstream != nullptr) {
    s.watch->upstream->close();
  }
  if (s.watch->h2 != nullptr) {
    s.watch->h2->cancel();
  }
}

void startWatch(Session& s, const std::shared_ptr<ClientWatch>& w) {
  s.stream.expires_never();
  s.watch = w.get();
  w->running = true;
  if (s.tls) {
    w->done.emplace(s.stream.get_executor(), SteadyTimer::time_point::max());
    asio::co_spawn(s.stream.get_executor(), watchTlsClient(s, w), asio::detached);
    return;
  }
  error_code ec;
  if (!s.stream.socket().non_blocking()) {
    s.stream.socket().non_blocking(true, ec);
  }
  drainClient(w);
}

awaitable<void> stopWatch(Session& s, ClientWatch& w) {
  w.stopping = true;
  s.watch = nullptr;
  if (!w.running) {
    co_return;
  }
  error_code ignored;
  s.stream.socket().cancel(ignored);
  if (w.done) {
    error_code ec;
    co_await w.done->async_wait(asio::redirect_error(use_awaitable, ec));
  }
}

// --- the upstream request ---------------------------------------------------------------------

}  // namespace sluice::server
