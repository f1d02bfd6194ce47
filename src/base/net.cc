#include "base/net.h"

#include <cerrno>
#include <sys/socket.h>
#include <unistd.h>

namespace sluice::base {

error_code listenOn(tcp::acceptor& acceptor, const tcp::endpoint& endpoint) {
  error_code ec;
  acceptor.open(endpoint.protocol(), ec);
  if (ec) {
    return ec;
  }
  acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  acceptor.bind(endpoint, ec);
  if (ec) {
    return ec;
  }
  acceptor.listen(asio::socket_base::max_listen_connections, ec);
  return ec;
}

error_code openListener(const tcp::endpoint& endpoint, int& fd) {
  fd = -1;
  auto fail = [&](int s) {
    error_code ec(errno, boost::system::system_category());
    if (s >= 0) {
      ::close(s);
    }
    return ec;
  };
  const int s = ::socket(endpoint.protocol().family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK,
                         IPPROTO_TCP);
  if (s < 0) {
    return fail(s);
  }
  int one = 1;
  if (::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
      ::bind(s, endpoint.data(), static_cast<socklen_t>(endpoint.size())) != 0 ||
      ::listen(s, SOMAXCONN) != 0) {
    return fail(s);
  }
  fd = s;
  return {};
}

OwnedFd& OwnedFd::operator=(OwnedFd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) {
      ::close(fd_);
    }
    fd_ = o.release();
  }
  return *this;
}

OwnedFd::~OwnedFd() {
  if (fd_ >= 0) {
    ::close(fd_);
  }
}

}  // namespace sluice::base
