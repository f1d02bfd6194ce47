#pragma once

// Endpoint-only updates. A Pod turning ready or unready, or an EndpointSlice changing, moves
// endpoints in and out of backends and changes nothing else the translation produces, so it
// does not need the full rebuild (half a second at 30,000 objects): the new snapshot shares
// the route table and replaces only the backends whose endpoints changed, and their Ready
// conditions. Both paths compute endpoints with the same EndpointResolver.

#include <cstddef>
#include <memory>
#include <optional>
#include <vector>

#include "config/object_store.h"
#include "router/snapshot.h"

namespace sluice::router {

struct EndpointUpdate {
  std::shared_ptr<const Snapshot> snapshot;  // null: no backend's endpoints changed
  size_t backends_changed = 0;
  std::vector<ObjectStatus> statuses;  // the statuses that changed (their Ready conditions)
};

// `base` was built from (or updated to) `before`; `events` are every change from `before` to
// `after`. Returns nullopt when that is not an endpoint-only change (an event of another kind,
// no events, different validation errors): the caller rebuilds in full.
std::optional<EndpointUpdate> updateEndpoints(const Snapshot& base, uint64_t version,
                                              const config::ObjectStore& before,
                                              const config::ObjectStore& after,
                                              const std::vector<config::StoreEvent>& events,
                                              EndpointRegistry& registry);

}  // namespace sluice::router
