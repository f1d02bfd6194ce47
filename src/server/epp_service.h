#pragma once

// `sluice epp`'s connections: gRPC over HTTP/2 (h2c, or TLS with ALPN h2) serving the ext_proc
// endpoint picker (epp_stream.h) and the gRPC health service (grpc.health.v1.Health: Check and
// Watch for "", "liveness", "readiness" and envoy.service.ext_proc.v3.ExternalProcessor).

#include <cstdint>

#include "base/asio.h"

namespace sluice::server {

class Worker;

// Serves gRPC calls on the connection until it closes (or drains: GOAWAY, then the open calls
// finish).
awaitable<void> runGrpcSession(Worker& worker, tcp::socket socket, uint16_t port);

}  // namespace sluice::server
