#pragma once

// The OTLP exporter: workers hand finished traces to it through one lock-free ring each (a
// full ring drops the trace and counts it: tracing never blocks or slows a request), and its
// thread sends them to the collector as OTLP/HTTP protobuf, in batches of max_batch spans,
// when a batch is full or every flush interval.

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/spsc_ring.h"
#include "config/router_config.h"
#include "metrics/metrics.h"
#include "tracing/otlp_http.h"

namespace sluice::tracing {

class RequestTrace;
class WireWriter;

class Exporter {
 public:
  using Counters = metrics::Registry::TraceCounters;
  // One queue per worker; `counters` outlives the exporter.
  Exporter(const config::RouterConfig::Tracing& config, size_t workers, Counters& counters);
  ~Exporter();
  Exporter(const Exporter&) = delete;
  Exporter& operator=(const Exporter&) = delete;

  void start();
  // Sends what is queued, then stops the thread.
  void stop();

  // Worker `worker` only. False when its queue is full (the trace is dropped and counted).
  bool submit(size_t worker, const RequestTrace& trace,
              const std::function<void(WireWriter&)>& server_attributes = {});

 private:
  struct Batch {
    std::string spans;  // ScopeSpans.spans entries
    uint32_t count = 0;
  };
  void run();
  // Moves the queued traces into batches (not past the pending bound).
  void drain();
  // Sends the full batches, and the partial one too when `all`.
  void send(bool all);
  void post(const Batch& batch);
  // Closes the current batch and starts the next in a kept buffer.
  void closeBatch();

  config::RouterConfig::Tracing config_;
  Counters& counters_;
  base::Result<OtlpUrl> url_;
  std::unique_ptr<OtlpClient> client_;  // set when url_ is
  std::vector<std::unique_ptr<base::SpscByteRing>> rings_;
  std::vector<std::string> scratch_;  // per worker: the record being encoded
  std::string resource_;              // the serialized Resource and scope, built once
  std::string scope_;
  // Spans drained but not yet sent (exporter thread only): the queues are emptied every few
  // milliseconds, so bursts do not overflow them.
  std::vector<Batch> full_;
  Batch current_;
  std::vector<std::string> spare_;  // sent batches' buffers, kept for the next ones
  std::string records_;
  std::thread thread_;
  std::mutex mu_;  // the exporter thread's sleep only; workers never take it
  std::condition_variable wake_;
  bool stopping_ = false;
};

}  // namespace sluice::tracing
