#pragma once

// TLS termination for HTTPS Gateway listeners: one OpenSSL context per listener certificate,
// grouped by port; the handshake starts on the port's default context and the SNI callback
// switches to the listener whose hostname matches (exact, then the longest wildcard, then a
// listener without a hostname). Built on the control thread; workers only read it.

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/ssl/context.hpp>

#include "base/asio.h"
#include "base/result.h"
#include "router/route_table.h"

namespace sluice::server {

class TlsPort {
 public:
  struct Entry {
    std::optional<std::string> hostname;  // lower case; "*.x" wildcard; none = any
    std::shared_ptr<asio::ssl::context> context;
  };
  explicit TlsPort(std::vector<Entry> entries);
  // The context a handshake on this port starts with.
  asio::ssl::context& initial() { return *initial_; }
  // The context for a server name, or null when no listener accepts it.
  asio::ssl::context* select(std::string_view server_name);

 private:
  std::vector<Entry> entries_;
  std::shared_ptr<asio::ssl::context> initial_;
};

struct TlsConfig {
  std::map<uint16_t, std::shared_ptr<TlsPort>> ports;
  TlsPort* find(uint16_t port) const {
    auto it = ports.find(port);
    return it == ports.end() ? nullptr : it->second.get();
  }
};

// A server context (TLS 1.2 and later) with this certificate chain and key.
std::shared_ptr<asio::ssl::context> makeServerTlsContext(std::string_view cert_pem,
                                                         std::string_view key_pem, error_code& ec);
// `sluice epp` over TLS: the files' certificate and key, ALPN h2.
base::Result<std::shared_ptr<asio::ssl::context>> makeGrpcTlsContext(const std::string& cert_file,
                                                                     const std::string& key_file);

// Contexts for every HTTPS listener of the table; certificates that do not load are reported
// in `errors` (listener and reason) and their listener refuses handshakes.
std::shared_ptr<const TlsConfig> buildTls(const router::RouteTable& table,
                                          std::vector<std::string>& errors);

}  // namespace sluice::server
