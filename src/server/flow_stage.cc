#include "server/flow_stage.h"

#include <algorithm>

#include <fmt/format.h>

#include "server/client_io.h"
#include "server/worker.h"

namespace sluice::server {

using openai::ErrorKind;

// Flow-control capacity of a backend: max_in_flight_per_endpoint for each live endpoint whose
// engine metrics do not say it is full.
int64_t flowCapacity(const router::Backend& b, const config::RouterConfig::FlowControl& fc,
                     const backends::MetricsView* view, int64_t now_ns) {
  int64_t cap = 0;
  for (const auto& ep : b.endpoints) {
    if (ep.state->ejected(now_ns)) {
      continue;
    }
    if (view != nullptr && (fc.max_waiting_per_endpoint > 0 || fc.max_kv_usage > 0)) {
      if (const auto* m = view->find(ep.address); m != nullptr && m->scraped) {
        if (fc.max_waiting_per_endpoint > 0 && m->waiting >= fc.max_waiting_per_endpoint) {
          continue;
        }
        if (fc.max_kv_usage > 0 && m->kv_usage >= fc.max_kv_usage) {
          continue;
        }
      }
    }
    cap += fc.max_in_flight_per_endpoint;
  }
  return cap;
}

// Flow control: admitted at once when the backend has room and nobody waits; otherwise shed
// (negative priority), refused (queue full) or queued until a slot frees or the TTL passes.
awaitable<std::optional<FlowRefusal>> waitForFlow(Exchange& x, const router::Backend& backend,
                                                  std::function<bool()> abandoned) {
  const auto& fc = x.gen->snapshot->config.flow_control;
  if (!fc.enabled() || backend.endpoints.empty()) {
    co_return std::nullopt;
  }
  Worker& w = x.session.worker;
  auto& time = w.context().time;
  auto queue = w.flowQueue(backend.model);
  auto capacity = [&] {
    return flowCapacity(backend, fc, w.metricsView(),
                        time.monotonicNow().time_since_epoch().count());
  };
  auto admitted = [&] {
    x.flow = queue;
    x.flow_backend = &backend;
  };
  if (queue->tryAdmit(capacity())) {
    admitted();
    co_return std::nullopt;
  }
  if (x.priority < 0) {
    w.shard().flow_shed.fetch_add(1, std::memory_order_relaxed);
    co_return FlowRefusal{ErrorKind::RateLimited,
                          "the backend is saturated; sheddable request (negative priority) dropped",
                          true};
  }
  const uint64_t bytes = x.req.body().view().size();
  if (queue->queued() >= fc.max_queued || queue->queuedBytes() + bytes > fc.max_queued_bytes) {
    w.shard().flow_shed.fetch_add(1, std::memory_order_relaxed);
    co_return FlowRefusal{ErrorKind::RateLimited, "the backend is saturated and its queue is full",
                          true};
  }
  w.shard().flow_queued.fetch_add(1, std::memory_order_relaxed);
  auto waiter = std::make_shared<filters::FlowWaiter>();
  waiter->priority = x.priority;
  waiter->bytes = bytes;
  if (auto it = x.req.find("x-gateway-inference-fairness-id"); it != x.req.end()) {
    waiter->flow = std::string(it->value());
  } else if (!x.admission.identity.id.empty()) {
    waiter->flow = x.admission.identity.id;
  } else {
    waiter->flow = "default-flow";
  }
  waiter->enqueued_ns = time.monotonicNow().time_since_epoch().count();
  // The timer is shared with the wake-up, which may run after this coroutine moved on.
  auto timer = std::make_shared<SteadyTimer>(x.session.stream.get_executor());
  waiter->wake = [timer, ex = x.session.stream.get_executor()] {
    asio::post(ex, [timer] { timer->cancel(); });
  };
  queue->enqueue(waiter);
  const auto deadline = time.monotonicNow() + fc.queue_ttl;
  const auto queued_at = time.monotonicNow();
  while (true) {
    x.queue_ms = base::secondsBetween(queued_at, time.monotonicNow()) * 1e3;
    if (waiter->state.load() == filters::FlowWaiter::State::Dispatched) {
      admitted();
      if (x.series)
        x.series->queue_wait.observe(x.queue_ms / 1e3);
      co_return std::nullopt;
    }
    const auto now = time.monotonicNow();
    const bool gone = abandoned && abandoned();
    if (now >= deadline || gone) {
      if (!queue->cancel(waiter)) {
        admitted();  // dispatched just now: it owns a slot
        co_return std::nullopt;
      }
      w.shard().flow_expired.fetch_add(1, std::memory_order_relaxed);
      if (x.series)
        x.series->queue_wait.observe(x.queue_ms / 1e3);
      co_return FlowRefusal{
          ErrorKind::Unavailable,
          gone ? std::string("the request was cancelled while it waited in the backend's queue")
               : fmt::format("the request waited {} ms in the saturated backend's queue",
                             fc.queue_ttl.count()),
          false};
    }
    // Re-check now and then: capacity also returns when engine metrics recover, not only when
    // one of our requests ends.
    queue->dispatch(capacity());
    if (waiter->state.load() == filters::FlowWaiter::State::Dispatched) {
      continue;
    }
    timer->expires_after(
        std::min<std::chrono::nanoseconds>(std::chrono::milliseconds(25), deadline - now));
    error_code ignored;
    co_await timer->async_wait(asio::redirect_error(use_awaitable, ignored));
  }
}

awaitable<bool> admitFlow(Exchange& x, const router::Backend& backend) {
  std::optional<FlowRefusal> refused = co_await waitForFlow(x, backend);
  if (!refused) {
    co_return true;
  }
  co_await writeError(x, refused->kind, refused->message,
                      refused->retry_after ? "Retry-After: 1\r\n" : "");
  co_return false;
}

}  // namespace sluice::server
