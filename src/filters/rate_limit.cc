#include "filters/rate_limit.h"

#include <algorithm>
#include <limits>

namespace sluice::filters {

Bucket::Bucket(uint64_t limit, std::chrono::nanoseconds unit)
    : limit_(std::max<uint64_t>(limit, 1)),
      interval_ns_(std::max<int64_t>(1, unit.count() / static_cast<int64_t>(limit_))),
      burst_ns_(unit.count()) {}

int64_t Bucket::take(int64_t now_ns, uint64_t n) {
  if (n > limit_) {
    return std::numeric_limits<int64_t>::max();
  }
  const int64_t cost = static_cast<int64_t>(n) * interval_ns_;
  int64_t tat = tat_.load(std::memory_order_relaxed);
  while (true) {
    const int64_t base = std::max(tat, now_ns);
    const int64_t next = base + cost;
    if (next - now_ns > burst_ns_) {
      return next - now_ns - burst_ns_;
    }
    if (tat_.compare_exchange_weak(tat, next, std::memory_order_relaxed)) {
      return 0;
    }
  }
}

void Bucket::refund(uint64_t n) {
  tat_.fetch_sub(static_cast<int64_t>(n) * interval_ns_, std::memory_order_relaxed);
}

void Bucket::charge(int64_t now_ns, uint64_t n) {
  const int64_t cost = static_cast<int64_t>(n) * interval_ns_;
  int64_t tat = tat_.load(std::memory_order_relaxed);
  while (
      !tat_.compare_exchange_weak(tat, std::max(tat, now_ns) + cost, std::memory_order_relaxed)) {
  }
}

std::shared_ptr<Bucket> BucketRegistry::get(const std::string& key, uint64_t limit,
                                            std::chrono::nanoseconds unit) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = buckets_[key];
  if (!slot) {
    slot = std::make_shared<Bucket>(limit, unit);
  }
  return slot;
}

size_t BucketRegistry::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return buckets_.size();
}

std::chrono::nanoseconds unitDuration(std::string_view unit) {
  using namespace std::chrono;
  if (unit == "second")
    return seconds(1);
  if (unit == "minute")
    return minutes(1);
  if (unit == "hour")
    return hours(1);
  if (unit == "day")
    return hours(24);
  if (unit == "month")
    return hours(24 * 30);
  return seconds(0);
}

}  // namespace sluice::filters
