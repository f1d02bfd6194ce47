#pragma once

// The admission stage: authentication, model access and rate limits (local and global), run
// before anything is revealed about routing. The mode and the limits that apply come from the
// route's annotation, else the Gateway's, else the global configuration.

#include "filters/filter_chain.h"
#include "openai/peek.h"
#include "server/exchange.h"
#include "server/route_stage.h"

namespace sluice::server {

// False when the request was refused (the response is written).
awaitable<bool> admit(Exchange& x, const router::ListenerRoutes* listener, const RouteMatch& m,
                      const openai::RequestPeek& peek);
// A request the filters refused: 401 (with WWW-Authenticate), 403, 429 (with Retry-After) or
// 503.
awaitable<void> writeRefusal(Exchange& x, const filters::Admission& a);

}  // namespace sluice::server
