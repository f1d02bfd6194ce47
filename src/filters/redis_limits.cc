#include "filters/redis_limits.h"

#include <fstream>
#include <hiredis/hiredis.h>
#include <iterator>

#include "base/log.h"
#include "base/strings.h"

namespace sluice::filters {

namespace {

// GCRA bucket in Redis with partial grants. KEYS[1] = the bucket; ARGV = limit, unit (ms),
// units wanted. Returns {granted, retry_after_ms}. TIME is Redis's own clock, so routers with
// skewed clocks agree. The key expires once the bucket would be full again.
constexpr const char* kScript = R"(
local limit = tonumber(ARGV[1])
local unit = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = unit / limit
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local avail = math.floor((now + unit - tat) / interval)
if avail <= 0 then
  return {0, math.ceil(tat + interval - now - unit)}
end
local grant = math.min(avail, want)
tat = tat + grant * interval
redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.ceil(tat - now + unit))
return {grant, 0}
)";

int64_t nowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

RedisLimiter::RedisLimiter(std::string address, std::chrono::milliseconds timeout,
                           std::string username, std::string password_file)
    : address_(std::move(address)),
      timeout_(timeout),
      username_(std::move(username)),
      password_file_(std::move(password_file)) {
  thread_ = std::thread([this] { run(); });
}

RedisLimiter::~RedisLimiter() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) {
    thread_.join();
  }
  if (ctx_ != nullptr) {
    redisFree(static_cast<redisContext*>(ctx_));
  }
}

std::shared_ptr<Lease> RedisLimiter::lease(const std::string& key, uint64_t limit,
                                           std::chrono::nanoseconds unit, uint64_t lease_size) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = leases_[key];
  if (!slot) {
    slot = std::make_shared<Lease>(key, limit, unit, lease_size);
  }
  return slot;
}

void RedisLimiter::refill(const std::shared_ptr<Lease>& lease) {
  if (lease->refilling.exchange(true)) {
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.push_back(lease);
  }
  cv_.notify_one();
}

bool RedisLimiter::ensureConnected() {
  if (ctx_ != nullptr) {
    return true;
  }
  auto hp = base::parseHostPort(address_);
  if (!hp) {
    return false;
  }
  timeval tv{static_cast<time_t>(timeout_.count() / 1000),
             static_cast<suseconds_t>((timeout_.count() % 1000) * 1000)};
  redisContext* c = redisConnectWithTimeout(hp->host.c_str(), hp->port, tv);
  if (c == nullptr || c->err != 0) {
    if (c != nullptr) {
      redisFree(c);
    }
    return false;
  }
  redisSetTimeout(c, tv);
  if (!password_file_.empty() && !authenticate(c)) {
    redisFree(c);
    return false;
  }
  ctx_ = c;
  return true;
}

bool RedisLimiter::authenticate(void* context) {
  auto* c = static_cast<redisContext*>(context);
  std::ifstream in(password_file_);
  std::string password((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  while (!password.empty() && (password.back() == '\n' || password.back() == '\r')) {
    password.pop_back();
  }
  if (!in && password.empty()) {
    SLUICE_LOG(Warn, "ratelimit", "redis {}: cannot read the password file {}", address_,
               password_file_);
    return false;
  }
  redisReply* reply = nullptr;
  if (username_.empty()) {
    const char* argv[] = {"AUTH", password.c_str()};
    const size_t lens[] = {4, password.size()};
    reply = static_cast<redisReply*>(redisCommandArgv(c, 2, argv, lens));
  } else {
    const char* argv[] = {"AUTH", username_.c_str(), password.c_str()};
    const size_t lens[] = {4, username_.size(), password.size()};
    reply = static_cast<redisReply*>(redisCommandArgv(c, 3, argv, lens));
  }
  const bool ok = reply != nullptr && reply->type != REDIS_REPLY_ERROR;
  if (!ok) {
    // The reply says why (WRONGPASS, no password set); it never contains the password.
    SLUICE_LOG(Warn, "ratelimit", "redis {}: AUTH failed: {}", address_,
               reply != nullptr && reply->type == REDIS_REPLY_ERROR
                   ? std::string(reply->str, reply->len)
                   : std::string("no reply"));
  }
  if (reply != nullptr) {
    freeReplyObject(reply);
  }
  return ok;
}

bool RedisLimiter::ask(Lease& lease) {
  if (!ensureConnected()) {
    return false;
  }
  auto* c = static_cast<redisContext*>(ctx_);
  const int64_t deficit = std::max<int64_t>(0, -lease.units.load());
  const uint64_t want = lease.lease_size + static_cast<uint64_t>(deficit);
  const auto unit_ms = std::chrono::duration_cast<std::chrono::milliseconds>(lease.unit).count();
  std::string limit = std::to_string(lease.limit), unit = std::to_string(unit_ms),
              wanted = std::to_string(want);
  const char* argv[] = {"EVAL",        kScript,      "1",           lease.key.c_str(),
                        limit.c_str(), unit.c_str(), wanted.c_str()};
  const int64_t started = nowNs();
  auto* reply = static_cast<redisReply*>(redisCommandArgv(c, 7, argv, nullptr));
  round_trips_.fetch_add(1);
  latency_ns_.fetch_add(static_cast<uint64_t>(nowNs() - started));
  if (reply == nullptr || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) {
    if (reply != nullptr) {
      SLUICE_LOG(Warn, "ratelimit", "redis {}: unexpected reply (type {})", address_, reply->type);
      freeReplyObject(reply);
    }
    redisFree(c);
    ctx_ = nullptr;
    return false;
  }
  const int64_t granted = reply->element[0]->integer;
  const int64_t retry_ms = reply->element[1]->integer;
  freeReplyObject(reply);
  lease.units.fetch_add(granted);
  if (granted == 0) {
    lease.denied_until_ns.store(nowNs() + std::max<int64_t>(1, retry_ms) * 1'000'000);
  } else {
    lease.denied_until_ns.store(0);
  }
  return true;
}

void RedisLimiter::run() {
  while (true) {
    std::shared_ptr<Lease> lease;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !pending_.empty(); });
      if (stop_) {
        return;
      }
      lease = std::move(pending_.front());
      pending_.pop_front();
    }
    if (ask(*lease)) {
      down_until_ns_.store(0);
    } else {
      errors_.fetch_add(1);
      // Unreachable: the fail mode applies for a second, then the next request tries again.
      down_until_ns_.store(nowNs() + 1'000'000'000);
      SLUICE_LOG(Warn, "ratelimit", "redis {} unreachable; global limits fail as configured",
                 address_);
    }
    lease->generation.fetch_add(1);
    lease->refilling.store(false);
  }
}

std::shared_ptr<RedisLimiter> RedisRegistry::get(const std::string& address,
                                                 std::chrono::milliseconds timeout,
                                                 const std::string& username,
                                                 const std::string& password_file) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = limiters_[address + '\n' + username + '\n' + password_file];
  if (!slot) {
    slot = std::make_shared<RedisLimiter>(address, timeout, username, password_file);
  }
  return slot;
}

}  // namespace sluice::filters
