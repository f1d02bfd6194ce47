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
#include "metrics/access_fields.h"

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
  // The request's protocol ("HTTP/1.1") and trace context (hex ids).
  std::string_view protocol;
  std::string_view trace_id;
  std::string_view span_id;
  // The Gateway API association (Kthena's keys gateway, http_route, inference_pool are
  // "namespace/name"): the Gateway and listener it arrived on, the route and rule that matched,
  // the backend that served it.
  std::string_view gateway;
  std::string_view listener;
  std::string_view http_route;
  std::string_view model_route;
  int route_rule = -1;            // < 0: no rule matched
  std::string_view backend_kind;  // InferencePool | ModelServer | Service | ExternalModelProvider
  std::string_view backend;       // ns/name, or the router file's model name
  std::string_view inference_pool;
  std::string_view upstream_model;     // the model sent upstream, when it differs from `model`
  std::string_view objective;          // the InferenceObjective that applied
  std::string_view upstream_protocol;  // http/1.1 | h2c | https | provider
};

// What a record holds and how it is written (configuration access_log.format and .fields).
struct AccessFormat {
  bool text = false;
  std::vector<AccessField> fields;  // in order
  static AccessFormat defaults();   // JSON, every field but `timestamp`
};

// One line: JSON (fields with no value are left out, except the core ones, written as null) or
// text: `timestamp "METHOD path PROTOCOL" status key=value ...` with values quoted and escaped
// when they hold anything but [A-Za-z0-9._:/@+-].
void formatAccessRecord(const AccessRecord& r, const AccessFormat& format, std::string& out);
inline void formatAccessRecord(const AccessRecord& r, std::string& out) {
  static const AccessFormat kDefault = AccessFormat::defaults();
  formatAccessRecord(r, kDefault, out);
}

// JSON-lines access log. Workers push into their own lock-free ring; one flusher thread writes
// to the sink, so a slow disk never blocks a worker (records are dropped and counted instead).
class AccessLog {
 public:
  // path: "stdout", "stderr", "off" or a file (appended). A file that cannot be opened leaves
  // the log disabled and says why in openError().
  AccessLog(const std::string& path, size_t workers, std::atomic<uint64_t>& dropped,
            AccessFormat format = AccessFormat::defaults());
  ~AccessLog();

  bool enabled() const { return sink_ != nullptr; }
  const std::string& openError() const { return open_error_; }
  // Worker side: worker `i` only.
  void write(size_t worker, const AccessRecord& record);
  // Drains all rings now (tests, shutdown).
  void flush();

 private:
  void run();

  FILE* sink_ = nullptr;
  bool owns_sink_ = false;
  std::string open_error_;
  AccessFormat format_;
  std::vector<std::unique_ptr<base::SpscByteRing>> rings_;
  std::vector<std::string> scratch_;  // per worker formatting buffer
  std::atomic<uint64_t>& dropped_;
  std::mutex mu_;  // flusher wake-up and sink writes only; never taken by a worker
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace sluice::metrics
