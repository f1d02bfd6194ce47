#pragma once

// The attempt loop, one for every upstream kind: each target in order (the scheduler's
// candidates, or the one external provider) until one answers with a status that is not
// retried. Per attempt: the retry pause and the request's deadline, the endpoint's load
// reserved, a fresh connection once when a pooled one turns out closed, failures counted by
// kind and against the endpoint (outlier ejection). Then the answered response is relayed, or
// the client gets the last failure.

#include <chrono>
#include <vector>

#include "server/exchange.h"
#include "server/schedule_stage.h"
#include "server/transport.h"

namespace sluice::server {

struct AttemptPlan {
  std::vector<Target> targets;
  const std::vector<int>* retry_codes = nullptr;  // statuses retried on the next target
  std::chrono::milliseconds retry_pause{0};
  std::chrono::milliseconds attempt_timeout{0};  // per attempt, before the request's deadline
  const Schedule* schedule = nullptr;            // endpoints: the load each target takes on
  std::string* head = nullptr;  // the upstream head whose traceparent names each attempt
};

// Runs the attempts on `transport` and relays the response. The client watch must be started.
awaitable<void> runAttempts(Exchange& x, const RouteChoice& route, Transport& transport,
                            ClientWatch& watch, const AttemptPlan& plan, RelayArgs relay);

}  // namespace sluice::server
