#pragma once

// One configuration generation: everything a worker serves from configuration, published to
// the workers together in one message and taken once per request (and once per connection for
// the TLS handshake). A reload can therefore never pair a new filter chain with an old
// snapshot, and whatever a request reads from configuration (`gen->snapshot->config`, a
// backend, a profile) lives as long as the request holds the generation.

#include <memory>

#include "filters/filter_chain.h"
#include "router/snapshot.h"
#include "scheduler/scheduler.h"
#include "server/tls.h"

namespace sluice::server {

struct Generation {
  std::shared_ptr<const router::Snapshot> snapshot;       // never null
  std::shared_ptr<const scheduler::ProfileSet> profiles;  // never null
  std::shared_ptr<const filters::FilterChain> filters;    // null: no filters configured
  std::shared_ptr<const TlsConfig> tls;                   // null: no HTTPS listener
};

using GenerationPtr = std::shared_ptr<const Generation>;

}  // namespace sluice::server
