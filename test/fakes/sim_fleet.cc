#include "fakes/sim_fleet.h"

#include <gtest/gtest.h>

namespace sluice::testing {

SimFleet::~SimFleet() {
  ioc.stop();
  if (thread_.joinable()) {
    thread_.join();
  }
}

void SimFleet::start(int n, sim::SimOptions options, std::vector<std::string> names,
                     bool own_addresses) {
  options.served_names = std::move(names);
  uint16_t port = 0;
  for (int i = 0; i < n; ++i) {
    options.name = "sim-" + std::to_string(i);
    auto s = std::make_unique<sim::SimServer>(ioc, options, std::make_shared<sim::SimControl>());
    std::string address = own_addresses ? "127.0.0." + std::to_string(11 + i) : "127.0.0.1";
    EXPECT_FALSE(s->listen(tcp::endpoint(asio::ip::make_address(address), port)));
    if (own_addresses) {
      port = s->port();
      addresses_.push_back(address);
    }
    s->start();
    sims.push_back(std::move(s));
  }
  thread_ = std::thread([this] {
    auto guard = asio::make_work_guard(ioc);
    ioc.run();
  });
}

std::vector<base::HostPort> SimFleet::endpoints() const {
  std::vector<base::HostPort> out;
  for (const auto& s : sims) {
    out.push_back({addresses_.empty() ? "127.0.0.1" : addresses_[out.size()], s->port()});
  }
  return out;
}

config::RouterConfig loopbackConfig(const std::vector<base::HostPort>& endpoints) {
  config::RouterConfig c;
  c.listener = {"127.0.0.1", 0};
  c.admin = {"127.0.0.1", 0};
  c.metrics = {"127.0.0.1", 0};
  c.workers = 1;
  c.access_log.path = "off";
  c.metrics_fetcher.enabled = false;
  config::RouterConfig::Model m;
  m.name = "m";
  m.endpoints = endpoints;
  c.models.push_back(m);
  return c;
}

}  // namespace sluice::testing
