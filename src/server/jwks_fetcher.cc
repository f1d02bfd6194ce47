#include "server/jwks_fetcher.h"

#include <optional>

#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <fmt/core.h>

#include "base/asio.h"
#include "base/log.h"

namespace sluice::server {

namespace bhttp = boost::beast::http;

namespace {

struct Url {
  bool tls = false;
  std::string host;
  std::string port;
  std::string target;
};

std::optional<Url> parseUrl(const std::string& url) {
  Url u;
  std::string_view rest = url;
  if (rest.rfind("https://", 0) == 0) {
    u.tls = true;
    rest.remove_prefix(8);
  } else if (rest.rfind("http://", 0) == 0) {
    rest.remove_prefix(7);
  } else {
    return std::nullopt;
  }
  size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  u.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  size_t colon = authority.rfind(':');
  if (colon != std::string_view::npos && authority.find(']') == std::string_view::npos) {
    u.host = std::string(authority.substr(0, colon));
    u.port = std::string(authority.substr(colon + 1));
  } else {
    u.host = std::string(authority);
    u.port = u.tls ? "443" : "80";
  }
  if (u.host.empty()) {
    return std::nullopt;
  }
  return u;
}

awaitable<void> get(const Url& u, asio::ssl::context& ctx, std::string& body, std::string& error) {
  auto ex = co_await asio::this_coro::executor;
  tcp::resolver resolver(ex);
  error_code ec;
  auto results =
      co_await resolver.async_resolve(u.host, u.port, asio::redirect_error(use_awaitable, ec));
  if (ec) {
    error = "resolve: " + ec.message();
    co_return;
  }
  TcpStream tcp(ex);
  co_await tcp.async_connect(results, asio::redirect_error(use_awaitable, ec));
  if (ec) {
    error = "connect: " + ec.message();
    co_return;
  }
  bhttp::request<bhttp::empty_body> req{bhttp::verb::get, u.target, 11};
  req.set(bhttp::field::host, u.host);
  req.set(bhttp::field::accept, "application/json");
  req.set(bhttp::field::connection, "close");
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(1024 * 1024);
  beast::flat_buffer buffer;
  if (u.tls) {
    asio::ssl::stream<TcpStream&> tls(tcp, ctx);
    SSL_set_tlsext_host_name(tls.native_handle(), u.host.c_str());
    tls.set_verify_callback(asio::ssl::host_name_verification(u.host));
    co_await tls.async_handshake(asio::ssl::stream_base::client,
                                 asio::redirect_error(use_awaitable, ec));
    if (!ec)
      co_await bhttp::async_write(tls, req, asio::redirect_error(use_awaitable, ec));
    if (!ec) {
      co_await bhttp::async_read(tls, buffer, parser, asio::redirect_error(use_awaitable, ec));
    }
  } else {
    co_await bhttp::async_write(tcp, req, asio::redirect_error(use_awaitable, ec));
    if (!ec) {
      co_await bhttp::async_read(tcp, buffer, parser, asio::redirect_error(use_awaitable, ec));
    }
  }
  if (ec) {
    error = ec.message();
    co_return;
  }
  if (parser.get().result_int() != 200) {
    error = fmt::format("HTTP {}", parser.get().result_int());
    co_return;
  }
  body = std::move(parser.get().body());
}

}  // namespace

JwksFetcher::JwksFetcher(std::string url, std::chrono::milliseconds refresh,
                         std::chrono::milliseconds timeout, OnKeys on_keys)
    : url_(std::move(url)), refresh_(refresh), timeout_(timeout), on_keys_(std::move(on_keys)) {}

JwksFetcher::~JwksFetcher() {
  stop();
}

base::Result<std::string> JwksFetcher::fetch(const std::string& url,
                                             std::chrono::milliseconds timeout) {
  auto u = parseUrl(url);
  if (!u) {
    return base::Error{"not an http(s) URL"};
  }
  asio::ssl::context ctx(asio::ssl::context::tls_client);
  ctx.set_default_verify_paths();
  ctx.set_verify_mode(asio::ssl::verify_peer);
  std::string body, error;  // outlive the io_context and the coroutine frame it owns
  asio::io_context ioc(1);
  bool done = false;
  asio::co_spawn(ioc, get(*u, ctx, body, error), [&](std::exception_ptr e) {
    done = true;
    if (e)
      error = "internal error";
  });
  ioc.run_for(timeout);
  if (!done) {
    return base::Error{fmt::format("timed out after {} ms", timeout.count())};
  }
  if (!error.empty()) {
    return base::Error{error};
  }
  return body;
}

void JwksFetcher::start() {
  thread_ = std::thread([this] {
    while (true) {
      auto body = fetch(url_, timeout_);
      if (!body) {
        SLUICE_LOG(Warn, "auth", "JWKS {}: {} (the last keys stay)", url_, body.error().message);
      } else if (*body != last_) {
        last_ = *body;
        on_keys_(last_);
      }
      std::unique_lock<std::mutex> lock(mu_);
      // After a failure, try again sooner (a tenth of the interval, at least a second).
      auto wait = body ? refresh_ : std::max(std::chrono::milliseconds(1000), refresh_ / 10);
      if (cv_.wait_for(lock, wait, [&] { return stop_; })) {
        return;
      }
    }
  });
}

void JwksFetcher::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) {
    thread_.join();
  }
}

}  // namespace sluice::server
