#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace sluice::testing {

struct Certificate {
  std::string cert_pem;
  std::string key_pem;
};

// A self-signed certificate (EC P-256) for `host` (CN, and a DNS SAN, or an IP SAN when `host`
// is an address), made at run time.
Certificate selfSigned(const std::string& host);

struct TlsExchange {
  std::string peer_cn;   // the CN of the certificate the server presented
  std::string response;  // everything read until the server closed
};

// Connects to 127.0.0.1:port with SNI `server_name` (none if empty), sends `request`, reads to
// EOF. nullopt if the handshake fails. Blocking, with 10 s socket timeouts.
std::optional<TlsExchange> tlsRequest(uint16_t port, const std::string& server_name,
                                      const std::string& request);

}  // namespace sluice::testing
