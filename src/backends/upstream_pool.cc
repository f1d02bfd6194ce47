#include "backends/upstream_pool.h"

#include <sys/socket.h>

#include <boost/asio/ip/address_v4.hpp>
#include <boost/asio/ip/address_v6.hpp>

namespace sluice::backends {

tcp::endpoint toAsio(const router::Endpoint& ep) {
  if (ep.v6) {
    asio::ip::address_v6::bytes_type b;
    std::copy(ep.ip.begin(), ep.ip.end(), b.begin());
    return {asio::ip::address_v6(b), ep.port};
  }
  asio::ip::address_v4::bytes_type b;
  std::copy(ep.ip.begin(), ep.ip.begin() + 4, b.begin());
  return {asio::ip::address_v4(b), ep.port};
}

namespace {

// True if the peer has not closed the socket and sent nothing unexpected (a cheap MSG_PEEK).
bool stillOpen(tcp::socket& socket) {
  char byte;
  ssize_t n = ::recv(socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

}  // namespace

UpstreamConnectionPtr UpstreamPool::takeIdle(const std::string& address) {
  auto it = idle_.find(address);
  if (it == idle_.end()) {
    return nullptr;
  }
  auto& list = it->second;
  const auto now = std::chrono::steady_clock::now();
  while (!list.empty()) {
    UpstreamConnectionPtr conn = std::move(list.back());
    list.pop_back();
    const auto idle = now - conn->idle_since;
    // A connection idle for a moment is almost surely alive, and the proxy retries a stale one
    // on a fresh connection anyway; only older ones pay for the MSG_PEEK probe.
    if (idle < idle_timeout_ &&
        (idle < std::chrono::seconds(1) || stillOpen(conn->stream.socket()))) {
      conn->reused = true;
      return conn;
    }
  }
  return nullptr;
}

awaitable<UpstreamConnectionPtr> UpstreamPool::connect(const router::Endpoint& ep,
                                                       std::chrono::milliseconds timeout,
                                                       error_code& ec) {
  auto executor = co_await asio::this_coro::executor;
  auto conn = std::make_unique<UpstreamConnection>(tcp::socket(executor));
  conn->stream.expires_after(timeout);
  co_await conn->stream.async_connect(toAsio(ep), asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    if (ec == beast::error::timeout) {
      ec = asio::error::timed_out;
    }
    co_return nullptr;
  }
  error_code ignored;
  conn->stream.socket().set_option(tcp::no_delay(true), ignored);
  co_return conn;
}

void UpstreamPool::release(const std::string& address, UpstreamConnectionPtr conn) {
  if (!conn || max_idle_ == 0 || conn->buffer.size() != 0) {
    return;
  }
  auto& list = idle_[address];
  if (list.size() >= max_idle_) {
    list.erase(list.begin());  // drop the oldest
  }
  conn->stream.expires_never();
  conn->idle_since = std::chrono::steady_clock::now();
  list.push_back(std::move(conn));
}

size_t UpstreamPool::idleCount() const {
  size_t n = 0;
  for (const auto& [_, list] : idle_) {
    n += list.size();
  }
  return n;
}

}  // namespace sluice::backends
