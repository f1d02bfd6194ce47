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

bool stillOpen(tcp::socket& socket) {
  char byte;
  ssize_t n = ::recv(socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

UpstreamConnectionPtr UpstreamPool::takeIdle(const std::string& address) {
  // A connection idle for a moment is almost surely alive; only older ones are probed.
  return idle_.take(address, idle_timeout_, std::chrono::seconds(1));
}

awaitable<UpstreamConnectionPtr> UpstreamPool::connect(const router::Endpoint& ep,
                                                       std::chrono::milliseconds timeout,
                                                       error_code& ec) {
  auto executor = co_await asio::this_coro::executor;
  auto conn = std::make_unique<UpstreamConnection>(tcp::socket(executor));
  conn->stream.expires_after(timeout);
  co_await conn->stream.async_connect(toAsio(ep), asio::redirect_error(use_awaitable, ec));
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
  idle_.put(address, std::move(conn), max_idle_, idle_timeout_);
}

}  // namespace sluice::backends
