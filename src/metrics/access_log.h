#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "base/spsc_ring.h"

namespace sluice::metrics {

// One access-log record; formatted as one JSON line on the worker.
struct AccessRecord {
  std::string_view request_id;
  std::string_view method;
  std::string_view path;
  int status = 0;
  std::string_view model;
  std::string_view endpoint;
  int attempts = 0;
  uint64_t input_tokens = 0;
  uint64_t output_tokens = 0;
  double ttft_ms = -1;  // < 0: not streamed
  double duration_ms = 0;
  std::string_view error_type;
  std::string_view client;
  std::string_view decision;  // opt-in: why the endpoint was chosen
  std::string_view identity;  // a hash tag of the authenticated identity, never the credential
  std::string_view limit;     // the rate limit that refused the request
  double queue_ms = -1;       // time waited in a flow-control queue (< 0: did not wait)
  bool stream = false;
  int64_t unix_ms = 0;
};

void formatAccessRecord(const AccessRecord& r, std::string& out);

// JSON-lines access log. Workers push into their own lock-free ring; one flusher thread writes
// to the sink, so a slow disk never blocks a worker (records are dropped and counted instead).
class AccessLog {
 public:
  // path: "stdout", "stderr", "off" or a file (appended).
  AccessLog(const std::string& path, size_t workers, std::atomic<uint64_t>& dropped);
  ~AccessLog();

  bool enabled() const { return sink_ != nullptr; }
  // Worker side: worker `i` only.
  void write(size_t worker, const AccessRecord& record);
  // Drains all rings now (tests, shutdown).
  void flush();

 private:
  void run();

  FILE* sink_ = nullptr;
  bool owns_sink_ = false;
  std::vector<std::unique_ptr<base::SpscByteRing>> rings_;
  std::vector<std::string> scratch_;  // per worker formatting buffer
  std::atomic<uint64_t>& dropped_;
  std::mutex mu_;  // flusher wake-up and sink writes only; never taken by a worker
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace sluice::metrics
