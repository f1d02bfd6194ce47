#pragma once

// A stand-in for a public model API (OpenAI or Anthropic) on 127.0.0.1 over TLS, for testing
// the router's external providers: it records each request (head and body) and answers with
// what the test's handler returns, as one body or as server-sent events, on keep-alive
// connections. Blocking sockets, a thread per connection.

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fakes/tls_certs.h"

namespace sluice::testing {

struct ProviderRequest {
  std::string method;
  std::string target;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

struct ProviderResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;                 // sent with Content-Length, unless `events` is set
  std::vector<std::string> events;  // sent chunked, one chunk each (text/event-stream)
  bool close = false;               // Connection: close after this response
  std::string raw;                  // when set: these bytes instead of a response, then close
};

class FakeProvider {
 public:
  using Handler = std::function<ProviderResponse(const ProviderRequest&)>;
  // Serves a certificate for `host` (self-signed; its PEM is `certificate().cert_pem`).
  FakeProvider(const std::string& host, Handler handler);
  ~FakeProvider();
  FakeProvider(const FakeProvider&) = delete;
  FakeProvider& operator=(const FakeProvider&) = delete;

  uint16_t port() const { return port_; }
  const Certificate& certificate() const { return cert_; }
  std::vector<ProviderRequest> requests();
  size_t connections() const { return connections_.load(); }

 private:
  void acceptLoop();
  void serve(int fd);

  Certificate cert_;
  Handler handler_;
  void* ctx_ = nullptr;  // SSL_CTX
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<size_t> connections_{0};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<std::thread> threads_;
  std::vector<int> fds_;
  std::vector<ProviderRequest> requests_;
};

}  // namespace sluice::testing
