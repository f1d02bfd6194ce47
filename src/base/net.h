#pragma once

#include "base/asio.h"

namespace sluice::base {

// Opens, binds and listens an acceptor (the admin and metrics listeners), with SO_REUSEADDR.
error_code listenOn(tcp::acceptor& acceptor, const tcp::endpoint& endpoint);

// Opens a listening socket on `endpoint` and returns its descriptor (close-on-exec,
// non-blocking) in `fd`. SO_REUSEADDR but never SO_REUSEPORT: no other process can bind the
// same address and port, and the router's workers share this one socket through duplicates.
error_code openListener(const tcp::endpoint& endpoint, int& fd);

// A descriptor closed when it goes out of scope, unless released.
class OwnedFd {
 public:
  explicit OwnedFd(int fd = -1) : fd_(fd) {}
  OwnedFd(OwnedFd&& o) noexcept : fd_(o.release()) {}
  OwnedFd& operator=(OwnedFd&& o) noexcept;
  OwnedFd(const OwnedFd&) = delete;
  OwnedFd& operator=(const OwnedFd&) = delete;
  ~OwnedFd();
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

}  // namespace sluice::base
