#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstring>
#include <memory>
#include <string_view>

namespace sluice::base {

// A single-producer single-consumer byte ring. The producer (one worker) appends whole
// records or drops them when full; the consumer (the flusher thread) drains contiguous spans.
// No locks: head/tail are atomics with acquire/release ordering.
class SpscByteRing {
 public:
  explicit SpscByteRing(size_t capacity_pow2)
      : cap_(capacity_pow2), mask_(capacity_pow2 - 1), buf_(new char[capacity_pow2]) {}

  // Producer side. Returns false (and writes nothing) if the record does not fit.
  bool tryPush(std::string_view record) {
    const size_t head = head_.load(std::memory_order_relaxed);
    const size_t tail = tail_.load(std::memory_order_acquire);
    if (record.size() > cap_ - (head - tail)) {
      return false;
    }
    const size_t pos = head & mask_;
    const size_t first = std::min(record.size(), cap_ - pos);
    std::memcpy(buf_.get() + pos, record.data(), first);
    std::memcpy(buf_.get(), record.data() + first, record.size() - first);
    head_.store(head + record.size(), std::memory_order_release);
    return true;
  }

  // Consumer side: calls sink(string_view) for up to two spans, then frees them.
  template <class Sink>
  size_t drain(Sink&& sink) {
    const size_t tail = tail_.load(std::memory_order_relaxed);
    const size_t head = head_.load(std::memory_order_acquire);
    const size_t n = head - tail;
    if (n == 0) {
      return 0;
    }
    const size_t pos = tail & mask_;
    const size_t first = std::min(n, cap_ - pos);
    sink(std::string_view(buf_.get() + pos, first));
    if (n > first) {
      sink(std::string_view(buf_.get(), n - first));
    }
    tail_.store(head, std::memory_order_release);
    return n;
  }

 private:
  const size_t cap_;
  const size_t mask_;
  std::unique_ptr<char[]> buf_;
  alignas(64) std::atomic<size_t> head_{0};
  alignas(64) std::atomic<size_t> tail_{0};
};

}  // namespace sluice::base
