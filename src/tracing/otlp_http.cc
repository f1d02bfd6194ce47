#include "tracing/otlp_http.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
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
  int release() { return std::exchange(fd_, -1); }

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

OtlpClient::OtlpClient(OtlpUrl url) : url_(std::move(url)) {
  const bool v6_literal = url_.host.find(':') != std::string::npos;
  head_ = fmt::format(
      "POST {} HTTP/1.1\r\nHost: {}{}{}:{}\r\nContent-Type: application/x-protobuf\r\n"
      "User-Agent: sluice\r\nContent-Length: ",
      url_.path, v6_literal ? "[" : "", url_.host, v6_literal ? "]" : "", url_.port);
}

OtlpClient::~OtlpClient() {
  closeConnection();
}

void OtlpClient::closeConnection() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

base::Result<int> OtlpClient::post(std::initializer_list<std::string_view> parts,
                                   std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  size_t length = 0;
  for (auto p : parts) {
    length += p.size();
  }
  // A kept connection the collector has since closed fails at once: one more try on a new one.
  for (int attempt = 0; attempt < 2; ++attempt) {
    const bool reused = fd_ >= 0;
    if (!reused) {
      auto fd = connectTo(url_, deadline);
      if (!fd) {
        return base::Error{fd.error().message};
      }
      fd_ = fd->release();
      ++opened_;
    }
    auto answer = exchange(parts, length, deadline);
    if (answer) {
      if (!answer->keep) {
        closeConnection();
      }
      return answer->status;
    }
    closeConnection();
    if (!reused) {
      return base::Error{answer.error().message};
    }
  }
  return base::Error{"the collector closed the connection"};
}

namespace {

// The value of header `name` (lower case) in a response head, or "".
std::string_view headerValue(std::string_view head, std::string_view name) {
  size_t at = head.find("\r\n");
  while (at != std::string_view::npos && at + 2 < head.size()) {
    const size_t line = at + 2;
    const size_t eol = head.find("\r\n", line);
    const std::string_view l = head.substr(line, eol - line);
    const size_t colon = l.find(':');
    if (colon == name.size() && std::equal(name.begin(), name.end(), l.begin(), [](char a, char b) {
          return a == static_cast<char>(std::tolower(static_cast<unsigned char>(b)));
        })) {
      std::string_view v = l.substr(colon + 1);
      while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) {
        v.remove_prefix(1);
      }
      while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) {
        v.remove_suffix(1);
      }
      return v;
    }
    at = eol;
  }
  return {};
}

bool containsToken(std::string_view v, std::string_view token) {
  std::string lower(v);
  for (char& c : lower) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return lower.find(token) != std::string::npos;
}

// Reads more bytes into `buf`; false on EOF, error or the deadline.
bool readMore(int fd, std::string& buf, Clock::time_point deadline) {
  char chunk[4096];
  while (true) {
    ssize_t n = ::recv(fd, chunk, sizeof(chunk), 0);
    if (n > 0) {
      buf.append(chunk, static_cast<size_t>(n));
      return true;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (!waitFor(fd, POLLIN, deadline)) {
        return false;
      }
      continue;
    }
    return false;
  }
}

// Skips a chunked body that starts at `at` in `buf`, reading as needed; false when it ends
// early or is malformed.
bool skipChunked(int fd, std::string& buf, size_t at, Clock::time_point deadline) {
  while (true) {
    size_t eol;
    while ((eol = buf.find("\r\n", at)) == std::string::npos) {
      if (buf.size() - at > 1024 || !readMore(fd, buf, deadline)) {
        return false;
      }
    }
    size_t size = 0;
    const char* p = buf.data() + at;
    const char* e = buf.data() + eol;
    auto [ptr, ec] = std::from_chars(p, e, size, 16);
    if (ec != std::errc() || ptr == p || size > (64u << 20)) {
      return false;
    }
    at = eol + 2;
    if (size == 0) {  // trailers, up to the empty line
      while (buf.find("\r\n", at) != at) {
        const size_t next = buf.find("\r\n", at);
        if (next != std::string::npos) {
          at = next + 2;
        } else if (!readMore(fd, buf, deadline)) {
          return false;
        }
      }
      return true;
    }
    while (buf.size() < at + size + 2) {
      if (!readMore(fd, buf, deadline)) {
        return false;
      }
    }
    at += size + 2;
  }
}

}  // namespace

base::Result<OtlpClient::Answer> OtlpClient::exchange(std::initializer_list<std::string_view> parts,
                                                      size_t length, Clock::time_point deadline) {
  const std::string head = head_ + std::to_string(length) + "\r\n\r\n";
  if (!sendAll(fd_, head, deadline)) {
    return base::Error{"sending the export failed or timed out"};
  }
  for (auto p : parts) {
    if (!sendAll(fd_, p, deadline)) {
      return base::Error{"sending the export failed or timed out"};
    }
  }
  std::string buf;
  size_t end;
  while ((end = buf.find("\r\n\r\n")) == std::string::npos) {
    if (buf.size() > 16384 || !readMore(fd_, buf, deadline)) {
      return base::Error{buf.empty() ? "the collector did not answer in time"
                                     : "the collector's answer is not HTTP"};
    }
  }
  Answer a;
  if (buf.rfind("HTTP/1.", 0) != 0 || end < 12 ||
      std::sscanf(buf.c_str() + 9, "%3d", &a.status) != 1) {
    return base::Error{"the collector's answer is not HTTP"};
  }
  const std::string_view headers(buf.data(), end + 2);
  const size_t body = end + 4;
  a.keep = buf.compare(0, 8, "HTTP/1.1") == 0 &&
           !containsToken(headerValue(headers, "connection"), "close");
  if (containsToken(headerValue(headers, "transfer-encoding"), "chunked")) {
    a.keep = skipChunked(fd_, buf, body, deadline) && a.keep;
    return a;
  }
  const std::string_view cl = headerValue(headers, "content-length");
  size_t n = 0;
  if (cl.empty() || std::from_chars(cl.data(), cl.data() + cl.size(), n).ec != std::errc()) {
    a.keep = false;  // the body runs to the end of the connection: not kept
    return a;
  }
  while (buf.size() < body + n) {
    if (!readMore(fd_, buf, deadline)) {
      a.keep = false;
      return a;
    }
  }
  a.keep = a.keep && buf.size() == body + n;
  return a;
}

}  // namespace sluice::tracing
