#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/asio.h"
#include "router/snapshot.h"

namespace sluice::backends {

// A keep-alive connection to one endpoint.
struct UpstreamConnection {
  explicit UpstreamConnection(tcp::socket socket) : stream(std::move(socket)) {}
  beast::tcp_stream stream;
  beast::flat_buffer buffer;  // bytes read past the last response (must be empty to reuse)
  std::chrono::steady_clock::time_point idle_since{};
  bool reused = false;
};
using UpstreamConnectionPtr = std::unique_ptr<UpstreamConnection>;

tcp::endpoint toAsio(const router::Endpoint& ep);

// Per-worker pool of idle keep-alive connections, keyed by endpoint address. Used by one
// thread only, so it needs no locks. Bounded per endpoint; idle connections older than the
// idle timeout, or already closed by the peer, are discarded on acquire.
class UpstreamPool {
 public:
  UpstreamPool(size_t max_idle_per_endpoint, std::chrono::milliseconds idle_timeout)
      : max_idle_(max_idle_per_endpoint), idle_timeout_(idle_timeout) {}

  void configure(size_t max_idle_per_endpoint, std::chrono::milliseconds idle_timeout) {
    max_idle_ = max_idle_per_endpoint;
    idle_timeout_ = idle_timeout;
  }

  // A live idle connection, or null.
  UpstreamConnectionPtr takeIdle(const std::string& address);
  // Opens a new connection; `ec` is set on failure (timed_out on timeout).
  static awaitable<UpstreamConnectionPtr> connect(const router::Endpoint& ep,
                                                  std::chrono::milliseconds timeout,
                                                  error_code& ec);
  // Returns a connection whose last exchange completed cleanly and allows keep-alive.
  void release(const std::string& address, UpstreamConnectionPtr conn);

  size_t idleCount() const;
  void clear() { idle_.clear(); }

 private:
  size_t max_idle_;
  std::chrono::milliseconds idle_timeout_;
  std::unordered_map<std::string, std::vector<UpstreamConnectionPtr>> idle_;
};

}  // namespace sluice::backends
