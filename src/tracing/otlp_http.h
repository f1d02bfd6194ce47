#pragma once

// OTLP/HTTP exports: POSTs of protobuf bodies to the collector, on the exporter thread
// (blocking, bounded by a deadline; never on a worker).

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

#include "base/result.h"

namespace sluice::tracing {

struct OtlpUrl {
  std::string host;
  std::string port;
  std::string path;
};

// http://host:port/path (the config parser has already checked the shape).
base::Result<OtlpUrl> parseOtlpUrl(const std::string& url);

// The exporter's connection to the collector: OTLP/HTTP POSTs of protobuf bodies over one
// HTTP/1.1 keep-alive connection, opened (and the name resolved) when there is none, and
// opened again when the collector closed it. Blocking, bounded by each export's deadline; it
// runs on the exporter thread, never on a worker.
class OtlpClient {
 public:
  explicit OtlpClient(OtlpUrl url);
  ~OtlpClient();
  OtlpClient(const OtlpClient&) = delete;
  OtlpClient& operator=(const OtlpClient&) = delete;

  // POSTs the concatenation of `parts` (Content-Type application/x-protobuf) and returns the
  // HTTP status, or an error when the collector could not be reached or did not answer within
  // `timeout`. A kept connection that fails is replaced once within the same export.
  base::Result<int> post(std::initializer_list<std::string_view> parts,
                         std::chrono::milliseconds timeout);
  uint64_t connectionsOpened() const { return opened_; }

 private:
  struct Answer {
    int status = 0;
    bool keep = false;  // the connection may carry the next export
  };
  base::Result<Answer> exchange(std::initializer_list<std::string_view> parts, size_t length,
                                std::chrono::steady_clock::time_point deadline);
  void closeConnection();

  OtlpUrl url_;
  std::string head_;  // the request head up to the Content-Length value
  int fd_ = -1;
  uint64_t opened_ = 0;
};

}  // namespace sluice::tracing
