#pragma once

// Upstream transports behind one interface, for the one attempt loop (attempts.h): HTTP/1.1 to
// an endpoint over pooled TCP, HTTP/1.1 over TLS (a ModelServer's https port, or an
// ExternalModelProvider), and HTTP/2 streams on shared h2c connections. Each sends the request
// and reads the response head, says whether a failure means "the pooled connection had been
// closed, resend on a fresh one", drops what an abandoned attempt holds, and relays the
// answered response (its connection back to the pool when it can carry another request).
// The concrete transports live in the request's coroutine frame: no allocation to pick one.

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>

#include "backends/h2_client.h"
#include "backends/provider.h"
#include "backends/upstream_pool.h"
#include "router/snapshot.h"
#include "server/client_io.h"
#include "server/exchange.h"
#include "server/header_policy.h"

namespace sluice::server {

class Worker;

// The request as it goes upstream: the same on every attempt.
struct OutgoingRequest {
  // Endpoints: the request line and headers without Host and Content-Length (set per attempt);
  // providers: the whole head.
  std::string head;
  std::vector<std::string_view> pieces;  // the body, with its edits
  size_t body_size = 0;
  std::string_view host_override;  // URLRewrite hostname; empty = the endpoint's address
};

// Where one attempt goes.
struct Target {
  const router::Endpoint* endpoint = nullptr;  // null: the external provider
  std::string address;                         // "ip:port" or "host:port", for logs and metrics
  std::string_view provider;                   // the provider's ns/name (messages)
};

struct SendResult {
  error_code ec;
  bool reused = false;          // on a pooled connection
  bool connect_failed = false;  // `ec` came from connecting
  std::string why;              // the connect failure, when the transport can say more
};

struct RelayArgs {
  bool hide_usage = false;
  std::string write_back_from;  // the upstream model name to write back as `client_model`
  std::string_view client_model;
  router::Reservation* held = nullptr;  // released when the response ends
};

class Transport {
 public:
  virtual ~Transport() = default;
  // Connects (a pooled connection unless `fresh`), sends the request and reads the head.
  virtual awaitable<void> send(const Target& t, bool fresh, std::chrono::milliseconds connect,
                               std::chrono::milliseconds head, SendResult& r) = 0;
  virtual int status() const = 0;
  // The upstream's response head (after a successful send).
  virtual const bhttp::response_header<>& head() const = 0;
  // The exchange failed in a way that means the pooled connection was already closed.
  virtual bool stale(const error_code& ec) const = 0;
  // Abandons the attempt: its connection or stream is closed, the client watch forgets it.
  virtual void drop() = 0;
  virtual awaitable<void> relay(Exchange& x, const RouteChoice& route, RelayArgs args) = 0;
};

// HTTP/1.1 over pooled TCP connections to endpoints.
class Http1Transport final : public Transport {
 public:
  Http1Transport(Worker& w, const OutgoingRequest& req, ClientWatch& watch)
      : w_(w), req_(req), watch_(watch) {}
  awaitable<void> send(const Target& t, bool fresh, std::chrono::milliseconds connect,
                       std::chrono::milliseconds head, SendResult& r) override;
  int status() const override { return static_cast<int>(parser_->get().result_int()); }
  const bhttp::response_header<>& head() const override { return parser_->get(); }
  bool stale(const error_code& ec) const override;
  void drop() override;
  awaitable<void> relay(Exchange& x, const RouteChoice& route, RelayArgs args) override;

 private:
  Worker& w_;
  const OutgoingRequest& req_;
  ClientWatch& watch_;
  std::string address_;
  backends::UpstreamConnectionPtr conn_;
  std::optional<bhttp::response_parser<bhttp::buffer_body>> parser_;
};

// HTTP/1.1 over TLS: a ModelServer's https endpoints (verified when configured), or an
// ExternalModelProvider (always verified unless it says otherwise).
class TlsTransport final : public Transport {
 public:
  TlsTransport(Worker& w, const OutgoingRequest& req, ClientWatch& watch, bool verify)
      : w_(w), req_(req), watch_(watch), verify_(verify) {}
  TlsTransport(Worker& w, const OutgoingRequest& req, ClientWatch& watch,
               const router::ProviderTarget& provider)
      : w_(w), req_(req), watch_(watch), provider_(&provider) {}
  awaitable<void> send(const Target& t, bool fresh, std::chrono::milliseconds connect,
                       std::chrono::milliseconds head, SendResult& r) override;
  int status() const override { return static_cast<int>(parser_->get().result_int()); }
  const bhttp::response_header<>& head() const override { return parser_->get(); }
  bool stale(const error_code& ec) const override;
  void drop() override;
  awaitable<void> relay(Exchange& x, const RouteChoice& route, RelayArgs args) override;

 private:
  Worker& w_;
  const OutgoingRequest& req_;
  ClientWatch& watch_;
  bool verify_ = true;
  const router::ProviderTarget* provider_ = nullptr;
  std::string key_;  // the pool key of the connection in use
  backends::ProviderConnectionPtr conn_;
  std::optional<bhttp::response_parser<bhttp::buffer_body>> parser_;
};

// HTTP/2 streams on shared h2c connections (pools with appProtocol kubernetes.io/h2c).
class H2Transport final : public Transport {
 public:
  H2Transport(Worker& w, const OutgoingRequest& req, ClientWatch& watch);
  awaitable<void> send(const Target& t, bool fresh, std::chrono::milliseconds connect,
                       std::chrono::milliseconds head, SendResult& r) override;
  int status() const override { return static_cast<int>(stream_->head().result_int()); }
  const bhttp::response_header<>& head() const override { return stream_->head(); }
  bool stale(const error_code& ec) const override;
  void drop() override;
  awaitable<void> relay(Exchange& x, const RouteChoice& route, RelayArgs args) override;

 private:
  Worker& w_;
  const OutgoingRequest& req_;
  ClientWatch& watch_;
  H2Request h2_;
  std::shared_ptr<backends::H2Stream> stream_;
};

}  // namespace sluice::server
