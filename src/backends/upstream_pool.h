#pragma once

#include <chrono>
#include <iterator>
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
  TcpStream stream;
  beast::flat_buffer buffer;  // bytes read past the last response (must be empty to reuse)
  std::chrono::steady_clock::time_point idle_since{};
  bool reused = false;
};
using UpstreamConnectionPtr = std::unique_ptr<UpstreamConnection>;

tcp::endpoint toAsio(const router::Endpoint& ep);

// True if the peer has not closed the socket and sent nothing unexpected (a cheap MSG_PEEK).
bool stillOpen(tcp::socket& socket);

// Idle keep-alive connections by key, for one thread. `Conn` has `stream` (a tcp_stream, or a
// stream over one), `buffer`, `idle_since` and `reused`. Bounded per key (the oldest goes);
// connections older than the idle timeout, or closed by the peer, are discarded on take.
template <class Conn>
class IdleConnections {
 public:
  // A live idle connection, or null. Only connections idle for at least `probe_after` pay for
  // the liveness probe (the proxy retries a stale one on a fresh connection anyway).
  std::unique_ptr<Conn> take(const std::string& key, std::chrono::milliseconds idle_timeout,
                             std::chrono::milliseconds probe_after) {
    auto it = idle_.find(key);
    if (it == idle_.end()) {
      return nullptr;
    }
    auto& list = it->second;
    const auto now = std::chrono::steady_clock::now();
    while (!list.empty()) {
      std::unique_ptr<Conn> conn = std::move(list.back());
      list.pop_back();
      const auto idle = now - conn->idle_since;
      if (idle < idle_timeout &&
          (idle < probe_after || stillOpen(beast::get_lowest_layer(conn->stream).socket()))) {
        conn->reused = true;
        return conn;
      }
    }
    return nullptr;
  }
  // Keeps a connection whose last exchange ended cleanly (nothing left unread). Now and then
  // every key's list is swept of connections idle too long, so endpoints that left the
  // configuration do not keep sockets open.
  void put(const std::string& key, std::unique_ptr<Conn> conn, size_t max_idle,
           std::chrono::milliseconds idle_timeout) {
    if (!conn || max_idle == 0 || conn->buffer.size() != 0) {
      return;
    }
    const auto now = std::chrono::steady_clock::now();
    if (now - last_sweep_ > std::chrono::seconds(1)) {
      last_sweep_ = now;
      for (auto it = idle_.begin(); it != idle_.end();) {
        std::erase_if(it->second, [&](const std::unique_ptr<Conn>& c) {
          return now - c->idle_since >= idle_timeout;
        });
        it = it->second.empty() ? idle_.erase(it) : std::next(it);
      }
    }
    auto& list = idle_[key];
    if (list.size() >= max_idle) {
      list.erase(list.begin());
    }
    beast::get_lowest_layer(conn->stream).expires_never();
    conn->idle_since = now;
    list.push_back(std::move(conn));
  }
  size_t size() const {
    size_t n = 0;
    for (const auto& [_, list] : idle_) {
      n += list.size();
    }
    return n;
  }
  void clear() { idle_.clear(); }

 private:
  std::chrono::steady_clock::time_point last_sweep_{};
  std::unordered_map<std::string, std::vector<std::unique_ptr<Conn>>> idle_;
};

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

  size_t idleCount() const { return idle_.size(); }
  void clear() { idle_.clear(); }

 private:
  size_t max_idle_;
  std::chrono::milliseconds idle_timeout_;
  IdleConnections<UpstreamConnection> idle_;
};

}  // namespace sluice::backends
