#include "fakes/test_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <random>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

namespace sluice::testing {

TestConnection::TestConnection(uint16_t port, const char* host) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  inet_pton(AF_INET, host, &addr.sin_addr);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd_);
    fd_ = -1;
    return;
  }
  int one = 1;
  setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

TestConnection::~TestConnection() {
  close();
}

void TestConnection::close() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

bool TestConnection::send(const std::string& bytes) {
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n <= 0) {
      return false;
    }
    off += static_cast<size_t>(n);
  }
  return true;
}

bool TestConnection::fill(std::chrono::steady_clock::time_point deadline) {
  if (fd_ < 0 || eof_) {
    return false;
  }
  auto now = std::chrono::steady_clock::now();
  if (now >= deadline) {
    return false;
  }
  pollfd p{fd_, POLLIN, 0};
  int ms = static_cast<int>(
               std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count()) +
           1;
  if (::poll(&p, 1, ms) <= 0) {
    return false;
  }
  char tmp[65536];
  ssize_t n = ::recv(fd_, tmp, sizeof(tmp), 0);
  if (n <= 0) {
    eof_ = true;
    return false;
  }
  buf_.append(tmp, static_cast<size_t>(n));
  return true;
}

std::optional<HttpResponse> TestConnection::readHead(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  size_t end;
  while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
    if (!fill(deadline)) {
      return std::nullopt;
    }
  }
  HttpResponse r;
  std::string head = buf_.substr(0, end + 2);
  buf_.erase(0, end + 4);
  size_t line_end = head.find("\r\n");
  std::string status_line = head.substr(0, line_end);
  if (status_line.size() < 12) {
    return std::nullopt;
  }
  r.status = std::stoi(status_line.substr(9, 3));
  r.reason = status_line.size() > 13 ? status_line.substr(13) : "";
  size_t pos = line_end + 2;
  while (pos < head.size()) {
    size_t e = head.find("\r\n", pos);
    std::string line = head.substr(pos, e - pos);
    pos = e + 2;
    size_t colon = line.find(':');
    if (colon == std::string::npos) {
      continue;
    }
    std::string name = line.substr(0, colon);
    for (char& c : name) {
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    std::string value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') {
      value.erase(0, 1);
    }
    r.headers[name] = value;
  }
  r.chunked = r.header("transfer-encoding") == "chunked";
  return r;
}

std::optional<HttpResponse> TestConnection::readResponse(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  auto r = readHead(timeout);
  if (!r) {
    return std::nullopt;
  }
  if (r->status == 100) {
    return readResponse(timeout);
  }
  if (r->chunked) {
    while (true) {
      size_t e;
      while ((e = buf_.find("\r\n")) == std::string::npos) {
        if (!fill(deadline)) {
          return std::nullopt;
        }
      }
      size_t size = std::stoul(buf_.substr(0, e), nullptr, 16);
      while (buf_.size() < e + 2 + size + 2) {
        if (!fill(deadline)) {
          return std::nullopt;
        }
      }
      r->body.append(buf_, e + 2, size);
      buf_.erase(0, e + 2 + size + 2);
      if (size == 0) {
        break;
      }
    }
  } else if (!r->header("content-length").empty()) {
    size_t len = std::stoul(r->header("content-length"));
    while (buf_.size() < len) {
      if (!fill(deadline)) {
        return std::nullopt;
      }
    }
    r->body = buf_.substr(0, len);
    buf_.erase(0, len);
  } else {
    while (fill(deadline)) {
    }
    r->body = std::move(buf_);
    buf_.clear();
  }
  return r;
}

std::optional<std::string> TestConnection::readUntil(const std::string& needle,
                                                     std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (buf_.find(needle) == std::string::npos) {
    if (!fill(deadline)) {
      return std::nullopt;
    }
  }
  return buf_;
}

bool TestConnection::waitClosed(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!eof_) {
    if (!fill(deadline) && !eof_) {
      if (std::chrono::steady_clock::now() >= deadline) {
        return false;
      }
    }
  }
  return true;
}

std::string postRequest(const std::string& path, const std::string& body,
                        const std::string& extra_headers) {
  return "POST " + path + " HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n" +
         extra_headers + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

std::optional<HttpResponse> request(uint16_t port, const std::string& method,
                                    const std::string& path, const std::string& body,
                                    const std::string& extra_headers) {
  TestConnection c(port);
  if (!c.connected()) {
    return std::nullopt;
  }
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: test\r\n" + extra_headers;
  if (!body.empty() || method == "POST") {
    req +=
        "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  }
  req += "\r\n" + body;
  if (!c.send(req)) {
    return std::nullopt;
  }
  return c.readResponse();
}

namespace {

bool canBind(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    return false;
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = htons(port);
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

// Chosen at random below the kernel's ephemeral range (32768-60999): outgoing connections and
// bind-to-0 take their ports from that range, so one of them could otherwise take this port
// between the check and the router's own bind.
uint16_t freePort() {
  static std::mt19937 rng{std::random_device{}()};
  std::uniform_int_distribution<int> pick(20000, 31999);
  for (int i = 0; i < 100; ++i) {
    const auto port = static_cast<uint16_t>(pick(rng));
    if (canBind(port)) {
      return port;
    }
  }
  return 0;
}

bool waitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

}  // namespace sluice::testing
