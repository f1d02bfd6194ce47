#pragma once

#include <cstdint>
#include <string>

#include "base/asio.h"

namespace sluice::server {

class Worker;

// One client connection. Lives in its coroutine's frame; the worker tracks it for drain.
struct Session {
  Session(Worker& w, tcp::socket socket, uint16_t port);
  ~Session();
  Worker& worker;
  beast::tcp_stream stream;
  beast::flat_buffer buffer;  // bytes read but not yet parsed (pipelined requests survive here)
  std::string client_ip;
  uint16_t port = 0;  // the listener port it arrived on: selects the Gateway listener
  bool idle = false;  // waiting for the next request: drain may close it at once
};

// Serves requests on the connection until it closes.
awaitable<void> runSession(Worker& worker, tcp::socket socket, uint16_t port);

}  // namespace sluice::server
