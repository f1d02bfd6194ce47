#pragma once

// The API-server config source: informers for every resource the router reads feed one
// object store on the source's own thread (with its own io_context: never a worker's). Events
// are batched for the debounce and then handed on as one change, exactly like a manifest
// directory's; an object that fails validation keeps its last good version. Secrets are
// watched one by one, only those the configuration references (field selectors). The route
// table's status comes back through publishStatus() and is written to each object's status
// subresource by the leader (a Lease), only when it changed.

#include <atomic>
#include <chrono>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "base/asio.h"
#include "base/clock.h"
#include "config/manifest_source.h"
#include "config/router_config.h"
#include "k8s/api_client.h"
#include "k8s/informer.h"
#include "k8s/kubeconfig.h"
#include "k8s/leader.h"
#include "k8s/status_writer.h"
#include "router/route_table.h"

namespace sluice::k8s {

class ApiServerSource final : public config::ConfigSource {
 public:
  struct Options {
    config::RouterConfig::Kubernetes config;
    ClusterAccess access;
    // Secrets the router file names (auth.api_keys): namespace, name.
    std::vector<std::pair<std::string, std::string>> config_secrets;
    // Gateway status.addresses: {type (IPAddress | Hostname), value}.
    std::vector<std::pair<std::string, std::string>> addresses;
    const base::TimeSource* time = &base::RealTimeSource::instance();
    uint64_t seed = 1;
  };

  explicit ApiServerSource(Options options);
  ~ApiServerSource() override;

  // Starts the thread and the informers; changes accumulate until start() gives a callback.
  base::Result<void> open();
  // Blocks until every informer has listed once (or found its resource missing), bounded.
  bool waitSynced(std::chrono::milliseconds timeout);
  bool synced() const { return synced_.load(); }
  // A copy of the store, taken on the source's thread.
  config::ObjectStore copyStore();

  base::Result<void> start(OnChange on_change) override;
  void stop() override;

  // The route table's status after a rebuild (any thread).
  // Every object's status after a rebuild (`complete`: statuses not in it are forgotten), or
  // just the ones an endpoint-only update changed.
  void publishStatus(std::vector<router::ObjectStatus> status, bool complete = true);
  bool leader() const { return leader_.load(); }
  // sluice_kubernetes_* families (any thread).
  void appendMetrics(std::string& out) const;

 private:
  struct Watched {
    const ResourceType* type = nullptr;
    size_t priority = 0;  // lower wins when two resources give the same key
    std::unique_ptr<Informer> informer;
    std::unordered_set<std::string> keys;
    // Kept only for kinds that two resources serve (InferencePool v1 and v1alpha2).
    std::unordered_map<std::string, config::Object> shadow;
    bool shared_kind = false;
  };

  void addInformer(const ResourceType& type, Informer::Options options);
  void onReplace(Watched& w, std::vector<nlohmann::json>&& items);
  void onEvent(Watched& w, std::string_view type, const nlohmann::json& item);
  void apply(Watched& w, const nlohmann::json& item);
  void remove(Watched& w, const std::string& key);
  bool preferredHolds(const Watched& w, const std::string& key) const;
  void observe(const ResourceType& type, const std::string& key, const nlohmann::json& item);
  void changed(config::StoreEvent event);
  void flush();
  void updateSecretWatches();
  void checkSynced();
  awaitable<void> writeStatuses();
  awaitable<bool> writeOne(const std::string& key);
  bool ourGateway(std::string_view ns, std::string_view name) const;
  void renderMetrics();
  // Gives the lease up and closes every connection, then sets `done`.
  awaitable<void> finish(std::promise<void>* done);

  Options options_;
  asio::io_context ioc_{1};
  std::thread thread_;
  std::unique_ptr<ApiClient> client_;
  std::unique_ptr<LeaderElector> elector_;
  std::vector<std::unique_ptr<Watched>> watched_;
  std::map<std::pair<std::string, std::string>, Watched*> secret_watches_;
  std::vector<std::unique_ptr<Watched>> retired_;  // stopped; their coroutines may still unwind
  config::ObjectStore store_;
  std::unordered_map<std::string, Observed> observed_;
  std::unordered_map<std::string, router::ObjectStatus> statuses_;
  std::set<std::string> dirty_status_;
  bool writing_ = false;
  std::vector<config::StoreEvent> pending_;
  std::unique_ptr<SteadyTimer> debounce_;
  std::unique_ptr<SteadyTimer> metrics_timer_;
  bool flush_armed_ = false;
  OnChange on_change_;
  uint64_t flushed_generation_ = 0;
  std::atomic<bool> synced_{false};
  std::atomic<bool> leader_{false};
  std::atomic<bool> stopping_{false};
  uint64_t status_writes_ = 0, status_conflicts_ = 0, status_errors_ = 0, flushes_ = 0;
  mutable std::mutex metrics_mu_;
  std::string metrics_text_;
};

}  // namespace sluice::k8s
