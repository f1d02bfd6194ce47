#pragma once

// Compiled routing state from Kubernetes objects: listeners from Gateways, HTTPRoute rules in
// the Gateway API's precedence, ModelRoute rules per Gateway (each Gateway is its own model
// name space), backends (InferencePool, ModelServer, Service) with their endpoints, model
// rewrites and objectives, and the status of every object. Built on the control thread,
// read-only afterwards: the request path only looks things up.

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/random.h"
#include "config/manifest.h"
#include "config/object_store.h"
#include "router/snapshot.h"

namespace re2 {
class RE2;
}

namespace sluice::router {

// The built-in GatewayClass: Gateways naming it (or a GatewayClass object with this
// controllerName) are Sluice's.
inline constexpr std::string_view kGatewayClassName = "sluice";
inline constexpr std::string_view kControllerName = "sluice.dev/gateway-controller";
// The body's model offered to HTTPRoute header matches (Inference Extension body-based routing).
inline constexpr std::string_view kModelHeader = "x-gateway-model-name";
inline constexpr std::string_view kObjectiveHeader = "x-gateway-inference-objective";
// On an InferencePool or ModelServer: the scheduling profile (a preset or a configured
// schedulingProfiles name) for its requests.
inline constexpr std::string_view kSchedulerAnnotation = "sluice.dev/scheduler";

// Request headers, looked up by lower-case name (the first value when repeated).
class HeaderLookup {
 public:
  virtual ~HeaderLookup() = default;
  virtual std::optional<std::string_view> get(std::string_view lower_name) const = 0;
};

struct RequestView {
  std::string_view method;
  std::string_view path;   // without the query
  std::string_view query;  // after '?', may be empty
  std::string_view host;   // lower case, without port
  const HeaderLookup* headers = nullptr;
  std::string_view model;  // the body's model ("" when there is none)
};

struct Condition {
  std::string type;
  bool status = true;
  std::string reason;
  std::string message;
};

struct ObjectStatus {
  std::string key;  // Kind/ns/name
  std::vector<Condition> conditions;
  struct Parent {
    std::string ref;  // Gateway/ns/name[/section]
    std::vector<Condition> conditions;
  };
  std::vector<Parent> parents;
  struct ListenerStatus {
    std::string name;
    uint32_t attached_routes = 0;
    std::vector<Condition> conditions;
  };
  std::vector<ListenerStatus> listeners;
  std::vector<std::string> errors;  // parse errors (the object kept its last good version)
};

// What an HTTPRoute rule does once it matched.
struct RouteAction {
  std::string route;      // ns/name
  std::string qualified;  // "HTTPRoute/ns/name": the filters' name for it
  size_t rule = 0;
  struct Target {
    std::shared_ptr<const Backend> backend;  // null: an invalid ref (500 for its share)
    uint32_t weight = 0;
    std::string error;
  };
  std::vector<Target> targets;
  uint64_t total_weight = 0;
  std::optional<config::HeaderModifier> request_headers;
  std::optional<config::HeaderModifier> response_headers;
  std::optional<config::HttpRouteFilter> rewrite;   // URLRewrite
  std::optional<config::HttpRouteFilter> redirect;  // RequestRedirect
  struct Mirror {
    std::shared_ptr<const Backend> backend;
    double fraction = 1.0;
  };
  std::vector<Mirror> mirrors;
  std::chrono::milliseconds request_timeout{0};
  std::chrono::milliseconds backend_timeout{0};
  std::string auth_mode;    // annotation sluice.dev/auth on the HTTPRoute; "" = inherit
  std::string rate_limits;  // annotation sluice.dev/rate-limits; "" = inherit
  std::optional<config::HttpRouteRule::Retry> retry;  // the rule's retry, if set
};

// One HTTPRoute match, flattened, with everything needed to rank it.
struct MatchEntry {
  const RouteAction* action = nullptr;
  config::PathMatch::Type path_type = config::PathMatch::Type::PathPrefix;
  std::string path;  // prefixes without a trailing '/'
  std::shared_ptr<re2::RE2> path_re;
  std::string method;
  struct Cond {
    std::string name;
    bool regex = false;
    std::string value;
    std::shared_ptr<re2::RE2> re;
  };
  std::vector<Cond> headers;
  std::vector<Cond> query;
  // Ties after path specificity, method, header and query counts.
  int64_t creation = 0;
  uint64_t seq = 0;
  std::string route_key;
  size_t rule = 0;
  size_t index = 0;
};

// Match entries keyed by path, in an open-addressing table of 64-bit FNV-1a hashes: one pass
// over the request path yields the hash of every segment prefix, and each probe touches one
// slot array (no string hashing, no node chasing) before the bucket is compared.
class PathIndex {
 public:
  std::vector<const MatchEntry*>& bucket(const std::string& path);
  void finish();  // builds the slot array; buckets are sorted by the caller
  const std::vector<const MatchEntry*>* find(uint64_t hash, std::string_view path) const;
  bool empty() const { return buckets_.empty(); }
  template <class F>
  void forEachBucket(F f) {
    for (auto& b : buckets_)
      f(b.entries);
  }

 private:
  struct Bucket {
    uint64_t hash;
    std::string path;
    std::vector<const MatchEntry*> entries;
  };
  struct Slot {
    uint64_t hash = 0;
    uint32_t index = 0;  // bucket + 1; 0 = empty
  };
  std::vector<Bucket> buckets_;
  std::unordered_map<std::string, size_t> building_;  // path -> bucket, until finish()
  std::vector<Slot> slots_;
  uint64_t mask_ = 0;
};

uint64_t pathHash(std::string_view path);

class RuleSet {
 public:
  void add(const MatchEntry* entry);
  void finish();  // sorts each bucket into precedence order
  const MatchEntry* match(const RequestView& req) const;
  bool empty() const { return count_ == 0; }

 private:
  PathIndex exact_;
  PathIndex prefix_;
  std::vector<const MatchEntry*> regex_;
  size_t count_ = 0;
};

struct ModelRouteEntry {
  std::string key;        // ns/name
  std::string qualified;  // "ModelRoute/ns/name": the filters' name for it
  int64_t creation = 0;
  uint64_t seq = 0;
  std::string section;  // sectionName the route bound to on this gateway ("" = all)
  std::optional<uint16_t> port;
  struct Rule {
    std::vector<std::pair<std::string, config::StringMatch>> headers;
    std::vector<std::shared_ptr<re2::RE2>> header_res;
    std::optional<config::StringMatch> uri;
    std::shared_ptr<re2::RE2> uri_re;
    std::optional<std::string> body_model;
    struct Target {
      std::shared_ptr<const Backend> backend;  // null: missing ModelServer or a provider
      uint32_t weight = 1;
      std::string error;
    };
    std::vector<Target> targets;
    uint64_t total_weight = 0;
  };
  std::vector<Rule> rules;
  std::optional<config::ModelRoute::RateLimit> rate_limit;
  std::string auth_mode;    // annotation sluice.dev/auth; "" = inherit
  std::string rate_limits;  // annotation sluice.dev/rate-limits; "" = inherit
};

// The model names one Gateway serves: its ModelRoutes by name and by LoRA adapter.
struct ModelSpace {
  std::unordered_map<std::string, std::vector<std::shared_ptr<const ModelRouteEntry>>> by_model;
  std::unordered_map<std::string, std::vector<std::shared_ptr<const ModelRouteEntry>>> by_lora;
  std::vector<std::string> names;  // for /v1/models (route names, adapters, rewrite names)
  std::string models_json;
};

struct ListenerRoutes {
  std::string gateway;  // ns/name; empty for the default listener
  std::string name;     // section name
  std::optional<std::string> hostname;
  uint16_t port = 0;
  std::string address = "0.0.0.0";
  // HTTPS: the certificate chain and key (PEM) from the listener's first certificateRef.
  bool tls = false;
  std::string cert_pem;
  std::string key_pem;
  // HTTPRoute rules by the hostname they were attached with.
  std::unordered_map<std::string, RuleSet> exact_hosts;
  std::vector<std::pair<std::string, RuleSet>> wildcard_hosts;  // suffix ".example.com", longest
  RuleSet any_host;
  std::shared_ptr<const ModelSpace> space;
  // The router file's models:, as ModelRoutes shared by every listener and looked up last.
  std::shared_ptr<const ModelSpace> config_space;
  std::string auth_mode;    // annotation sluice.dev/auth on the Gateway; "" = the global mode
  std::string rate_limits;  // annotation sluice.dev/rate-limits on the Gateway; "" = all
};

struct Matched {
  const RouteAction* action = nullptr;
  const MatchEntry* entry = nullptr;
};

struct ModelTarget {
  const ModelRouteEntry* route = nullptr;
  const ModelRouteEntry::Rule::Target* target = nullptr;  // null: no rule matched
  bool lora = false;
};

class RouteTable {
 public:
  // Listeners grouped by port, each group in selection order (exact host, longest wildcard,
  // no hostname).
  std::map<uint16_t, std::vector<std::shared_ptr<const ListenerRoutes>>> ports;
  std::vector<std::shared_ptr<const Backend>> backends;  // every backend, for the fetcher
  std::vector<std::unique_ptr<RouteAction>> actions;
  std::vector<std::unique_ptr<MatchEntry>> entries;
  std::vector<ObjectStatus> status;
  size_t error_count = 0;
  bool has_gateways = false;
  // Objects left to another controller (a Gateway of another class, another controller's
  // GatewayClass), with why: `sluice validate` reports them as ignored.
  std::vector<std::string> ignored;

  // The listener for a request that arrived on `port` with this Host, or null.
  const ListenerRoutes* listenerFor(uint16_t port, std::string_view host) const;
  // The highest-precedence HTTPRoute match on the listener.
  static Matched matchHttp(const ListenerRoutes& listener, const RequestView& req);
  // The first ModelRoute (oldest first) whose rules match, and a weighted target of it.
  static ModelTarget matchModel(const ListenerRoutes& listener, const RequestView& req,
                                base::Random& random) {
    return listener.space ? matchModelIn(*listener.space, listener, req, random) : ModelTarget{};
  }
  // The same for the router file's models: (the last lookup).
  static ModelTarget matchConfigModel(const ListenerRoutes& listener, const RequestView& req,
                                      base::Random& random) {
    return listener.config_space ? matchModelIn(*listener.config_space, listener, req, random)
                                 : ModelTarget{};
  }
  static ModelTarget matchModelIn(const ModelSpace& space, const ListenerRoutes& listener,
                                  const RequestView& req, base::Random& random);
  static const RouteAction::Target* pickTarget(const RouteAction& action, base::Random& random);
  // A rewrite for `model` on this backend (Exact beats catch-all; oldest object first).
  static const ModelRewrite* rewriteFor(const Backend& backend, std::string_view model);
  static std::string_view pickModel(const ModelRewrite& rewrite, base::Random& random);

  std::string statusJson() const;
};

// The statuses as JSON ({"objects":[...]}), for /debug/status and `sluice validate`.
std::string statusJson(const std::vector<ObjectStatus>& status);

struct RouteBuildOptions {
  std::string default_address = "0.0.0.0";
  uint16_t default_port = 8080;
  // The router file's models: entries, each compiled into a ModelRoute (one rule, one target)
  // served on every listener after its ModelRoutes and HTTPRoutes.
  std::vector<std::shared_ptr<const Backend>> config_models;
  std::vector<std::string> profiles;             // scheduler presets and configured profiles
  std::vector<std::string> rate_limits;          // names of the configured rate_limits
  std::string controller_name{kControllerName};  // GatewayClasses naming it are ours
  // Gateways of class "sluice" are ours without a GatewayClass object (manifest directories);
  // off for the API server, where only GatewayClass objects decide.
  bool builtin_class = true;
};

// Translates the objects (the store's current contents) into a route table, with the status
// of every object. Never fails: problems become conditions and errors.
std::shared_ptr<RouteTable> buildRouteTable(const config::ObjectStore& store,
                                            const RouteBuildOptions& options,
                                            EndpointRegistry& registry);

// The path the upstream sees after a URLRewrite (ReplaceFullPath or ReplacePrefixMatch).
std::string rewritePath(const config::HttpPathModifier& mod, const MatchEntry& entry,
                        std::string_view path);

}  // namespace sluice::router
