#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "base/clock.h"
#include "base/net.h"
#include "base/result.h"
#include "config/object_store.h"
#include "config/router_config.h"
#include "metrics/access_log.h"
#include "metrics/metrics.h"
#include "router/snapshot.h"
#include "scheduler/scheduler.h"
#include "server/bind_status.h"
#include "server/config_report.h"
#include "server/generation.h"
#include "server/reload_history.h"
#include "tracing/exporter.h"

namespace sluice::server {

class Worker;
class ControlPlane;
class JwksFetcher;
struct TlsConfig;
}  // namespace sluice::server
namespace sluice::backends {
class MetricsFetcher;
}  // namespace sluice::backends
namespace sluice::k8s {
class ApiServerSource;
}  // namespace sluice::k8s
namespace sluice::config {
class ObjectStore;
class ManifestDirectory;
}  // namespace sluice::config
namespace sluice::filters {
class BucketRegistry;
class RedisRegistry;
class FilterChain;
}  // namespace sluice::filters
namespace sluice::server {
struct ServerContext;

// Owns the whole router: workers (data plane), the control thread (admin and metrics
// listeners, signals, config publishing) and the shared state.
class Server {
 public:
  // `seed` fixes the workers' randomness (request ids, tie-breaks) for tests; by default it
  // comes from the OS.
  explicit Server(config::RouterConfig config,
                  const base::TimeSource& time = base::RealTimeSource::instance(),
                  std::optional<uint64_t> seed = std::nullopt);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds every listener and starts the threads. Errors name the listener that failed.
  base::Result<void> start();
  // Rebuilds the snapshot from `config` and publishes it to every worker. Listener addresses
  // and the worker count only change on restart.
  // `trigger` names the cause in the reload history.
  base::Result<void> reload(const config::RouterConfig& config,
                            std::string_view trigger = "config file");
  // Replaces the Kubernetes objects (a manifest directory changed) and republishes. Runs on
  // the config source's thread; the workers only ever see the finished snapshot.
  // A source's objects changed (`events` since its last call): an endpoint-only update when
  // only Pods and EndpointSlices changed, else a full rebuild.
  void applyObjects(const config::ObjectStore& objects,
                    const std::vector<config::StoreEvent>& events);
  // A new JWKS arrived from auth.jwt.jwks_url: the filters are rebuilt with it.
  void applyJwks(const std::string& jwks);
  // Status of every object (admin /debug/status).
  std::string statusJson() const;
  // The last configuration changes, newest first (admin /debug/reloads).
  std::string reloadsJson() const;
  // Every backend with its endpoints' live signals (admin /debug/pools).
  std::string poolsJson() const;
  // Used by SIGHUP: re-reads this file, then applies `overrides` (the command line's).
  void setConfigPath(std::string path,
                     std::function<void(config::RouterConfig&)> overrides = nullptr) {
    config_path_ = std::move(path);
    overrides_ = std::move(overrides);
  }
  // Handle SIGTERM/SIGINT (drain, then stop) and SIGHUP (reload) on the control thread.
  void handleSignals();

  // Graceful: stop accepting, close idle connections, wait for in-flight requests up to the
  // drain timeout, then stop. Blocks. Safe to call from any thread but the workers.
  void drainAndStop();
  // Blocks until the server has stopped (after a drain triggered by a signal, say).
  void wait();
  bool draining() const;
  // True when the drain deadline cut requests or streams short (the exit status says so).
  bool drainCutShort() const { return drain_cut_short_.load(); }
  bool ready() const;

  uint16_t listenerPort() const { return listener_port_; }
  uint16_t adminPort() const { return admin_port_; }
  uint16_t metricsPort() const { return metrics_port_; }
  uint16_t healthPort() const { return health_port_; }  // `sluice epp`
  metrics::Registry& metrics() { return *registry_; }
  metrics::AccessLog& accessLog() { return *access_log_; }
  std::shared_ptr<const router::Snapshot> snapshot() const;
  // Null when metrics_fetcher.enabled is false.
  backends::MetricsFetcher* fetcher() { return fetcher_.get(); }
  int64_t openConnections() const;
  // The workers' recent scheduling decisions as JSON (admin /debug/decisions).
  std::string decisionsJson() const;

 private:
  friend class ControlPlane;
  void stopAll();
  base::Result<void> prepareEpp();
  // Connects to the API server and waits (bounded) for the first sync.
  base::Result<void> openApiServer();
  void updateFetchTargets(const router::Snapshot& snap);
  base::Result<void> publishLocked(const config::RouterConfig& config);
  std::vector<std::pair<std::string, uint16_t>> listenerAddresses(const router::Snapshot& snap);
  std::vector<router::ObjectStatus> statuses(const router::Snapshot& snap) const;
  // Logs the configuration problems that appeared or went away and keeps the change in the
  // reload history: `r` is what publishing gave, `detail` what to say of it (default: the
  // summary of what the snapshot serves).
  void recordReloadLocked(std::string_view trigger, const base::Result<void>& r,
                          base::MonoTime start, std::string detail = {});
  // A reload refused before anything was built (a blank or invalid file).
  void recordRefusedReload(std::string_view trigger, std::string why);
  // Opens the listeners of `wanted` not open yet and hands every worker its duplicates; the
  // others close. A listener that cannot be opened is logged and counted; when it would
  // replace one on the same port (an address change), the old one stays. Returns what is open.
  base::Result<void> startWorkers(base::OwnedFd probe, const tcp::endpoint& probe_ep,
                                  const GenerationPtr& gen, uint64_t seed);
  std::vector<std::pair<std::string, uint16_t>> applyListeners(
      const std::vector<std::pair<std::string, uint16_t>>& wanted);
  std::shared_ptr<const scheduler::ProfileSet> buildProfiles(const router::Snapshot& snap);
  void forgetRemovedEndpoints(const router::Snapshot& snap);
  void moveEndpointRefs(const router::Snapshot& before, const router::Snapshot& after);
  void publishGenerationLocked();
  void publishEndpointsLocked(std::shared_ptr<const router::Snapshot> snap,
                              std::vector<router::ObjectStatus> changed);

  config::RouterConfig config_;
  const base::TimeSource& time_;
  std::string config_path_;
  std::atomic<bool> drain_cut_short_{false};
  std::function<void(config::RouterConfig&)> overrides_;
  std::optional<uint64_t> seed_;
  size_t worker_count_;
  std::unique_ptr<metrics::Registry> registry_;
  std::unique_ptr<metrics::AccessLog> access_log_;
  std::unique_ptr<tracing::Exporter> tracer_;  // tracing.endpoint set
  std::unique_ptr<ServerContext> ctx_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<ControlPlane> control_;
  std::unique_ptr<backends::MetricsFetcher> fetcher_;
  std::unique_ptr<scheduler::Scheduler> scheduler_;
  std::shared_ptr<const scheduler::ProfileSet> profiles_;
  std::unordered_map<std::string, uint32_t> endpoint_refs_;  // address -> backends holding it
  router::EndpointRegistry endpoints_;
  mutable std::mutex snapshot_mu_;  // control plane only
  std::shared_ptr<const router::Snapshot> snapshot_;
  uint64_t next_version_ = 1;
  std::unique_ptr<config::ManifestDirectory> source_;
  std::unique_ptr<k8s::ApiServerSource> api_source_;  // kubernetes: the API server
  // A copy of the source's objects, kept current from its events; guarded by snapshot_mu_.
  std::shared_ptr<config::ObjectStore> objects_;
  // snapshot_ was built from (or updated to) objects_: false while a rebuild was refused.
  bool objects_published_ = false;
  uint32_t updates_since_prune_ = 0;
  uint16_t default_port_ = 0;  // the default listener's, once bound
  std::vector<std::pair<std::string, uint16_t>> listening_;
  UnboundPorts unbound_;
  ProblemLog problem_log_;                // snapshot_mu_
  ReloadHistory reloads_;                 // snapshot_mu_
  std::shared_ptr<const TlsConfig> tls_;  // contexts of HTTPS listeners, with each snapshot
  std::shared_ptr<filters::BucketRegistry> buckets_;  // rate-limit state across reloads
  std::shared_ptr<filters::RedisRegistry> redis_;     // global limits' Redis clients
  std::shared_ptr<const filters::FilterChain> filters_;
  GenerationPtr generation_;  // the four above, as the workers were last sent them
  std::string jwks_;  // the last JWKS fetched from auth.jwt.jwks_url (guarded by snapshot_mu_)
  std::unique_ptr<JwksFetcher> jwks_fetcher_;
  uint16_t listener_port_ = 0;
  uint16_t admin_port_ = 0;
  uint16_t metrics_port_ = 0;
  uint16_t health_port_ = 0;
  std::mutex stop_mu_;
  bool stopped_ = false;
  std::atomic<bool> started_{false};
};

}  // namespace sluice::server
