#include "k8s/api_client.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <sys/stat.h>

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <fmt/core.h>

#include "base/log.h"
#include "base/strings.h"

namespace sluice::k8s {

namespace bhttp = boost::beast::http;

class ApiConnection {
 public:
  ApiConnection(Executor ex, asio::ssl::context& ctx) : stream(ex, ctx) {}
  asio::ssl::stream<TcpStream> stream;
  beast::flat_buffer buffer;
  bool reused = false;
};

namespace {

constexpr size_t kMaxResponseBytes = 256u << 20;  // a page of a list; pages are bounded by limit

bool isIp(const std::string& host) {
  error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

bhttp::verb verbOf(std::string_view method) {
  auto v = bhttp::string_to_verb(method);
  return v == bhttp::verb::unknown ? bhttp::verb::get : v;
}

}  // namespace

std::string Response::describe() const {
  if (status == 0) {
    return error.empty() ? "no response" : error;
  }
  std::string message;
  auto parsed = nlohmann::json::parse(body, nullptr, false);
  if (parsed.is_object()) {
    if (auto m = parsed.find("message"); m != parsed.end() && m->is_string()) {
      message = m->get<std::string>();
    }
  }
  if (message.empty()) {
    message = body.substr(0, 200);
  }
  return fmt::format("HTTP {}: {}", status, message);
}

ApiClient::ApiClient(asio::io_context& ioc, ClusterAccess access, uint32_t qps, uint32_t burst)
    : ioc_(ioc),
      access_(std::move(access)),
      tls_(asio::ssl::context::tls_client),
      tokens_(burst),
      qps_(qps),
      burst_(burst),
      last_refill_(std::chrono::steady_clock::now()) {}

ApiClient::~ApiClient() {
  shutdown();
}

base::Result<void> ApiClient::init() {
  error_code ec;
  tls_.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                   asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                   asio::ssl::context::no_tlsv1_1);
  if (access_.ca_pem.empty()) {
    tls_.set_default_verify_paths(ec);
  } else {
    tls_.add_certificate_authority(asio::buffer(access_.ca_pem), ec);
  }
  if (ec) {
    return base::Error{fmt::format("{}: the cluster CA: {}", access_.origin, ec.message())};
  }
  if (!access_.client_cert_pem.empty()) {
    tls_.use_certificate_chain(asio::buffer(access_.client_cert_pem), ec);
    if (!ec) {
      tls_.use_private_key(asio::buffer(access_.client_key_pem), asio::ssl::context::pem, ec);
    }
    if (ec) {
      return base::Error{
          fmt::format("{}: the client certificate: {}", access_.origin, ec.message())};
    }
  }
  tls_.set_verify_mode(access_.insecure_skip_verify ? asio::ssl::verify_none
                                                    : asio::ssl::verify_peer);
  if (access_.insecure_skip_verify) {
    SLUICE_LOG(Warn, "k8s", "{}: insecure-skip-tls-verify is set; the API server is not verified",
               access_.origin);
  }
  if (access_.token.empty() && !access_.token_file.empty()) {
    if (auto t = readSmallFile(access_.token_file); !t) {
      return base::Error{fmt::format("{}: token file: {}", access_.origin, t.error().message)};
    }
  }
  return {};
}

// Bound service-account tokens are rotated by the kubelet: the file is looked at again at
// most once a second and re-read when its size or modification time moved.
std::string ApiClient::bearer() {
  if (access_.token_file.empty()) {
    return access_.token;
  }
  const auto now = std::chrono::steady_clock::now();
  if (!token_.empty() && now - token_checked_ < std::chrono::seconds(1)) {
    return token_;
  }
  token_checked_ = now;
  struct stat st {};
  if (::stat(access_.token_file.c_str(), &st) != 0) {
    return token_;
  }
  std::string stamp = fmt::format("{}:{}:{}", st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
  if (stamp != token_file_stamp_) {
    if (auto t = readSmallFile(access_.token_file)) {
      token_ = std::string(base::trimWhitespace(*t));
      token_file_stamp_ = std::move(stamp);
    }
  }
  return token_;
}

awaitable<void> ApiClient::throttle() {
  while (true) {
    const auto now = std::chrono::steady_clock::now();
    const double elapsed = std::chrono::duration<double>(now - last_refill_).count();
    last_refill_ = now;
    tokens_ = std::min(burst_, tokens_ + elapsed * qps_);
    if (tokens_ >= 1) {
      tokens_ -= 1;
      co_return;
    }
    const auto wait =
        std::chrono::milliseconds(static_cast<int64_t>(std::max(1.0, (1 - tokens_) / qps_ * 1000)));
    throttled_ms_ += static_cast<uint64_t>(wait.count());
    SteadyTimer timer(ioc_, wait);
    error_code ec;
    co_await timer.async_wait(asio::redirect_error(use_awaitable, ec));
    if (shut_) {
      co_return;
    }
  }
}

awaitable<std::shared_ptr<ApiConnection>> ApiClient::connect(Response& failure) {
  auto conn = std::make_shared<ApiConnection>(ioc_.get_executor(), tls_);
  error_code ec;
  tcp::resolver resolver(ioc_);
  auto results = co_await resolver.async_resolve(access_.host, access_.port,
                                                 asio::redirect_error(use_awaitable, ec));
  auto& layer = beast::get_lowest_layer(conn->stream);
  if (!ec) {
    layer.expires_after(std::chrono::seconds(10));
    co_await layer.async_connect(results, asio::redirect_error(use_awaitable, ec));
  }
  if (ec) {
    failure.error = fmt::format("connect to {}: {}", access_.server, ec.message());
    co_return nullptr;
  }
  const std::string& name =
      access_.tls_server_name.empty() ? access_.host : access_.tls_server_name;
  if (!isIp(name)) {
    SSL_set_tlsext_host_name(conn->stream.native_handle(), name.c_str());
  }
  if (!access_.insecure_skip_verify) {
    conn->stream.set_verify_callback(asio::ssl::host_name_verification(name));
  }
  co_await conn->stream.async_handshake(asio::ssl::stream_base::client,
                                        asio::redirect_error(use_awaitable, ec));
  if (ec) {
    std::string reason = ec.message();
    if (const long v = SSL_get_verify_result(conn->stream.native_handle()); v != X509_V_OK) {
      reason = X509_verify_cert_error_string(v);
    }
    failure.error = fmt::format("TLS handshake with {}: {}", access_.server, reason);
    co_return nullptr;
  }
  open_.insert(conn);
  co_return conn;
}

awaitable<std::shared_ptr<ApiConnection>> ApiClient::take(Response& failure) {
  while (!idle_.empty()) {
    auto conn = std::move(idle_.back());
    idle_.pop_back();
    if (beast::get_lowest_layer(conn->stream).socket().is_open()) {
      conn->reused = true;
      co_return conn;
    }
    open_.erase(conn);
  }
  co_return co_await connect(failure);
}

void ApiClient::release(std::shared_ptr<ApiConnection> conn) {
  if (shut_ || idle_.size() >= 4) {
    error_code ignored;
    beast::get_lowest_layer(conn->stream).socket().close(ignored);
    open_.erase(conn);
    return;
  }
  idle_.push_back(std::move(conn));
}

awaitable<Response> ApiClient::request(std::string_view method, std::string target,
                                       std::string body, std::string content_type,
                                       std::chrono::milliseconds timeout) {
  co_await throttle();
  ++requests_;
  bhttp::request<bhttp::string_body> req{verbOf(method), target, 11};
  req.set(bhttp::field::host, access_.host);
  req.set(bhttp::field::accept, "application/json");
  req.set(bhttp::field::user_agent, "sluice/0.1.0");
  if (auto t = bearer(); !t.empty()) {
    req.set(bhttp::field::authorization, "Bearer " + t);
  }
  if (!content_type.empty()) {
    req.set(bhttp::field::content_type, content_type);
  }
  req.body() = std::move(body);
  req.prepare_payload();
  // A pooled connection the server closed meanwhile fails before any answer: once more on a
  // fresh one.
  for (int attempt = 0; attempt < 2; ++attempt) {
    Response out;
    if (shut_) {
      out.error = "shutting down";
      co_return out;
    }
    auto conn = co_await take(out);
    if (!conn) {
      co_return out;
    }
    auto& layer = beast::get_lowest_layer(conn->stream);
    layer.expires_after(timeout);
    error_code ec;
    co_await bhttp::async_write(conn->stream, req, asio::redirect_error(use_awaitable, ec));
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(kMaxResponseBytes);
    if (!ec) {
      co_await bhttp::async_read(conn->stream, conn->buffer, parser,
                                 asio::redirect_error(use_awaitable, ec));
    }
    if (ec) {
      open_.erase(conn);
      error_code ignored;
      layer.socket().close(ignored);
      if (conn->reused && !parser.got_some()) {
        continue;
      }
      out.error = fmt::format("{} {}: {}", method, target, ec.message());
      co_return out;
    }
    auto res = parser.release();
    out.status = res.result_int();
    out.body = std::move(res.body());
    if (res.keep_alive()) {
      release(std::move(conn));
    } else {
      open_.erase(conn);
    }
    co_return out;
  }
  co_return Response{0, {}, "connection closed by the API server"};
}

awaitable<Response> ApiClient::stream(std::string target, LineHandler on_line,
                                      std::chrono::milliseconds idle) {
  co_await throttle();
  ++requests_;
  Response out;
  auto conn = co_await connect(out);
  if (!conn) {
    co_return out;
  }
  struct Closer {
    ApiClient& c;
    std::shared_ptr<ApiConnection> conn;
    ~Closer() {
      error_code ignored;
      beast::get_lowest_layer(conn->stream).socket().close(ignored);
      c.open_.erase(conn);
    }
  } closer{*this, conn};
  bhttp::request<bhttp::empty_body> req{bhttp::verb::get, target, 11};
  req.set(bhttp::field::host, access_.host);
  req.set(bhttp::field::accept, "application/json");
  req.set(bhttp::field::user_agent, "sluice/0.1.0");
  if (auto t = bearer(); !t.empty()) {
    req.set(bhttp::field::authorization, "Bearer " + t);
  }
  auto& layer = beast::get_lowest_layer(conn->stream);
  layer.expires_after(std::chrono::seconds(30));
  error_code ec;
  co_await bhttp::async_write(conn->stream, req, asio::redirect_error(use_awaitable, ec));
  bhttp::response_parser<bhttp::buffer_body> parser;
  parser.body_limit(boost::none);
  if (!ec) {
    co_await bhttp::async_read_header(conn->stream, conn->buffer, parser,
                                      asio::redirect_error(use_awaitable, ec));
  }
  if (ec) {
    out.error = fmt::format("watch {}: {}", target, ec.message());
    co_return out;
  }
  out.status = parser.get().result_int();
  std::string pending;
  char chunk[64 * 1024];
  while (!parser.is_done()) {
    parser.get().body().data = chunk;
    parser.get().body().size = sizeof(chunk);
    layer.expires_after(idle);
    // read_some: an event must be handed on as soon as it arrives, not once 64 KiB are in.
    co_await bhttp::async_read_some(conn->stream, conn->buffer, parser,
                                    asio::redirect_error(use_awaitable, ec));
    if (ec == bhttp::error::need_buffer) {
      ec = {};
    }
    if (ec) {
      out.error = fmt::format("watch {}: {}", target, ec.message());
      break;
    }
    const size_t got = sizeof(chunk) - parser.get().body().size;
    if (!out.ok()) {
      if (out.body.size() < (1u << 20)) {
        out.body.append(chunk, got);
      }
      continue;
    }
    pending.append(chunk, got);
    size_t start = 0;
    for (size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1) {
      if (nl > start && !on_line(std::string_view(pending).substr(start, nl - start))) {
        co_return out;
      }
    }
    pending.erase(0, start);
    if (pending.size() > kMaxResponseBytes) {
      out.error = fmt::format("watch {}: an event larger than {} bytes", target, kMaxResponseBytes);
      break;
    }
  }
  if (out.ok() && !pending.empty() && out.error.empty()) {
    on_line(pending);
  }
  co_return out;
}

void ApiClient::shutdown() {
  shut_ = true;
  for (const auto& conn : open_) {
    error_code ignored;
    beast::get_lowest_layer(conn->stream).socket().close(ignored);
  }
  open_.clear();
  idle_.clear();
}

}  // namespace sluice::k8s
