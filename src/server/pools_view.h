#pragma once

// Every backend a snapshot serves (InferencePools, ModelServers, Services, providers, the
// router file's models) with each endpoint's live signals side by side: the router's own load
// accounting (in flight, consecutive failures, outlier ejection) and what the metrics fetcher
// last scraped from the engine (health, queue, running, KV-cache use, latency). For the admin
// /debug/pools and the /ui status page.

#include <string>

#include "backends/engine_metrics.h"
#include "base/clock.h"
#include "router/snapshot.h"

namespace sluice::server {

// `view` may be null (the fetcher is off); `now` is the clock endpoints' ejections use.
std::string poolsJson(const router::Snapshot& snap, const backends::MetricsView* view,
                      base::MonoTime now);

}  // namespace sluice::server
