#pragma once

// Client I/O for the request path: reads and writes through TLS on HTTPS listeners and
// straight to TCP otherwise (timeouts and cancellation act on the TCP layer), simple and
// OpenAI-shaped error responses, and the watch that notices a client leaving while the
// upstream works.

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/asio.h"
#include "openai/errors.h"
#include "server/exchange.h"

namespace sluice::backends {
class H2Stream;
}

namespace sluice::server {

std::string_view reasonFor(int status);
awaitable<size_t> clientReadSome(Session& s, asio::mutable_buffer buf, error_code& ec);
// False when the client could not be written to (gone, or slower than `timeout`).
awaitable<bool> writeClient(Session& s, const std::vector<asio::const_buffer>& bufs,
                            std::chrono::milliseconds timeout);
std::string simpleHead(int status, std::string_view content_type, size_t length,
                       std::string_view request_id, bool close,
                       std::string_view extra_headers = {});
awaitable<void> writeSimple(Exchange& x, int status, std::string_view content_type,
                            std::string_view body, std::string_view extra_headers = {});
awaitable<void> writeError(Exchange& x, openai::ErrorKind kind, std::string_view message,
                           std::string_view extra_headers = {});
// Errors raised before a request is parsed: no exchange exists yet.
awaitable<void> writeEarlyError(Session& s, openai::ErrorKind kind, std::string_view message,
                                std::chrono::milliseconds timeout);

// While a request is with the upstream, one read stays pending on the client socket: it keeps
// pipelined bytes for later, and it notices at once when the client goes away, so the upstream
// request is cancelled instead of generating tokens for nobody.
struct ClientWatch {
  explicit ClientWatch(Session& s) : session(&s) {}
  Session* session;  // valid while !stopping: the exchange waits for stopWatch
  bool running = false;
  bool stopping = false;
  bool client_gone = false;
  TcpStream* upstream = nullptr;
  backends::H2Stream* h2 = nullptr;  // an HTTP/2 upstream stream, reset when the client goes
  // TLS sessions read through the TLS layer in a coroutine; stopWatch waits for it on `done`.
  std::optional<SteadyTimer> done;
};

void startWatch(Session& s, const std::shared_ptr<ClientWatch>& w);
// The drain deadline: the session's upstream exchange, if one is running, is cut; the relay
// then ends the response with an error naming the shutdown (an SSE error event on a stream).
void cutForShutdown(Session& s);
awaitable<void> stopWatch(Session& s, ClientWatch& w);

}  // namespace sluice::server
