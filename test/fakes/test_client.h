#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>

namespace sluice::testing {

struct HttpResponse {
  int status = 0;
  std::string reason;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;                            // de-chunked
  bool chunked = false;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? "" : it->second;
  }
};

// A blocking HTTP/1.1 test client on a raw socket, so tests control every byte and every
// timing (partial writes, pipelining, disconnects). Every read has a deadline.
class TestConnection {
 public:
  explicit TestConnection(uint16_t port, const char* host = "127.0.0.1");
  ~TestConnection();
  TestConnection(const TestConnection&) = delete;
  TestConnection& operator=(const TestConnection&) = delete;

  bool connected() const { return fd_ >= 0; }
  bool send(const std::string& bytes);
  // Reads one full response. nullopt on timeout, close or parse failure.
  std::optional<HttpResponse> readResponse(
      std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Reads only the status line and headers; the body is then read with readSome/readUntil.
  std::optional<HttpResponse> readHead(
      std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // Reads until `needle` appears in the bytes received after the head; returns them all.
  std::optional<std::string> readUntil(
      const std::string& needle, std::chrono::milliseconds timeout = std::chrono::seconds(10));
  // True if the peer closed the connection within the timeout (EOF or reset).
  bool waitClosed(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  void close();

 private:
  bool fill(std::chrono::steady_clock::time_point deadline);
  int fd_ = -1;
  std::string buf_;
  bool eof_ = false;
};

// One request, one response, on a fresh connection.
std::optional<HttpResponse> request(uint16_t port, const std::string& method,
                                    const std::string& path, const std::string& body = "",
                                    const std::string& extra_headers = "");

std::string postRequest(const std::string& path, const std::string& body,
                        const std::string& extra_headers = "");

// Polls `pred` until it holds or the timeout passes; for waiting on another thread's effect.
// A loopback port free right now (for listeners a test configures by number).
uint16_t freePort();

bool waitFor(const std::function<bool()>& pred,
             std::chrono::milliseconds timeout = std::chrono::seconds(10));

}  // namespace sluice::testing
