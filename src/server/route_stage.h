#pragma once

// The route stage: which backend serves a request, and what its route asks for on the way.
// ModelRoutes first (Kthena's precedence: the oldest route whose rules match), then HTTPRoute
// rules (request timeout, RequestRedirect answered here, URLRewrite, RequestMirror started,
// a weighted backend, the model rewrite and InferenceObjective of a pool), then the router
// file's models:.

#include <string>

#include "openai/peek.h"
#include "router/route_table.h"
#include "server/exchange.h"

namespace sluice::server {

struct RouteMatch {
  RouteChoice route;
  bool routed = false;  // a route matched (its backend may still be invalid: `error`)
  std::string error;    // why the matched route has no usable backend
  const router::ModelRouteEntry* model_route = nullptr;  // the ModelRoute that matched
};

// An InferencePool's own policy for a request: the model rewrite (x-gateway-model-name-rewrite
// presets it, else the pool's InferenceModelRewrite) and the InferenceObjective priority.
void applyPoolPolicy(Exchange& x, const router::Backend& pool, const openai::RequestPeek& peek,
                     RouteChoice& route);
// False when the response was written (a redirect).
awaitable<bool> matchRoute(Exchange& x, const router::ListenerRoutes* listener,
                           const router::RequestView& view, const openai::RequestPeek& peek,
                           RouteMatch& out);
// After admission: 404 when nothing matched, 500 for an invalid backend reference (false,
// written); else sets the request's bounded metrics label.
// The request's metric series and association from a valid match: the model label bounded (a
// name the listener serves, else the client's under the worker's bound), backend, route.
void labelRoute(Exchange& x, const router::ListenerRoutes* listener,
                const openai::RequestPeek& peek, const RouteMatch& m);

awaitable<bool> checkRoute(Exchange& x, const router::ListenerRoutes* listener,
                           const openai::RequestPeek& peek, const RouteMatch& m);

}  // namespace sluice::server
