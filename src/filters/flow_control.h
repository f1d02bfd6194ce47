#pragma once

// Flow control: when a backend (pool, ModelServer) is saturated, requests wait in its queue
// instead of piling onto the engines. Strict priority bands (InferenceObjective priority),
// round-robin between flows (fairness ids) within a band, FCFS within a flow. Requests with a
// negative priority are shed (429) under saturation; a queued request that outlives the TTL gets
// 503. Capacity is the router's own accounting: `max_in_flight_per_endpoint` for each live
// endpoint whose engine is not saturated by its metrics (waiting queue, KV usage).
//
// One queue per backend, shared by every worker: its mutex is held for a few operations and
// only by requests that find the backend saturated or a queue non-empty; the uncontended path is
// one atomic increment. Waking a waiter posts to its own worker (no thread hop for the request).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace sluice::filters {

struct FlowWaiter {
  int32_t priority = 0;
  std::string flow;
  int64_t enqueued_ns = 0;
  uint64_t bytes = 0;  // the request body it holds while waiting
  enum class State { Queued, Dispatched, Gone };
  std::atomic<State> state{State::Queued};  // changed under the queue's mutex
  std::function<void()> wake;               // posts to the waiter's worker
};

class FlowQueue {
 public:
  // Admits at once (true) when there is room and nobody is waiting; otherwise the caller
  // should enqueue (or shed).
  bool tryAdmit(int64_t capacity);
  void enqueue(const std::shared_ptr<FlowWaiter>& w);
  // Removes a waiter that gave up (TTL, client gone). Returns false if it had been dispatched
  // meanwhile (then it owns a slot and must run or call release()).
  bool cancel(const std::shared_ptr<FlowWaiter>& w);
  // A request admitted through this queue finished.
  void release();
  // Dispatches waiters while there is room (called on release and by the workers' tick).
  void dispatch(int64_t capacity);
  size_t queued() const;
  uint64_t queuedBytes() const { return queued_bytes_.load(std::memory_order_relaxed); }
  int64_t admitted() const { return admitted_.load(std::memory_order_relaxed); }

 private:
  std::shared_ptr<FlowWaiter> popLocked();

  std::atomic<int64_t> admitted_{0};
  std::atomic<size_t> queued_{0};
  std::atomic<uint64_t> queued_bytes_{0};
  mutable std::mutex mu_;
  struct Band {
    std::deque<std::string> order;  // flows with waiters, round robin
    std::unordered_map<std::string, std::deque<std::shared_ptr<FlowWaiter>>> flows;
  };
  std::map<int32_t, Band, std::greater<>> bands_;  // highest priority first
};

// Queues by backend key, kept across configuration snapshots.
class FlowRegistry {
 public:
  std::shared_ptr<FlowQueue> get(const std::string& key);
  // Every queue with waiters (for the dispatch tick and metrics).
  template <class F>
  void forEach(F f) const {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [key, q] : queues_)
      f(key, *q);
  }

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<FlowQueue>> queues_;
};

}  // namespace sluice::filters
