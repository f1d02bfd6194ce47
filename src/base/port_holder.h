#pragma once

#include <cstdint>
#include <string>

namespace sluice::base {

// Why a listener could not bind, in words an operator can act on: the error, and for a port
// in use the process that holds it ("pid 1234 (nginx)") when /proc shows it, or for a
// privileged port the capability it needs. `err` is the errno bind() set.
std::string bindFailure(int err, uint16_t port);

// The process listening on TCP `port` on this host ("pid 1234 (nginx)"), from /proc/net/tcp,
// /proc/net/tcp6 and /proc/*/fd; empty when no listener is found or it is not visible to us.
std::string portHolder(uint16_t port);

}  // namespace sluice::base
