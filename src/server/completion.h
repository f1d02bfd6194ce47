#pragma once

// The completion stage: once a request is answered, its metrics, the release of its flow-control
// slot (handed to the best waiter), the reconciliation of its rate-limit reservations with the
// usage the response reported, and its access-log record.

#include "server/exchange.h"

namespace sluice::server {

void finishExchange(Exchange& x);

}  // namespace sluice::server
