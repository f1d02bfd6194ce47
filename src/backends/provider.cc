#include "backends/provider.h"

#include <algorithm>
#include <array>

#include <boost/asio/connect.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <fmt/core.h>

#include "backends/upstream_pool.h"
#include "base/strings.h"

namespace sluice::backends {

using Type = router::ProviderTarget::Type;

bool providerServesPath(Type type, std::string_view path) {
  if (type == Type::Anthropic) {
    return path == "/v1/messages" || path == "/v1/messages/count_tokens";
  }
  return path == "/v1/chat/completions" || path == "/v1/completions" || path == "/v1/responses" ||
         path == "/v1/embeddings";
}

std::string providerRequestTarget(const router::ProviderTarget& p, std::string_view path,
                                  std::string_view query) {
  std::string_view base = p.base_path;
  const bool base_has_version = base.size() >= 3 && base.substr(base.size() - 3) == "/v1";
  if (!base.empty() && (p.type == Type::OpenAI || base_has_version) &&
      path.substr(0, 4) == "/v1/") {
    path.remove_prefix(3);
  }
  std::string target;
  target.reserve(base.size() + path.size() + query.size() + 1);
  target += base;
  target += path;
  if (target.empty()) {
    target = "/";
  }
  if (!query.empty()) {
    target += '?';
    target += query;
  }
  return target;
}

bool forwardsToProvider(std::string_view name) {
  static constexpr std::array<std::string_view, 13> kAllowed = {
      "content-type", "accept",       "anthropic-version", "anthropic-beta",
      "traceparent",  "tracestate",   "baggage",           "x-b3-traceid",
      "x-b3-spanid",  "x-b3-sampled", "x-b3-flags",        "x-b3-parentspanid",
      "openai-beta",
  };
  return std::any_of(kAllowed.begin(), kAllowed.end(),
                     [&](std::string_view a) { return base::iequals(name, a); });
}

std::string_view providerTypeName(Type type) {
  return type == Type::Anthropic ? "Anthropic" : "OpenAI";
}

// --- the pool ---------------------------------------------------------------------------------

ProviderPool::ProviderPool(size_t max_idle_per_provider, std::chrono::milliseconds idle_timeout)
    : max_idle_(max_idle_per_provider), idle_timeout_(idle_timeout) {
  buildContexts();
}

void ProviderPool::configure(size_t max_idle_per_provider, std::chrono::milliseconds idle_timeout,
                             const std::string& ca_file) {
  max_idle_ = max_idle_per_provider;
  idle_timeout_ = idle_timeout;
  if (ca_file != ca_file_) {
    ca_file_ = ca_file;
    idle_.clear();  // connections verified against the old trust store go
    buildContexts();
  }
}

void ProviderPool::buildContexts() {
  verify_ = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
  verify_->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                       asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                       asio::ssl::context::no_tlsv1_1);
  error_code ec;
  verify_->set_default_verify_paths(ec);
  ca_error_.clear();
  if (!ca_file_.empty()) {
    verify_->load_verify_file(ca_file_, ec);
    if (ec) {
      ca_error_ = fmt::format("the CA file {} did not load: {}", ca_file_, ec.message());
    }
  }
  verify_->set_verify_mode(asio::ssl::verify_peer);
  insecure_ = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
  insecure_->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                         asio::ssl::context::no_sslv3);
  insecure_->set_verify_mode(asio::ssl::verify_none);
}

ProviderConnectionPtr ProviderPool::takeIdle(const std::string& key) {
  // Anything readable on an idle TLS connection is a close_notify or a reset: always probe.
  return idle_.take(key, idle_timeout_, std::chrono::milliseconds(0));
}

awaitable<bool> ProviderPool::handshake(ProviderConnection& conn, const std::string& sni,
                                        const std::string& verify_name, error_code& ec,
                                        std::string& error) {
  error_code ignored;
  beast::get_lowest_layer(conn.stream).socket().set_option(tcp::no_delay(true), ignored);
  if (!sni.empty()) {
    SSL_set_tlsext_host_name(conn.stream.native_handle(), sni.c_str());
  }
  if (!verify_name.empty()) {
    conn.stream.set_verify_callback(asio::ssl::host_name_verification(verify_name));
  }
  co_await conn.stream.async_handshake(asio::ssl::stream_base::client,
                                       asio::redirect_error(use_awaitable, ec));
  if (!ec) {
    co_return true;
  }
  if (ec == beast::error::timeout) {
    ec = asio::error::timed_out;
  }
  std::string reason = ec.message();
  if (const long v = SSL_get_verify_result(conn.stream.native_handle()); v != X509_V_OK) {
    reason = X509_verify_cert_error_string(v);
  }
  error = fmt::format("TLS handshake failed: {}", reason);
  co_return false;
}

awaitable<ProviderConnectionPtr> ProviderPool::connect(const router::ProviderTarget& p,
                                                       std::chrono::milliseconds timeout,
                                                       error_code& ec, std::string& error) {
  auto executor = co_await asio::this_coro::executor;
  if (!p.insecure_skip_verify && !ca_error_.empty()) {
    ec = asio::error::invalid_argument;
    error = ca_error_;
    co_return nullptr;
  }
  tcp::resolver resolver(executor);
  const std::string port = std::to_string(p.port);
  // The resolver runs getaddrinfo on Asio's own thread, not on this worker.
  auto results =
      co_await resolver.async_resolve(p.host, port, asio::redirect_error(use_awaitable, ec));
  if (ec) {
    error = fmt::format("resolving {} failed: {}", p.host, ec.message());
    co_return nullptr;
  }
  auto& ctx = p.insecure_skip_verify ? *insecure_ : *verify_;
  auto conn = std::make_unique<ProviderConnection>(tcp::socket(executor), ctx);
  auto& tcp_layer = beast::get_lowest_layer(conn->stream);
  tcp_layer.expires_after(timeout);
  co_await tcp_layer.async_connect(results, asio::redirect_error(use_awaitable, ec));
  if (ec) {
    if (ec == beast::error::timeout) {
      ec = asio::error::timed_out;
    }
    error = fmt::format("connecting to {}:{} failed: {}", p.host, p.port, ec.message());
    co_return nullptr;
  }
  // SNI carries DNS names only, never IP literals.
  error_code not_ip;
  asio::ip::make_address(p.host, not_ip);
  const std::string sni = not_ip ? p.host : std::string();
  const std::string verify_name = p.insecure_skip_verify ? std::string() : p.host;
  const bool ok = co_await handshake(*conn, sni, verify_name, ec, error);
  if (!ok) {
    error = fmt::format("{}:{}: {}", p.host, p.port, error);
    co_return nullptr;
  }
  co_return conn;
}

awaitable<ProviderConnectionPtr> ProviderPool::connectEndpoint(const router::Endpoint& ep,
                                                               bool verify,
                                                               std::chrono::milliseconds timeout,
                                                               error_code& ec, std::string& error) {
  auto executor = co_await asio::this_coro::executor;
  if (verify && !ca_error_.empty()) {
    ec = asio::error::invalid_argument;
    error = ca_error_;
    co_return nullptr;
  }
  auto conn =
      std::make_unique<ProviderConnection>(tcp::socket(executor), verify ? *verify_ : *insecure_);
  auto& tcp_layer = beast::get_lowest_layer(conn->stream);
  tcp_layer.expires_after(timeout);
  const tcp::endpoint address = toAsio(ep);
  co_await tcp_layer.async_connect(address, asio::redirect_error(use_awaitable, ec));
  if (ec) {
    if (ec == beast::error::timeout) {
      ec = asio::error::timed_out;
    }
    error = ec.message();
    co_return nullptr;
  }
  const std::string verify_name = verify ? address.address().to_string() : std::string();
  const bool ok = co_await handshake(*conn, std::string(), verify_name, ec, error);
  if (!ok) {
    co_return nullptr;
  }
  co_return conn;
}

void ProviderPool::release(const std::string& key, ProviderConnectionPtr conn) {
  idle_.put(key, std::move(conn), max_idle_, idle_timeout_);
}

}  // namespace sluice::backends
