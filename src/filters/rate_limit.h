#pragma once

// Rate limits as GCRA token buckets: one atomic (the theoretical arrival time) per bucket, so
// taking, refunding and charging are lock-free CAS loops. A limit of L per unit U admits a burst
// of L and refills at L/U. Buckets live in a registry that outlives configuration snapshots
// (a reload does not reset them); workers cache the pointers, so the registry's mutex is taken
// only the first time a worker meets a key.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace sluice::filters {

class Bucket {
 public:
  Bucket(uint64_t limit, std::chrono::nanoseconds unit);
  // Takes n units at `now_ns`. Returns 0 if admitted, else nanoseconds until it would be
  // (INT64_MAX when n exceeds the whole limit and can never be admitted).
  int64_t take(int64_t now_ns, uint64_t n);
  // Gives back n units taken earlier (the request used less than it reserved).
  void refund(uint64_t n);
  // Charges n more units without checking (the request used more than it reserved).
  void charge(int64_t now_ns, uint64_t n);
  uint64_t limit() const { return limit_; }

 private:
  uint64_t limit_;
  int64_t interval_ns_;  // per unit of the limit
  int64_t burst_ns_;     // the whole unit
  std::atomic<int64_t> tat_{0};
};

class BucketRegistry {
 public:
  // The bucket for `key` (which should name the limit and its parameters), created once.
  std::shared_ptr<Bucket> get(const std::string& key, uint64_t limit,
                              std::chrono::nanoseconds unit);
  size_t size() const;

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<Bucket>> buckets_;
};

std::chrono::nanoseconds unitDuration(std::string_view unit);  // second ... month (30 days)

}  // namespace sluice::filters
