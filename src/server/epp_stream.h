#pragma once

// The endpoint picker's request path (`sluice epp`): one Envoy ext_proc stream is one HTTP
// request through a gateway. The request's headers and body arrive as messages; the pool's
// scheduling profile picks the endpoints (the same stages as `sluice serve`: InferenceModel-
// Rewrite, InferenceObjective priority, flow control, scheduling with prefix locality and
// load), and the answer names them in x-gateway-destination-endpoint (header mutation and
// dynamic_metadata["envoy.lb"]), with the body rewritten when the model was. The response
// phase reports the served endpoint (load and prefix bookkeeping move to it) and the usage.
// Refusals are ImmediateResponses with OpenAI-shaped bodies: 400, 413, 429 (shed), 503 (no
// endpoint, nothing eligible in the subset hint).

#include <cstddef>
#include <memory>

#include "extproc/grpc_server.h"

namespace sluice::server {

struct Session;

// Handlers alive on a connection; the connection's coroutine waits for zero before its Session
// goes (a handler may be waiting in a flow-control queue after its stream was cancelled).
struct LiveHandlers {
  size_t count = 0;
  std::unique_ptr<SteadyTimer> zero;  // cancelled when count drops to zero
};

inline constexpr std::string_view kExtProcPath =
    "/envoy.service.ext_proc.v3.ExternalProcessor/Process";
inline constexpr std::string_view kExtProcService = "envoy.service.ext_proc.v3.ExternalProcessor";

std::unique_ptr<extproc::CallHandler> makeExtProcHandler(Session& s, extproc::GrpcCall& call,
                                                         LiveHandlers& live);

}  // namespace sluice::server
