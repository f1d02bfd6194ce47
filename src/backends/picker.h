#pragma once

#include <cstddef>
#include <vector>

#include "backends/metrics_fetcher.h"
#include "base/random.h"
#include "router/snapshot.h"

namespace sluice::backends {

// The core's endpoint choice until the scheduler lands: endpoints the metrics fetcher marks
// unhealthy go last (used only when nothing else is left), then fewest in-flight requests first
// (the router's own zero-lag count), random among ties. Returns an ordered fallback list of at
// most `max_candidates` endpoints. `view` may be null (no fetcher).
void pickEndpoints(const router::Backend& backend, base::Random& random, size_t max_candidates,
                   std::vector<const router::Endpoint*>& out, const MetricsView* view = nullptr);

}  // namespace sluice::backends
