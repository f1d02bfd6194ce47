#include "filters/filter_chain.h"

#include <algorithm>
#include <charconv>
#include <fstream>
#include <sstream>

#include <fmt/core.h>

namespace sluice::filters {

std::optional<AuthMode> parseAuthMode(std::string_view text) {
  if (text == "off")
    return AuthMode::Off;
  if (text == "optional")
    return AuthMode::Optional;
  if (text == "required")
    return AuthMode::Required;
  return std::nullopt;
}

namespace {

std::optional<std::string> readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return std::nullopt;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

Admission refuse(Admission a, int status, std::string code, std::string message) {
  a.ok = false;
  a.status = status;
  a.code = std::move(code);
  a.message = std::move(message);
  return a;
}

std::string_view bearer(std::string_view authorization) {
  constexpr std::string_view kBearer = "Bearer ";
  if (authorization.size() > kBearer.size()) {
    bool match = true;
    for (size_t i = 0; i < kBearer.size(); ++i) {
      char c = authorization[i];
      if (c >= 'A' && c <= 'Z')
        c = static_cast<char>(c - 'A' + 'a');
      char k = kBearer[i];
      if (k >= 'A' && k <= 'Z')
        k = static_cast<char>(k - 'A' + 'a');
      match = match && c == k;
    }
    if (match) {
      std::string_view v = authorization.substr(kBearer.size());
      while (!v.empty() && v.front() == ' ')
        v.remove_prefix(1);
      while (!v.empty() && v.back() == ' ')
        v.remove_suffix(1);
      return v;
    }
  }
  return {};
}

}  // namespace

std::shared_ptr<const FilterChain> FilterChain::build(const config::RouterConfig& config,
                                                      const config::ObjectStore* objects,
                                                      std::shared_ptr<BucketRegistry> registry,
                                                      std::shared_ptr<RedisRegistry> redis,
                                                      std::vector<std::string>& errors,
                                                      const std::string* fetched_jwks) {
  auto chain = std::make_shared<FilterChain>();
  chain->registry_ = std::move(registry);
  chain->redis_ = std::move(redis);
  chain->redis_timeout_ = config.redis_timeout;
  chain->redis_auth_ = config.redis_auth;
  const auto& a = config.auth;
  chain->default_mode_ = parseAuthMode(a.mode).value_or(AuthMode::Off);
  chain->forward_credentials_ = a.forward_credentials;
  for (size_t i = 0; i < a.api_keys.size(); ++i) {
    const auto& k = a.api_keys[i];
    ApiKeyEntry e;
    e.identity = {k.id, k.tenant, "api-key", identityTag(k.id)};
    e.limit_prefix = "key|" + k.id;
    e.limit_name = "key " + k.id;
    e.models = k.models;
    if (!k.key_sha256.empty()) {
      if (!parseSha256Hex(k.key_sha256, e.hash)) {
        errors.push_back(fmt::format("auth.api_keys[{}].key_sha256: must be 64 hex digits", i));
        continue;
      }
    } else {
      const auto* obj = objects
                            ? objects->find(fmt::format("Secret/{}/{}", k.secret.ns, k.secret.name))
                            : nullptr;
      const auto* secret = obj ? std::get_if<config::Secret>(&obj->spec) : nullptr;
      auto it = secret ? secret->data.find(k.secret.key) : decltype(secret->data.end()){};
      if (secret == nullptr || it == secret->data.end() || it->second.empty()) {
        errors.push_back(fmt::format(
            "auth.api_keys[{}].secret: Secret {}/{} with key {} not found (the key is disabled)", i,
            k.secret.ns, k.secret.name, k.secret.key));
        continue;
      }
      e.hash = sha256(it->second);  // only the hash is kept
    }
    if (k.limits.any()) {
      e.limits = chain->key_limits_.size();
      chain->key_limits_.push_back(k.limits);
    }
    chain->keys_.add(std::move(e));
  }
  const auto& j = a.jwt;
  if (j.enabled()) {
    chain->jwt_enabled_ = true;
    if (!j.jwks_file.empty()) {
      auto text = readFile(j.jwks_file);
      if (!text) {
        errors.push_back(fmt::format("auth.jwt.jwks_file: cannot read {}", j.jwks_file));
      } else if (auto keys = JwtKeys::fromJwks(*text); !keys) {
        errors.push_back(fmt::format("auth.jwt.jwks_file: {}", keys.error().message));
      } else {
        chain->jwt_keys_ = std::move(*keys);
      }
    }
    if (fetched_jwks != nullptr && !fetched_jwks->empty()) {
      if (auto keys = JwtKeys::fromJwks(*fetched_jwks); !keys) {
        errors.push_back(fmt::format("auth.jwt.jwks_url: {}", keys.error().message));
      } else {
        for (const auto& k : keys->keys())
          chain->jwt_keys_.add(k);
      }
    }
    if (!j.hs256_secret_file.empty()) {
      auto text = readFile(j.hs256_secret_file);
      if (!text || text->empty()) {
        errors.push_back(
            fmt::format("auth.jwt.hs256_secret_file: cannot read {}", j.hs256_secret_file));
      } else {
        while (!text->empty() && (text->back() == '\n' || text->back() == '\r'))
          text->pop_back();
        chain->jwt_keys_.addHmac(std::move(*text));
      }
    }
    chain->jwt_policy_.issuer = j.issuer;
    chain->jwt_policy_.audiences = j.audiences;
    chain->jwt_policy_.identity_claim = j.identity_claim;
    chain->jwt_policy_.tenant_claim = j.tenant_claim;
    chain->jwt_policy_.leeway = std::chrono::duration_cast<std::chrono::seconds>(j.leeway);
  }
  for (const auto& rl : config.rate_limits) {
    Limit l{rl.name, rl.per, rl.spec, rl.global, nullptr};
    if (!rl.global.redis.empty() && chain->redis_) {
      l.limiter = chain->redis_->get(rl.global.redis, config.redis_timeout,
                                     config.redis_auth.username, config.redis_auth.password_file);
    }
    chain->limits_.push_back(std::move(l));
  }
  chain->active_ = chain->default_mode_ != AuthMode::Off || chain->keys_.size() > 0 ||
                   chain->jwt_enabled_ || !chain->limits_.empty();
  return chain;
}

bool FilterChain::reserve(Admission& a, BucketCache& cache, std::string_view prefix,
                          const config::RouterConfig::LimitSpec& spec, const FilterRequest& req,
                          const std::string& limit_name, const Limit* global) const {
  const auto unit = unitDuration(spec.unit);
  struct Want {
    uint64_t limit;
    Admission::Reservation::Kind kind;
    uint64_t amount;
    const char* what;
  };
  const Want wants[] = {
      {spec.requests, Admission::Reservation::Kind::Requests, 1, "requests"},
      {spec.input_tokens, Admission::Reservation::Kind::Input, req.input_tokens, "input tokens"},
      {spec.output_tokens, Admission::Reservation::Kind::Output, req.output_tokens,
       "output tokens"},
      {spec.total_tokens, Admission::Reservation::Kind::Total, req.input_tokens + req.output_tokens,
       "tokens"},
  };
  for (const auto& w : wants) {
    if (w.limit == 0)
      continue;
    // The key names the limit, its dimensions, the kind, the value and the unit (a changed
    // limit starts a fresh bucket). Built in a reused buffer: no allocation when cached.
    thread_local std::string key;
    key.assign(prefix);
    key += '|';
    key += static_cast<char>('0' + static_cast<int>(w.kind));
    key += '|';
    char digits[24];
    auto [end, ec] = std::to_chars(digits, digits + sizeof(digits), w.limit);
    (void)ec;
    key.append(digits, end);
    key += '/';
    key += spec.unit;
    if (global != nullptr && global->limiter) {
      if (!takeGlobal(a, cache, key, w.limit, unit, w.amount, w.kind, w.what, spec.unit, *global,
                      req, limit_name)) {
        return false;
      }
      continue;
    }
    auto found = cache.buckets.find(key);
    if (found == cache.buckets.end()) {
      found = cache.buckets.emplace(key, registry_->get(key, w.limit, unit)).first;
    }
    auto& slot = found->second;
    int64_t wait = slot->take(req.now_ns, w.amount);
    if (wait != 0) {
      a.ok = false;
      a.status = 429;
      a.code = "rate_limit_exceeded";
      a.limit = limit_name;
      a.limit_kind = static_cast<size_t>(w.kind);
      if (wait == std::numeric_limits<int64_t>::max()) {
        a.message = fmt::format(
            "rate limit {}: this request needs {} {}, more than the limit of "
            "{} per {}",
            limit_name, w.amount, w.what, w.limit, spec.unit);
        a.retry_after_s = 0;
      } else {
        a.message = fmt::format("rate limit {} exceeded: {} {} per {}", limit_name, w.limit, w.what,
                                spec.unit);
        a.retry_after_s = std::max<int64_t>(1, (wait + 999'999'999) / 1'000'000'000);
      }
      return false;
    }
    a.reservations.push_back({slot, nullptr, w.kind, w.amount});
  }
  return true;
}

bool FilterChain::takeGlobal(Admission& a, BucketCache& cache, const std::string& key,
                             uint64_t limit, std::chrono::nanoseconds unit, uint64_t amount,
                             Admission::Reservation::Kind kind, const char* what,
                             const std::string& unit_name, const Limit& l, const FilterRequest& req,
                             const std::string& limit_name) const {
  auto found = cache.leases.find(key);
  if (found == cache.leases.end()) {
    found = cache.leases.emplace(key, nullptr).first;
  }
  auto& slot = found->second;
  if (!slot) {
    uint64_t size = l.global.lease > 0 ? l.global.lease : std::max<uint64_t>(1, limit / 20);
    slot = l.limiter->lease("sluice:rl:" + key, limit, unit, size);
  }
  Lease& lease = *slot;
  a.limit = limit_name;
  a.limit_kind = static_cast<size_t>(kind);
  if (amount > limit) {
    a.ok = false;
    a.status = 429;
    a.code = "rate_limit_exceeded";
    a.message = fmt::format(
        "rate limit {}: this request needs {} {}, more than the limit of {} "
        "per {}",
        limit_name, amount, what, limit, unit_name);
    return false;
  }
  if (l.limiter->down(req.now_ns)) {
    if (l.global.fail_open) {
      return true;  // counted nowhere: Redis is the only shared truth
    }
    a.ok = false;
    a.status = 503;
    a.code = "service_unavailable";
    a.message = fmt::format("rate limit {} cannot be checked right now", limit_name);
    return false;
  }
  int64_t have = lease.units.load(std::memory_order_relaxed);
  while (have >= static_cast<int64_t>(amount)) {
    if (lease.units.compare_exchange_weak(have, have - static_cast<int64_t>(amount),
                                          std::memory_order_relaxed)) {
      a.reservations.push_back({nullptr, slot, kind, amount});
      if (have - static_cast<int64_t>(amount) < static_cast<int64_t>(lease.lease_size / 2)) {
        l.limiter->refill(slot);  // prefetch: the next requests find units waiting
      }
      a.limit.clear();
      return true;
    }
  }
  const int64_t denied_until = lease.denied_until_ns.load(std::memory_order_relaxed);
  if (denied_until > req.now_ns) {
    a.ok = false;
    a.status = 429;
    a.code = "rate_limit_exceeded";
    a.message =
        fmt::format("rate limit {} exceeded: {} {} per {}", limit_name, limit, what, unit_name);
    a.retry_after_s =
        std::max<int64_t>(1, (denied_until - req.now_ns + 999'999'999) / 1'000'000'000);
    return false;
  }
  // The lease is empty: ask Redis and let the caller wait for the answer.
  a.wait_for = slot;
  a.wait_generation = lease.generation.load();
  l.limiter->refill(slot);
  a.ok = false;
  a.status = 0;
  return false;
}

Admission FilterChain::authenticate(const FilterRequest& req) const {
  const ApiKeyEntry* key = nullptr;
  return authenticate(req, key);
}

Admission FilterChain::authenticate(const FilterRequest& req, const ApiKeyEntry*& key) const {
  Admission a;
  std::string_view token = bearer(req.authorization);
  std::string_view credential = !token.empty() ? token : req.api_key;
  a.credentials_present = !req.authorization.empty() || !req.api_key.empty();
  key = nullptr;
  if (req.mode != AuthMode::Off && a.credentials_present) {
    if (credential.empty()) {
      return refuse(std::move(a), 401, "invalid_api_key",
                    "the Authorization header must be \"Bearer <credential>\"");
    }
    if (jwt_enabled_ && looksLikeJwt(credential)) {
      auto id = verifyJwt(credential, jwt_keys_, jwt_policy_, req.unix_s);
      if (!id) {
        return refuse(std::move(a), 401, "invalid_api_key", "invalid token: " + id.error().message);
      }
      a.identity = std::move(*id);
      a.identity.tag = identityTag(a.identity.id);
    } else {
      key = keys_.find(credential);
      if (key == nullptr) {
        return refuse(std::move(a), 401, "invalid_api_key", "invalid API key");
      }
      a.identity = key->identity;
    }
  } else if (req.mode == AuthMode::Required) {
    return refuse(std::move(a), 401, "missing_api_key",
                  "authentication required: send Authorization: Bearer <key or token>, or "
                  "x-api-key");
  }
  if (key != nullptr && !key->models.empty()) {
    a.allowed_models = &key->models;
  }
  return a;
}

Admission FilterChain::admit(const FilterRequest& req, BucketCache& cache) const {
  // Authentication.
  const ApiKeyEntry* key = nullptr;
  Admission a = authenticate(req, key);
  if (!a.ok) {
    return a;
  }
  // Authorisation: a key may be limited to some models.
  if (key != nullptr && !key->models.empty() && !req.model.empty() &&
      std::find(key->models.begin(), key->models.end(), req.model) == key->models.end()) {
    return refuse(std::move(a), 403, "model_not_allowed",
                  fmt::format("this key may not use model '{}'", req.model));
  }
  // Rate limits: every bucket is reserved, or none is.
  auto undo = [&]() {
    for (auto& r : a.reservations) {
      if (r.lease) {
        r.lease->units.fetch_add(static_cast<int64_t>(r.reserved));
      } else {
        r.bucket->refund(r.reserved);
      }
    }
    a.reservations.clear();
  };
  if (key != nullptr && key->limits != SIZE_MAX) {
    if (!reserve(a, cache, key->limit_prefix, key_limits_[key->limits], req, key->limit_name)) {
      undo();
      return a;
    }
  }
  if (req.route_limit != nullptr) {
    // ModelRoute rateLimit, keyed by Gateway and route so Gateways never share a bucket.
    config::RouterConfig::LimitSpec spec;
    spec.input_tokens = req.route_limit->input_tokens_per_unit;
    spec.output_tokens = req.route_limit->output_tokens_per_unit;
    spec.unit = req.route_limit->unit;
    // rateLimit.global.redis.address: shared through Redis (fail open, as Kthena does).
    Limit global{std::string(req.route), {}, spec, {}, nullptr};
    if (!req.route_limit->redis_address.empty() && redis_) {
      auto& limiter = cache.limiters[req.route_limit->redis_address];
      if (!limiter || !limiter->sameCredentials(redis_auth_.username, redis_auth_.password_file))
        limiter = redis_->get(req.route_limit->redis_address, redis_timeout_, redis_auth_.username,
                              redis_auth_.password_file);
      global.global.redis = req.route_limit->redis_address;
      global.limiter = limiter;
    }
    if (spec.any() && !reserve(a, cache, fmt::format("route|{}|{}", req.gateway, req.route), spec,
                               req, std::string(req.route), global.limiter ? &global : nullptr)) {
      undo();
      return a;
    }
  }
  for (const auto& l : limits_) {
    if (!req.limit_selection.empty()) {
      if (req.limit_selection == "none")
        break;
      thread_local std::string needle;
      needle.assign(",");
      needle += l.name;
      needle += ',';
      if (req.limit_selection.find(needle) == std::string_view::npos)
        continue;
    }
    thread_local std::string prefix;
    prefix.assign("limit|");
    prefix += l.name;
    for (const auto& dim : l.per) {
      prefix += '|';
      if (dim == "identity")
        prefix += a.identity.id;
      if (dim == "tenant")
        prefix += a.identity.tenant;
      if (dim == "model")
        prefix += req.model;
      if (dim == "gateway")
        prefix += req.gateway;
      if (dim == "route")
        prefix += req.route;
    }
    if (!reserve(a, cache, prefix, l.spec, req, l.name, &l)) {
      undo();
      return a;
    }
  }
  return a;
}

void FilterChain::complete(Admission& a, bool usage_known, bool served, uint64_t input,
                           uint64_t output, int64_t now_ns) const {
  using Kind = Admission::Reservation::Kind;
  for (auto& r : a.reservations) {
    uint64_t actual = r.reserved;
    switch (r.kind) {
      case Kind::Requests:
        continue;  // a request is a request
      case Kind::Input:
        actual = usage_known ? input : (served ? r.reserved : 0);
        break;
      case Kind::Output:
        actual = usage_known ? output : (served ? r.reserved : 0);
        break;
      case Kind::Total:
        actual = usage_known ? input + output : (served ? r.reserved : 0);
        break;
    }
    if (r.lease) {
      // Global: the difference stays in (or comes out of) this router's lease.
      r.lease->units.fetch_add(static_cast<int64_t>(r.reserved) - static_cast<int64_t>(actual));
      continue;
    }
    if (actual < r.reserved) {
      r.bucket->refund(r.reserved - actual);
    } else if (actual > r.reserved) {
      r.bucket->charge(now_ns, actual - r.reserved);
    }
  }
  a.reservations.clear();
}

}  // namespace sluice::filters
