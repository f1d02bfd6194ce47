#include "k8s/api_source.h"

#include <future>

#include <fmt/core.h>

#include "base/log.h"
#include "k8s/convert.h"

namespace sluice::k8s {

using json = nlohmann::json;

namespace {

template <class F>
auto runOn(asio::io_context& ioc, F f) {
  std::promise<decltype(f())> done;
  auto future = done.get_future();
  asio::post(ioc, [&] { done.set_value(f()); });
  return future.get();
}

}  // namespace

ApiServerSource::ApiServerSource(Options options) : options_(std::move(options)) {}

ApiServerSource::~ApiServerSource() {
  stop();
}

void ApiServerSource::addInformer(const ResourceType& type, Informer::Options io) {
  auto w = std::make_unique<Watched>();
  w->type = &type;
  w->priority = watched_.size();
  Watched* raw = w.get();
  Informer::Handler h;
  h.replace = [this, raw](const ResourceType&, std::vector<json>&& items) {
    onReplace(*raw, std::move(items));
  };
  h.event = [this, raw](const ResourceType&, std::string_view t, json&& item) {
    onEvent(*raw, t, item);
  };
  h.state = [this](const ResourceType& t, InformerState s, const std::string& detail) {
    if (s == InformerState::Synced) {
      SLUICE_LOG(Info, "k8s", "{}: synced", t.id());
    } else {
      SLUICE_LOG(Warn, "k8s", "{}: {}{}{}", t.id(), stateName(s), detail.empty() ? "" : ": ",
                 detail);
    }
    checkSynced();
  };
  w->informer = std::make_unique<Informer>(*client_, type, std::move(io), std::move(h),
                                           options_.seed + watched_.size() * 7919);
  asio::co_spawn(ioc_, w->informer->run(), asio::detached);
  watched_.push_back(std::move(w));
}

base::Result<void> ApiServerSource::open() {
  const auto& k = options_.config;
  client_ = std::make_unique<ApiClient>(ioc_, options_.access, k.qps, k.burst);
  if (auto r = client_->init(); !r) {
    return r;
  }
  std::map<config::Kind, int> kinds;
  for (const auto& t : watchedResources()) {
    ++kinds[t.kind];
  }
  for (const auto& t : watchedResources()) {
    Informer::Options io;
    io.ns = t.namespaced ? k.ns : std::string();
    if (t.kind == config::Kind::Namespace && !k.ns.empty()) {
      io.field_selector = "metadata.name=" + k.ns;
    }
    addInformer(t, std::move(io));
    watched_.back()->shared_kind = kinds[t.kind] > 1;
  }
  debounce_ = std::make_unique<SteadyTimer>(ioc_);
  metrics_timer_ = std::make_unique<SteadyTimer>(ioc_);
  const auto& le = k.leader_election;
  if (k.write_status && le.enabled) {
    LeaseConfig lc{le.lease_name,     le.lease_namespace, le.identity,
                   le.lease_duration, le.renew_deadline,  le.retry_period};
    elector_ = std::make_unique<LeaderElector>(*client_, lc, *options_.time, [this](bool leader) {
      leader_ = leader;
      if (leader) {
        for (const auto& [key, _] : statuses_) {
          dirty_status_.insert(key);
        }
        asio::co_spawn(ioc_, writeStatuses(), asio::detached);
      }
    });
    asio::co_spawn(ioc_, elector_->run(), asio::detached);
  } else if (k.write_status) {
    leader_ = true;  // a single replica: always the writer
  }
  asio::post(ioc_, [this] {
    updateSecretWatches();
    renderMetrics();
  });
  thread_ = std::thread([this] {
    auto guard = asio::make_work_guard(ioc_);
    ioc_.run();
  });
  SLUICE_LOG(Info, "k8s", "watching {} ({}), {} resources{}", options_.access.server,
             options_.access.origin, watchedResources().size(),
             k.ns.empty() ? "" : fmt::format(" in namespace {}", k.ns));
  return {};
}

void ApiServerSource::checkSynced() {
  bool all = true;
  for (const auto& w : watched_) {
    if (w->type->kind != config::Kind::Secret) {
      all = all && w->informer->synced();
    }
  }
  synced_ = all;
}

bool ApiServerSource::waitSynced(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!synced_ && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return synced_;
}

config::ObjectStore ApiServerSource::copyStore() {
  return runOn(ioc_, [this] {
    flushed_generation_ = store_.generation();
    pending_.clear();       // the copy holds them: the first flush carries only what came after
    updateSecretWatches();  // what the synced objects reference; they arrive in a later batch
    return store_;
  });
}

base::Result<void> ApiServerSource::start(OnChange on_change) {
  asio::post(ioc_, [this, cb = std::move(on_change)]() mutable {
    on_change_ = std::move(cb);
    if (store_.generation() != flushed_generation_) {
      flush();  // what changed between the copy and now
    }
  });
  return {};
}

void ApiServerSource::stop() {
  if (!thread_.joinable()) {
    return;
  }
  stopping_ = true;
  std::promise<void> released;
  auto done = released.get_future();
  asio::post(ioc_, [this, &released] {
    for (auto& w : watched_) {
      w->informer->stop();
    }
    if (elector_) {
      elector_->stop();
    }
    asio::co_spawn(ioc_, finish(&released), asio::detached);
  });
  done.wait_for(std::chrono::seconds(5));
  ioc_.stop();
  thread_.join();
}

awaitable<void> ApiServerSource::finish(std::promise<void>* done) {
  if (elector_) {
    co_await elector_->release();
  }
  client_->shutdown();
  done->set_value();
}

void ApiServerSource::observe(const ResourceType& type, const std::string& key, const json& item) {
  if (!type.writes_status) {
    return;
  }
  Observed o;
  o.type = &type;
  const json meta = item.value("metadata", json::object());
  auto str = [&](const char* k) {
    auto it = meta.is_object() ? meta.find(k) : meta.end();
    return meta.is_object() && it != meta.end() && it->is_string() ? it->get<std::string>()
                                                                   : std::string();
  };
  o.ns = str("namespace");
  o.name = str("name");
  o.resource_version = str("resourceVersion");
  if (auto g = meta.is_object() ? meta.find("generation") : meta.end();
      meta.is_object() && g != meta.end() && g->is_number_integer()) {
    o.generation = g->get<int64_t>();
  }
  o.status = item.value("status", json());
  const json spec = item.value("spec", json::object());
  if (spec.is_object()) {
    o.parent_refs = spec.value("parentRefs", json());
    o.listeners = spec.value("listeners", json());
  }
  // A new generation must be acknowledged (observedGeneration) even when nothing else moved.
  const bool status_moved = [&] {
    auto it = observed_.find(key);
    return it == observed_.end() || it->second.status != o.status ||
           it->second.generation != o.generation;
  }();
  observed_[key] = std::move(o);
  if (status_moved && statuses_.count(key) > 0) {
    dirty_status_.insert(key);  // someone else wrote it, or our own write came back
  }
}

bool ApiServerSource::preferredHolds(const Watched& w, const std::string& key) const {
  for (const auto& other : watched_) {
    if (other->priority < w.priority && other->keys.count(key) > 0) {
      return true;  // a preferred resource (InferencePool v1) holds this name
    }
  }
  return false;
}

void ApiServerSource::apply(Watched& w, const json& item) {
  auto conv = convertObject(*w.type, item);
  if (conv.key.empty()) {
    return;
  }
  const std::string source = "api:" + conv.key;
  if (!conv.object) {
    // Invalid: reported (log, /debug/status and the object's own status), and the last good
    // version, if any, stays.
    for (const auto& e : conv.errors) {
      SLUICE_LOG(Warn, "k8s", "{}: {}", conv.key, e.message);
    }
    store_.setErrors(source, std::move(conv.errors));
    if (!preferredHolds(w, conv.key)) {
      observe(*w.type, conv.key, item);
    }
    changed({config::StoreEvent::Type::Updated, conv.key});
    return;
  }
  store_.setErrors(source, {});
  w.keys.insert(conv.key);
  if (w.shared_kind) {
    w.shadow[conv.key] = *conv.object;
  }
  if (preferredHolds(w, conv.key)) {
    return;
  }
  observe(*w.type, conv.key, item);
  changed(store_.put(std::move(*conv.object)));
}

void ApiServerSource::remove(Watched& w, const std::string& key) {
  const bool held = w.keys.erase(key) > 0;
  w.shadow.erase(key);
  if (!held) {
    for (const auto& other : watched_) {
      if (other->keys.count(key) > 0) {
        // Another resource serves this name (the invalid version here never replaced it).
        store_.setErrors("api:" + key, {});
        changed({config::StoreEvent::Type::Updated, key});
        return;
      }
    }
  } else {
    for (const auto& other : watched_) {
      if (other.get() != &w && other->shared_kind && other->type->kind == w.type->kind) {
        if (auto it = other->shadow.find(key); it != other->shadow.end()) {
          changed(store_.put(it->second));  // the other version takes over
          return;
        }
      }
    }
  }
  observed_.erase(key);
  statuses_.erase(key);
  dirty_status_.erase(key);
  store_.setErrors("api:" + key, {});
  changed({config::StoreEvent::Type::Deleted, key});
  store_.erase(key);
}

void ApiServerSource::onReplace(Watched& w, std::vector<json>&& items) {
  std::unordered_set<std::string> present;
  for (const auto& item : items) {
    present.insert(storeKey(*w.type, item));
    apply(w, item);
  }
  std::vector<std::string> gone;
  for (const auto& key : w.keys) {
    if (present.count(key) == 0) {
      gone.push_back(key);
    }
  }
  for (const auto& key : gone) {
    remove(w, key);
  }
  checkSynced();
}

void ApiServerSource::onEvent(Watched& w, std::string_view type, const json& item) {
  if (type == "DELETED") {
    remove(w, storeKey(*w.type, item));
  } else {
    apply(w, item);
  }
}

void ApiServerSource::changed(config::StoreEvent event) {
  pending_.push_back(std::move(event));
  if (flush_armed_ || !on_change_) {
    return;
  }
  // The debounce runs from the first event of a burst, so no change waits longer than it.
  flush_armed_ = true;
  debounce_->expires_after(options_.config.debounce);
  debounce_->async_wait([this](const error_code& ec) {
    if (!ec) {
      flush();
    }
  });
}

void ApiServerSource::flush() {
  flush_armed_ = false;
  if (!on_change_ || stopping_) {
    return;
  }
  auto events = std::move(pending_);
  pending_.clear();
  ++flushes_;
  flushed_generation_ = store_.generation();
  on_change_(store_, events);
  updateSecretWatches();
}

void ApiServerSource::updateSecretWatches() {
  std::set<std::pair<std::string, std::string>> wanted(options_.config_secrets.begin(),
                                                       options_.config_secrets.end());
  // Only Gateways and ExternalModelProviders reference Secrets: their two ranges of the store
  // (keys are Kind/ns/name), not all of it, on every batch.
  std::vector<const config::Object*> referrers;
  for (std::string_view kind : {"Gateway/", "ExternalModelProvider/"}) {
    const auto& objects = store_.objects();
    for (auto it = objects.lower_bound(std::string(kind));
         it != objects.end() && it->first.compare(0, kind.size(), kind) == 0; ++it) {
      referrers.push_back(it->second.get());
    }
  }
  for (const config::Object* ptr : referrers) {
    const config::Object& obj = *ptr;
    if (const auto* gw = std::get_if<config::Gateway>(&obj.spec)) {
      for (const auto& l : gw->listeners) {
        for (const auto& ref : l.certificate_refs) {
          if (ref.group.empty() && ref.kind == "Secret") {
            wanted.emplace(ref.ns.empty() ? obj.meta.ns : ref.ns, ref.name);
          }
        }
      }
    } else if (const auto* p = std::get_if<config::ExternalModelProvider>(&obj.spec)) {
      if (!p->secret_name.empty()) {
        wanted.emplace(obj.meta.ns, p->secret_name);
      }
    }
  }
  for (auto it = secret_watches_.begin(); it != secret_watches_.end();) {
    if (wanted.count(it->first) > 0) {
      ++it;
      continue;
    }
    Watched* w = it->second;
    w->informer->stop();
    const std::vector<std::string> keys(w->keys.begin(), w->keys.end());
    for (const auto& key : keys) {
      remove(*w, key);
    }
    for (auto& owned : watched_) {
      if (owned.get() == w) {
        retired_.push_back(std::move(owned));
      }
    }
    std::erase(watched_, nullptr);
    it = secret_watches_.erase(it);
  }
  for (const auto& ref : wanted) {
    if (secret_watches_.count(ref) > 0 || ref.second.empty()) {
      continue;
    }
    if (!options_.config.ns.empty() && ref.first != options_.config.ns) {
      continue;  // outside the namespace the router may read
    }
    Informer::Options io;
    io.ns = ref.first;
    io.field_selector = "metadata.name=" + ref.second;
    addInformer(secretResource(), std::move(io));
    secret_watches_[ref] = watched_.back().get();
  }
}

namespace {

bool sameConditions(const std::vector<router::Condition>& a,
                    const std::vector<router::Condition>& b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].type != b[i].type || a[i].status != b[i].status || a[i].reason != b[i].reason ||
        a[i].message != b[i].message) {
      return false;
    }
  }
  return true;
}

bool sameStatus(const router::ObjectStatus& a, const router::ObjectStatus& b) {
  if (!sameConditions(a.conditions, b.conditions) || a.parents.size() != b.parents.size() ||
      a.listeners.size() != b.listeners.size()) {
    return false;
  }
  for (size_t i = 0; i < a.parents.size(); ++i) {
    if (a.parents[i].ref != b.parents[i].ref ||
        !sameConditions(a.parents[i].conditions, b.parents[i].conditions)) {
      return false;
    }
  }
  for (size_t i = 0; i < a.listeners.size(); ++i) {
    if (a.listeners[i].name != b.listeners[i].name ||
        a.listeners[i].attached_routes != b.listeners[i].attached_routes ||
        !sameConditions(a.listeners[i].conditions, b.listeners[i].conditions)) {
      return false;
    }
  }
  return true;
}

}  // namespace

void ApiServerSource::publishStatus(std::vector<router::ObjectStatus> status, bool complete) {
  if (!options_.config.write_status) {
    return;
  }
  auto copy = std::make_shared<std::vector<router::ObjectStatus>>(std::move(status));
  asio::post(ioc_, [this, copy, complete] {
    std::unordered_set<std::string> seen;
    for (auto& st : *copy) {
      if (observed_.count(st.key) == 0) {
        continue;  // not a kind whose status we write, or not from the API server
      }
      seen.insert(st.key);
      auto it = statuses_.find(st.key);
      if (it == statuses_.end() || !sameStatus(it->second, st)) {
        dirty_status_.insert(st.key);
        statuses_[st.key] = std::move(st);
      }
    }
    for (auto it = statuses_.begin(); complete && it != statuses_.end();) {
      it = seen.count(it->first) > 0 ? std::next(it) : statuses_.erase(it);
    }
    if (leader_ && !writing_ && !dirty_status_.empty()) {
      asio::co_spawn(ioc_, writeStatuses(), asio::detached);
    }
  });
}

bool ApiServerSource::ourGateway(std::string_view ns, std::string_view name) const {
  const auto* gw = store_.find(fmt::format("Gateway/{}/{}", ns, name));
  const auto* spec = gw ? std::get_if<config::Gateway>(&gw->spec) : nullptr;
  if (spec == nullptr) {
    return false;
  }
  const auto* cls = store_.find("GatewayClass/" + spec->gateway_class);
  const auto* gc = cls ? std::get_if<config::GatewayClass>(&cls->spec) : nullptr;
  return gc != nullptr && gc->controller_name == options_.config.controller_name;
}

awaitable<void> ApiServerSource::writeStatuses() {
  if (writing_) {
    co_return;
  }
  writing_ = true;
  while (!dirty_status_.empty() && leader_ && !stopping_) {
    const std::string key = *dirty_status_.begin();
    dirty_status_.erase(dirty_status_.begin());
    if (!co_await writeOne(key)) {
      dirty_status_.insert(key);  // retried after a pause
      SteadyTimer pause(ioc_, std::chrono::seconds(1));
      error_code ec;
      co_await pause.async_wait(asio::redirect_error(use_awaitable, ec));
    }
  }
  writing_ = false;
}

awaitable<bool> ApiServerSource::writeOne(const std::string& key) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    auto st = statuses_.find(key);
    auto obs = observed_.find(key);
    if (st == statuses_.end() || obs == observed_.end()) {
      co_return true;  // gone meanwhile
    }
    StatusContext ctx;
    ctx.controller_name = options_.config.controller_name;
    ctx.now = rfc3339(std::chrono::duration_cast<std::chrono::seconds>(
                          options_.time->systemNow().time_since_epoch())
                          .count());
    ctx.addresses = options_.addresses;
    ctx.our_gateway = [this](std::string_view ns, std::string_view name) {
      return ourGateway(ns, name);
    };
    auto desired = desiredStatus(st->second, obs->second, ctx);
    if (!desired || !statusDiffers(*desired, obs->second.status)) {
      co_return true;
    }
    const ResourceType& type = *obs->second.type;
    const std::string path = type.objectPath(obs->second.ns, obs->second.name, "status");
    auto res = co_await client_->request("PATCH", path,
                                         statusPatch(*desired, obs->second.resource_version),
                                         "application/merge-patch+json");
    if (res.ok()) {
      ++status_writes_;
      json updated = json::parse(res.body, nullptr, false);
      if (updated.is_object()) {
        observe(type, key, updated);
        dirty_status_.erase(key);
      }
      co_return true;
    }
    if (res.status == 404) {
      co_return true;  // deleted; the watch will say so
    }
    if (res.status != 409) {
      ++status_errors_;
      SLUICE_LOG(Warn, "k8s", "status of {}: {}", key, res.describe());
      co_return false;
    }
    // Conflict: someone changed the object; read it again and recompute.
    ++status_conflicts_;
    auto got = co_await client_->request("GET", type.objectPath(obs->second.ns, obs->second.name));
    json fresh = got.ok() ? json::parse(got.body, nullptr, false) : json();
    if (!fresh.is_object()) {
      co_return got.status == 404;
    }
    observe(type, key, fresh);
  }
  co_return false;
}

void ApiServerSource::renderMetrics() {
  std::string out;
  out +=
      "# HELP sluice_kubernetes_synced Whether every watch has listed once (1) or not yet (0).\n"
      "# TYPE sluice_kubernetes_synced gauge\n";
  out += fmt::format("sluice_kubernetes_synced {}\n", synced_ ? 1 : 0);
  out +=
      "# HELP sluice_kubernetes_leader Whether this replica holds the status-writer lease.\n"
      "# TYPE sluice_kubernetes_leader gauge\n";
  out += fmt::format("sluice_kubernetes_leader {}\n", leader_ ? 1 : 0);
  out +=
      "# HELP sluice_kubernetes_objects Objects in the store from the API server.\n"
      "# TYPE sluice_kubernetes_objects gauge\n";
  out += fmt::format("sluice_kubernetes_objects {}\n", store_.objects().size());
  struct Family {
    const char* name;
    const char* help;
    uint64_t InformerStats::*field;
  };
  static constexpr Family kFamilies[] = {
      {"sluice_kubernetes_lists_total", "Full lists (first sync and relists).",
       &InformerStats::lists},
      {"sluice_kubernetes_relists_total", "Relists after a 410 Gone or a lost watch.",
       &InformerStats::relists},
      {"sluice_kubernetes_watches_total", "Watch requests made (each resume counts).",
       &InformerStats::watches},
      {"sluice_kubernetes_watch_events_total", "Watch events received.", &InformerStats::events},
      {"sluice_kubernetes_errors_total", "Failed lists and watches.", &InformerStats::errors},
  };
  for (const auto& f : kFamilies) {
    out += fmt::format("# HELP {} {}\n# TYPE {} counter\n", f.name, f.help, f.name);
    std::map<std::string, uint64_t> by_resource;
    for (const auto* list : {&watched_, &retired_}) {
      for (const auto& w : *list) {
        by_resource[w->type->id()] += w->informer->stats().*f.field;
      }
    }
    for (const auto& [id, n] : by_resource) {
      out += fmt::format("{}{{resource=\"{}\"}} {}\n", f.name, id, n);
    }
  }
  out +=
      "# HELP sluice_kubernetes_status_writes_total Status patches, by outcome.\n"
      "# TYPE sluice_kubernetes_status_writes_total counter\n";
  out += fmt::format("sluice_kubernetes_status_writes_total{{result=\"ok\"}} {}\n", status_writes_);
  out += fmt::format("sluice_kubernetes_status_writes_total{{result=\"conflict\"}} {}\n",
                     status_conflicts_);
  out +=
      fmt::format("sluice_kubernetes_status_writes_total{{result=\"error\"}} {}\n", status_errors_);
  out +=
      "# HELP sluice_kubernetes_rebuilds_total Batches of changes handed to the router.\n"
      "# TYPE sluice_kubernetes_rebuilds_total counter\n";
  out += fmt::format("sluice_kubernetes_rebuilds_total {}\n", flushes_);
  out +=
      "# HELP sluice_kubernetes_requests_total Requests sent to the API server.\n"
      "# TYPE sluice_kubernetes_requests_total counter\n";
  out += fmt::format("sluice_kubernetes_requests_total {}\n", client_->requests());
  {
    std::lock_guard<std::mutex> lock(metrics_mu_);
    metrics_text_ = std::move(out);
  }
  metrics_timer_->expires_after(std::chrono::seconds(1));
  metrics_timer_->async_wait([this](const error_code& ec) {
    if (!ec && !stopping_) {
      renderMetrics();
    }
  });
}

void ApiServerSource::appendMetrics(std::string& out) const {
  std::lock_guard<std::mutex> lock(metrics_mu_);
  out += metrics_text_;
}

}  // namespace sluice::k8s
