#include "filters/flow_control.h"

#include <algorithm>

namespace sluice::filters {

bool FlowQueue::tryAdmit(int64_t capacity) {
  if (queued_.load(std::memory_order_relaxed) != 0) {
    return false;  // others are waiting: no overtaking
  }
  int64_t cur = admitted_.load(std::memory_order_relaxed);
  while (cur < capacity) {
    if (admitted_.compare_exchange_weak(cur, cur + 1, std::memory_order_relaxed)) {
      return true;
    }
  }
  return false;
}

void FlowQueue::enqueue(const std::shared_ptr<FlowWaiter>& w) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& band = bands_[w->priority];
  auto& flow = band.flows[w->flow];
  if (flow.empty()) {
    band.order.push_back(w->flow);
  }
  flow.push_back(w);
  queued_.fetch_add(1, std::memory_order_relaxed);
  queued_bytes_.fetch_add(w->bytes, std::memory_order_relaxed);
}

bool FlowQueue::cancel(const std::shared_ptr<FlowWaiter>& w) {
  std::lock_guard<std::mutex> lock(mu_);
  if (w->state == FlowWaiter::State::Dispatched) {
    return false;
  }
  if (w->state == FlowWaiter::State::Gone) {
    return true;
  }
  w->state = FlowWaiter::State::Gone;
  auto bit = bands_.find(w->priority);
  if (bit != bands_.end()) {
    auto fit = bit->second.flows.find(w->flow);
    if (fit != bit->second.flows.end()) {
      auto& dq = fit->second;
      for (auto it = dq.begin(); it != dq.end(); ++it) {
        if (*it == w) {
          dq.erase(it);
          queued_.fetch_sub(1, std::memory_order_relaxed);
          queued_bytes_.fetch_sub(w->bytes, std::memory_order_relaxed);
          break;
        }
      }
      if (dq.empty()) {
        bit->second.flows.erase(fit);
        auto& order = bit->second.order;
        order.erase(std::remove(order.begin(), order.end(), w->flow), order.end());
      }
    }
    if (bit->second.flows.empty()) {
      bands_.erase(bit);
    }
  }
  return true;
}

std::shared_ptr<FlowWaiter> FlowQueue::popLocked() {
  while (!bands_.empty()) {
    auto bit = bands_.begin();
    auto& band = bit->second;
    if (band.order.empty()) {
      bands_.erase(bit);
      continue;
    }
    std::string flow = band.order.front();
    band.order.pop_front();
    auto fit = band.flows.find(flow);
    if (fit == band.flows.end() || fit->second.empty()) {
      if (fit != band.flows.end())
        band.flows.erase(fit);
      continue;
    }
    auto w = fit->second.front();
    fit->second.pop_front();
    if (fit->second.empty()) {
      band.flows.erase(fit);
    } else {
      band.order.push_back(flow);  // round robin between the band's flows
    }
    if (band.flows.empty()) {
      bands_.erase(bit);
    }
    queued_.fetch_sub(1, std::memory_order_relaxed);
    queued_bytes_.fetch_sub(w->bytes, std::memory_order_relaxed);
    return w;
  }
  return nullptr;
}

void FlowQueue::release() {
  admitted_.fetch_sub(1, std::memory_order_relaxed);
}

void FlowQueue::dispatch(int64_t capacity) {
  if (queued_.load(std::memory_order_relaxed) == 0) {
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  while (admitted_.load(std::memory_order_relaxed) < capacity) {
    auto w = popLocked();
    if (!w) {
      break;
    }
    admitted_.fetch_add(1, std::memory_order_relaxed);
    w->state = FlowWaiter::State::Dispatched;
    w->wake();
  }
}

size_t FlowQueue::queued() const {
  return queued_.load(std::memory_order_relaxed);
}

std::shared_ptr<FlowQueue> FlowRegistry::get(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = queues_[key];
  if (!slot) {
    slot = std::make_shared<FlowQueue>();
  }
  return slot;
}

}  // namespace sluice::filters
