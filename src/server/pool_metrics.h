#pragma once

// The InferencePools' gauges, by the names the Inference Extension's EPP exports:
// inference_pool_ready_pods, inference_pool_average_{kv_cache_utilization,queue_size,
// running_requests}, inference_pool_per_pod_queue_size, plus inference_extension_info and the
// router's in-flight load per endpoint (sluice_pool_endpoint_in_flight_requests; `sluice epp`
// also names it sluice_epp_endpoint_in_flight_requests). `sluice epp` reports the pool it
// serves; `sluice serve` every InferencePool it routes to.

#include <string>

#include "backends/engine_metrics.h"
#include "router/snapshot.h"

namespace sluice::server {

void appendPoolMetrics(std::string& out, const router::Snapshot& snap,
                       const backends::MetricsView* view);

}  // namespace sluice::server
