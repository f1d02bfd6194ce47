#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include <boost/asio/ssl/stream.hpp>

#include "base/asio.h"

namespace sluice::extproc {
class GrpcConnection;
}  // namespace sluice::extproc

namespace sluice::server {

class Worker;
struct TlsConfig;

// One client connection. Lives in its coroutine's frame; the worker tracks it for drain.
struct Session {
  Session(Worker& w, tcp::socket socket, uint16_t port);
  ~Session();
  Worker& worker;
  TcpStream stream;  // the TCP layer: timeouts, cancel and close act here
  // HTTPS listeners: TLS over `stream`; reads and writes go through it when set.
  std::unique_ptr<asio::ssl::stream<TcpStream&>> tls;
  std::shared_ptr<const TlsConfig> tls_config;  // keeps the contexts alive
  beast::flat_buffer buffer;  // bytes read but not yet parsed (pipelined requests survive here)
  std::string client_ip;
  uint16_t port = 0;  // the listener port it arrived on: selects the Gateway listener
  bool idle = false;  // waiting for the next request: drain may close it at once
  // While the upstream works: the watch that can cut it (set by startWatch, cleared by
  // stopWatch), so the drain deadline can end the exchange.
  struct ClientWatch* watch = nullptr;
  bool cut_by_shutdown = false;             // the drain deadline cut this connection's exchange
  extproc::GrpcConnection* grpc = nullptr;  // `sluice epp`: the gRPC connection on it
};

// Serves requests on the connection until it closes.
awaitable<void> runSession(Worker& worker, tcp::socket socket, uint16_t port);

}  // namespace sluice::server
