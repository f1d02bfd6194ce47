#include "server/admission_stage.h"

#include <algorithm>

#include <fmt/format.h>

#include "server/client_io.h"
#include "server/worker.h"

namespace sluice::server {

using openai::ErrorKind;

// A request the filters refused: 401 (with WWW-Authenticate), 403, 429 (with Retry-After) or 503.
awaitable<void> writeRefusal(Exchange& x, const filters::Admission& a) {
  Worker& w = x.session.worker;
  const int status = a.status;
  if (status == 401) {
    w.shard().rejected_unauthorized.fetch_add(1, std::memory_order_relaxed);
  } else if (status == 403) {
    w.shard().rejected_forbidden.fetch_add(1, std::memory_order_relaxed);
  } else {
    w.shard().rejected_rate_limited.fetch_add(1, std::memory_order_relaxed);
    if (status == 429 && !a.limit.empty()) {
      x.rate_limited = static_cast<int>(a.limit_kind);  // counted with the request's series
    }
  }
  std::string extra = status == 401 ? "WWW-Authenticate: Bearer\r\n"
                      : status == 429 && a.retry_after_s > 0
                          ? fmt::format("Retry-After: {}\r\n", a.retry_after_s)
                          : std::string();
  std::string message = a.message;
  ErrorKind kind = status == 401   ? ErrorKind::Unauthorized
                   : status == 403 ? ErrorKind::Forbidden
                   : status == 503 ? ErrorKind::Unavailable
                                   : ErrorKind::RateLimited;
  co_await writeError(x, kind, message, extra);
}

awaitable<bool> admit(Exchange& x, const router::ListenerRoutes* listener, const RouteMatch& m,
                      const openai::RequestPeek& peek) {
  Worker& w = x.session.worker;
  // Filters: authentication, model access and rate limits, before anything is revealed about
  // routing (an unauthenticated client learns nothing, not even whether a model exists).
  if (const auto& chain = x.gen->filters; chain && chain->active()) {
    // The mode: the route's annotation, else the Gateway's, else the global default.
    std::string_view mode_text;
    const router::ModelRouteEntry* model_route = nullptr;
    if (m.route.action != nullptr && !m.route.action->auth_mode.empty()) {
      mode_text = m.route.action->auth_mode;
    }
    if (m.model_route != nullptr) {
      model_route = m.model_route;
      if (!model_route->auth_mode.empty())
        mode_text = model_route->auth_mode;
    }
    if (mode_text.empty() && listener != nullptr && !listener->auth_mode.empty()) {
      mode_text = listener->auth_mode;
    }
    // Which configured limits apply: the route's annotation, else the Gateway's, else all.
    std::string_view limit_selection;
    if (m.model_route != nullptr && !m.model_route->rate_limits.empty()) {
      limit_selection = m.model_route->rate_limits;
    } else if (m.route.action != nullptr && !m.route.action->rate_limits.empty()) {
      limit_selection = m.route.action->rate_limits;
    } else if (listener != nullptr) {
      limit_selection = listener->rate_limits;
    }
    filters::FilterRequest fr;
    fr.mode = mode_text.empty() ? chain->defaultMode()
                                : filters::parseAuthMode(mode_text).value_or(chain->defaultMode());
    if (auto it = x.req.find(bhttp::field::authorization); it != x.req.end()) {
      fr.authorization = it->value();
    }
    if (auto it = x.req.find("x-api-key"); it != x.req.end()) {
      fr.api_key = it->value();
    }
    fr.model = peek.model;
    fr.limit_selection = limit_selection;
    if (listener != nullptr)
      fr.gateway = listener->gateway;
    if (model_route != nullptr) {
      fr.route = model_route->qualified;
      if (model_route->rate_limit)
        fr.route_limit = &*model_route->rate_limit;
    } else if (m.route.action != nullptr) {
      fr.route = m.route.action->qualified;
    }
    fr.input_tokens = peek.prompt.valid() ? std::max<uint64_t>(1, peek.prompt.length / 4) : 0;
    fr.output_tokens = peek.model.empty() ? 0 : peek.max_tokens.value_or(kDefaultExpectedOutput);
    fr.now_ns = w.context().time.monotonicNow().time_since_epoch().count();
    fr.unix_s = std::chrono::duration_cast<std::chrono::seconds>(
                    w.context().time.systemNow().time_since_epoch())
                    .count();
    x.admission = chain->admit(fr, w.buckets());
    // A global limit whose local lease is empty: Redis is being asked; wait for its answer
    // (bounded), then admit again. Most requests never get here.
    for (int round = 0; !x.admission.ok && x.admission.wait_for && round < 3; ++round) {
      auto lease = x.admission.wait_for;
      const auto generation = x.admission.wait_generation;
      const auto until =
          w.context().time.monotonicNow() + 2 * x.gen->snapshot->config.redis_timeout;
      SteadyTimer pause(x.session.stream.get_executor());
      while (lease->generation.load() == generation && w.context().time.monotonicNow() < until) {
        pause.expires_after(std::chrono::milliseconds(1));
        error_code ignored;
        co_await pause.async_wait(asio::redirect_error(use_awaitable, ignored));
      }
      fr.now_ns = w.context().time.monotonicNow().time_since_epoch().count();
      x.admission = chain->admit(fr, w.buckets());
    }
    if (!x.admission.ok && x.admission.status == 0) {
      x.admission.status = 503;
      x.admission.message = "a global rate limit could not be checked in time";
    }
    x.filters = chain;
    x.identity_tag = x.admission.identity.tag;
    if (x.admission.ok && x.gen->snapshot->config.stop_streams_over_budget) {
      for (const auto& r : x.admission.reservations) {
        using Kind = filters::Admission::Reservation::Kind;
        if (r.kind == Kind::Output || r.kind == Kind::Total) {
          x.output_budget = std::max<uint64_t>(1, fr.output_tokens);
        }
      }
    }
    x.strip_credentials = fr.mode != filters::AuthMode::Off && x.admission.credentials_present &&
                          !chain->forwardCredentials();
    if (!x.admission.ok) {
      if (x.admission.status == 429 && m.routed && m.route.backend != nullptr &&
          m.route.backend->error.empty()) {
        labelRoute(x, listener, peek, m);  // a limit's refusal counts under its model and route
      }
      co_await writeRefusal(x, x.admission);
      co_return false;
    }
  }
  co_return true;
}

}  // namespace sluice::server
