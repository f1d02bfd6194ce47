#include "extproc/grpc_server.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <google/protobuf/message_lite.h>
#include <nghttp2/nghttp2.h>

#include "http/nghttp2_nv.h"

namespace sluice::extproc {

namespace {

constexpr size_t kMaxWriteBatch = 64 * 1024;
constexpr size_t kMaxHeaderBytes = 64 * 1024;

}  // namespace

std::string percentEncodeMessage(std::string_view message) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(message.size());
  for (unsigned char c : message) {
    if (c >= 0x20 && c <= 0x7e && c != '%') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

// --- the call ----------------------------------------------------------------------------------

GrpcCall::~GrpcCall() = default;

std::string_view GrpcCall::header(std::string_view name) const {
  for (const auto& [n, v] : headers_) {
    if (n == name) {
      return v;
    }
  }
  return {};
}

void GrpcCall::submitHeadersIfNeeded() {
  if (headers_sent_) {
    return;
  }
  auto conn = conn_.lock();
  if (!conn) {
    return;
  }
  headers_sent_ = true;
  const nghttp2_nv nva[] = {http::nghttp2Header(":status", "200"),
                            http::nghttp2Header("content-type", "application/grpc")};
  nghttp2_data_provider provider;
  provider.source.ptr = this;
  provider.read_callback = [](nghttp2_session* s, int32_t id, uint8_t* buf, size_t length,
                              uint32_t* flags, nghttp2_data_source* source, void*) -> ssize_t {
    auto* call = static_cast<GrpcCall*>(source->ptr);
    const size_t n = std::min(length, call->out_.size() - call->out_off_);
    std::memcpy(buf, call->out_.data() + call->out_off_, n);
    call->out_off_ += n;
    if (call->out_off_ == call->out_.size()) {
      call->out_.clear();
      call->out_off_ = 0;
      if (call->finishing_) {
        // Everything queued is out: the status goes in trailers.
        *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        const std::string code = std::to_string(static_cast<int>(call->status_));
        const std::string msg = percentEncodeMessage(call->status_message_);
        nghttp2_nv trailers[2] = {http::nghttp2Header("grpc-status", code),
                                  http::nghttp2Header("grpc-message", msg)};
        nghttp2_submit_trailer(s, id, trailers, msg.empty() ? 1 : 2);
        return static_cast<ssize_t>(n);
      }
      if (n == 0) {
        call->deferred_ = true;
        return NGHTTP2_ERR_DEFERRED;
      }
    }
    return static_cast<ssize_t>(n);
  };
  nghttp2_submit_response(conn->session_, id_, nva, 2, &provider);
}

void GrpcCall::send(const google::protobuf::MessageLite& m) {
  if (!open()) {
    return;
  }
  appendFrame(out_, m);
  submitHeadersIfNeeded();
  if (auto conn = conn_.lock()) {
    conn->resume(id_);
    conn->flush();
  }
}

void GrpcCall::finish(GrpcStatus status, std::string_view message) {
  if (!open()) {
    return;
  }
  auto conn = conn_.lock();
  finished_ = true;
  status_ = status;
  status_message_ = std::string(message);
  if (!headers_sent_) {
    // Trailers-only: one HEADERS frame with the status and END_STREAM.
    headers_sent_ = true;
    const std::string code = std::to_string(static_cast<int>(status));
    const std::string msg = percentEncodeMessage(message);
    const nghttp2_nv nva[] = {http::nghttp2Header(":status", "200"),
                              http::nghttp2Header("content-type", "application/grpc"),
                              http::nghttp2Header("grpc-status", code),
                              http::nghttp2Header("grpc-message", msg)};
    nghttp2_submit_response(conn->session_, id_, nva, msg.empty() ? 3 : 4, nullptr);
  } else {
    finishing_ = true;
    conn->resume(id_);
  }
  conn->flush();
}

// --- nghttp2 callbacks -------------------------------------------------------------------------

struct ServerCallbacks {
  static GrpcCall* call(nghttp2_session* s, int32_t id) {
    return static_cast<GrpcCall*>(nghttp2_session_get_stream_user_data(s, id));
  }

  static int onBeginHeaders(nghttp2_session* s, const nghttp2_frame* frame, void* user) {
    auto* conn = static_cast<GrpcConnection*>(user);
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
      return 0;
    }
    auto c = std::make_shared<GrpcCall>(conn->weak_from_this(), frame->hd.stream_id);
    c->peer_ = conn->peer_;
    nghttp2_session_set_stream_user_data(s, frame->hd.stream_id, c.get());
    conn->calls_[frame->hd.stream_id] = std::move(c);
    return 0;
  }

  static int onHeader(nghttp2_session* s, const nghttp2_frame* frame, const uint8_t* name,
                      size_t namelen, const uint8_t* value, size_t valuelen, uint8_t, void*) {
    GrpcCall* c = call(s, frame->hd.stream_id);
    if (c == nullptr || frame->hd.type != NGHTTP2_HEADERS ||
        frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
      return 0;  // trailers from a client carry nothing we use
    }
    c->header_bytes_ += namelen + valuelen + 32;
    if (c->header_bytes_ > kMaxHeaderBytes) {
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // resets the stream
    }
    std::string_view n(reinterpret_cast<const char*>(name), namelen);
    std::string v(reinterpret_cast<const char*>(value), valuelen);
    if (n == ":path") {
      c->path_ = std::move(v);
    } else if (n == ":method") {
      c->method_ = std::move(v);
    } else if (n == "content-type") {
      c->content_type_ = std::move(v);
    } else if (n == "grpc-encoding") {
      c->encoding_ = std::move(v);
    } else if (!n.empty() && n[0] != ':') {
      c->headers_.emplace_back(std::string(n), std::move(v));
    }
    return 0;
  }

  // The request head is complete: answer what is not a gRPC call, or make its handler.
  static void start(GrpcConnection& conn, GrpcCall& c) {
    const int32_t id = c.id_;
    if (c.method_ != "POST" || !c.content_type_.starts_with("application/grpc")) {
      // Not gRPC: a plain HTTP answer (PROTOCOL-HTTP2.md: 415 for another content type).
      c.finished_ = true;
      c.headers_sent_ = true;
      const nghttp2_nv nva[] = {
          http::nghttp2Header(":status", c.method_ != "POST" ? "405" : "415")};
      nghttp2_submit_response(conn.session_, id, nva, 1, nullptr);
      return;
    }
    if (!c.encoding_.empty() && c.encoding_ != "identity") {
      c.finish(GrpcStatus::kUnimplemented, "grpc-encoding " + c.encoding_ + " is not supported");
      return;
    }
    c.deframer_ = std::make_unique<Deframer>(conn.limits_.max_message);
    c.handler_ = conn.dispatch_(c.path_, c);
    if (!c.handler_ && c.open()) {
      c.finish(GrpcStatus::kUnimplemented, "unknown method " + c.path_);
    }
  }

  static void halfClose(GrpcCall& c) {
    if (c.half_closed_) {
      return;
    }
    c.half_closed_ = true;
    if (c.handler_ && c.open()) {
      if (c.deframer_ && c.deframer_->pending() > 0) {
        c.finish(GrpcStatus::kInternal, "the stream ended inside a message");
        return;
      }
      c.handler_->onHalfClose();
    }
  }

  static int onFrameRecv(nghttp2_session* s, const nghttp2_frame* frame, void* user) {
    auto* conn = static_cast<GrpcConnection*>(user);
    GrpcCall* c = call(s, frame->hd.stream_id);
    if (c == nullptr) {
      return 0;
    }
    const bool end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
      auto keep = c->shared_from_this();
      start(*conn, *c);
      if (end) {
        halfClose(*c);
      }
    } else if ((frame->hd.type == NGHTTP2_DATA || frame->hd.type == NGHTTP2_HEADERS) && end) {
      auto keep = c->shared_from_this();
      halfClose(*c);
    }
    return 0;
  }

  static int onData(nghttp2_session* s, uint8_t, int32_t id, const uint8_t* data, size_t len,
                    void*) {
    GrpcCall* c = call(s, id);
    if (c == nullptr || !c->deframer_ || !c->open()) {
      return 0;  // answered already: the rest is dropped
    }
    auto keep = c->shared_from_this();
    c->deframer_->feed(std::string_view(reinterpret_cast<const char*>(data), len));
    std::string_view message;
    std::string error;
    while (c->open()) {
      const auto next = c->deframer_->next(message, error);
      if (next == Deframer::Next::kNeedMore) {
        break;
      }
      if (next == Deframer::Next::kError) {
        c->finish(error.starts_with("compressed") ? GrpcStatus::kUnimplemented
                                                  : GrpcStatus::kResourceExhausted,
                  error);
        break;
      }
      c->handler_->onMessage(message);
    }
    return 0;
  }

  static int onFrameSend(nghttp2_session* s, const nghttp2_frame* frame, void*) {
    // Our side is done while the client's is not: reset it (NO_ERROR), as gRPC servers do,
    // so the client stops sending a body nobody reads.
    if (frame->hd.type == NGHTTP2_HEADERS && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) {
      GrpcCall* c = call(s, frame->hd.stream_id);
      if (c != nullptr && !c->half_closed_) {
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
      }
    }
    return 0;
  }

  static int onStreamClose(nghttp2_session*, int32_t id, uint32_t, void* user) {
    auto* conn = static_cast<GrpcConnection*>(user);
    auto it = conn->calls_.find(id);
    if (it == conn->calls_.end()) {
      return 0;
    }
    std::shared_ptr<GrpcCall> c = std::move(it->second);
    conn->calls_.erase(it);
    if (!c->finished_) {
      c->cancelled_ = true;
      if (c->handler_) {
        c->handler_->onCancel();
      }
    }
    return 0;
  }
};

// --- the connection ----------------------------------------------------------------------------

GrpcConnection::GrpcConnection(TcpStream& stream, TlsStream* tls, Dispatcher dispatch,
                               ServerLimits limits, std::string peer)
    : stream_(stream),
      tls_(tls),
      dispatch_(std::move(dispatch)),
      limits_(limits),
      peer_(std::move(peer)) {
  nghttp2_session_callbacks* cbs = nullptr;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, &ServerCallbacks::onBeginHeaders);
  nghttp2_session_callbacks_set_on_header_callback(cbs, &ServerCallbacks::onHeader);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &ServerCallbacks::onFrameRecv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &ServerCallbacks::onData);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, &ServerCallbacks::onFrameSend);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &ServerCallbacks::onStreamClose);
  nghttp2_session_server_new(&session_, cbs, this);
  nghttp2_session_callbacks_del(cbs);
  const std::array<nghttp2_settings_entry, 2> settings = {{
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, limits_.max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, static_cast<uint32_t>(limits_.stream_window)},
  }};
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings.data(), settings.size());
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, limits_.connection_window);
}

GrpcConnection::~GrpcConnection() {
  // Calls that outlive the connection must not reach into the session.
  nghttp2_session_del(session_);
}

awaitable<void> GrpcConnection::run() {
  auto self = shared_from_this();
  write_done_ = std::make_unique<SteadyTimer>(stream_.get_executor());
  flush();  // our SETTINGS
  std::array<uint8_t, 16384> buf;
  while (!dead_) {
    error_code ec;
    size_t n = 0;
    if (tls_ != nullptr) {
      n = co_await tls_->async_read_some(asio::buffer(buf),
                                         asio::redirect_error(use_awaitable, ec));
    } else {
      n = co_await stream_.socket().async_read_some(asio::buffer(buf),
                                                    asio::redirect_error(use_awaitable, ec));
    }
    if (ec || dead_) {
      break;
    }
    if (!receive(buf.data(), n)) {
      break;
    }
  }
  fail();
  while (writing_) {
    write_done_->expires_at(SteadyTimer::time_point::max());
    error_code ignored;
    co_await write_done_->async_wait(asio::redirect_error(use_awaitable, ignored));
  }
}

bool GrpcConnection::receive(const uint8_t* data, size_t size) {
  if (dead_ || nghttp2_session_mem_recv(session_, data, size) < 0) {
    return false;  // a protocol error: the connection is unusable
  }
  flush();
  return !dead_;
}

void GrpcConnection::fail() {
  if (dead_) {
    return;
  }
  dead_ = true;
  auto calls = std::move(calls_);
  calls_.clear();
  for (auto& [_, c] : calls) {
    if (!c->finished_) {
      c->cancelled_ = true;
      if (c->handler_) {
        c->handler_->onCancel();
      }
    }
  }
  error_code ec;
  stream_.socket().close(ec);
}

void GrpcConnection::close() {
  fail();
}

void GrpcConnection::shutdown() {
  if (dead_ || shutting_down_) {
    return;
  }
  shutting_down_ = true;
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(session_), NGHTTP2_NO_ERROR,
                        nullptr, 0);
  flush();
}

void GrpcConnection::resume(int32_t id) {
  auto it = calls_.find(id);
  if (it != calls_.end() && it->second->deferred_) {
    it->second->deferred_ = false;
    nghttp2_session_resume_data(session_, id);
  }
}

void GrpcConnection::flush() {
  if (writing_ || dead_) {
    return;
  }
  out_.clear();
  if (!http::takeOutput(session_, out_, kMaxWriteBatch)) {
    fail();
    return;
  }
  if (out_.empty()) {
    if (shutting_down_ && calls_.empty()) {
      fail();  // GOAWAY is out and nothing is open
    }
    return;
  }
  startWrite();
}

void GrpcConnection::startWrite() {
  writing_ = true;
  auto self = shared_from_this();
  auto done = [self](const error_code& ec, size_t) { self->onWritten(ec); };
  if (tls_ != nullptr) {
    asio::async_write(*tls_, asio::buffer(out_), std::move(done));
  } else {
    asio::async_write(stream_.socket(), asio::buffer(out_), std::move(done));
  }
}

void GrpcConnection::onWritten(const error_code& ec) {
  writing_ = false;
  if (ec) {
    fail();
  } else {
    flush();
  }
  if (!writing_ && write_done_) {
    write_done_->cancel();
  }
}

}  // namespace sluice::extproc
