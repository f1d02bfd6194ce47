#include "backends/h2_client.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <nghttp2/nghttp2.h>

#include <boost/asio/write.hpp>
#include <openssl/ssl.h>

#include "backends/upstream_pool.h"
#include "base/strings.h"
#include "http/nghttp2_nv.h"

namespace sluice::backends {

namespace {

// Per stream: what an endpoint may send ahead of a client (the most the router buffers for it).
constexpr int32_t kStreamWindow = 256 * 1024;
// Per connection: room for every stream's window (256 streams), so one slow client's unread
// bytes never hold up the other streams on the connection.
constexpr int32_t kConnectionWindow = 64 * 1024 * 1024;
constexpr uint32_t kMaxStreams = kConnectionWindow / kStreamWindow;
constexpr size_t kMaxWriteBatch = 64 * 1024;
constexpr size_t kMaxHeadBytes = 64 * 1024;  // a response head, as for HTTP/1.1

}  // namespace

// --- the stream --------------------------------------------------------------------------------

H2Stream::~H2Stream() = default;

awaitable<bool> H2Stream::wait() {
  if (std::chrono::steady_clock::now() >= deadline_) {
    co_return false;
  }
  signal_.expires_at(deadline_);
  error_code ec;
  co_await signal_.async_wait(asio::redirect_error(use_awaitable, ec));
  // Cancelled: woken by the connection. Expired: the deadline passed.
  co_return ec == asio::error::operation_aborted;
}

awaitable<void> H2Stream::waitHead(std::chrono::milliseconds timeout, error_code& ec) {
  deadline_ = std::chrono::steady_clock::now() + timeout;
  while (!head_done_) {
    if (error_) {
      ec = error_;
      co_return;
    }
    if (closed_) {
      ec = asio::error::connection_reset;
      co_return;
    }
    // Not inside the condition: g++ 12 miscompiles co_await there in a loop.
    const bool woken = co_await wait();
    if (!woken) {
      ec = asio::error::timed_out;
      co_return;
    }
  }
}

awaitable<size_t> H2Stream::read(char* buf, size_t cap, error_code& ec) {
  while (unread() == 0) {
    if (ended_) {
      co_return 0;
    }
    if (error_ || closed_) {
      ec = error_ ? error_ : error_code(asio::error::connection_reset);
      co_return 0;
    }
    const bool woken = co_await wait();
    if (!woken) {
      ec = asio::error::timed_out;
      co_return 0;
    }
  }
  const size_t n = std::min(cap, unread());
  std::memcpy(buf, data_.data() + data_off_, n);
  data_off_ += n;
  if (data_off_ == data_.size()) {
    data_.clear();
    data_off_ = 0;
  } else if (data_off_ > data_.size() / 2) {
    data_.erase(0, data_off_);
    data_off_ = 0;
  }
  // Handed on: the endpoint may send as much again.
  if (auto c = conn_.lock()) {
    c->consume(id_, n);
  }
  co_return n;
}

std::optional<uint64_t> H2Stream::contentLength() const {
  auto it = head_.find(boost::beast::http::field::content_length);
  if (it == head_.end()) {
    return std::nullopt;
  }
  auto n = base::parseUint(std::string_view(it->value().data(), it->value().size()));
  return n ? std::optional<uint64_t>(*n) : std::nullopt;
}

void H2Stream::cancel() {
  pieces_.clear();
  piece_ = 0;
  offset_ = 0;
  auto c = conn_.lock();
  if (c && !closed_ && id_ > 0) {
    c->resetStream(id_);
  }
  if (c && unread() > 0) {
    c->consume(id_, unread());
  }
  data_.clear();
  data_off_ = 0;
  if (!ended_ && !error_) {
    error_ = asio::error::operation_aborted;
  }
  closed_ = true;
  wake();
}

void H2Stream::write(std::string data) {
  if (closed_ || !body_open_ || data.empty()) {
    return;
  }
  owned_.push_back(std::move(data));
  pieces_.push_back(owned_.back());
  if (auto c = conn_.lock(); c && deferred_) {
    deferred_ = false;
    c->resumeData(id_);
  }
}

void H2Stream::endBody() {
  if (closed_ || !body_open_) {
    return;
  }
  body_open_ = false;
  if (auto c = conn_.lock(); c && deferred_) {
    deferred_ = false;
    c->resumeData(id_);
  }
}

std::string_view H2Stream::trailer(std::string_view name) const {
  for (const auto& [n, v] : trailers_) {
    if (n == name) {
      return v;
    }
  }
  return {};
}

// --- nghttp2 callbacks -------------------------------------------------------------------------

struct H2Connection::Callbacks {
  static H2Stream* stream(nghttp2_session* s, int32_t id) {
    return static_cast<H2Stream*>(nghttp2_session_get_stream_user_data(s, id));
  }

  static ssize_t readBody(nghttp2_session*, int32_t, uint8_t* buf, size_t length, uint32_t* flags,
                          nghttp2_data_source* source, void*) {
    auto* st = static_cast<H2Stream*>(source->ptr);
    size_t n = 0;
    while (n < length && st->piece_ < st->pieces_.size()) {
      std::string_view p = st->pieces_[st->piece_];
      const size_t take = std::min(length - n, p.size() - st->offset_);
      std::memcpy(buf + n, p.data() + st->offset_, take);
      n += take;
      st->offset_ += take;
      if (st->offset_ == p.size()) {
        ++st->piece_;
        st->offset_ = 0;
      }
    }
    if (st->piece_ >= st->pieces_.size()) {
      if (st->body_open_) {
        if (n == 0) {
          st->deferred_ = true;  // resumed by write() or endBody()
          return NGHTTP2_ERR_DEFERRED;
        }
        return static_cast<ssize_t>(n);
      }
      *flags |= NGHTTP2_DATA_FLAG_EOF;
    }
    return static_cast<ssize_t>(n);
  }

  static int onHeader(nghttp2_session* s, const nghttp2_frame* frame, const uint8_t* name,
                      size_t namelen, const uint8_t* value, size_t valuelen, uint8_t, void*) {
    if (frame->hd.type != NGHTTP2_HEADERS) {
      return 0;
    }
    H2Stream* st = stream(s, frame->hd.stream_id);
    if (st == nullptr) {
      return 0;
    }
    std::string_view n(reinterpret_cast<const char*>(name), namelen);
    std::string_view v(reinterpret_cast<const char*>(value), valuelen);
    if (st->head_done_) {
      // Trailers: kept (bounded) for who asks, e.g. a gRPC call's status; never relayed.
      st->head_bytes_ += namelen + valuelen + 32;
      if (st->head_bytes_ <= kMaxHeadBytes) {
        st->trailers_.emplace_back(n, v);
      }
      return 0;
    }
    // The same bound as for HTTP/1.1 response heads; beyond it the stream is reset and fails.
    st->head_bytes_ += namelen + valuelen + 32;
    if (st->head_bytes_ > kMaxHeadBytes) {
      st->error_ = asio::error::message_size;
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    if (n == ":status") {
      auto code = base::parseUint(v);
      if (!code || *code < 100 || *code > 599) {
        st->error_ = asio::error::invalid_argument;
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
      }
      st->head_.result(static_cast<unsigned>(*code));
    } else if (!n.empty() && n[0] != ':') {
      st->head_.insert(n, v);
      if (n.starts_with("grpc-")) {
        st->trailers_.emplace_back(n, v);  // a trailers-only gRPC answer carries its status here
      }
    }
    return 0;
  }

  static int onFrameRecv(nghttp2_session* s, const nghttp2_frame* frame, void* user) {
    auto* conn = static_cast<H2Connection*>(user);
    switch (frame->hd.type) {
      case NGHTTP2_HEADERS: {
        H2Stream* st = stream(s, frame->hd.stream_id);
        if (st == nullptr) {
          break;
        }
        if (!st->head_done_) {
          const unsigned status = st->head_.result_int();
          if (status >= 100 && status < 200) {
            st->head_ = {};  // informational: the real response follows
            st->head_bytes_ = 0;
          } else {
            st->head_done_ = true;
          }
        }
        if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) {
          st->ended_ = true;
        }
        st->wake();
        break;
      }
      case NGHTTP2_DATA:
        if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) {
          if (H2Stream* st = stream(s, frame->hd.stream_id)) {
            st->ended_ = true;
            st->wake();
          }
        }
        break;
      case NGHTTP2_GOAWAY:
        conn->goaway_ = true;  // streams above its last id are closed as refused by nghttp2
        break;
      default:
        break;
    }
    return 0;
  }

  static int onData(nghttp2_session* s, uint8_t, int32_t id, const uint8_t* data, size_t len,
                    void*) {
    H2Stream* st = stream(s, id);
    if (st == nullptr || (st->closed_ && !st->ended_)) {
      nghttp2_session_consume(s, id, len);  // nobody reads it: give the window back
      return 0;
    }
    st->data_.append(reinterpret_cast<const char*>(data), len);
    st->wake();
    return 0;
  }

  static int onStreamClose(nghttp2_session*, int32_t id, uint32_t error, void* user) {
    auto* conn = static_cast<H2Connection*>(user);
    auto it = conn->streams_.find(id);
    if (it == conn->streams_.end()) {
      return 0;
    }
    std::shared_ptr<H2Stream> st = it->second;
    conn->streams_.erase(it);
    if (conn->streams_.empty()) {
      conn->idle_since_ = std::chrono::steady_clock::now();
    }
    st->closed_ = true;
    if (error == NGHTTP2_REFUSED_STREAM) {
      st->refused_ = true;
      st->error_ = asio::error::connection_refused;
    } else if (!st->ended_ && !st->error_) {
      st->error_ = error == NGHTTP2_NO_ERROR ? error_code(asio::error::connection_reset)
                                             : error_code(asio::error::connection_aborted);
    }
    st->wake();
    return 0;
  }
};

// --- the connection ----------------------------------------------------------------------------

H2Connection::H2Connection(tcp::socket socket) : socket_(std::move(socket)) {
  nghttp2_session_callbacks* cbs = nullptr;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_on_header_callback(cbs, &Callbacks::onHeader);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &Callbacks::onFrameRecv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &Callbacks::onData);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &Callbacks::onStreamClose);
  nghttp2_option* opt = nullptr;
  nghttp2_option_new(&opt);
  nghttp2_option_set_no_auto_window_update(opt, 1);
  nghttp2_session_client_new2(&session_, cbs, this, opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);
  const std::array<nghttp2_settings_entry, 2> settings = {{
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, static_cast<uint32_t>(kStreamWindow)},
  }};
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings.data(), settings.size());
  nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0, kConnectionWindow);
}

H2Connection::~H2Connection() {
  nghttp2_session_del(session_);
}

awaitable<std::shared_ptr<H2Connection>> H2Connection::connect(const router::Endpoint& ep,
                                                               std::chrono::milliseconds timeout,
                                                               error_code& ec,
                                                               asio::ssl::context* tls) {
  auto ex = co_await asio::this_coro::executor;
  TcpStream tcp_stream(ex);
  tcp_stream.expires_after(timeout);
  const tcp::endpoint address = toAsio(ep);
  co_await tcp_stream.async_connect(address, asio::redirect_error(use_awaitable, ec));
  if (ec) {
    if (ec == beast::error::timeout) {
      ec = asio::error::timed_out;
    }
    co_return nullptr;
  }
  tcp_stream.expires_never();
  auto conn = std::make_shared<H2Connection>(tcp_stream.release_socket());
  error_code ignored;
  conn->socket_.set_option(tcp::no_delay(true), ignored);
  if (tls != nullptr) {
    conn->tls_ = std::make_unique<asio::ssl::stream<tcp::socket&>>(conn->socket_, *tls);
    static const unsigned char kAlpn[] = {2, 'h', '2'};
    SSL_set_alpn_protos(conn->tls_->native_handle(), kAlpn, sizeof(kAlpn));
    SteadyTimer deadline(ex);
    deadline.expires_after(timeout);
    deadline.async_wait([&sock = conn->socket_](const error_code& e) {
      if (!e) {
        error_code i;
        sock.cancel(i);
      }
    });
    co_await conn->tls_->async_handshake(asio::ssl::stream_base::client,
                                         asio::redirect_error(use_awaitable, ec));
    deadline.cancel();
    if (ec) {
      co_return nullptr;
    }
  }
  asio::co_spawn(ex, conn->readLoop(), asio::detached);
  conn->flush();  // the preface and SETTINGS
  co_return conn;
}

std::shared_ptr<H2Stream> H2Connection::submit(std::string_view method, std::string_view authority,
                                               std::string_view path,
                                               const std::vector<Header>& headers,
                                               std::vector<std::string_view> body, size_t body_size,
                                               bool open_body) {
  if (!usable()) {
    return nullptr;
  }
  auto st = std::make_shared<H2Stream>(socket_.get_executor());
  st->conn_ = weak_from_this();
  st->pieces_ = std::move(body);
  st->body_open_ = open_body;
  std::vector<nghttp2_nv> nva;
  nva.reserve(headers.size() + 4);
  nva.push_back(http::nghttp2Header(":method", method));
  nva.push_back(http::nghttp2Header(":scheme", tls_ ? "https" : "http"));
  nva.push_back(http::nghttp2Header(":authority", authority));
  nva.push_back(http::nghttp2Header(":path", path));
  for (const auto& h : headers) {
    nva.push_back(http::nghttp2Header(h.name, h.value));
  }
  nghttp2_data_provider provider;
  provider.source.ptr = st.get();
  provider.read_callback = &Callbacks::readBody;
  const int32_t id =
      nghttp2_submit_request(session_, nullptr, nva.data(), nva.size(),
                             body_size > 0 || open_body ? &provider : nullptr, st.get());
  if (id < 0) {
    return nullptr;
  }
  st->id_ = id;
  streams_[id] = st;
  flush();
  return st;
}

bool H2Connection::usable() const {
  if (dead_ || goaway_ || nghttp2_session_check_request_allowed(session_) == 0) {
    return false;
  }
  // The endpoint's limit, and never more streams than the connection window has room for.
  const uint32_t limit = std::min(
      nghttp2_session_get_remote_settings(session_, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS),
      kMaxStreams);
  return streams_.size() < limit;
}

void H2Connection::close() {
  if (!dead_) {
    // GOAWAY is best effort; the socket closes now.
    fail(asio::error::operation_aborted);
  }
}

awaitable<void> H2Connection::readLoop() {
  auto self = shared_from_this();
  std::array<uint8_t, 16384> buf;
  while (!dead_) {
    error_code ec;
    size_t n = 0;
    if (tls_) {
      n = co_await tls_->async_read_some(asio::buffer(buf),
                                         asio::redirect_error(use_awaitable, ec));
    } else {
      n = co_await socket_.async_read_some(asio::buffer(buf),
                                           asio::redirect_error(use_awaitable, ec));
    }
    if (ec) {
      fail(ec);
      break;
    }
    if (nghttp2_session_mem_recv(session_, buf.data(), n) < 0) {
      fail(asio::error::connection_aborted);  // a protocol error: the connection is unusable
      break;
    }
    flush();
  }
}

void H2Connection::flush() {
  if (writing_ || dead_) {
    return;
  }
  out_.clear();
  if (!http::takeOutput(session_, out_, kMaxWriteBatch)) {
    fail(asio::error::connection_aborted);
    return;
  }
  if (out_.empty()) {
    if (nghttp2_session_want_read(session_) == 0 && nghttp2_session_want_write(session_) == 0) {
      fail(asio::error::eof);  // both sides are done (after GOAWAY)
    }
    return;
  }
  writing_ = true;
  auto done = [self = shared_from_this()](const error_code& ec, size_t) {
    self->writing_ = false;
    if (ec) {
      self->fail(ec);
      return;
    }
    self->flush();
  };
  if (tls_) {
    asio::async_write(*tls_, asio::buffer(out_), std::move(done));
  } else {
    asio::async_write(socket_, asio::buffer(out_), std::move(done));
  }
}

void H2Connection::fail(const error_code& ec) {
  if (dead_) {
    return;
  }
  dead_ = true;
  auto streams = std::move(streams_);
  streams_.clear();
  for (auto& [_, st] : streams) {
    st->closed_ = true;
    st->connection_failed_ = true;
    if (!st->ended_ && !st->error_) {
      st->error_ = ec ? ec : error_code(asio::error::connection_reset);
    }
    st->wake();
  }
  error_code ignored;
  socket_.shutdown(tcp::socket::shutdown_both, ignored);
  socket_.close(ignored);
}

void H2Connection::consume(int32_t id, size_t n) {
  if (dead_) {
    return;
  }
  nghttp2_session_consume(session_, id, n);
  flush();
}

void H2Connection::resumeData(int32_t id) {
  if (dead_) {
    return;
  }
  nghttp2_session_resume_data(session_, id);
  flush();
}

void H2Connection::resetStream(int32_t id) {
  if (dead_) {
    return;
  }
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
  flush();
}

// --- the pool ----------------------------------------------------------------------------------

awaitable<std::shared_ptr<H2Connection>> H2Pool::acquire(const router::Endpoint& ep,
                                                         std::chrono::milliseconds connect_timeout,
                                                         bool fresh, bool& reused, error_code& ec,
                                                         asio::ssl::context* tls) {
  const std::string key = tls != nullptr ? ep.address + " tls" : ep.address;
  reused = false;
  const auto now = std::chrono::steady_clock::now();
  auto stale = [&](const std::shared_ptr<H2Connection>& c) {
    const bool idle_too_long = c->activeStreams() == 0 && now - c->idleSince() > idle_timeout_;
    if (idle_too_long) {
      c->close();
    }
    return c->dead() || idle_too_long;
  };
  if (now - last_sweep_ > std::chrono::seconds(1)) {
    // Now and then every endpoint's list, so endpoints that left the configuration do not keep
    // idle connections open.
    last_sweep_ = now;
    for (auto it = conns_.begin(); it != conns_.end();) {
      std::erase_if(it->second, stale);
      it = it->second.empty() ? conns_.erase(it) : std::next(it);
    }
  }
  {
    auto& list = conns_[key];
    std::erase_if(list, stale);
    if (!fresh) {
      std::shared_ptr<H2Connection> best;
      for (const auto& c : list) {
        if (c->usable() && (!best || c->activeStreams() < best->activeStreams())) {
          best = c;
        }
      }
      if (best) {
        reused = true;
        co_return best;
      }
    }
  }
  auto conn = co_await H2Connection::connect(ep, connect_timeout, ec, tls);
  if (ec) {
    co_return nullptr;
  }
  conns_[key].push_back(conn);  // looked up again: the map may have changed meanwhile
  co_return conn;
}

size_t H2Pool::connectionCount() const {
  size_t n = 0;
  for (const auto& [_, list] : conns_) {
    n += list.size();
  }
  return n;
}

void H2Pool::clear() {
  for (auto& [_, list] : conns_) {
    for (auto& c : list) {
      if (c->activeStreams() == 0) {
        c->close();
      }
    }
  }
  conns_.clear();
}

}  // namespace sluice::backends
