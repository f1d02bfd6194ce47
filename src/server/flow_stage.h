#pragma once

// The flow-control stage: a request to a saturated backend waits in its priority queue (fair
// by flow within a priority) until capacity returns, is shed when sheddable or when the queue
// is full, and expires after queue_ttl.

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "backends/engine_metrics.h"
#include "config/router_config.h"
#include "openai/errors.h"
#include "router/snapshot.h"
#include "server/exchange.h"

namespace sluice::server {

// Flow-control capacity of a backend: max_in_flight_per_endpoint for each live endpoint whose
// engine metrics do not say it is full.
int64_t flowCapacity(const router::Backend& b, const config::RouterConfig::FlowControl& fc,
                     const backends::MetricsView* view, int64_t now_ns);
// Why flow control did not admit a request (shed, queue full, expired or abandoned in the
// queue).
struct FlowRefusal {
  openai::ErrorKind kind;
  std::string message;
  bool retry_after = false;  // a 429: the client may retry in a second
};
// Admits (nullopt; `x.flow` holds the slot) or refuses. `abandoned`, when set, is polled while
// the request waits: true ends the wait (the client went away).
awaitable<std::optional<FlowRefusal>> waitForFlow(Exchange& x, const router::Backend& backend,
                                                  std::function<bool()> abandoned = {});
// The same for an HTTP client: false when the refusal was written.
awaitable<bool> admitFlow(Exchange& x, const router::Backend& backend);

}  // namespace sluice::server
