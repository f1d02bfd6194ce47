#pragma once

// The flow-control stage: a request to a saturated backend waits in its priority queue (fair
// by flow within a priority) until capacity returns, is shed when sheddable or when the queue
// is full, and expires after queue_ttl.

#include <cstdint>

#include "backends/engine_metrics.h"
#include "config/router_config.h"
#include "router/snapshot.h"
#include "server/exchange.h"

namespace sluice::server {

// Flow-control capacity of a backend: max_in_flight_per_endpoint for each live endpoint whose
// engine metrics do not say it is full.
int64_t flowCapacity(const router::Backend& b, const config::RouterConfig::FlowControl& fc,
                     const backends::MetricsView* view, int64_t now_ns);
// Returns false when a response was written (shed, or expired in the queue).
awaitable<bool> admitFlow(Exchange& x, const router::Backend& backend);

}  // namespace sluice::server
