#pragma once

#include "base/asio.h"

namespace sluice::base {

// Opens, binds and listens an acceptor (the admin and metrics listeners), with SO_REUSEADDR.
error_code listenOn(tcp::acceptor& acceptor, const tcp::endpoint& endpoint);

// Opens a listening socket on `endpoint` and returns its descriptor (close-on-exec,
// non-blocking) in `fd`. SO_REUSEADDR but never SO_REUSEPORT: no other process can bind the
// same address and port, and the router's workers share this one socket through duplicates.
error_code openListener(const tcp::endpoint& endpoint, int& fd);

}  // namespace sluice::base
