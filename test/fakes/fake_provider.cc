#include "fakes/fake_provider.h"

#include <arpa/inet.h>
#include <csignal>
#include <cstdio>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/ssl.h>

namespace sluice::testing {

namespace {

std::string lower(std::string s) {
  for (auto& c : s) {
    if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c - 'A' + 'a');
    }
  }
  return s;
}

bool writeAll(SSL* ssl, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    int n = SSL_write(ssl, data.data() + off, static_cast<int>(data.size() - off));
    if (n <= 0) {
      return false;
    }
    off += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

FakeProvider::FakeProvider(const std::string& host, Handler handler)
    : cert_(selfSigned(host)), handler_(std::move(handler)) {
  // A peer that closes while TLS writes (tickets, alerts) must not kill the test process.
  std::signal(SIGPIPE, SIG_IGN);
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  BIO* cb = BIO_new_mem_buf(cert_.cert_pem.data(), static_cast<int>(cert_.cert_pem.size()));
  X509* x = PEM_read_bio_X509(cb, nullptr, nullptr, nullptr);
  BIO* kb = BIO_new_mem_buf(cert_.key_pem.data(), static_cast<int>(cert_.key_pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(kb, nullptr, nullptr, nullptr);
  SSL_CTX_use_certificate(ctx, x);
  SSL_CTX_use_PrivateKey(ctx, key);
  X509_free(x);
  EVP_PKEY_free(key);
  BIO_free(cb);
  BIO_free(kb);
  ctx_ = ctx;
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  ::listen(listen_fd_, 64);
  socklen_t len = sizeof(addr);
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  acceptor_ = std::thread([this] { acceptLoop(); });
}

FakeProvider::~FakeProvider() {
  stopping_ = true;
  ::shutdown(listen_fd_, SHUT_RDWR);
  ::close(listen_fd_);
  acceptor_.join();
  std::vector<std::thread> threads;
  {
    std::lock_guard lock(mu_);
    for (int fd : fds_) {
      ::shutdown(fd, SHUT_RDWR);
    }
    threads.swap(threads_);
  }
  for (auto& t : threads) {
    t.join();
  }
  SSL_CTX_free(static_cast<SSL_CTX*>(ctx_));
}

std::vector<ProviderRequest> FakeProvider::requests() {
  std::lock_guard lock(mu_);
  return requests_;
}

void FakeProvider::acceptLoop() {
  while (!stopping_) {
    int fd = ::accept(listen_fd_, nullptr, nullptr);
    if (fd < 0) {
      if (stopping_) {
        return;
      }
      continue;
    }
    ++connections_;
    std::lock_guard lock(mu_);
    fds_.push_back(fd);
    threads_.emplace_back([this, fd] { serve(fd); });
  }
}

void FakeProvider::serve(int fd) {
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  SSL* ssl = SSL_new(static_cast<SSL_CTX*>(ctx_));
  SSL_set_fd(ssl, fd);
  std::string buf;
  char chunk[16384];
  auto fill = [&]() {
    int n = SSL_read(ssl, chunk, sizeof(chunk));
    if (n <= 0) {
      return false;
    }
    buf.append(chunk, static_cast<size_t>(n));
    return true;
  };
  if (SSL_accept(ssl) == 1) {
    while (!stopping_) {
      size_t end;
      while ((end = buf.find("\r\n\r\n")) == std::string::npos) {
        if (!fill()) {
          goto done;
        }
      }
      ProviderRequest req;
      {
        std::string head = buf.substr(0, end);
        buf.erase(0, end + 4);
        size_t line_end = head.find("\r\n");
        std::string line = head.substr(0, line_end);
        size_t sp1 = line.find(' ');
        size_t sp2 = line.find(' ', sp1 + 1);
        req.method = line.substr(0, sp1);
        req.target = line.substr(sp1 + 1, sp2 - sp1 - 1);
        size_t pos = line_end == std::string::npos ? head.size() : line_end + 2;
        while (pos < head.size()) {
          size_t e = head.find("\r\n", pos);
          if (e == std::string::npos) {
            e = head.size();
          }
          std::string h = head.substr(pos, e - pos);
          size_t colon = h.find(':');
          if (colon != std::string::npos) {
            std::string value = h.substr(colon + 1);
            while (!value.empty() && value.front() == ' ') {
              value.erase(0, 1);
            }
            req.headers[lower(h.substr(0, colon))] = value;
          }
          pos = e + 2;
        }
      }
      size_t length =
          req.headers.count("content-length") != 0 ? std::stoul(req.headers["content-length"]) : 0;
      while (buf.size() < length) {
        if (!fill()) {
          goto done;
        }
      }
      req.body = buf.substr(0, length);
      buf.erase(0, length);
      {
        std::lock_guard lock(mu_);
        requests_.push_back(req);
      }
      ProviderResponse res = handler_(req);
      if (!res.raw.empty()) {
        writeAll(ssl, res.raw);
        break;
      }
      std::string out = "HTTP/1.1 " + std::to_string(res.status) + " X\r\nContent-Type: " +
                        (res.events.empty() ? res.content_type : "text/event-stream") + "\r\n";
      if (res.close) {
        out += "Connection: close\r\n";
      }
      if (res.events.empty()) {
        out += "Content-Length: " + std::to_string(res.body.size()) + "\r\n\r\n" + res.body;
        if (!writeAll(ssl, out)) {
          break;
        }
      } else {
        out += "Transfer-Encoding: chunked\r\n\r\n";
        if (!writeAll(ssl, out)) {
          break;
        }
        for (const auto& e : res.events) {
          char size[32];
          std::snprintf(size, sizeof(size), "%zx\r\n", e.size());
          if (!writeAll(ssl, std::string(size) + e + "\r\n")) {
            goto done;
          }
        }
        if (!writeAll(ssl, "0\r\n\r\n")) {
          break;
        }
      }
      if (res.close) {
        break;
      }
    }
  }
done:
  SSL_shutdown(ssl);
  SSL_free(ssl);
  std::lock_guard lock(mu_);
  ::close(fd);
  for (auto& f : fds_) {
    if (f == fd) {
      f = -1;
    }
  }
}

}  // namespace sluice::testing
