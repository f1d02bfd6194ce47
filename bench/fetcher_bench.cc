// Metrics fetcher cost: N simulated engines (in this process, on their own thread) scraped
// every interval by the fetcher (its own thread). Reports the fetcher thread's CPU use, scrape
// rate, failures and skipped ticks.
//   fetcher_bench [endpoints=500] [interval_ms=50] [seconds=10]
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "backends/metrics_fetcher.h"
#include "base/asio.h"
#include "router/snapshot.h"
#include "sim/sim_server.h"

int main(int argc, char** argv) {
  using namespace sluice;
  const int n = argc > 1 ? std::atoi(argv[1]) : 500;
  const int interval_ms = argc > 2 ? std::atoi(argv[2]) : 50;
  const int seconds = argc > 3 ? std::atoi(argv[3]) : 10;

  asio::io_context sim_ioc(1);
  std::vector<std::unique_ptr<sim::SimServer>> sims;
  config::RouterConfig cfg;
  config::RouterConfig::Model model;
  model.name = "m";
  for (int i = 0; i < n; ++i) {
    sim::SimOptions o;
    o.served_names = {"m"};
    auto s = std::make_unique<sim::SimServer>(sim_ioc, o, std::make_shared<sim::SimControl>());
    if (s->listen(tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0))) {
      std::fprintf(stderr, "listen failed\n");
      return 1;
    }
    s->start();
    model.endpoints.push_back({"127.0.0.1", s->port()});
    sims.push_back(std::move(s));
  }
  cfg.models.push_back(model);
  router::EndpointRegistry registry;
  auto snap = router::buildSnapshot(cfg, 1, registry);
  std::vector<backends::FetchTarget> targets;
  for (const auto& ep : (*snap)->findModel("m")->endpoints) {
    targets.push_back({ep, backends::EngineType::Vllm});
  }
  std::thread sim_thread([&] {
    auto guard = asio::make_work_guard(sim_ioc);
    sim_ioc.run();
  });

  backends::FetcherConfig fc;
  fc.interval = std::chrono::milliseconds(interval_ms);
  fc.max_concurrency = 1024;
  backends::MetricsFetcher fetcher(fc, base::RealTimeSource::instance(), nullptr);
  fetcher.setTargets(targets);
  fetcher.start();
  std::this_thread::sleep_for(std::chrono::seconds(1));  // warm-up: connections open
  const double cpu0 = fetcher.cpuSeconds();
  const uint64_t scrapes0 = fetcher.scrapes();
  const uint64_t failures0 = fetcher.failures();
  const uint64_t skipped0 = fetcher.skippedBusy();
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  const double cpu = fetcher.cpuSeconds() - cpu0;
  const uint64_t scrapes = fetcher.scrapes() - scrapes0;
  size_t healthy = 0;
  for (const auto& [_, m] : fetcher.latest()->endpoints) {
    healthy += m.healthy && m.scraped;
  }
  std::printf(
      "endpoints %d, interval %d ms, %d s: %.0f scrapes/s (ideal %.0f), fetcher thread CPU %.1f%% "
      "of one core (%.1f us per scrape), failures %llu, skipped busy %llu, healthy %zu\n",
      n, interval_ms, seconds, scrapes / static_cast<double>(seconds), n * 1000.0 / interval_ms,
      100.0 * cpu / seconds, 1e6 * cpu / static_cast<double>(scrapes),
      static_cast<unsigned long long>(fetcher.failures() - failures0),
      static_cast<unsigned long long>(fetcher.skippedBusy() - skipped0), healthy);
  fetcher.stop();
  sim_ioc.stop();
  sim_thread.join();
  return 0;
}
