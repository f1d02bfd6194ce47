#pragma once

// HTTPRoute RequestMirror: a copy of the request, sent to one live endpoint of each mirror
// backend (by its fraction), fire and forget; responses are read and dropped. Bounded per
// worker: beyond the bound, copies are dropped and counted.

#include <memory>
#include <string_view>

#include "router/route_table.h"
#include "server/exchange.h"

namespace sluice::server {

void startMirrors(Exchange& x, const router::RouteAction& action,
                  const std::shared_ptr<const router::Snapshot>& snapshot,
                  std::string_view rewritten_target);

}  // namespace sluice::server
