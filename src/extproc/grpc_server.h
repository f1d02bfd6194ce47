#pragma once

// The server side of gRPC over HTTP/2 (nghttp2), on a worker's io_context: one connection
// object per accepted socket (plaintext h2c, or TLS with ALPN h2), each request stream a call
// handed to the handler its :path names. Handlers are called on the worker thread and never
// block; they answer with send() and finish(), now or later (a call can be kept open across
// co_awaits by holding its shared_ptr).

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/ssl/stream.hpp>

#include "base/asio.h"
#include "extproc/framing.h"
#include "extproc/grpc_status.h"

struct nghttp2_session;

namespace google::protobuf {
class MessageLite;
}  // namespace google::protobuf

namespace sluice::extproc {

class GrpcConnection;
class GrpcCall;

// What a service does with one call's request messages.
class CallHandler {
 public:
  virtual ~CallHandler() = default;
  // One whole request message (the bytes are valid for the duration of the call).
  virtual void onMessage(std::string_view bytes) = 0;
  // The client sent its last message.
  virtual void onHalfClose() {}
  // The client reset the stream, or the connection went away, before finish().
  virtual void onCancel() {}
};

struct ServerLimits {
  size_t max_message = 16 * 1024 * 1024;
  uint32_t max_concurrent_streams = 1024;
  int32_t stream_window = 1024 * 1024;
  int32_t connection_window = 16 * 1024 * 1024;
};

// Makes the handler for a call, or null when no service has that :path (UNIMPLEMENTED).
using Dispatcher =
    std::function<std::unique_ptr<CallHandler>(std::string_view path, GrpcCall& call)>;

// One RPC. Owned by its connection while the stream is open; handlers keep it alive past that
// with shared_from_this() (sends then do nothing).
class GrpcCall : public std::enable_shared_from_this<GrpcCall> {
 public:
  GrpcCall(std::weak_ptr<GrpcConnection> conn, int32_t id) : conn_(std::move(conn)), id_(id) {}
  ~GrpcCall();
  // Still accepting responses: not finished, not cancelled, connection alive.
  bool open() const { return !finished_ && !cancelled_ && !conn_.expired(); }
  bool cancelled() const { return cancelled_; }
  // A request header by lower-case name ("" when absent).
  std::string_view header(std::string_view name) const;
  const std::string& path() const { return path_; }
  const std::string& peer() const { return peer_; }
  // Queues one response message.
  void send(const google::protobuf::MessageLite& m);
  // Ends the call with this status (trailers; trailers-only when nothing was sent).
  void finish(GrpcStatus status, std::string_view message = {});
  CallHandler* handler() { return handler_.get(); }

 private:
  friend class GrpcConnection;
  friend struct ServerCallbacks;
  void submitHeadersIfNeeded();
  std::weak_ptr<GrpcConnection> conn_;
  int32_t id_;
  std::string path_, method_, content_type_, encoding_, peer_;
  std::vector<std::pair<std::string, std::string>> headers_;
  size_t header_bytes_ = 0;
  std::unique_ptr<CallHandler> handler_;
  std::unique_ptr<Deframer> deframer_;
  std::string out_;  // framed responses not yet taken by nghttp2
  size_t out_off_ = 0;
  bool headers_sent_ = false;
  bool deferred_ = false;
  bool finishing_ = false;
  bool finished_ = false;
  bool cancelled_ = false;
  bool half_closed_ = false;
  GrpcStatus status_ = GrpcStatus::kOk;
  std::string status_message_;
};

class GrpcConnection : public std::enable_shared_from_this<GrpcConnection> {
 public:
  using TlsStream = asio::ssl::stream<TcpStream&>;
  // `tls` is null for h2c. Both streams must outlive run().
  GrpcConnection(TcpStream& stream, TlsStream* tls, Dispatcher dispatch, ServerLimits limits,
                 std::string peer);
  ~GrpcConnection();
  GrpcConnection(const GrpcConnection&) = delete;
  GrpcConnection& operator=(const GrpcConnection&) = delete;

  // Serves until the peer closes, a protocol error, or close(); returns when no write is in
  // flight any more.
  awaitable<void> run();
  // Takes bytes read from the peer (the read loop's step; the fuzz target calls it directly).
  // False when the connection is unusable (a protocol error).
  bool receive(const uint8_t* data, size_t size);
  // Graceful: GOAWAY, then close once the open calls have finished.
  void shutdown();
  // At once: every open call is cancelled.
  void close();
  size_t openCalls() const { return calls_.size(); }
  // Writes what nghttp2 has to send (also called by calls after they queue data).
  void flush();

 private:
  friend class GrpcCall;
  friend struct ServerCallbacks;
  void fail();
  void startWrite();
  void onWritten(const error_code& ec);
  void resume(int32_t id);

  TcpStream& stream_;
  TlsStream* tls_;
  Dispatcher dispatch_;
  ServerLimits limits_;
  std::string peer_;
  nghttp2_session* session_ = nullptr;
  std::map<int32_t, std::shared_ptr<GrpcCall>> calls_;
  std::string out_;
  bool writing_ = false;
  bool dead_ = false;
  bool shutting_down_ = false;
  std::unique_ptr<SteadyTimer> write_done_;  // run() waits on it for the last write
};

// grpc-message is percent-encoded (PROTOCOL-HTTP2.md).
std::string percentEncodeMessage(std::string_view message);

}  // namespace sluice::extproc
