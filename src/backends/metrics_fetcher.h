#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "backends/engine_metrics.h"
#include "backends/h2_client.h"
#include "backends/provider.h"
#include "backends/upstream_pool.h"
#include "base/asio.h"
#include "base/clock.h"
#include "router/snapshot.h"

namespace sluice::backends {

struct FetcherConfig {
  std::chrono::milliseconds interval{50};           // how often every endpoint is scraped
  std::chrono::milliseconds timeout{1000};          // one scrape, connect included
  std::chrono::milliseconds models_interval{5000};  // how often /v1/models is read
  uint32_t max_concurrency = 128;                   // scrapes in flight at once
  uint32_t unhealthy_after = 3;                     // consecutive failures
  bool verify_tls = false;  // TLS endpoints: check certificates (upstream.verify_workload_tls)
  std::string ca_file;      // ...against the system's CAs and this file
  std::map<EngineType, EngineMapping> mappings;  // overrides of defaultMapping()
  const EngineMapping& mapping(EngineType type) const {
    auto it = mappings.find(type);
    return it == mappings.end() ? defaultMapping(type) : it->second;
  }
};

struct FetchTarget {
  router::Endpoint endpoint;
  EngineType engine = EngineType::Vllm;
  bool h2c = false;  // the endpoint speaks HTTP/2 with prior knowledge (appProtocol h2c)
  bool tls = false;  // HTTP/1.1 over TLS (ModelServer workloadPort.protocol https)
};

using MetricsViewPtr = std::shared_ptr<const MetricsView>;

// Scrapes every endpoint's /metrics on its own thread (never a worker's), with keep-alive
// connections, a timeout per scrape and bounded concurrency; a scrape still running when the
// next tick comes is not started twice. After each tick the latest state of every endpoint is
// published through `publish`.
class MetricsFetcher {
 public:
  MetricsFetcher(FetcherConfig config, const base::TimeSource& time,
                 std::function<void(MetricsViewPtr)> publish);
  ~MetricsFetcher();
  MetricsFetcher(const MetricsFetcher&) = delete;
  MetricsFetcher& operator=(const MetricsFetcher&) = delete;

  // Replaces the set of endpoints (kept state survives for endpoints that stay). Any thread.
  void setTargets(std::vector<FetchTarget> targets);
  void start();
  void stop();

  MetricsViewPtr latest() const;
  // CPU time the fetcher thread has used, in seconds.
  double cpuSeconds() const { return cpu_seconds_.load(std::memory_order_relaxed); }
  uint64_t scrapes() const { return scrapes_.load(std::memory_order_relaxed); }
  uint64_t failures() const { return failures_.load(std::memory_order_relaxed); }
  uint64_t skippedBusy() const { return skipped_busy_.load(std::memory_order_relaxed); }
  // Every endpoint known has been scraped (or failed) once: readiness waits for it. Latched.
  bool firstRoundDone() const { return first_round_done_.load(std::memory_order_relaxed); }

 private:
  struct Target {
    FetchTarget spec;
    EndpointTracker tracker;
    UpstreamConnectionPtr conn;
    std::shared_ptr<H2Connection> h2;  // h2c endpoints
    ProviderConnectionPtr tls_conn;    // TLS endpoints
    bool in_flight = false;
    bool removed = false;
    bool attempted = false;
    bool reported_down = false;  // its going unhealthy was logged; its return will be
    base::MonoTime last_models{};
  };
  void logHealthChange(Target& t);
  awaitable<void> tickLoop();
  awaitable<void> scrape(std::shared_ptr<Target> target);
  awaitable<std::string> get(Target& t, std::string_view path, error_code& ec, int& status);
  awaitable<std::string> getH2(Target& t, std::string_view path, error_code& ec, int& status);
  template <class Conn>
  awaitable<std::string> getOver(Conn& conn, const Target& t, std::string_view path, error_code& ec,
                                 int& status, bool& keep);
  void publishNow();

  FetcherConfig config_;
  const base::TimeSource& time_;
  std::function<void(MetricsViewPtr)> publish_;
  asio::io_context ioc_{1};
  std::unique_ptr<ProviderPool> tls_;  // TLS contexts and handshakes for TLS endpoints
  std::thread thread_;
  std::unordered_map<std::string, std::shared_ptr<Target>> targets_;  // fetcher thread only
  uint32_t in_flight_ = 0;
  uint64_t started_ticks_ = 0;
  mutable std::mutex latest_mu_;  // control plane readers only (admin), never a worker
  MetricsViewPtr latest_;
  std::atomic<double> cpu_seconds_{0};
  std::atomic<uint64_t> scrapes_{0};
  std::atomic<uint64_t> failures_{0};
  std::atomic<uint64_t> skipped_busy_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> first_round_done_{false};
};

// A JSON rendering of a view for /debug/endpoints.
std::string metricsViewJson(const MetricsView& view, base::MonoTime now);

}  // namespace sluice::backends
