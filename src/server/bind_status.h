#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "router/route_table.h"

namespace sluice::server {

// Ports the router was asked to listen on but could not bind, with the reason
// (base::bindFailure). Retried at every reload.
using UnboundPorts = std::map<uint16_t, std::string>;

// Marks every Gateway listener on an unbound port as not accepted (PortUnavailable) and not
// programmed, with the reason, and its Gateway as not programmed, in `status` (built from
// `table`). Gateway API: a port that is in use or not usable is reported on the listener.
void markUnboundListeners(std::vector<router::ObjectStatus>& status,
                          const router::RouteTable& table, const UnboundPorts& unbound);

}  // namespace sluice::server
