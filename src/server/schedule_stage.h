#pragma once

// The scheduling stage: the backend's scheduling profile orders its endpoints for this request
// (engine metrics, prefix-cache locality, load, session affinity, LoRA adapters); the first is
// dispatched to at once (its pick counted, the prefix index told), the rest are the retries'.
// Decisions are explained into the access log and the worker's recent list when configured.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "openai/peek.h"
#include "scheduler/scheduler.h"
#include "server/exchange.h"

namespace sluice::server {

struct Schedule {
  scheduler::RequestInfo info;  // its prefix_hashes points into this object
  std::vector<uint64_t> prefix_hashes;
  std::vector<const router::Endpoint*> candidates;  // in order; empty: no ready endpoint
  scheduler::CycleState cycle;
  // The load candidate `i` takes on: the prompt it must compute, less the prefix it holds,
  // plus the expected output.
  int64_t expectedWork(size_t i, size_t block_bytes) const;
};

// Up to `list` candidates for the request's backend, into `out` (which must stay where it is:
// `out.info` points into it).
void schedule(Exchange& x, const RouteChoice& route, const openai::RequestPeek& peek, size_t list,
              Schedule& out);

}  // namespace sluice::server
