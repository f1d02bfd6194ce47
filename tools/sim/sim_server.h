#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/asio.h"

namespace sluice::sim {

// How a simulated engine misbehaves; switchable at run time (tests, /admin).
enum class Fault : int {
  None = 0,
  Reset,          // close the connection as soon as a request arrives
  Hang,           // read the request, never answer
  Status503,      // answer 503 with an OpenAI error body
  Status500,      // answer 500
  BreakMidStream  // stream `break_after_events` events, then close without finishing
};

struct SimOptions {
  std::string model = "sim-model";
  std::string name = "sim";  // reported in the x-sim-engine header
  uint32_t default_max_tokens = 16;
  std::chrono::microseconds ttft{0};  // delay before the first token
  std::chrono::microseconds itl{0};   // delay between tokens
};

// Shared, thread-safe view of what the engine did; tests read it, /admin writes faults.
struct SimControl {
  std::atomic<int> fault{static_cast<int>(Fault::None)};
  std::atomic<int> break_after_events{2};
  std::atomic<bool> hold_after_first{false};  // stream one event, then wait for release()
  std::atomic<int> connections{0};
  std::atomic<int> requests{0};
  std::atomic<int> completed{0};  // responses fully written
  std::atomic<int> cancelled{0};  // responses abandoned because the peer went away
  std::atomic<int> active{0};     // requests being answered

  void setFault(Fault f) { fault.store(static_cast<int>(f)); }
  Fault currentFault() const { return static_cast<Fault>(fault.load()); }

  // The last request as received (head and body), for header and body assertions.
  std::string lastRequestHead();
  std::string lastRequestBody();
  void record(std::string head, std::string body);

 private:
  std::mutex mu_;
  std::string last_head_;
  std::string last_body_;
};

// One simulated OpenAI-compatible engine on one address. Runs on the io_context it is given.
class SimServer {
 public:
  SimServer(asio::io_context& ioc, SimOptions options, std::shared_ptr<SimControl> control);
  error_code listen(const tcp::endpoint& endpoint);
  uint16_t port() const;
  void start();
  // Lets streams held by hold_after_first continue. Thread-safe.
  void release();
  SimControl& control() { return *control_; }

 private:
  awaitable<void> acceptLoop();
  awaitable<void> serve(tcp::socket socket);

  asio::io_context& ioc_;
  SimOptions options_;
  std::shared_ptr<SimControl> control_;
  tcp::acceptor acceptor_;
  asio::steady_timer gate_;  // held streams wait on it; release() cancels it
};

}  // namespace sluice::sim
