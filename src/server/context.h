#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>

#include <boost/asio/ssl/context.hpp>

#include "base/clock.h"
#include "filters/flow_control.h"
#include "metrics/access_log.h"
#include "metrics/metrics.h"
#include "scheduler/scheduler.h"
#include "tracing/exporter.h"

namespace sluice::server {

// Process-wide state shared by the workers. Everything here is either immutable after start,
// an atomic, or internally synchronised.
struct ServerContext {
  const base::TimeSource& time;
  metrics::Registry& registry;
  metrics::AccessLog& access_log;
  scheduler::Scheduler* scheduler;
  std::atomic<bool> draining{false};
  std::atomic<int64_t> connections{0};  // open client connections, all workers
  filters::FlowRegistry flows;          // flow-control queues by backend, across reloads
  std::function<bool()> ready;          // the server's readiness (thread-safe), for gRPC health
  std::shared_ptr<boost::asio::ssl::context> epp_tls;  // `sluice epp` over TLS; null: h2c
  tracing::Exporter* tracer = nullptr;                 // tracing.endpoint set; null: tracing is off
};

}  // namespace sluice::server
