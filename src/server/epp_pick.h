#pragma once

// The endpoint picker's decision for one request (`sluice epp`): the served InferencePool, its
// model rewrite and InferenceObjective priority (the route stage's pool policy), flow control,
// the subset hint, then the pool's scheduling profile ordering the endpoints. The first takes
// the request's load and its prefix at once; the rest are the gateway's fallbacks.

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "router/snapshot.h"
#include "server/exchange.h"
#include "server/flow_stage.h"
#include "server/schedule_stage.h"

namespace sluice::server {

// Request headers meant for the picker alone: stripped before the request goes upstream, with
// anything a client sent as a served-endpoint report.
inline constexpr std::string_view kControlHeaders[] = {
    "x-gateway-inference-objective", "x-gateway-inference-fairness-id",
    "x-gateway-model-name-rewrite", "x-gateway-destination-endpoint-served"};

// The model's two names, JSON-quoted, when the request's was rewritten (for the responses).
struct ModelNames {
  std::string upstream;
  std::string client;
  bool rewritten() const { return !upstream.empty(); }
};

struct PickInput {
  const std::vector<std::string>& subset;  // envoy.lb.subset_hint addresses
  bool subset_present = false;             // the key was sent (an empty list admits nothing)
  std::function<bool()> abandoned;         // the stream went away while queued
};

struct PickResult {
  std::optional<FlowRefusal> refusal;     // an immediate response instead of a destination
  std::vector<std::string> destinations;  // "ip:port", best first
  std::optional<std::string> body;        // the body with the model rewritten
  ModelNames names;
  const router::Backend* pool = nullptr;
  const scheduler::Profile* profile = nullptr;
  Schedule schedule;  // kept for the served-endpoint report
  router::Reservation reservation;
};

// The InferencePool `sluice epp` serves, as this snapshot has it; null when it is unknown.
const router::Backend* servedPool(const router::Snapshot& snap);

awaitable<void> pickEndpoints(Exchange& x, const PickInput& in, PickResult& out);

// The gateway reports which endpoint produced the response: when it is not the first
// destination, the request's load and prefix move to it.
void moveToServed(Exchange& x, PickResult& r, std::string_view served);

}  // namespace sluice::server
