#include "server/attempts.h"

#include <algorithm>

#include <fmt/format.h>

#include "base/log.h"
#include "server/picker_stage.h"
#include "server/relay.h"
#include "server/trace_stage.h"
#include "server/worker.h"

namespace sluice::server {

using openai::ErrorKind;

namespace {

// How messages name a target: "endpoint 10.0.0.1:8000", "external provider ns/name".
std::string who(const Target& t) {
  return t.endpoint != nullptr ? "endpoint " + t.address
                               : "external provider " + std::string(t.provider);
}

struct Failure {
  ErrorKind kind = ErrorKind::UpstreamUnavailable;
  std::string message = "no endpoint could be reached";
};

// Outlier detection: every failed attempt counts against its endpoint.
void countFailure(Exchange& x, const Target& t) {
  if (t.endpoint == nullptr) {
    return;
  }
  Worker& w = x.session.worker;
  const auto& u = x.gen->snapshot->config.upstream;
  const auto now = w.context().time.monotonicNow().time_since_epoch().count();
  if (u.eject_after_failures > 0 &&
      t.endpoint->state->onFailure(now, u.eject_after_failures,
                                   std::chrono::nanoseconds(u.ejection).count(),
                                   std::chrono::nanoseconds(u.max_ejection).count())) {
    w.shard().ejections.fetch_add(1, std::memory_order_relaxed);
    SLUICE_LOG(Warn, "proxy", "endpoint {} ejected after {} consecutive failures", t.address,
               u.eject_after_failures);
  }
}

void connectFailed(Exchange& x, const Target& t, const SendResult& r, Failure& f) {
  const bool timeout = isTimeout(r.ec);
  if (x.series) {
    x.series->countUpstreamError(timeout ? metrics::UpstreamError::ConnectTimeout
                                         : metrics::UpstreamError::ConnectFailed);
  }
  countFailure(x, t);
  f.kind = timeout ? ErrorKind::UpstreamTimeout : ErrorKind::UpstreamUnavailable;
  f.message = fmt::format("connecting to {} failed: {}", who(t),
                          timeout         ? std::string_view("timed out")
                          : r.why.empty() ? std::string_view(r.ec.message())
                                          : std::string_view(r.why));
  if (t.endpoint == nullptr) {
    SLUICE_LOG(Warn, "proxy", "{}", f.message);
  }
}

void exchangeFailed(Exchange& x, const Target& t, const error_code& ec, Failure& f) {
  const bool timeout = isTimeout(ec);
  if (x.series) {
    x.series->countUpstreamError(timeout ? metrics::UpstreamError::ResponseTimeout
                                 : isStaleConnectionError(ec)
                                     ? metrics::UpstreamError::Reset
                                     : metrics::UpstreamError::BadResponse);
  }
  countFailure(x, t);
  f.kind = timeout ? ErrorKind::UpstreamTimeout : ErrorKind::UpstreamUnavailable;
  f.message = timeout ? fmt::format("{} did not answer in time", who(t))
                      : fmt::format("{} failed before responding: {}", who(t), ec.message());
}

// The pause before attempt `i` (never past the request's deadline); false when the deadline
// has passed.
awaitable<bool> beforeAttempt(Exchange& x, size_t i, const AttemptPlan& plan, Failure& f) {
  Worker& w = x.session.worker;
  if (i == 0) {
    co_return true;
  }
  if (x.series) {
    x.series->retries.fetch_add(1, std::memory_order_relaxed);
  }
  if (x.deadline && w.context().time.monotonicNow() >= *x.deadline) {
    f.kind = ErrorKind::UpstreamTimeout;
    f.message = "the request's deadline passed before another attempt";
    co_return false;
  }
  auto pause = plan.retry_pause;
  if (pause.count() > 0 && x.deadline) {
    pause = std::min(pause, std::chrono::duration_cast<std::chrono::milliseconds>(
                                *x.deadline - w.context().time.monotonicNow()));
  }
  if (pause.count() > 0) {
    SteadyTimer timer(x.session.stream.get_executor(), pause);
    error_code ignored;
    co_await timer.async_wait(asio::redirect_error(use_awaitable, ignored));
  }
  co_return true;
}

std::chrono::milliseconds attemptTimeout(const Exchange& x, const AttemptPlan& plan) {
  auto t = plan.attempt_timeout;
  if (x.deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        *x.deadline - x.session.worker.context().time.monotonicNow());
    t = std::max(std::chrono::milliseconds(1), std::min(t, left));
  }
  return t;
}

// One target: the exchange (resent once on a fresh connection when the pooled one had been
// closed). True when the target answered with a head.
awaitable<bool> attempt(Exchange& x, Transport& transport, ClientWatch& watch, const Target& t,
                        const AttemptPlan& plan, Failure& f) {
  const auto connect = x.gen->snapshot->config.timeouts.upstream_connect;
  bool fresh_retry_allowed = true;
  while (true) {
    SendResult r;
    co_await transport.send(t, !fresh_retry_allowed, connect, attemptTimeout(x, plan), r);
    if (r.connect_failed) {
      connectFailed(x, t, r, f);
      transport.drop();
      co_return false;
    }
    if (watch.client_gone) {
      transport.drop();
      co_return false;
    }
    if (!r.ec) {
      co_return true;
    }
    const bool stale = transport.stale(r.ec);
    transport.drop();
    if (r.reused && fresh_retry_allowed && stale) {
      fresh_retry_allowed = false;  // the pooled connection had been closed by the other side
      continue;
    }
    exchangeFailed(x, t, r.ec, f);
    co_return false;
  }
}

}  // namespace

awaitable<void> runAttempts(Exchange& x, const RouteChoice& route, Transport& transport,
                            ClientWatch& watch, const AttemptPlan& plan, RelayArgs relay) {
  Session& s = x.session;
  Failure failure;
  router::Reservation held;  // the chosen endpoint's load, released when the response ends
  bool chosen = false;
  const size_t n = plan.targets.size();
  for (size_t i = 0; i < n && !watch.client_gone && !s.cut_by_shutdown; ++i) {
    const Target& t = plan.targets[i];
    if (!co_await beforeAttempt(x, i, plan, failure)) {
      break;  // no retry past the request's deadline
    }
    ++x.attempts;
    x.endpoint = t.address;
    const size_t span = traceAttempt(x, i, t.address, plan.head);
    router::Reservation reservation;
    if (t.endpoint != nullptr && plan.schedule != nullptr) {
      reservation = router::Reservation(
          t.endpoint->state.get(),
          plan.schedule->expectedWork(i, s.worker.scheduler().index().blockBytes()));
    }
    if (!co_await attempt(x, transport, watch, t, plan, failure)) {
      if (auto* sp = traceSpan(x, span)) {
        sp->error_message = failure.message;
      }
      traceClose(x, span, true);
      continue;
    }
    const int status = transport.status();
    if (auto* sp = traceSpan(x, span)) {
      sp->set("http.response.status_code", static_cast<int64_t>(status));
      sp->error = status >= 500;
    }
    if (t.endpoint != nullptr) {
      if (status >= 500) {
        countFailure(x, t);
      } else {
        t.endpoint->state->onSuccess();
      }
    }
    const bool retriable = plan.retry_codes != nullptr &&
                           std::find(plan.retry_codes->begin(), plan.retry_codes->end(), status) !=
                               plan.retry_codes->end();
    if (retriable && i + 1 < n) {
      if (x.series) {
        x.series->countUpstreamError(metrics::UpstreamError::Status5xx);
      }
      traceClose(x, span, true);
      transport.drop();
      continue;
    }
    chosen = true;
    held = std::move(reservation);
    break;
  }
  if (!chosen) {
    co_await stopWatch(s, watch);
    if (watch.client_gone) {
      x.status = 499;
      x.error_type = "client_closed";
      x.keep_alive = false;
      co_return;
    }
    if (s.cut_by_shutdown) {
      x.keep_alive = false;
      co_await writeError(x, ErrorKind::Unavailable,
                          "the router is shutting down: the request was cut at the drain deadline");
      co_return;
    }
    co_await writeError(x, failure.kind, failure.message);
    co_return;
  }
  x.served = true;
  if (x.picker != nullptr) {
    // The response phase: the picker learns which endpoint served; its header changes apply.
    co_await reportServed(x, *x.picker, transport.head(), x.endpoint);
  }
  relay.held = &held;
  co_await transport.relay(x, route, std::move(relay));
}

}  // namespace sluice::server
