#pragma once

#include "base/asio.h"

namespace sluice::base {

// Opens, binds and listens: SO_REUSEADDR always, SO_REUSEPORT when several acceptors (one per
// worker) share the address.
error_code listenOn(tcp::acceptor& acceptor, const tcp::endpoint& endpoint, bool reuse_port);

}  // namespace sluice::base
