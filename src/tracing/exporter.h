#pragma once

// The OTLP exporter: workers hand finished traces to it through one lock-free ring each (a
// full ring drops the trace and counts it: tracing never blocks or slows a request), and its
// thread sends them to the collector as OTLP/HTTP protobuf, batched, every flush interval.

#include <atomic>
#include <condition_variable>
#include <cstdint>
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

class Exporter {
 public:
  // One queue per worker; `counters` outlives the exporter.
  using Counters = metrics::Registry::TraceCounters;
  Exporter(const config::RouterConfig::Tracing& config, size_t workers, Counters& counters);
  ~Exporter();
  Exporter(const Exporter&) = delete;
  Exporter& operator=(const Exporter&) = delete;

  void start();
  // Sends what is queued, then stops the thread.
  void stop();

  // Worker `worker` only. False when its queue is full (the trace is dropped and counted).
  bool submit(size_t worker, const RequestTrace& trace);

  // Drains the queues and exports once, on the caller's thread (the loop, and stop()).
  void flush();

 private:
  void run();
  void exportBatch(std::string_view records);

  config::RouterConfig::Tracing config_;
  Counters& counters_;
  base::Result<OtlpUrl> url_;
  std::vector<std::unique_ptr<base::SpscByteRing>> rings_;
  std::vector<std::string> scratch_;  // per worker: the record being encoded
  std::string resource_;              // the serialized Resource, built once
  std::thread thread_;
  std::mutex mu_;  // the exporter thread's sleep only; workers never take it
  std::condition_variable wake_;
  bool stopping_ = false;
};

}  // namespace sluice::tracing
