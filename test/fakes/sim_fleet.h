#pragma once

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "base/asio.h"
#include "config/router_config.h"
#include "sim/sim_server.h"

namespace sluice::testing {

// Simulated engines on 127.0.0.1 (free ports), served by one io_context on its own thread:
// what the integration tests run the router against. Stops and joins on destruction.
class SimFleet {
 public:
  SimFleet() = default;
  ~SimFleet();
  SimFleet(const SimFleet&) = delete;
  SimFleet& operator=(const SimFleet&) = delete;

  // Starts `n` engines named sim-0, sim-1, ... serving `names`, then the thread.
  // With `own_addresses`, engine i listens on 127.0.0.(11+i), all on one port (as Pods do).
  void start(int n, sim::SimOptions options = {},
             std::vector<std::string> names = {"m", "meta/llama-3", "renamed"},
             bool own_addresses = false);
  // The engines as router endpoints.
  std::vector<base::HostPort> endpoints() const;

  asio::io_context ioc{1};
  std::vector<std::unique_ptr<sim::SimServer>> sims;

 private:
  std::thread thread_;
  std::vector<std::string> addresses_;
};

// A router configuration for tests: loopback, free ports, one worker, no access log, no
// metrics fetcher, and a model "m" on `endpoints`.
config::RouterConfig loopbackConfig(const std::vector<base::HostPort>& endpoints);

}  // namespace sluice::testing
