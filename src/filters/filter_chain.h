#pragma once

// The request filters, in order: authentication (API key or JWT, with the mode chosen per
// route, then Gateway, then globally), model authorisation, then rate limits (the key's own,
// the ModelRoute's `rateLimit`, and the configured `rate_limits`), reserved before the request
// is admitted and reconciled with the real usage when it ends. Built once per configuration
// snapshot on the control thread; `admit` and `complete` run on workers without locks (bucket
// pointers are cached per worker).

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <boost/container/small_vector.hpp>

#include "config/object_store.h"
#include "config/router_config.h"
#include "filters/auth.h"
#include "filters/rate_limit.h"
#include "filters/redis_limits.h"

namespace sluice::filters {

enum class AuthMode { Off, Optional, Required };
// "off" | "optional" | "required"; nullopt for anything else.
std::optional<AuthMode> parseAuthMode(std::string_view text);
inline constexpr std::string_view kAuthAnnotation = "sluice.dev/auth";

// A worker's cache of bucket and lease pointers (the registries' mutexes are taken on a miss).
struct BucketCache {
  std::unordered_map<std::string, std::shared_ptr<Bucket>> buckets;
  std::unordered_map<std::string, std::shared_ptr<Lease>> leases;
  std::unordered_map<std::string, std::shared_ptr<RedisLimiter>> limiters;  // by address
};

struct FilterRequest {
  AuthMode mode = AuthMode::Off;
  std::string_view authorization;  // the Authorization header value
  std::string_view api_key;        // the x-api-key header value
  std::string_view model;          // the client's model
  std::string_view gateway;        // ns/name ("" for the default listener)
  std::string_view route;          // "HTTPRoute/ns/name", "ModelRoute/ns/name" or ""
  const config::ModelRoute::RateLimit* route_limit = nullptr;  // a ModelRoute's rateLimit
  // Which configured rate_limits apply: "" = all, "none", or ",a,b," (sluice.dev/rate-limits).
  std::string_view limit_selection;
  uint64_t input_tokens = 0;   // estimated
  uint64_t output_tokens = 0;  // the request's maximum
  int64_t now_ns = 0;          // steady clock, for buckets
  int64_t unix_s = 0;          // wall clock, for token times
};

struct Admission {
  bool ok = true;
  int status = 200;     // 401, 403, 429 or 503 when refused; 0 = wait for `wait_for`
  std::string code;     // OpenAI error code
  std::string message;  // safe to show the client: never echoes a credential
  int64_t retry_after_s = 0;
  std::string limit;      // the limit that refused (for logs and metrics)
  size_t limit_kind = 0;  // what it counts, as Reservation::Kind: requests, input, output, total
  Identity identity;
  bool credentials_present = false;
  // The models an API key is limited to (null: any). Points into the chain, which the request
  // keeps alive.
  const std::vector<std::string>* allowed_models = nullptr;
  // A global limit's lease is empty and a refill from Redis is on its way: wait until its
  // generation moves past `wait_generation`, then admit again.
  std::shared_ptr<Lease> wait_for;
  uint64_t wait_generation = 0;
  struct Reservation {
    std::shared_ptr<Bucket> bucket;  // a local limit, or:
    std::shared_ptr<Lease> lease;    // a global one
    enum class Kind { Requests, Input, Output, Total } kind;
    uint64_t reserved = 0;
  };
  boost::container::small_vector<Reservation, 4> reservations;  // no allocation for up to 4
};

class FilterChain {
 public:
  // Resolves API-key Secrets from `objects` (may be null); problems go to `errors` with their
  // field paths and the offending entries are skipped.
  static std::shared_ptr<const FilterChain> build(const config::RouterConfig& config,
                                                  const config::ObjectStore* objects,
                                                  std::shared_ptr<BucketRegistry> registry,
                                                  std::shared_ptr<RedisRegistry> redis,
                                                  std::vector<std::string>& errors,
                                                  const std::string* fetched_jwks = nullptr);

  AuthMode defaultMode() const { return default_mode_; }
  bool forwardCredentials() const { return forward_credentials_; }
  bool active() const { return active_; }

  Admission admit(const FilterRequest& req, BucketCache& cache) const;
  // Authentication alone (no model check, no rate limits): for requests that name no model and
  // cost nothing, such as GET /v1/models.
  Admission authenticate(const FilterRequest& req) const;
  // Reconciles the reservations with what the request really used. `usage_known` is false when
  // the upstream reported none: the input reservation then stands and unused output is
  // refunded only if nothing was served.
  void complete(Admission& admission, bool usage_known, bool served, uint64_t input_tokens,
                uint64_t output_tokens, int64_t now_ns) const;

 private:
  Admission authenticate(const FilterRequest& req, const ApiKeyEntry*& key) const;
  struct Limit {
    std::string name;
    std::vector<std::string> per;  // identity, tenant, model, gateway, route
    config::RouterConfig::LimitSpec spec;
    config::RouterConfig::RateLimit::Global global;
    std::shared_ptr<RedisLimiter> limiter;  // global limits
  };
  bool reserve(Admission& a, BucketCache& cache, std::string_view key_prefix,
               const config::RouterConfig::LimitSpec& spec, const FilterRequest& req,
               const std::string& limit_name, const Limit* global = nullptr) const;

  bool takeGlobal(Admission& a, BucketCache& cache, const std::string& key, uint64_t limit,
                  std::chrono::nanoseconds unit, uint64_t amount, Admission::Reservation::Kind kind,
                  const char* what, const std::string& unit_name, const Limit& l,
                  const FilterRequest& req, const std::string& limit_name) const;

  AuthMode default_mode_ = AuthMode::Off;
  bool forward_credentials_ = false;
  bool active_ = false;
  ApiKeyStore keys_;
  std::vector<config::RouterConfig::LimitSpec> key_limits_;
  bool jwt_enabled_ = false;
  JwtKeys jwt_keys_;
  JwtPolicy jwt_policy_;
  std::vector<Limit> limits_;
  std::shared_ptr<BucketRegistry> registry_;
  std::shared_ptr<RedisRegistry> redis_;
  std::chrono::milliseconds redis_timeout_{200};
  config::RouterConfig::RedisAuth redis_auth_;
};

}  // namespace sluice::filters
