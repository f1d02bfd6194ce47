#pragma once

// Global rate limits shared by every router through Redis. Each router holds a local lease of
// units per limit key and serves requests from it with atomics; a background thread (one per
// Redis address) refills leases with a Lua script that takes units from a GCRA bucket in Redis
// atomically (partial grants allowed). A request waits for Redis only when its lease is empty.
// Units granted by Redis are the only units ever spent, so the limit holds across routers; a
// refund returns units to the local lease. When Redis cannot be reached, the limit fails open
// (requests pass) or closed (503) as configured, and the connection is retried in the
// background.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

namespace sluice::filters {

struct Lease {
  Lease(std::string k, uint64_t l, std::chrono::nanoseconds u, uint64_t size)
      : key(std::move(k)), limit(l), unit(u), lease_size(size) {}
  const std::string key;  // Redis key
  const uint64_t limit;
  const std::chrono::nanoseconds unit;
  const uint64_t lease_size;
  std::atomic<int64_t> units{0};            // granted, not yet spent (may go negative: charges)
  std::atomic<bool> refilling{false};       // a refill is queued or in flight
  std::atomic<int64_t> denied_until_ns{0};  // Redis said the bucket is empty until then
  std::atomic<uint64_t> generation{0};      // bumped by every refill answer
};

class RedisLimiter {
 public:
  // `username` may be empty (the default user); an empty `password_file` sends no AUTH.
  RedisLimiter(std::string address, std::chrono::milliseconds timeout, std::string username = {},
               std::string password_file = {});
  ~RedisLimiter();
  RedisLimiter(const RedisLimiter&) = delete;
  RedisLimiter& operator=(const RedisLimiter&) = delete;

  std::shared_ptr<Lease> lease(const std::string& key, uint64_t limit,
                               std::chrono::nanoseconds unit, uint64_t lease_size);
  // Asks the background thread for more units for this lease (no-op if one is pending).
  void refill(const std::shared_ptr<Lease>& lease);
  // True while Redis has been unreachable recently (the fail mode applies).
  bool down(int64_t now_ns) const { return down_until_ns_.load() > now_ns; }
  const std::string& address() const { return address_; }
  bool sameCredentials(const std::string& username, const std::string& password_file) const {
    return username == username_ && password_file == password_file_;
  }
  std::chrono::milliseconds timeout() const { return timeout_; }

  uint64_t roundTrips() const { return round_trips_.load(); }
  uint64_t errors() const { return errors_.load(); }
  // Time spent on lease refills (successful exchanges), for a latency summary.
  double latencySumSeconds() const { return static_cast<double>(latency_ns_.load()) * 1e-9; }

 private:
  void run();
  bool authenticate(void* context);  // AUTH on a new connection; false (logged) on refusal
  bool ensureConnected();
  bool ask(Lease& lease);

  std::string address_;
  std::chrono::milliseconds timeout_;
  std::string username_;
  std::string password_file_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Lease>> pending_;
  std::unordered_map<std::string, std::shared_ptr<Lease>> leases_;
  bool stop_ = false;
  void* ctx_ = nullptr;  // redisContext*, only touched by the thread
  std::atomic<int64_t> down_until_ns_{0};
  std::atomic<uint64_t> round_trips_{0};
  std::atomic<uint64_t> errors_{0};
  std::atomic<uint64_t> latency_ns_{0};
  std::thread thread_;
};

// Limiters by Redis address, kept across configuration snapshots.
class RedisRegistry {
 public:
  // One limiter per address and credentials (a credential change starts a new connection).
  std::shared_ptr<RedisLimiter> get(const std::string& address, std::chrono::milliseconds timeout,
                                    const std::string& username = {},
                                    const std::string& password_file = {});
  template <class F>
  void forEach(F f) const {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [_, l] : limiters_)
      f(*l);
  }

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<RedisLimiter>> limiters_;
};

}  // namespace sluice::filters
