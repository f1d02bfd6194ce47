#pragma once

#include <cstddef>
#include <vector>

#include "base/random.h"
#include "router/snapshot.h"

namespace sluice::backends {

// The core's endpoint choice until the scheduler lands: fewest in-flight requests first (the
// router's own zero-lag count), random among ties, returning an ordered fallback list of at
// most `max_candidates` endpoints.
void pickEndpoints(const router::Backend& backend, base::Random& random, size_t max_candidates,
                   std::vector<const router::Endpoint*>& out);

}  // namespace sluice::backends
