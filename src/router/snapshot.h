#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/result.h"
#include "config/router_config.h"

namespace sluice::config {
class ObjectStore;
}
namespace sluice::router {

class RouteTable;

// Live, cross-worker state of one endpoint. Stable across snapshots (same address, same object)
// so in-flight counts survive a config change.
struct EndpointState {
  std::atomic<int64_t> in_flight{0};         // requests sent, not yet complete
  std::atomic<int64_t> in_flight_tokens{0};  // their prompt plus expected output tokens
  std::atomic<uint64_t> last_cold_pick{0};   // sequence number of the last cold-prefix pick
  // Outlier detection: consecutive failed attempts eject the endpoint for a back-off period that
  // doubles with each ejection (up to a cap) and resets once it serves again.
  std::atomic<uint32_t> consecutive_failures{0};
  std::atomic<uint32_t> ejections{0};
  std::atomic<int64_t> ejected_until_ns{0};  // steady-clock nanoseconds

  // Returns true if this failure ejected the endpoint.
  bool onFailure(int64_t now_ns, uint32_t threshold, int64_t base_ns, int64_t max_ns) {
    if (consecutive_failures.fetch_add(1, std::memory_order_relaxed) + 1 < threshold) {
      return false;
    }
    consecutive_failures.store(0, std::memory_order_relaxed);
    const uint32_t n = ejections.fetch_add(1, std::memory_order_relaxed);
    int64_t backoff = base_ns;
    for (uint32_t i = 0; i < n && backoff < max_ns; ++i) {
      backoff *= 2;
    }
    ejected_until_ns.store(now_ns + std::min(backoff, max_ns), std::memory_order_relaxed);
    return true;
  }
  void onSuccess() {
    consecutive_failures.store(0, std::memory_order_relaxed);
    if (ejections.load(std::memory_order_relaxed) != 0) {
      ejections.store(0, std::memory_order_relaxed);
    }
  }
  bool ejected(int64_t now_ns) const {
    return ejected_until_ns.load(std::memory_order_relaxed) > now_ns;
  }
};

// The load a request puts on an endpoint, counted from dispatch until it completes, fails or
// the client goes away (release is idempotent; moving transfers it).
class Reservation {
 public:
  Reservation() = default;
  Reservation(EndpointState* state, int64_t tokens) : state_(state), tokens_(tokens) {
    state_->in_flight.fetch_add(1, std::memory_order_relaxed);
    state_->in_flight_tokens.fetch_add(tokens_, std::memory_order_relaxed);
  }
  Reservation(Reservation&& o) noexcept : state_(o.state_), tokens_(o.tokens_) {
    o.state_ = nullptr;
  }
  Reservation& operator=(Reservation&& o) noexcept {
    if (this != &o) {
      release();
      state_ = o.state_;
      tokens_ = o.tokens_;
      o.state_ = nullptr;
    }
    return *this;
  }
  Reservation(const Reservation&) = delete;
  Reservation& operator=(const Reservation&) = delete;
  ~Reservation() { release(); }
  void release() {
    if (state_ != nullptr) {
      state_->in_flight.fetch_sub(1, std::memory_order_relaxed);
      state_->in_flight_tokens.fetch_sub(tokens_, std::memory_order_relaxed);
      state_ = nullptr;
    }
  }

 private:
  EndpointState* state_ = nullptr;
  int64_t tokens_ = 0;
};

// An endpoint resolved to an IP on the control thread: workers never resolve names.
struct Endpoint {
  std::string address;  // "ip:port" as shown in logs and metrics
  bool v6 = false;
  std::array<uint8_t, 16> ip{};
  uint16_t port = 0;
  std::shared_ptr<EndpointState> state;
};

// A model rewrite rule for one pool (InferenceModelRewrite, legacy InferenceModel).
struct ModelRewrite {
  std::string name;  // ns/name of the object that provided it
  std::vector<std::pair<std::string, uint32_t>> targets;
  uint64_t total_weight = 0;
};

// An ExternalModelProvider, resolved: where to send requests and the credential to add.
struct ProviderTarget {
  enum class Type { OpenAI, Anthropic };
  Type type = Type::OpenAI;
  std::string host;  // from baseURL; the TLS server name
  uint16_t port = 443;
  std::string authority;  // the Host header: host ([v6] bracketed), ":port" unless 443
  std::string base_path;  // baseURL's path without a trailing '/', may be empty
  bool insecure_skip_verify = false;
  std::string auth_header;  // "Authorization" (Bearer) | "x-api-key" (APIKey) | "" (none)
  std::string auth_value;   // "Bearer <token>" or the key
  std::vector<std::pair<std::string, std::string>> headers;  // static, non-secret
  std::string pool_key;  // host:port plus the verification mode: connections are kept by it
};

struct ProviderUrl {
  std::string host;
  uint16_t port = 443;
  std::string path;  // without a trailing '/'; may be empty
};

// An https:// base URL: host (DNS name or IP, IPv6 in brackets), optional port, optional path.
// No user info, query or fragment.
base::Result<ProviderUrl> parseProviderUrl(std::string_view url);

struct Backend {
  std::string model;           // the name clients use (models: config) or the object key
  std::string upstream_model;  // rewrite target; empty = none
  std::string engine;          // metric names to read (vllm, sglang, ...)
  std::vector<Endpoint> endpoints;
  // From manifests.
  std::string kind;   // InferencePool | ModelServer | Service | ExternalModelProvider | "" (config)
  std::string name;   // ns/name
  std::string error;  // set when requests cannot be served (e.g. an unsupported backend kind)
  std::unordered_map<std::string, std::vector<ModelRewrite>> exact_rewrites;  // oldest first
  std::vector<ModelRewrite> catch_all_rewrites;
  std::unordered_map<std::string, int32_t> objectives;      // InferenceObjective name -> priority
  std::unordered_map<std::string, int32_t> model_priority;  // legacy InferenceModel criticality
  std::chrono::milliseconds timeout{0};                     // ModelServer trafficPolicy.timeout
  std::optional<uint32_t> retry_attempts;                   // ModelServer trafficPolicy.retry
  std::chrono::milliseconds retry_interval{0};              // ...and its retryInterval
  bool h2c = false;                                         // appProtocol kubernetes.io/h2c
  bool tls = false;       // ModelServer workloadPort.protocol https: HTTP/1.1 over TLS
  std::string scheduler;  // annotation sluice.dev/scheduler: a preset or profile; "" = default
  std::shared_ptr<const ProviderTarget> provider;  // set for ExternalModelProvider backends
  uint16_t service_port = 0;                       // Service backends: the Service port
  // An InferencePool's endpointPickerRef, resolved: the picker Service's endpoints, asked over
  // ext_proc for every request; with FailOpen the router's own scheduler picks when it cannot
  // answer, with FailClose the request fails.
  std::shared_ptr<const Backend> picker;
  bool picker_fail_open = false;
  // Annotation sluice.dev/endpoint-picker-tls: "insecure" = TLS without verifying the picker's
  // certificate (what the Inference Extension's reference deployment uses); else cleartext h2c.
  bool picker_tls = false;
  // Its index in the route table's backends when its endpoints come from Pods or
  // EndpointSlices (InferencePool, ModelServer, Service); kNoSlot otherwise.
  static constexpr uint32_t kNoSlot = UINT32_MAX;
  uint32_t slot = kNoSlot;
};

struct ObjectStatus;

// Immutable routing state built on the control thread and handed to workers. A request keeps
// the snapshot it started with until it completes.
struct Snapshot {
  uint64_t version = 0;
  config::RouterConfig config;
  std::unordered_map<std::string, std::shared_ptr<const Backend>> models;
  std::string models_json;  // the GET /v1/models body, built once
  // Routes from Kubernetes objects (manifests): listeners, HTTPRoutes, ModelRoutes, backends
  // and status. Always set; with no objects it holds the one default listener.
  std::shared_ptr<const RouteTable> routes;
  // Endpoint-only updates (a Pod's readiness, an EndpointSlice) share `routes` with the
  // snapshot they were made from and replace just the backends whose endpoints changed, by
  // slot, and the status with their Ready conditions (router/endpoint_update.h).
  std::vector<std::shared_ptr<const Backend>> updated;  // by slot; null = as in `routes`
  // Statuses those updates replaced (Ready conditions), by key, over routes->status.
  std::map<std::string, std::shared_ptr<const ObjectStatus>> status_patch;

  const Backend* findModel(std::string_view name) const;
  // The backend as this snapshot serves it: `b` (from the route table) or its replacement.
  const Backend& current(const Backend& b) const {
    return b.slot < updated.size() && updated[b.slot] ? *updated[b.slot] : b;
  }
  // routes->status with status_patch applied.
  std::vector<ObjectStatus> statuses() const;
};

// Keeps EndpointState objects alive and shared between successive snapshots.
class EndpointRegistry {
 public:
  std::shared_ptr<EndpointState> get(const std::string& address);
  // Drops states no snapshot references any more.
  void prune();

 private:
  std::unordered_map<std::string, std::shared_ptr<EndpointState>> states_;
};

// Resolves names and builds a snapshot. Runs on the control thread (it may block on DNS).
// `objects` may be null (no manifests); `default_port` replaces a configured port 0 once known.
base::Result<std::shared_ptr<const Snapshot>> buildSnapshot(
    const config::RouterConfig& config, uint64_t version, EndpointRegistry& registry,
    const config::ObjectStore* objects = nullptr, uint16_t default_port = 0);

}  // namespace sluice::router
