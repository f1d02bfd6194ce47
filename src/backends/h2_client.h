#pragma once

// HTTP/2 over cleartext TCP with prior knowledge (h2c), for InferencePools whose appProtocol is
// kubernetes.io/h2c. One connection per endpoint carries many requests at once (as many as the
// endpoint's SETTINGS_MAX_CONCURRENT_STREAMS; beyond that another connection is opened), with
// flow control tied to the client: a stream's window is opened only as the relay hands its
// bytes on, so a slow client slows its stream, not the router's memory. nghttp2 does the
// framing; everything runs on the worker's thread, so there are no locks.

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/http/message.hpp>

#include "base/asio.h"
#include "router/snapshot.h"

struct nghttp2_session;

namespace sluice::backends {

class H2Connection;

// One request and its response on an HTTP/2 connection. Its body-reading side has the shape
// the proxy's relay reads every upstream body through.
class H2Stream {
 public:
  explicit H2Stream(const Executor& ex) : signal_(ex) {}
  ~H2Stream();
  H2Stream(const H2Stream&) = delete;
  H2Stream& operator=(const H2Stream&) = delete;

  // Waits for the response head (1xx responses are skipped) or a failure, at most `timeout`.
  awaitable<void> waitHead(std::chrono::milliseconds timeout, error_code& ec);
  const boost::beast::http::response_header<>& head() const { return head_; }
  // True when the endpoint refused the stream before processing it (REFUSED_STREAM, or a
  // GOAWAY below its id): the request can go elsewhere, or on a fresh connection.
  bool refused() const { return refused_; }
  // True when the whole connection failed under the stream (closed, reset, unreadable), as
  // opposed to the endpoint resetting this one stream.
  bool connectionFailed() const { return connection_failed_; }
  // Abandons the exchange: an open stream is reset (CANCEL) and its unread bytes released.
  void cancel();
  // A request body left open at submit(): more of it, and its end (gRPC streams).
  void write(std::string data);
  void endBody();
  // A trailer of the response by lower-case name ("" when absent).
  std::string_view trailer(std::string_view name) const;

  // The relay's side.
  awaitable<size_t> read(char* buf, size_t cap, error_code& ec);
  bool done() const { return ended_ && unread() == 0; }
  void expire(std::chrono::milliseconds d) { deadline_ = std::chrono::steady_clock::now() + d; }
  bool buffered() const { return unread() > 0; }
  bool reusable() const { return true; }  // the connection outlives the stream regardless
  std::optional<uint64_t> contentLength() const;

 private:
  friend class H2Connection;
  size_t unread() const { return data_.size() - data_off_; }
  void wake() { signal_.cancel(); }
  // Waits until woken or the deadline passes; false on timeout.
  awaitable<bool> wait();

  SteadyTimer signal_;
  std::chrono::steady_clock::time_point deadline_ = std::chrono::steady_clock::time_point::max();
  std::weak_ptr<H2Connection> conn_;
  int32_t id_ = -1;
  // The request body, in pieces that outlive the stream or its cancel().
  std::vector<std::string_view> pieces_;
  size_t piece_ = 0;
  size_t offset_ = 0;
  std::deque<std::string> owned_;  // pieces given by write()
  bool body_open_ = false;         // write() may add more: the data source defers, not ends
  bool deferred_ = false;
  std::vector<std::pair<std::string, std::string>> trailers_;
  // The response.
  boost::beast::http::response_header<> head_;
  bool head_done_ = false;
  size_t head_bytes_ = 0;
  std::string data_;  // received, read from data_off_
  size_t data_off_ = 0;
  bool ended_ = false;   // the endpoint ended the stream cleanly
  bool closed_ = false;  // nghttp2 closed it (ended, reset or the connection went)
  bool refused_ = false;
  bool connection_failed_ = false;
  error_code error_;  // set when the stream failed
};

class H2Connection : public std::enable_shared_from_this<H2Connection> {
 public:
  explicit H2Connection(tcp::socket socket);
  ~H2Connection();
  H2Connection(const H2Connection&) = delete;
  H2Connection& operator=(const H2Connection&) = delete;

  // Connects (over TLS with ALPN h2 when `tls` is set) and sends the connection preface; the
  // read loop starts.
  static awaitable<std::shared_ptr<H2Connection>> connect(const router::Endpoint& ep,
                                                          std::chrono::milliseconds timeout,
                                                          error_code& ec,
                                                          asio::ssl::context* tls = nullptr);

  struct Header {
    std::string name;  // lower case
    std::string value;
  };
  // Sends a request (pseudo-headers from `method`, `authority`, `path`); `body` pieces must stay
  // valid until the stream closes or is cancelled. Null if the connection cannot take it. With
  // `open_body` the body goes on with H2Stream::write() until endBody().
  std::shared_ptr<H2Stream> submit(std::string_view method, std::string_view authority,
                                   std::string_view path, const std::vector<Header>& headers,
                                   std::vector<std::string_view> body, size_t body_size,
                                   bool open_body = false);

  // Alive, not told to go away, and below the endpoint's concurrent stream limit.
  bool usable() const;
  size_t activeStreams() const { return streams_.size(); }
  bool dead() const { return dead_; }
  std::chrono::steady_clock::time_point idleSince() const { return idle_since_; }
  void close();

 private:
  friend class H2Stream;
  awaitable<void> readLoop();
  void flush();
  void fail(const error_code& ec);
  void consume(int32_t id, size_t n);
  void resetStream(int32_t id);
  void resumeData(int32_t id);
  void forget(int32_t id);

  struct Callbacks;
  tcp::socket socket_;
  std::unique_ptr<asio::ssl::stream<tcp::socket&>> tls_;  // set: reads and writes go through it
  nghttp2_session* session_ = nullptr;
  std::unordered_map<int32_t, std::shared_ptr<H2Stream>> streams_;
  std::string out_;
  bool writing_ = false;
  bool dead_ = false;
  bool goaway_ = false;
  std::chrono::steady_clock::time_point idle_since_ = std::chrono::steady_clock::now();
};

// Per-worker h2c connections by endpoint address. One thread uses it: no locks.
class H2Pool {
 public:
  explicit H2Pool(std::chrono::milliseconds idle_timeout) : idle_timeout_(idle_timeout) {}
  void configure(std::chrono::milliseconds idle_timeout) { idle_timeout_ = idle_timeout; }
  // A connection that can take another stream (the least loaded), or a new one. `fresh` forces
  // a new connection (after a refusal on a pooled one); `reused` says whether it was pooled.
  // With `tls`, connections are TLS (kept apart from cleartext ones to the same address).
  awaitable<std::shared_ptr<H2Connection>> acquire(const router::Endpoint& ep,
                                                   std::chrono::milliseconds connect_timeout,
                                                   bool fresh, bool& reused, error_code& ec,
                                                   asio::ssl::context* tls = nullptr);
  size_t connectionCount() const;
  void clear();

 private:
  std::chrono::milliseconds idle_timeout_;
  std::chrono::steady_clock::time_point last_sweep_{};
  std::unordered_map<std::string, std::vector<std::shared_ptr<H2Connection>>> conns_;
};

}  // namespace sluice::backends
