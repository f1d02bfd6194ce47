#include "base/net.h"

#include <cerrno>
#include <sys/socket.h>

namespace sluice::base {

error_code listenOn(tcp::acceptor& acceptor, const tcp::endpoint& endpoint, bool reuse_port) {
  error_code ec;
  acceptor.open(endpoint.protocol(), ec);
  if (ec) {
    return ec;
  }
  acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (reuse_port) {
    int one = 1;
    if (::setsockopt(acceptor.native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
      return error_code(errno, boost::system::system_category());
    }
  }
  acceptor.bind(endpoint, ec);
  if (ec) {
    return ec;
  }
  acceptor.listen(asio::socket_base::max_listen_connections, ec);
  return ec;
}

}  // namespace sluice::base
