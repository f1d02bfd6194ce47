#pragma once

#include <cstddef>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_set>
#include <vector>

#include "backends/metrics_fetcher.h"
#include "backends/upstream_pool.h"
#include "base/asio.h"
#include "base/random.h"
#include "filters/filter_chain.h"
#include "router/snapshot.h"
#include "scheduler/scheduler.h"
#include "server/context.h"
#include "server/generation.h"
#include "server/tls.h"

namespace sluice::backends {
class ProviderPool;
class H2Pool;
}  // namespace sluice::backends

namespace sluice::server {

struct Session;

// One thread, one io_context, acceptors on duplicates of the server's listening sockets. Everything
// a request touches on its way through lives here or in the immutable snapshot, so the request path
// takes no locks.
class Worker {
 public:
  Worker(size_t index, ServerContext& ctx, uint64_t seed);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Accepts on `fd`, this worker's duplicate of the listening socket the server opened for
  // `endpoint` (every worker accepts on the same socket; the worker owns `fd`).
  error_code listen(const tcp::endpoint& endpoint, int fd);
  uint16_t localPort() const;  // the first listener's
  // The listeners wanted now (Gateways came or went, an address changed): each with this
  // worker's duplicate of a newly opened socket, or -1 for one the worker already accepts on.
  // The others are closed. Posted to the worker.
  void setListeners(std::vector<std::pair<tcp::endpoint, int>> listeners);
  void start();
  // Posts a new configuration generation; requests in flight keep the one they started with.
  void publish(GenerationPtr gen);
  // The last scheduling decisions of this worker (kept when scheduler.decisions > 0).
  void recordDecision(std::string_view request_id, std::string_view model,
                      scheduler::Decision&& decision, size_t keep);
  // Appends this worker's decisions as JSON objects (control thread).
  void appendDecisionsJson(std::string& out, bool& first) const;
  filters::BucketCache& buckets() { return buckets_; }
  // The flow-control queue of a backend (the registry's mutex only on this worker's first use).
  const std::shared_ptr<filters::FlowQueue>& flowQueue(const std::string& backend_key) {
    auto it = flow_queues_.find(backend_key);
    if (it == flow_queues_.end()) {
      it = flow_queues_.emplace(backend_key, ctx_.flows.get(backend_key)).first;
    }
    return it->second;
  }
  // Posts the engines' latest scraped state.
  void publishMetrics(backends::MetricsViewPtr view);
  // Stops accepting and closes idle keep-alive connections (drain).
  void stopAccepting();
  // The drain deadline: every exchange still talking to an upstream is cut and ends with an
  // error naming the shutdown; each one cut is added to `cut`.
  void cutExchanges(std::atomic<uint64_t>& cut);
  void stop();  // stops the loop and joins the thread

  // For the sessions (worker thread only).
  size_t index() const { return index_; }
  ServerContext& context() { return ctx_; }
  asio::io_context& ioContext() { return *ioc_; }
  // The current generation: a request takes it once, at its start, and keeps it.
  const GenerationPtr& generation() const { return gen_; }
  const backends::MetricsView* metricsView() const { return metrics_view_.get(); }
  scheduler::Scheduler& scheduler() { return *ctx_.scheduler; }
  backends::UpstreamPool& pool() { return pool_; }
  // Keep-alive TLS connections to external providers (created on first use).
  backends::ProviderPool& providerPool();
  // HTTP/2 (h2c) connections to endpoints of pools with appProtocol kubernetes.io/h2c.
  backends::H2Pool& h2Pool();
  // TLS to endpoint pickers that serve it: ALPN h2, the certificate not verified.
  asio::ssl::context& pickerTls();
  base::Random& random() { return random_; }
  metrics::Shard& shard() { return shard_; }
  std::vector<const router::Endpoint*>& candidates() { return candidates_; }
  // RequestMirror copies in flight on this worker (bounded; beyond the bound they are dropped).
  size_t& mirrorsInFlight() { return mirrors_in_flight_; }
  std::unordered_set<Session*>& sessions() { return sessions_; }

  // Body relay buffers, recycled so a response costs no large allocation.
  static constexpr size_t kRelayBytes = 16384;
  std::unique_ptr<char[]> takeRelayBuffer();
  void returnRelayBuffer(std::unique_ptr<char[]> buf);

 private:
  awaitable<void> acceptLoop(std::shared_ptr<tcp::acceptor> acceptor, uint16_t port);
  void reconcileListeners(const std::vector<std::pair<tcp::endpoint, int>>& listeners);

  size_t index_;
  ServerContext& ctx_;
  std::unique_ptr<asio::io_context> ioc_;
  std::map<tcp::endpoint, std::shared_ptr<tcp::acceptor>> acceptors_;
  bool accepting_ = true;
  GenerationPtr gen_;
  backends::MetricsViewPtr metrics_view_;
  filters::BucketCache buckets_;
  std::unordered_map<std::string, std::shared_ptr<filters::FlowQueue>> flow_queues_;
  backends::UpstreamPool pool_;
  std::unique_ptr<backends::ProviderPool> provider_pool_;
  std::unique_ptr<backends::H2Pool> h2_pool_;
  std::unique_ptr<asio::ssl::context> picker_tls_;
  base::Xoshiro random_;
  metrics::Shard& shard_;
  std::vector<const router::Endpoint*> candidates_;
  size_t mirrors_in_flight_ = 0;
  std::unordered_set<Session*> sessions_;
  std::vector<std::unique_ptr<char[]>> relay_pool_;
  struct DecisionRecord {
    std::string request_id;
    std::string model;
    scheduler::Decision decision;
  };
  // Written by this worker, read by the admin listener: the mutex is never contended on the
  // request path (only a /debug/decisions scrape takes it from another thread).
  mutable std::mutex decisions_mu_;
  std::deque<DecisionRecord> decisions_;
  std::thread thread_;
};

}  // namespace sluice::server
