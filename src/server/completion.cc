#include "server/completion.h"

#include <chrono>

#include "server/flow_stage.h"
#include "server/worker.h"

namespace sluice::server {

void finishExchange(Exchange& x) {
  Worker& w = x.session.worker;
  auto& ctx = w.context();
  const auto now = ctx.time.monotonicNow();
  double seconds = base::secondsBetween(x.start, now);
  metrics::ModelSeries& series = x.series ? *x.series : w.shard().model(x.model_label);
  series.countRequest(x.status, seconds);
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
    metrics::AccessRecord r;
    r.request_id = x.request_id;
    r.method = x.method;
    r.path = x.path;
    r.status = x.status;
    r.model = x.model_label;
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
    r.unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                    ctx.time.systemNow().time_since_epoch())
                    .count();
    ctx.access_log.write(w.index(), r);
  }
}

}  // namespace sluice::server
