#pragma once

// External model providers (Kthena's ExternalModelProvider): OpenAI-compatible and Anthropic
// APIs reached over HTTPS. What is forwarded where (paths, headers), and a per-worker pool of
// keep-alive TLS connections. Requests pass through in the provider's own API: an OpenAI
// provider takes OpenAI paths, an Anthropic provider takes /v1/messages (as Kthena does); only
// the model name, the credential and the static headers are changed.

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>

#include "backends/upstream_pool.h"
#include "base/asio.h"
#include "base/result.h"
#include "router/snapshot.h"

namespace sluice::backends {

// Whether a provider of this type serves the request path (without the query).
bool providerServesPath(router::ProviderTarget::Type type, std::string_view path);

// The request target at the provider: the base URL's path joined with the request's. A base path
// that already names the API version ("/v1", "/openai/v1") takes the request path without its
// leading "/v1" (OpenAI bases always do, as the OpenAI SDKs' base URLs end in the version).
std::string providerRequestTarget(const router::ProviderTarget& p, std::string_view path,
                                  std::string_view query);

// Client headers passed on to a provider: an allow-list (content negotiation without
// compression, the Anthropic version and beta headers, tracing). Everything else (cookies, the
// client's credentials, internal headers) stays inside. Names compare case-insensitively.
bool forwardsToProvider(std::string_view name);

std::string_view providerTypeName(router::ProviderTarget::Type type);

// A keep-alive TLS connection to one provider.
struct ProviderConnection {
  ProviderConnection(tcp::socket socket, asio::ssl::context& ctx)
      : stream(TcpStream(std::move(socket)), ctx) {}
  asio::ssl::stream<TcpStream> stream;
  beast::flat_buffer buffer;
  std::chrono::steady_clock::time_point idle_since{};
  bool reused = false;
};
using ProviderConnectionPtr = std::unique_ptr<ProviderConnection>;

// Per-worker pool of idle TLS connections, keyed by ProviderTarget::pool_key (or, for in-cluster
// TLS endpoints, by address). One thread uses
// it, so it has no locks. The TLS contexts (verifying against the system's CAs plus an optional
// CA file, and one that does not verify, for insecureSkipVerify) live here.
class ProviderPool {
 public:
  ProviderPool(size_t max_idle_per_provider, std::chrono::milliseconds idle_timeout);

  // Applies a new configuration; the contexts are rebuilt when the CA file changes.
  void configure(size_t max_idle_per_provider, std::chrono::milliseconds idle_timeout,
                 const std::string& ca_file);

  ProviderConnectionPtr takeIdle(const std::string& key);
  // Resolves, connects and completes the TLS handshake (SNI, certificate and host name checked
  // unless the provider skips verification). On failure `ec` is set and `error` says which step
  // failed and why.
  awaitable<ProviderConnectionPtr> connect(const router::ProviderTarget& p,
                                           std::chrono::milliseconds timeout, error_code& ec,
                                           std::string& error);
  // TLS to an in-cluster endpoint (a ModelServer with workloadPort.protocol https): no DNS,
  // no SNI; with `verify`, the certificate must chain to the trusted CAs and name the IP.
  awaitable<ProviderConnectionPtr> connectEndpoint(const router::Endpoint& ep, bool verify,
                                                   std::chrono::milliseconds timeout,
                                                   error_code& ec, std::string& error);
  void release(const std::string& key, ProviderConnectionPtr conn);
  size_t idleCount() const { return idle_.size(); }
  void clear() { idle_.clear(); }

 private:
  void buildContexts();
  // After the TCP connect: no delay, SNI (`sni` non-empty), the name the certificate must carry
  // (`verify_name` non-empty), the handshake. False with `ec` and `error` set on failure.
  static awaitable<bool> handshake(ProviderConnection& conn, const std::string& sni,
                                   const std::string& verify_name, error_code& ec,
                                   std::string& error);

  size_t max_idle_;
  std::chrono::milliseconds idle_timeout_;
  std::string ca_file_;
  std::string ca_error_;  // the CA file did not load: verified connections report it
  std::unique_ptr<asio::ssl::context> verify_;
  std::unique_ptr<asio::ssl::context> insecure_;
  IdleConnections<ProviderConnection> idle_;
};

}  // namespace sluice::backends
