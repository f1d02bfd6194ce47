#include "tracing/otlp_http.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <utility>

#include <fmt/core.h>

namespace sluice::tracing {

namespace {

using Clock = std::chrono::steady_clock;

// A socket closed when it goes out of scope.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&&) = delete;
  ~Fd() {
    if (fd_ >= 0) {
      ::close(fd_);
    }
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

int msLeft(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return static_cast<int>(std::max<int64_t>(0, left.count()));
}

bool waitFor(int fd, short events, Clock::time_point deadline) {
  pollfd p{fd, events, 0};
  int r;
  do {
    r = ::poll(&p, 1, msLeft(deadline));
  } while (r < 0 && errno == EINTR);
  return r > 0;
}

// A connected non-blocking socket to host:port, or an error.
base::Result<Fd> connectTo(const OtlpUrl& url, Clock::time_point deadline) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (int rc = ::getaddrinfo(url.host.c_str(), url.port.c_str(), &hints, &found); rc != 0) {
    return base::Error{fmt::format("resolving {}: {}", url.host, ::gai_strerror(rc))};
  }
  std::string why = "no address";
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    Fd fd(::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (fd.get() < 0) {
      why = std::strerror(errno);
      continue;
    }
    if (::connect(fd.get(), a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
      why = std::strerror(errno);
      continue;
    }
    if (!waitFor(fd.get(), POLLOUT, deadline)) {
      why = "connect timed out";
      continue;
    }
    int err = 0;
    socklen_t len = sizeof(err);
    ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      why = std::strerror(err);
      continue;
    }
    ::freeaddrinfo(found);
    return fd;
  }
  ::freeaddrinfo(found);
  return base::Error{fmt::format("connecting to {}:{}: {}", url.host, url.port, why)};
}

bool sendAll(int fd, std::string_view bytes, Clock::time_point deadline) {
  while (!bytes.empty()) {
    ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n > 0) {
      bytes.remove_prefix(static_cast<size_t>(n));
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (!waitFor(fd, POLLOUT, deadline)) {
        return false;
      }
    } else {
      return false;
    }
  }
  return true;
}

}  // namespace

base::Result<OtlpUrl> parseOtlpUrl(const std::string& url) {
  constexpr std::string_view kScheme = "http://";
  if (url.rfind(kScheme, 0) != 0) {
    return base::Error{"only http:// collectors are supported"};
  }
  const auto slash = url.find('/', kScheme.size());
  std::string authority = url.substr(kScheme.size(), slash - kScheme.size());
  OtlpUrl out;
  out.path = slash == std::string::npos ? "/v1/traces" : url.substr(slash);
  if (!authority.empty() && authority.front() == '[') {  // [v6]:port
    const auto close = authority.find(']');
    if (close == std::string::npos || close + 1 >= authority.size() ||
        authority[close + 1] != ':') {
      return base::Error{"the collector address needs a port"};
    }
    out.host = authority.substr(1, close - 1);
    out.port = authority.substr(close + 2);
    return out;
  }
  const auto colon = authority.rfind(':');
  if (colon == std::string::npos) {
    return base::Error{"the collector address needs a port"};
  }
  out.host = authority.substr(0, colon);
  out.port = authority.substr(colon + 1);
  return out;
}

base::Result<int> postProtobuf(const OtlpUrl& url, const std::string& body,
                               std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  auto fd = connectTo(url, deadline);
  if (!fd) {
    return base::Error{fd.error().message};
  }
  const bool v6_literal = url.host.find(':') != std::string::npos;
  std::string head = fmt::format(
      "POST {} HTTP/1.1\r\nHost: {}{}{}:{}\r\nContent-Type: application/x-protobuf\r\n"
      "Content-Length: {}\r\nConnection: close\r\nUser-Agent: sluice\r\n\r\n",
      url.path, v6_literal ? "[" : "", url.host, v6_literal ? "]" : "", url.port, body.size());
  if (!sendAll(fd->get(), head, deadline) || !sendAll(fd->get(), body, deadline)) {
    return base::Error{"sending the export failed or timed out"};
  }
  // Only the status line matters; the rest is read until the collector closes.
  std::string answer;
  char buf[4096];
  while (answer.find("\r\n") == std::string::npos && answer.size() < 16384) {
    ssize_t n = ::recv(fd->get(), buf, sizeof(buf), 0);
    if (n > 0) {
      answer.append(buf, static_cast<size_t>(n));
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (!waitFor(fd->get(), POLLIN, deadline)) {
        return base::Error{"the collector did not answer in time"};
      }
    } else {
      break;
    }
  }
  int status = 0;
  if (answer.rfind("HTTP/1.", 0) != 0 || answer.size() < 12 ||
      std::sscanf(answer.c_str() + 9, "%3d", &status) != 1) {
    return base::Error{"the collector's answer is not HTTP"};
  }
  return status;
}

}  // namespace sluice::tracing
