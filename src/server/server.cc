#include "server/server.h"

#include <array>
#include <cctype>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <list>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <unordered_set>

#include <boost/asio/signal_set.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <fmt/core.h>

#include "backends/metrics_fetcher.h"
#include "base/asio.h"
#include "base/log.h"
#include "base/net.h"
#include "base/port_holder.h"
#include "base/random.h"
#include "config/manifest_source.h"
#include "filters/filter_chain.h"
#include "k8s/api_source.h"
#include "router/endpoint_update.h"
#include "router/route_table.h"
#include "server/bind_status.h"
#include "server/config_report.h"
#include "server/context.h"
#include "server/jwks_fetcher.h"
#include "server/pool_metrics.h"
#include "server/pools_view.h"
#include "server/tls.h"
#include "server/ui_page.h"
#include "server/worker.h"

namespace sluice::server {

namespace bhttp = boost::beast::http;

// The control thread: admin and metrics listeners, signals. Never on the request path.
class ControlPlane {
 public:
  explicit ControlPlane(Server& server) : server_(server), ioc_(1), signals_(ioc_) {}

  base::Result<uint16_t> listen(const config::ListenAddress& addr, bool admin) {
    error_code ec;
    auto address = asio::ip::make_address(addr.address, ec);
    if (ec) {
      return base::Error{fmt::format("invalid address \"{}\"", addr.address)};
    }
    auto& acceptor = acceptors_.emplace_back(ioc_);
    tcp::endpoint ep(address, addr.port);
    ec = base::listenOn(acceptor, ep);
    if (ec) {
      return base::Error{fmt::format("{}:{}: {}", addr.address, addr.port,
                                     base::bindFailure(ec.value(), addr.port))};
    }
    asio::co_spawn(ioc_, acceptLoop(acceptor, admin), asio::detached);
    return acceptor.local_endpoint().port();
  }

  void start() {
    thread_ = std::thread([this] {
      auto guard = asio::make_work_guard(ioc_);
      ioc_.run();
    });
  }

  void stop() {
    ioc_.stop();
    if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) {
      thread_.join();
    }
  }

  void joinDrain() {
    if (drain_thread_.joinable() && drain_thread_.get_id() != std::this_thread::get_id()) {
      drain_thread_.join();
    }
  }

  ~ControlPlane() {
    joinDrain();
    stop();
    if (thread_.joinable()) {
      thread_.detach();  // only when stop() ran on the control thread itself
    }
  }

  void handleSignals() {
    signals_.add(SIGINT);
    signals_.add(SIGTERM);
    signals_.add(SIGHUP);
    waitSignal();
  }

  void waitSignal() {
    signals_.async_wait([this](const error_code& ec, int sig) {
      if (ec) {
        return;
      }
      if (sig == SIGHUP) {
        reloadFromFile();
        waitSignal();
        return;
      }
      SLUICE_LOG(Info, "server", "signal {}: draining", sig);
      // Drain blocks; run it off the control thread so /readyz keeps answering meanwhile.
      // The server joins this thread before it is destroyed.
      if (!drain_thread_.joinable()) {
        drain_thread_ = std::thread([this] { server_.drainAndStop(); });
      }
    });
  }

  void reloadFromFile() {
    if (server_.config_path_.empty()) {
      return;
    }
    auto refuse = [this](std::string why) {
      server_.registry_->config_reload_errors.fetch_add(1);
      SLUICE_LOG(Error, "config", "reload of {} refused: {}; the running configuration is kept",
                 server_.config_path_, why);
      server_.recordRefusedReload("config file", std::move(why));
    };
    // A file caught half-written (editors and config-map updates truncate, then write) must
    // not replace a configuration that serves with one that serves nothing.
    if (fileIsBlank(server_.config_path_)) {
      refuse("the file is empty");
      return;
    }
    config::ConfigErrors errors;
    auto cfg = config::loadRouterConfig(server_.config_path_, errors);
    if (!cfg) {
      std::string first;
      for (const auto& e : errors.errors) {
        SLUICE_LOG(Error, "config", "reload rejected: {}", e);
        first = first.empty() ? e : first;
      }
      refuse(fmt::format("{} error(s) in the file{}{}", errors.errors.size(),
                         first.empty() ? "" : ", the first: ", first));
      return;
    }
    if (server_.overrides_) {
      server_.overrides_(*cfg);
    }
    // Where objects come from is fixed at start (reload() keeps it too).
    cfg->manifests = server_.config_.manifests;
    cfg->kubernetes = server_.config_.kubernetes;
    if (servesNothing(*cfg) && !servesNothing(server_.snapshot()->config)) {
      refuse("it names no models and no manifests, so it would remove every route");
      return;
    }
    if (auto r = server_.reload(*cfg); !r) {
      SLUICE_LOG(Error, "config", "reload rejected: {}", r.error().message);
    } else {
      SLUICE_LOG(Info, "config", "reloaded {}", server_.config_path_);
    }
  }

  static bool fileIsBlank(const std::string& path) {
    std::ifstream in(path);
    if (!in) {
      return false;  // unreadable: the loader reports why
    }
    char c = 0;
    while (in.get(c)) {
      if (!std::isspace(static_cast<unsigned char>(c))) {
        return false;
      }
    }
    return true;
  }

  // Nothing to route to from the file alone (Kubernetes objects are kept across reloads).
  static bool servesNothing(const config::RouterConfig& c) {
    return c.models.empty() && c.manifests.empty() && !c.kubernetes.enabled();
  }

 private:
  awaitable<void> acceptLoop(tcp::acceptor& acceptor, bool admin) {
    while (acceptor.is_open()) {
      error_code ec;
      tcp::socket socket = co_await acceptor.async_accept(asio::redirect_error(use_awaitable, ec));
      if (ec) {
        if (ec == asio::error::operation_aborted) {
          break;
        }
        continue;
      }
      asio::co_spawn(ioc_, serve(std::move(socket), admin), asio::detached);
    }
  }

  // The admin and metrics listeners' answers. `type` is the Content-Type, `headers` any more
  // header lines (CRLF-terminated). The page files are served as they are, not copied.
  std::pair<int, std::string> route(std::string_view path, bool admin, std::string& type,
                                    std::string_view& headers, std::string_view& fixed) {
    type = "text/plain; charset=utf-8";
    if (path == "/metrics") {
      type = "text/plain; version=0.0.4; charset=utf-8";
      return {200, server_.registry_->renderPrometheus()};
    }
    if (!admin) {
      return {404, "not found\n"};
    }
    if (path == "/healthz") {
      return {200, "ok\n"};
    }
    if (path == "/readyz") {
      return server_.ready()
                 ? std::pair{200, std::string("ready\n")}
                 : std::pair{503, std::string(server_.draining() ? "draining\n" : "not ready\n")};
    }
    if (path == "/debug/endpoints") {
      type = "application/json";
      auto* fetcher = server_.fetcher();
      if (fetcher == nullptr) {
        return {200, "{\"endpoints\":[],\"fetcher\":\"disabled\"}\n"};
      }
      return {200,
              backends::metricsViewJson(*fetcher->latest(), server_.time_.monotonicNow()) + "\n"};
    }
    if (path == "/debug/decisions") {
      type = "application/json";
      return {200, server_.decisionsJson()};
    }
    if (path == "/debug/status") {
      type = "application/json";
      return {200, server_.statusJson()};
    }
    if (path == "/debug/pools") {
      type = "application/json";
      return {200, server_.poolsJson()};
    }
    if (path == "/debug/traffic") {
      type = "application/json";
      return {200, server_.registry_->trafficJson()};
    }
    if (path == "/debug/reloads") {
      type = "application/json";
      return {200, server_.reloadsJson()};
    }
    if (const UiAsset* page = findUiAsset(path)) {
      type = page->type;
      headers = uiHeaders();
      fixed = page->body;
      return {200, {}};
    }
    if (path == "/debug/config") {
      type = "application/json";
      auto snap = server_.snapshot();
      return {200, fmt::format("{{\"version\":{},\"config\":{}}}\n", snap ? snap->version : 0,
                               snap ? config::toJson(snap->config) : "null")};
    }
    return {404, "not found\n"};
  }

  awaitable<void> serve(tcp::socket socket, bool admin) {
    TcpStream stream(std::move(socket));
    beast::flat_buffer buffer;
    while (true) {
      error_code ec;
      bhttp::request_parser<bhttp::string_body> parser;
      parser.body_limit(64 * 1024);
      stream.expires_after(std::chrono::seconds(30));
      co_await bhttp::async_read(stream, buffer, parser, asio::redirect_error(use_awaitable, ec));
      if (ec) {
        break;
      }
      auto& req = parser.get();
      std::string_view target = req.target();
      std::string type;
      std::string_view headers, fixed;
      auto [status, body] = route(target.substr(0, target.find('?')), admin, type, headers, fixed);
      if (!fixed.empty()) {
        body.clear();
      }
      const std::string_view payload = fixed.empty() ? std::string_view(body) : fixed;
      const bool head_only = req.method() == bhttp::verb::head;
      bool keep = req.keep_alive();
      std::string head =
          fmt::format("HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}{}\r\n",
                      status, bhttp::obsolete_reason(static_cast<bhttp::status>(status)), type,
                      payload.size(), headers, keep ? "" : "Connection: close\r\n");
      std::vector<asio::const_buffer> bufs{asio::buffer(head)};
      if (!head_only) {
        bufs.push_back(asio::buffer(payload.data(), payload.size()));
      }
      co_await asio::async_write(stream, bufs, asio::redirect_error(use_awaitable, ec));
      if (ec || !keep) {
        break;
      }
    }
    error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }

  Server& server_;
  asio::io_context ioc_;
  asio::signal_set signals_;
  std::list<tcp::acceptor> acceptors_;
  std::thread thread_;
  std::thread drain_thread_;
};

Server::Server(config::RouterConfig config, const base::TimeSource& time,
               std::optional<uint64_t> seed)
    : config_(std::move(config)), time_(time), seed_(seed) {
  worker_count_ = config_.workers > 0 ? static_cast<size_t>(config_.workers)
                                      : std::max(1u, std::thread::hardware_concurrency());
  registry_ = std::make_unique<metrics::Registry>(worker_count_);
  registry_->names = config_.metric_names;
  metrics::AccessFormat log_format = metrics::AccessFormat::defaults();
  log_format.text = config_.access_log.format == "text";
  if (!config_.access_log.fields.empty()) {
    log_format.fields.clear();
    for (const auto& name : config_.access_log.fields) {
      log_format.fields.push_back(*metrics::accessFieldNamed(name));  // checked by the parser
    }
  }
  access_log_ = std::make_unique<metrics::AccessLog>(config_.access_log.path, worker_count_,
                                                     registry_->access_log_dropped, log_format);
  scheduler_ = std::make_unique<scheduler::Scheduler>(std::make_shared<scheduler::PrefixIndex>());
  ctx_.reset(
      new ServerContext{time_, *registry_, *access_log_, scheduler_.get(), {}, {}, {}, {}, {}});
  if (config_.tracing.enabled()) {
    tracer_ =
        std::make_unique<tracing::Exporter>(config_.tracing, worker_count_, registry_->traces);
    ctx_->tracer = tracer_.get();
  }
  registry_->extra = [this](std::string& out) {
    const auto st = scheduler_->index().stats();
    out += fmt::format(
        "# HELP sluice_prefix_index_entries Block-to-endpoint entries the prefix index holds.\n"
        "# TYPE sluice_prefix_index_entries gauge\nsluice_prefix_index_entries {}\n"
        "# HELP sluice_prefix_index_blocks Distinct prompt blocks in the prefix index.\n"
        "# TYPE sluice_prefix_index_blocks gauge\nsluice_prefix_index_blocks {}\n"
        "# HELP sluice_prefix_index_evictions_total Entries dropped by the per-endpoint bounds.\n"
        "# TYPE sluice_prefix_index_evictions_total counter\n"
        "sluice_prefix_index_evictions_total {}\n",
        st.entries, st.blocks, st.evictions);
    scheduler_->appendMetrics(out);
    if (registry_->names & metrics::kInferenceExtensionNames) {
      auto snap = snapshot();
      auto view = fetcher_ ? fetcher_->latest() : nullptr;
      appendPoolMetrics(out, *snap, view.get());
    }
    if (api_source_) {
      api_source_->appendMetrics(out);
    }
    // Flow control: requests waiting now, over every backend.
    size_t queued = 0;
    ctx_->flows.forEach(
        [&](const std::string&, const filters::FlowQueue& q) { queued += q.queued(); });
    out += fmt::format(
        "# HELP sluice_flow_control_queued Requests waiting in flow-control queues.\n"
        "# TYPE sluice_flow_control_queued gauge\nsluice_flow_control_queued {}\n",
        queued);
    if (auto redis = redis_) {
      out +=
          "# HELP sluice_redis_round_trips_total Lease refills sent to Redis for global limits.\n"
          "# TYPE sluice_redis_round_trips_total counter\n"
          "# HELP sluice_redis_errors_total Failed Redis exchanges (the fail mode applied).\n"
          "# TYPE sluice_redis_errors_total counter\n"
          "# HELP sluice_redis_latency_seconds_total Time spent in lease refills (divide by round "
          "trips for the mean).\n"
          "# TYPE sluice_redis_latency_seconds_total counter\n";
      redis->forEach([&](const filters::RedisLimiter& l) {
        out += fmt::format("sluice_redis_round_trips_total{{address=\"{}\"}} {}\n", l.address(),
                           l.roundTrips());
        out += fmt::format("sluice_redis_latency_seconds_total{{address=\"{}\"}} {:.6f}\n",
                           l.address(), l.latencySumSeconds());
        out += fmt::format("sluice_redis_errors_total{{address=\"{}\"}} {}\n", l.address(),
                           l.errors());
      });
    }
  };
  control_ = std::make_unique<ControlPlane>(*this);
  if (config_.metrics_fetcher.enabled) {
    const auto& f = config_.metrics_fetcher;
    backends::FetcherConfig fc;
    fc.interval = f.interval;
    fc.timeout = f.timeout;
    fc.models_interval = f.models_interval;
    fc.max_concurrency = f.max_concurrency;
    fc.unhealthy_after = f.unhealthy_after;
    fc.verify_tls = config_.upstream.verify_workload_tls;
    fc.ca_file = config_.upstream.ca_file;
    for (const auto& [engine, overrides] : f.engines) {
      if (auto type = backends::parseEngineType(engine)) {
        fc.mappings[*type] = backends::withOverrides(backends::defaultMapping(*type), overrides);
      }
    }
    fetcher_ = std::make_unique<backends::MetricsFetcher>(fc, time_,
                                                          [this](backends::MetricsViewPtr view) {
                                                            for (auto& w : workers_) {
                                                              w->publishMetrics(view);
                                                            }
                                                          });
  }
}

std::shared_ptr<const scheduler::ProfileSet> Server::buildProfiles(const router::Snapshot& snap) {
  auto set = std::make_shared<scheduler::ProfileSet>();
  // Presets were validated with the configuration; an unknown name cannot reach here.
  const auto& sc = snap.config.scheduler;
  const std::string default_name = sc.default_profile.empty() ? sc.preset : sc.default_profile;
  set->default_profile = scheduler_->makeNamed(default_name, sc);
  // models: entries with a scheduler, and pools and ModelServers annotated with
  // sluice.dev/scheduler (validated when routes built).
  for (const auto& b : snap.routes->backends) {
    if (!b->scheduler.empty() && b->scheduler != default_name) {
      set->by_model[b->model] = scheduler_->makeNamed(b->scheduler, sc);
    }
  }
  forgetRemovedEndpoints(snap);
  return set;
}

void Server::forgetRemovedEndpoints(const router::Snapshot& snap) {
  // Endpoints that left the configuration leave the prefix index too. Each address counts the
  // backends that hold it (pools may share Pods).
  std::unordered_map<std::string, uint32_t> refs;
  for (const auto& backend : snap.routes->backends) {
    for (const auto& ep : snap.current(*backend).endpoints) {
      ++refs[ep.address];
    }
  }
  for (const auto& [address, _] : endpoint_refs_) {
    if (refs.count(address) == 0) {
      scheduler_->index().removeEndpoint(address);
    }
  }
  endpoint_refs_ = std::move(refs);
}

void Server::moveEndpointRefs(const router::Snapshot& before, const router::Snapshot& after) {
  // Only the backends an endpoint-only update replaced can have moved an endpoint. Every
  // addition before any removal: an address that moved from one backend to another in the
  // batch keeps its prefix-index entries.
  std::vector<std::pair<const router::Backend*, const router::Backend*>> moved;
  for (const auto& backend : after.routes->backends) {
    const router::Backend& was = before.current(*backend);
    const router::Backend& now = after.current(*backend);
    if (&was != &now) {
      moved.emplace_back(&was, &now);
    }
  }
  for (const auto& [was, now] : moved) {
    for (const auto& ep : now->endpoints) {
      ++endpoint_refs_[ep.address];
    }
  }
  for (const auto& [was, now] : moved) {
    for (const auto& ep : was->endpoints) {
      auto it = endpoint_refs_.find(ep.address);
      if (it != endpoint_refs_.end() && --it->second == 0) {
        endpoint_refs_.erase(it);
        scheduler_->index().removeEndpoint(ep.address);
      }
    }
  }
}

void Server::updateFetchTargets(const router::Snapshot& snap) {
  if (!fetcher_) {
    return;
  }
  std::vector<backends::FetchTarget> targets;
  std::unordered_set<std::string> seen;
  auto add = [&](const router::Backend& backend) {
    auto engine = backends::parseEngineType(backend.engine).value_or(backends::EngineType::Vllm);
    for (const auto& ep : backend.endpoints) {
      if (seen.insert(ep.address).second) {
        targets.push_back({ep, engine, backend.h2c, backend.tls});
      }
    }
  };
  for (const auto& backend : snap.routes->backends) {
    add(snap.current(*backend));
  }
  fetcher_->setTargets(std::move(targets));
}

Server::~Server() {
  control_->joinDrain();
  if (source_) {
    source_->stop();
  }
  if (api_source_) {
    api_source_->stop();
  }
  if (jwks_fetcher_) {
    jwks_fetcher_->stop();
  }
  stopAll();
  fetcher_.reset();
  control_.reset();
  workers_.clear();
}

std::shared_ptr<const router::Snapshot> Server::snapshot() const {
  std::lock_guard<std::mutex> lock(snapshot_mu_);
  return snapshot_;
}

base::Result<void> Server::reload(const config::RouterConfig& config, std::string_view trigger) {
  // Where the objects come from is fixed at start (flags, environment); a reload keeps it.
  config::RouterConfig c = config;
  c.kubernetes = config_.kubernetes;
  c.manifests = config_.manifests;  // the watched directory is opened once, at start
  std::lock_guard<std::mutex> lock(snapshot_mu_);
  const auto start = time_.monotonicNow();
  auto r = publishLocked(c);
  recordReloadLocked(trigger, r, start);
  return r;
}

void Server::applyObjects(const config::ObjectStore& objects,
                          const std::vector<config::StoreEvent>& events) {
  std::lock_guard<std::mutex> lock(snapshot_mu_);
  const auto start = time_.monotonicNow();
  auto elapsed = [this, &start] {
    return std::chrono::duration<double, std::milli>(time_.monotonicNow() - start).count();
  };
  // Only Pods or EndpointSlices changed since the published snapshot's objects: move endpoints
  // without the full rebuild, and bring the copy up to date once the snapshot is out. (No
  // events: only validation errors changed, and the full rebuild reports them.)
  if (snapshot_ && objects_ && objects_published_ && !events.empty()) {
    if (auto u = router::updateEndpoints(*snapshot_, next_version_, *objects_, objects, events,
                                         endpoints_)) {
      if (u->snapshot) {
        ++next_version_;
        publishEndpointsLocked(u->snapshot, std::move(u->statuses));
        SLUICE_LOG(Info, "config",
                   "endpoints updated: {} change(s), {} backend(s) changed in {:.1f} ms",
                   events.size(), u->backends_changed, elapsed());
        recordReloadLocked(
            "endpoints", {}, start,
            fmt::format("{} change(s), {} backend(s) changed", events.size(), u->backends_changed));
      }
      objects_->follow(objects, events);
      return;
    }
  }
  if (objects_) {
    objects_->follow(objects, events);
  } else {
    objects_ = std::make_shared<config::ObjectStore>(objects);
  }
  auto r = publishLocked(snapshot_ ? snapshot_->config : config_);
  if (!r) {
    SLUICE_LOG(Error, "config", "manifest update rejected: {}", r.error().message);
  } else {
    SLUICE_LOG(Info, "config", "manifests applied: {} objects, {} errors, rebuilt in {:.1f} ms",
               objects_->objects().size(), objects_->errorCount(), elapsed());
  }
  recordReloadLocked("objects", r, start);
}

// Each validation error and refused object is logged once, when it appears (and when it is
// resolved); the change goes into the reload history.
void Server::recordReloadLocked(std::string_view trigger, const base::Result<void>& r,
                                base::MonoTime start, std::string detail) {
  static const config::ObjectStore kNoObjects;
  ReloadRecord rec;
  rec.at = time_.systemNow();
  rec.trigger = trigger;
  rec.applied = r.has_value();
  rec.version = snapshot_ ? snapshot_->version : 0;
  rec.ms = std::chrono::duration<double, std::milli>(time_.monotonicNow() - start).count();
  if (!r) {
    rec.detail = r.error().message;
  } else if (!detail.empty()) {
    rec.detail = std::move(detail);
  } else if (snapshot_) {
    rec.detail = loadedSummary(*snapshot_);
  }
  if (snapshot_) {
    auto change = problem_log_.update(
        configProblems(objects_ ? *objects_ : kNoObjects, statuses(*snapshot_)));
    rec.appeared = std::move(change.appeared);
    rec.resolved = std::move(change.resolved);
  }
  reloads_.add(std::move(rec));
}

void Server::recordRefusedReload(std::string_view trigger, std::string why) {
  std::lock_guard<std::mutex> lock(snapshot_mu_);
  ReloadRecord rec;
  rec.at = time_.systemNow();
  rec.trigger = trigger;
  rec.version = snapshot_ ? snapshot_->version : 0;
  rec.detail = std::move(why);
  reloads_.add(std::move(rec));
}

std::string Server::poolsJson() const {
  auto snap = snapshot();
  if (!snap) {
    return "{\"pools\":[]}\n";
  }
  auto view = fetcher_ ? fetcher_->latest() : nullptr;
  return server::poolsJson(*snap, view.get(), time_.monotonicNow());
}

std::string Server::reloadsJson() const {
  std::lock_guard<std::mutex> lock(snapshot_mu_);
  return reloads_.json();
}

// The current snapshot, profiles, filters and TLS contexts as one generation, in one message
// to each worker.
void Server::publishGenerationLocked() {
  generation_ =
      std::make_shared<const Generation>(Generation{snapshot_, profiles_, filters_, tls_});
  for (auto& w : workers_) {
    w->publish(generation_);
  }
}

// An endpoint-only snapshot: the route table, filters, TLS and profiles stay as they are.
void Server::publishEndpointsLocked(std::shared_ptr<const router::Snapshot> snap,
                                    std::vector<router::ObjectStatus> changed) {
  moveEndpointRefs(*snapshot_, *snap);
  snapshot_ = snap;
  // Pruning walks every endpoint state: now and then, not on every Pod event.
  if (++updates_since_prune_ >= 64) {
    updates_since_prune_ = 0;
    endpoints_.prune();
  }
  publishGenerationLocked();
  updateFetchTargets(*snap);
  if (api_source_) {
    api_source_->publishStatus(std::move(changed), false);
  }
  registry_->endpoint_updates.fetch_add(1);
  registry_->snapshot_version.store(static_cast<int64_t>(snap->version));
}

void Server::applyJwks(const std::string& jwks) {
  std::lock_guard<std::mutex> lock(snapshot_mu_);
  jwks_ = jwks;
  if (!snapshot_) {
    return;
  }
  std::vector<std::string> errors;
  filters_ = filters::FilterChain::build(snapshot_->config, objects_.get(), buckets_, redis_,
                                         errors, &jwks_);
  for (const auto& e : errors) {
    SLUICE_LOG(Error, "config", "{}", e);
  }
  publishGenerationLocked();
  SLUICE_LOG(Info, "auth", "JWKS from {} applied", snapshot_->config.auth.jwt.jwks_url);
}

// The snapshot's status with the listeners that could not bind marked; snapshot_mu_ held.
std::vector<router::ObjectStatus> Server::statuses(const router::Snapshot& snap) const {
  auto out = snap.statuses();
  markUnboundListeners(out, *snap.routes, unbound_);
  return out;
}

std::string Server::statusJson() const {
  std::lock_guard<std::mutex> lock(snapshot_mu_);
  if (!snapshot_ || !snapshot_->routes) {
    return "{\"objects\":[]}\n";
  }
  return router::statusJson(statuses(*snapshot_));
}

std::vector<std::pair<std::string, uint16_t>> Server::listenerAddresses(
    const router::Snapshot& snap) {
  std::vector<std::pair<std::string, uint16_t>> out;
  if (config_.epp.enabled) {
    // The endpoint picker listens for gRPC, not for the Gateways' HTTP.
    out.emplace_back(config_.epp.grpc.address, default_port_);
    if (health_port_ != default_port_ || config_.epp.health.address != config_.epp.grpc.address) {
      out.emplace_back(config_.epp.health.address, health_port_);
    }
    return out;
  }
  for (const auto& [port, listeners] : snap.routes->ports) {
    out.emplace_back(listeners.front()->address, port);
  }
  return out;
}

base::Result<void> Server::publishLocked(const config::RouterConfig& config) {
  auto built =
      router::buildSnapshot(config, next_version_, endpoints_, objects_.get(), default_port_);
  if (!built) {
    registry_->config_reload_errors.fetch_add(1);
    objects_published_ = false;
    return base::Error{built.error().message};
  }
  ++next_version_;
  std::shared_ptr<const router::Snapshot> snap = *built;
  snapshot_ = snap;
  objects_published_ = true;
  endpoints_.prune();
  auto profiles = buildProfiles(*snap);
  profiles_ = profiles;
  std::vector<std::string> tls_errors;
  tls_ = buildTls(*snap->routes, tls_errors);
  for (const auto& e : tls_errors) {
    SLUICE_LOG(Error, "config", "{}", e);
  }
  if (!buckets_) {
    buckets_ = std::make_shared<filters::BucketRegistry>();
    redis_ = std::make_shared<filters::RedisRegistry>();
  }
  std::vector<std::string> filter_errors;
  filters_ =
      filters::FilterChain::build(config, objects_.get(), buckets_, redis_, filter_errors, &jwks_);
  for (const auto& e : filter_errors) {
    SLUICE_LOG(Error, "config", "{}", e);
  }
  publishGenerationLocked();
  auto addresses = listenerAddresses(*snap);
  if (started_ && addresses != listening_) {
    addresses = applyListeners(addresses);
  }
  listening_ = std::move(addresses);
  updateFetchTargets(*snap);
  if (api_source_) {
    api_source_->publishStatus(statuses(*snap));
  }
  registry_->config_reloads.fetch_add(1);
  registry_->snapshot_version.store(static_cast<int64_t>(snap->version));
  return {};
}

std::vector<std::pair<std::string, uint16_t>> Server::applyListeners(
    const std::vector<std::pair<std::string, uint16_t>>& wanted) {
  std::vector<std::pair<std::string, uint16_t>> open;
  std::vector<std::pair<tcp::endpoint, int>> shared;  // fd -1: already open, kept
  UnboundPorts unbound;
  auto keep = [&](const std::pair<std::string, uint16_t>& a) {
    error_code ec;
    auto ip = asio::ip::make_address(a.first, ec);
    if (!ec && std::find(open.begin(), open.end(), a) == open.end()) {
      open.push_back(a);
      shared.emplace_back(tcp::endpoint(ip, a.second), -1);
    }
  };
  for (const auto& a : wanted) {
    if (std::find(listening_.begin(), listening_.end(), a) != listening_.end()) {
      keep(a);
      continue;
    }
    error_code ec;
    auto ip = asio::ip::make_address(a.first, ec);
    int fd = -1;
    if (!ec) {
      ec = base::openListener(tcp::endpoint(ip, a.second), fd);
    }
    if (ec) {
      registry_->listener_failures.fetch_add(1, std::memory_order_relaxed);
      const std::string why = ec.category() == boost::system::system_category()
                                  ? base::bindFailure(ec.value(), a.second)
                                  : ec.message();
      auto same_port = std::find_if(listening_.begin(), listening_.end(),
                                    [&](const auto& l) { return l.second == a.second; });
      if (same_port != listening_.end()) {
        SLUICE_LOG(Error, "server", "cannot listen on {}:{}: {}; still listening on {}:{}", a.first,
                   a.second, why, same_port->first, same_port->second);
        keep(*same_port);
      } else {
        SLUICE_LOG(Error, "server", "cannot listen on {}:{}: {}", a.first, a.second, why);
        unbound[a.second] = why;
      }
      continue;
    }
    SLUICE_LOG(Info, "server", "listening on {}:{}", a.first, a.second);
    open.push_back(a);
    shared.emplace_back(tcp::endpoint(ip, a.second), fd);
  }
  for (auto& w : workers_) {
    std::vector<std::pair<tcp::endpoint, int>> mine;
    for (const auto& [ep, fd] : shared) {
      mine.emplace_back(ep, fd >= 0 ? ::dup(fd) : -1);
    }
    w->setListeners(std::move(mine));
  }
  for (const auto& [ep, fd] : shared) {
    if (fd >= 0) {
      ::close(fd);
    }
  }
  unbound_ = std::move(unbound);
  return open;
}

// One listening socket per address, shared by every worker through duplicates (no
// SO_REUSEPORT: another process cannot bind the same port and take part of the traffic).
// `probe` is the default listener's socket when it was opened early on port 0.
base::Result<void> Server::startWorkers(base::OwnedFd probe, const tcp::endpoint& probe_ep,
                                        const GenerationPtr& gen, uint64_t seed) {
  auto failed = [](const tcp::endpoint& ep, const std::string& why) {
    return base::Error{fmt::format("listener {}:{}: {}", ep.address().to_string(), ep.port(), why)};
  };
  std::vector<std::pair<tcp::endpoint, base::OwnedFd>> shared;
  // Gateway listeners that cannot bind are reported in the Gateway's status and retried at
  // the next reload; the only listener of a config file, or the picker's, stops the start.
  const bool tolerate = !config_.epp.enabled && snapshot() && snapshot()->routes->has_gateways;
  std::vector<std::pair<std::string, uint16_t>> bound;
  for (const auto& [addr, port] : listening_) {
    error_code ec;
    auto ip = asio::ip::make_address(addr, ec);
    if (ec) {
      return base::Error{fmt::format("listener address \"{}\" is invalid", addr)};
    }
    const tcp::endpoint ep(ip, port);
    if (probe.get() >= 0 && ep == probe_ep) {
      shared.emplace_back(ep, std::move(probe));
      bound.emplace_back(addr, port);
      continue;
    }
    int fd = -1;
    if (auto err = base::openListener(ep, fd)) {
      registry_->listener_failures.fetch_add(1, std::memory_order_relaxed);
      const std::string why = base::bindFailure(err.value(), port);
      if (!tolerate) {
        return failed(ep, why);
      }
      SLUICE_LOG(Error, "server", "cannot listen on {}:{}: {}", addr, port, why);
      unbound_[port] = why;
      continue;
    }
    shared.emplace_back(ep, base::OwnedFd(fd));
    bound.emplace_back(addr, port);
  }
  listening_ = std::move(bound);
  for (size_t i = 0; i < worker_count_; ++i) {
    auto w = std::make_unique<Worker>(i, *ctx_, seed + i * 0x9e3779b97f4a7c15ULL);
    w->publish(gen);
    for (const auto& [ep, fd] : shared) {
      const int copy = ::dup(fd.get());
      if (copy < 0) {
        return failed(ep, std::strerror(errno));
      }
      if (auto err = w->listen(ep, copy)) {
        return failed(ep, err.message());
      }
    }
    workers_.push_back(std::move(w));
  }
  return {};
}

// `sluice epp`: the ext_proc port is the default listener (port 0 picks a free one), the
// health port is picked now when 0, and TLS contexts come from the certificate files.
base::Result<void> Server::prepareEpp() {
  auto& epp = config_.epp;
  config_.listener = epp.grpc;
  health_port_ = epp.health.port;
  if (health_port_ == 0) {
    error_code ec;
    auto ip = asio::ip::make_address(epp.health.address, ec);
    int fd = -1;
    if (ec || base::openListener(tcp::endpoint(ip, 0), fd)) {
      return base::Error{fmt::format("health listener {}:0 cannot be opened", epp.health.address)};
    }
    base::OwnedFd probe(fd);
    tcp::endpoint ep;
    socklen_t len = static_cast<socklen_t>(ep.capacity());
    ::getsockname(fd, ep.data(), &len);
    ep.resize(len);
    health_port_ = ep.port();
  }
  if (!epp.tls_cert_file.empty()) {
    auto tls = makeGrpcTlsContext(epp.tls_cert_file, epp.tls_key_file);
    if (!tls) {
      return base::Error{tls.error().message};
    }
    ctx_->epp_tls = *tls;
  }
  ctx_->ready = [this] { return ready(); };
  return {};
}

base::Result<void> Server::start() {
  error_code ec;
  if (!access_log_->openError().empty()) {
    return base::Error{"access_log.path: " + access_log_->openError()};
  }
  if (config_.epp.enabled) {
    if (auto r = prepareEpp(); !r) {
      return r;
    }
  }
  auto address = asio::ip::make_address(config_.listener.address, ec);
  if (ec) {
    return base::Error{
        fmt::format("listener.address: invalid address \"{}\"", config_.listener.address)};
  }
  // Port 0 (tests): the default listener's socket is opened now, on a free port.
  base::OwnedFd probe;
  tcp::endpoint probe_ep;
  default_port_ = config_.listener.port;
  if (default_port_ == 0) {
    int fd = -1;
    if (auto err = base::openListener(tcp::endpoint(address, 0), fd)) {
      return base::Error{fmt::format("listener {}:0: {}", config_.listener.address, err.message())};
    }
    probe = base::OwnedFd(fd);
    socklen_t len = static_cast<socklen_t>(probe_ep.capacity());
    ::getsockname(fd, probe_ep.data(), &len);
    probe_ep.resize(len);
    default_port_ = probe_ep.port();
  }
  if (!config_.manifests.empty()) {
    source_ =
        std::make_unique<config::ManifestDirectory>(config_.manifests, config_.manifests_debounce);
    auto scanned = source_->scan();
    if (!scanned) {
      return base::Error{scanned.error().message};
    }
    std::lock_guard<std::mutex> lock(snapshot_mu_);
    objects_ = std::make_shared<config::ObjectStore>(source_->store());
  }
  if (config_.kubernetes.enabled()) {
    if (auto r = openApiServer(); !r) {
      return r;
    }
  }
  if (const auto& url = config_.auth.jwt.jwks_url; !url.empty()) {
    // The first keys before serving (bounded); then refreshed in the background.
    auto body = JwksFetcher::fetch(url, std::chrono::milliseconds(2000));
    if (body) {
      jwks_ = *body;
    } else {
      SLUICE_LOG(Error, "auth", "JWKS {}: {}; tokens are refused until it loads", url,
                 body.error().message);
    }
  }
  if (auto r = reload(config_, "start"); !r) {
    return r;
  }
  const uint64_t seed = seed_ ? *seed_ : base::osSeed();
  const GenerationPtr gen = [this] {
    std::lock_guard<std::mutex> lock(snapshot_mu_);
    return generation_;
  }();
  if (auto r = startWorkers(std::move(probe), probe_ep, gen, seed); !r) {
    return r;
  }
  if (std::lock_guard<std::mutex> lock(snapshot_mu_); !unbound_.empty() && api_source_) {
    api_source_->publishStatus(statuses(*snapshot_));
  }
  listener_port_ = default_port_;
  auto metrics_port = control_->listen(config_.metrics, false);
  if (!metrics_port) {
    return base::Error{"metrics listener " + metrics_port.error().message};
  }
  metrics_port_ = *metrics_port;
  auto admin_port = control_->listen(config_.admin, true);
  if (!admin_port) {
    return base::Error{"admin listener " + admin_port.error().message};
  }
  admin_port_ = *admin_port;
  for (auto& w : workers_) {
    w->start();
  }
  if (fetcher_) {
    fetcher_->start();
  }
  if (tracer_) {
    tracer_->start();
  }
  control_->start();
  started_ = true;
  if (const auto& url = config_.auth.jwt.jwks_url; !url.empty()) {
    jwks_fetcher_ = std::make_unique<JwksFetcher>(
        url, config_.auth.jwt.jwks_refresh, std::chrono::milliseconds(5000),
        [this](const std::string& jwks) { applyJwks(jwks); });
    jwks_fetcher_->start();
  }
  const std::array<config::ConfigSource*, 2> sources{source_.get(), api_source_.get()};
  for (config::ConfigSource* source : sources) {
    if (source == nullptr) {
      continue;
    }
    auto r = source->start(
        [this](const config::ObjectStore& store, const std::vector<config::StoreEvent>& events) {
          applyObjects(store, events);
        });
    if (!r) {
      return r;
    }
  }
  std::string ports;
  for (const auto& [addr, port] : listening_) {
    ports += fmt::format("{}{}:{}", ports.empty() ? "" : ", ", addr, port);
  }
  SLUICE_LOG(Info, "server", "listening on {} with {} workers (admin {}, metrics {})", ports,
             worker_count_, admin_port_, metrics_port_);
  SLUICE_LOG(Info, "server", "{}", loadedSummary(*snapshot()));
  return {};
}

void Server::handleSignals() {
  control_->handleSignals();
}

bool Server::draining() const {
  return ctx_->draining.load();
}
bool Server::ready() const {
  if (!started_.load() || draining()) {
    return false;
  }
  if (api_source_ && !api_source_->synced()) {
    return false;  // routes would be missing
  }
  return !api_source_ || !fetcher_ || fetcher_->firstRoundDone();
}

base::Result<void> Server::openApiServer() {
  const auto& k = config_.kubernetes;
  auto env = [](const char* name) {
    const char* v = std::getenv(name);
    return std::string(v ? v : "");
  };
  auto access = k.kubeconfig.empty() ? k8s::inClusterAccess(env)
                                     : k8s::loadKubeconfig(k.kubeconfig, k.context);
  if (!access) {
    return base::Error{access.error().message};
  }
  k8s::ApiServerSource::Options o;
  o.config = k;
  auto& le = o.config.leader_election;
  if (le.lease_namespace.empty()) {
    le.lease_namespace = !env("POD_NAMESPACE").empty() ? env("POD_NAMESPACE")
                         : !access->ns.empty()         ? access->ns
                                                       : "default";
  }
  if (le.identity.empty()) {
    le.identity = env("POD_NAME");
  }
  if (le.identity.empty()) {
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    le.identity = fmt::format("{}-{}", host, getpid());
  }
  std::vector<std::string> addresses = k.gateway_addresses;
  if (addresses.empty() && !env("POD_IP").empty()) {
    addresses.push_back(env("POD_IP"));
  }
  for (const auto& a : addresses) {
    error_code ec;
    asio::ip::make_address(a, ec);
    o.addresses.emplace_back(ec ? "Hostname" : "IPAddress", a);
  }
  for (const auto& key : config_.auth.api_keys) {
    if (!key.secret.name.empty()) {
      o.config_secrets.emplace_back(key.secret.ns, key.secret.name);
    }
  }
  o.access = std::move(*access);
  o.time = &time_;
  o.seed = seed_ ? *seed_ : base::osSeed();
  api_source_ = std::make_unique<k8s::ApiServerSource>(std::move(o));
  if (auto r = api_source_->open(); !r) {
    return r;
  }
  if (!api_source_->waitSynced(std::chrono::seconds(5))) {
    SLUICE_LOG(Warn, "k8s", "not every resource has synced yet; serving what arrived, not ready");
  }
  auto store = std::make_shared<config::ObjectStore>(api_source_->copyStore());
  std::lock_guard<std::mutex> lock(snapshot_mu_);
  objects_ = std::move(store);
  return {};
}
std::string Server::decisionsJson() const {
  std::string out = "{\"decisions\":[";
  bool first = true;
  for (const auto& w : workers_) {
    w->appendDecisionsJson(out, first);
  }
  return out + "]}\n";
}

int64_t Server::openConnections() const {
  return ctx_->connections.load();
}

void Server::drainAndStop() {
  if (ctx_->draining.exchange(true)) {
    wait();
    return;
  }
  for (auto& w : workers_) {
    w->stopAccepting();
  }
  auto snap = snapshot();
  const auto deadline = std::chrono::steady_clock::now() +
                        (snap ? snap->config.timeouts.drain : std::chrono::milliseconds(30000));
  while (ctx_->connections.load() > 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (ctx_->connections.load() > 0) {
    // The deadline: what still talks to an upstream is cut, and each gets its ending (an SSE
    // error event and the last chunk, or a 503) within a short grace before the loops stop.
    const uint64_t before = registry_->drain_cut.load();
    for (auto& w : workers_) {
      w->cutExchanges(registry_->drain_cut);
    }
    const auto grace = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    while (ctx_->connections.load() > 0 && std::chrono::steady_clock::now() < grace) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    const uint64_t cut = registry_->drain_cut.load() - before;
    drain_cut_short_ = true;
    SLUICE_LOG(Warn, "server",
               "drain deadline reached: {} request(s) and stream(s) cut, {} connection(s) closed",
               cut, ctx_->connections.load());
  } else {
    SLUICE_LOG(Info, "server", "drained; stopping");
  }
  stopAll();
}

void Server::stopAll() {
  std::lock_guard<std::mutex> lock(stop_mu_);
  if (stopped_) {
    return;
  }
  ctx_->draining = true;
  if (fetcher_) {
    fetcher_->stop();
  }
  for (auto& w : workers_) {
    w->stop();
  }
  control_->stop();
  access_log_->flush();
  if (tracer_) {
    tracer_->stop();  // the spans of the last requests go out
  }
  stopped_ = true;  // last: wait() returns only once everything is down
}

void Server::wait() {
  while (true) {
    {
      std::lock_guard<std::mutex> lock(stop_mu_);
      if (stopped_) {
        return;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

}  // namespace sluice::server
