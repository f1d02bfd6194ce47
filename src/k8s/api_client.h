#pragma once

// HTTPS to the Kubernetes API server, on the source's own io_context (never a worker): one
// request at a time per pooled keep-alive connection, and long-lived watch streams read line
// by line. The server's certificate is verified against the kubeconfig's CA (or the system's);
// credentials are a bearer token (re-read from its file when that changes: bound service
// account tokens rotate) or a client certificate. A token bucket bounds the request rate.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/ssl/context.hpp>

#include "base/asio.h"
#include "base/result.h"
#include "k8s/kubeconfig.h"

namespace sluice::k8s {

struct Response {
  unsigned status = 0;  // 0 = no response (error says why)
  std::string body;
  std::string error;
  bool ok() const { return status >= 200 && status < 300; }
  // "HTTP 403: <the Status message>" or the transport error, for logs.
  std::string describe() const;
};

class ApiConnection;

class ApiClient {
 public:
  // Called for each line of a watch stream; return false to end the stream.
  using LineHandler = std::function<bool(std::string_view line)>;

  ApiClient(asio::io_context& ioc, ClusterAccess access, uint32_t qps, uint32_t burst);
  ~ApiClient();

  // Builds the TLS context (CA, client certificate). Errors name the problem.
  base::Result<void> init();

  awaitable<Response> request(std::string_view method, std::string target, std::string body = {},
                              std::string content_type = {},
                              std::chrono::milliseconds timeout = std::chrono::seconds(30));
  // A streaming GET (a watch): `on_line` gets every line as it arrives. Returns when the server
  // ends the response, `idle` passes without a byte, the handler says stop, or shutdown().
  // A non-2xx answer is returned with its body and no line is delivered.
  awaitable<Response> stream(std::string target, LineHandler on_line,
                             std::chrono::milliseconds idle);
  // Closes every connection and open stream; pending calls complete with an error.
  void shutdown();

  const ClusterAccess& access() const { return access_; }
  uint64_t requests() const { return requests_; }
  uint64_t throttledMs() const { return throttled_ms_; }

 private:
  awaitable<void> throttle();
  std::string bearer();
  awaitable<std::shared_ptr<ApiConnection>> connect(Response& failure);
  awaitable<std::shared_ptr<ApiConnection>> take(Response& failure);
  void release(std::shared_ptr<ApiConnection> conn);

  asio::io_context& ioc_;
  ClusterAccess access_;
  asio::ssl::context tls_;
  double tokens_;
  double qps_;
  double burst_;
  std::chrono::steady_clock::time_point last_refill_;
  std::string token_;
  std::string token_file_stamp_;
  std::chrono::steady_clock::time_point token_checked_{};
  std::vector<std::shared_ptr<ApiConnection>> idle_;
  std::set<std::shared_ptr<ApiConnection>> open_;
  bool shut_ = false;
  uint64_t requests_ = 0;
  uint64_t throttled_ms_ = 0;
};

}  // namespace sluice::k8s
