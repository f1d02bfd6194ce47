#include "server/completion.h"

#include <chrono>

#include "server/flow_stage.h"
#include "server/trace_stage.h"
#include "server/worker.h"

namespace sluice::server {

namespace {

metrics::ModelSeries& seriesOf(Exchange& x, bool client_named) {
  metrics::SeriesKey key;
  key.model = x.model_label;
  key.gateway = x.listener ? std::string_view(x.listener->gateway) : std::string_view();
  key.route = x.route_qualified;
  key.backend = x.backend && !x.backend->kind.empty() ? std::string_view(x.backend->model)
                                                      : std::string_view();
  return x.session.worker.shard().series(key, client_named);
}

void completeObjective(Exchange& x, double seconds) {
  metrics::ObjectiveSeries& o = *x.objective_series;
  o.running.fetch_sub(1, std::memory_order_relaxed);
  if (x.status >= 400 && x.status < 600) {
    o.errors_by_status[static_cast<size_t>(x.status)].fetch_add(1, std::memory_order_relaxed);
  }
  o.duration.observe(seconds);
  if (x.usage.input_tokens > 0 || x.usage.output_tokens > 0) {
    o.input_tokens.observe(static_cast<double>(x.usage.input_tokens));
    o.output_tokens.observe(static_cast<double>(x.usage.output_tokens));
  }
}

void writeAccessRecord(Exchange& x, double seconds);

}  // namespace

void labelExchange(Exchange& x, const router::Backend& backend, std::string_view model,
                   std::string_view upstream_model, bool client_named) {
  x.backend = &backend;
  x.requested_model.assign(model);
  if (upstream_model != model) {
    x.upstream_model.assign(upstream_model);
  }
  x.series = &seriesOf(x, client_named);
  if (!model.empty()) {
    auto& shard = x.session.worker.shard();
    x.objective_series = &shard.objective(model, upstream_model.empty() ? model : upstream_model);
    x.objective_series->requests.fetch_add(1, std::memory_order_relaxed);
    x.objective_series->running.fetch_add(1, std::memory_order_relaxed);
  }
}

void finishExchange(Exchange& x) {
  Worker& w = x.session.worker;
  auto& ctx = w.context();
  const auto now = ctx.time.monotonicNow();
  double seconds = base::secondsBetween(x.start, now);
  metrics::ModelSeries& series = x.series ? *x.series : seriesOf(x, false);
  series.countRequest(x.status, seconds);
  if (x.rate_limited >= 0 && static_cast<size_t>(x.rate_limited) < series.rate_limited.size()) {
    series.rate_limited[static_cast<size_t>(x.rate_limited)].fetch_add(1,
                                                                       std::memory_order_relaxed);
  }
  if (x.objective_series) {
    completeObjective(x, seconds);
  }
  series.input_tokens.fetch_add(x.usage.input_tokens, std::memory_order_relaxed);
  if (x.flow) {
    // Free the slot and hand it to the best waiter.
    x.flow->release();
    x.flow->dispatch(flowCapacity(*x.flow_backend, x.gen->snapshot->config.flow_control,
                                  w.metricsView(), now.time_since_epoch().count()));
  }
  if (x.filters && !x.admission.reservations.empty()) {
    // Reconcile the rate-limit reservations with what was really used.
    const bool usage_known = x.usage.input_tokens > 0 || x.usage.output_tokens > 0;
    x.filters->complete(x.admission, usage_known, x.served && x.status < 500, x.usage.input_tokens,
                        x.usage.output_tokens, now.time_since_epoch().count());
  }
  series.output_tokens.fetch_add(x.usage.output_tokens, std::memory_order_relaxed);
  if (ctx.access_log.enabled()) {
    writeAccessRecord(x, seconds);
  }
  finishTrace(x);
}

namespace {

void writeAccessRecord(Exchange& x, double seconds) {
  Worker& w = x.session.worker;
  auto& ctx = w.context();
  metrics::AccessRecord r;
  r.request_id = x.request_id;
  r.method = x.method;
  r.path = x.path;
  r.protocol = x.http10 ? "HTTP/1.0" : "HTTP/1.1";
  r.status = x.status;
  r.model = x.requested_model;
  r.endpoint = x.endpoint;
  r.attempts = x.attempts;
  r.input_tokens = x.usage.input_tokens;
  r.output_tokens = x.usage.output_tokens;
  r.ttft_ms = x.ttft_ms;
  r.duration_ms = seconds * 1e3;
  r.error_type = x.error_type;
  r.client = x.session.client_ip;
  r.stream = x.stream;
  r.decision = x.decision;
  r.identity = x.identity_tag;
  r.limit = x.admission.limit;
  r.queue_ms = x.queue_ms;
  if (x.listener != nullptr) {
    r.gateway = x.listener->gateway;
    r.listener = x.listener->name;
  }
  (x.route_kind == "ModelRoute" ? r.model_route : r.http_route) = x.route;
  r.route_rule = x.route_rule;
  if (x.backend != nullptr) {
    const auto& b = *x.backend;
    r.backend_kind = b.kind;
    r.backend = b.kind.empty() ? std::string_view(b.model) : std::string_view(b.name);
    if (b.kind == "InferencePool") {
      r.inference_pool = b.name;
    }
  }
  r.upstream_model = x.upstream_model;
  r.objective = x.objective;
  r.upstream_protocol = x.upstream_protocol;
  const std::string trace_id = traceIdHex(x);
  const std::string span_id = spanIdHex(x);
  r.trace_id = trace_id;
  r.span_id = span_id;
  r.unix_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(ctx.time.systemNow().time_since_epoch())
          .count();
  ctx.access_log.write(w.index(), r);
}

}  // namespace

}  // namespace sluice::server
