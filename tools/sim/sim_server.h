#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/asio.h"
#include "base/random.h"
#include "metrics/metrics.h"
#include "sim/engine.h"

namespace sluice::sim {

// Deterministic faults for tests; switchable at run time (SimControl, POST /admin).
enum class Fault : int {
  None = 0,
  Reset,          // close the connection as soon as an inference request arrives
  Hang,           // read the request, never answer
  Status503,      // answer 503 with an OpenAI error body
  Status500,      // answer 500
  BreakMidStream  // stream `break_after_events` events, then close without finishing
};

// Which engine's metric names and defaults the simulator imitates.
enum class EngineKind { Vllm, VllmV0, Sglang };

struct SimOptions {
  std::vector<std::string> served_names{"sim-model"};  // the first is the base model's name
  std::string name = "sim";                            // reported in the x-sim-engine header
  EngineKind kind = EngineKind::Vllm;
  EngineConfig engine;
  double time_scale = 1.0;  // model time runs this many times faster than real time
  uint32_t default_max_tokens = 16;
  uint64_t seed = 1;
};

// Shared, thread-safe view of what the engine did, and run-time fault switches.
struct SimControl {
  std::atomic<int> fault{static_cast<int>(Fault::None)};
  std::atomic<int> break_after_events{2};
  std::atomic<bool> hold_after_first{false};  // stream one event, then wait for release()
  // Random faults, drawn from the engine's seeded generator.
  std::atomic<double> error_rate{0};       // share of inference requests failed at once
  std::atomic<int> error_status{503};      // 429, 500 or 503 for those...
  std::atomic<int> error_types{0};         // ...or a mix: bits 1 = 429, 2 = 500, 4 = 503
  std::atomic<double> stall_rate{0};       // share of streams that pause once mid-stream
  std::atomic<double> stall_ms{0};         // how long (model ms)
  std::atomic<double> disconnect_rate{0};  // share of streams cut before they finish
  std::atomic<double> ready_at_ms{0};      // slow start: 503 until this model time
  std::atomic<bool> metrics_down{false};   // /metrics answers 500 (a broken exporter)

  std::atomic<int> connections{0};
  std::atomic<int> requests{0};
  std::atomic<int> completed{0};  // responses fully written
  std::atomic<int> cancelled{0};  // responses abandoned because the peer went away
  std::atomic<int> active{0};     // requests being answered

  void setFault(Fault f) { fault.store(static_cast<int>(f)); }
  Fault currentFault() const { return static_cast<Fault>(fault.load()); }

  std::string lastRequestHead();
  std::string lastRequestBody();
  void record(std::string head, std::string body);

 private:
  std::mutex mu_;
  std::string last_head_;
  std::string last_body_;
};

// One simulated OpenAI-compatible engine on one address, running on the io_context it is
// given: HTTP front end, the Engine stepped by a timer in scaled real time, metrics.
class SimServer {
 public:
  SimServer(asio::io_context& ioc, SimOptions options, std::shared_ptr<SimControl> control);
  ~SimServer();
  error_code listen(const tcp::endpoint& endpoint);
  uint16_t port() const;
  void start();
  // Lets streams held by hold_after_first continue. Thread-safe.
  void release();
  SimControl& control() { return *control_; }
  // The engine's state; call on the io_context's thread (or when it is stopped).
  EngineStats engineStats() const { return engine_.stats(); }
  std::string renderMetrics() const;

  // Model milliseconds since start.
  double modelNow() const;

  struct Pending;  // one request waiting for tokens

 private:
  awaitable<void> acceptLoop();
  awaitable<void> serve(tcp::socket socket);
  void kick();
  void step();
  void onStepDone();

  asio::io_context& ioc_;
  SimOptions options_;
  std::shared_ptr<SimControl> control_;
  tcp::acceptor acceptor_;
  SteadyTimer gate_;  // held streams wait on it; release() cancels it
  SteadyTimer step_timer_;
  bool stepping_ = false;
  Engine engine_;
  base::Xoshiro random_;
  std::chrono::steady_clock::time_point start_;
  std::unordered_map<uint64_t, Pending*> pending_;
  std::vector<TokenEvent> events_;
  // Engine-side histograms (model time), with vLLM's bucket boundaries.
  metrics::Histogram ttft_;
  metrics::Histogram itl_;
  metrics::Histogram e2e_;
  uint64_t finished_ = 0;
};

EngineKind parseEngineKind(std::string_view text, bool& ok);
// "429,500,503" -> the error_types bit mask; -1 if a status is not one of those.
int parseErrorTypes(std::string_view text);

}  // namespace sluice::sim
