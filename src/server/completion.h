#pragma once

// The completion stage: once a request is answered, its metrics, the release of its flow-control
// slot (handed to the best waiter), the reconciliation of its rate-limit reservations with the
// usage the response reported, its inference_objective_* series, and its access-log record.

#include "server/exchange.h"

namespace sluice::server {

void finishExchange(Exchange& x);

// Once routing chose a backend: records the backend and the models on the exchange, picks its
// metrics series (model label, gateway, route, backend) and, for a request naming a model, its
// inference_objective_* series, counted as running until finishExchange. `client_named`: the
// model label is the client's string (bounded per worker, see metrics::Shard::series).
void labelExchange(Exchange& x, const router::Backend& backend, std::string_view model,
                   std::string_view upstream_model, bool client_named);

}  // namespace sluice::server
