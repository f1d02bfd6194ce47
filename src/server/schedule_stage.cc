#include "server/schedule_stage.h"

#include <algorithm>

#include "base/padded_buffer.h"
#include "openai/prompt_render.h"
#include "server/worker.h"

namespace sluice::server {

void schedule(Exchange& x, const RouteChoice& route, const openai::RequestPeek& peek, size_t list,
              Schedule& out) {
  const router::Backend& backend = *route.backend;
  Worker& w = x.session.worker;
  const auto& cfg = x.gen->snapshot->config;
  std::string_view body = x.req.body().view();
  // Schedule: the profile orders the endpoints; the first is dispatched to at once.
  const scheduler::Profile& profile = x.gen->profiles->forModel(backend.model);
  scheduler::RequestInfo& info = out.info;
  info.model = route.upstream_model.empty() ? std::string_view(peek.model)
                                            : std::string_view(route.upstream_model);
  info.prompt_tokens = std::max<uint64_t>(1, peek.prompt.length / 4);
  // A LoRA adapter: named so by a ModelRoute, or served or run as one by an engine (one set
  // lookup: the fetcher gathers the adapters when it publishes).
  if (route.lora) {
    info.lora = info.model;
  } else if (const auto* view = w.metricsView();
             view != nullptr && view->isLoraAdapter(info.model)) {
    info.lora = info.model;
  }
  info.max_tokens = peek.max_tokens.value_or(kDefaultExpectedOutput);
  std::vector<uint64_t>& prefix_hashes = out.prefix_hashes;
  if (scheduler::usesPrefix(profile) && peek.prompt.valid()) {
    // Keys come from the prompt rendered in one canonical form (tools, then each message), so
    // the turns of one conversation share their prefix whatever the client's JSON formatting.
    thread_local std::string rendered;
    openai::renderPrompt(peek, body, x.req.body().capacity() + base::PaddedBuffer::kPadding,
                         rendered);
    std::string_view parts[] = {rendered};
    w.scheduler().index().hashPrompt(info.model, parts, prefix_hashes);
    info.prefix_hashes = &prefix_hashes;
  }
  if (!cfg.scheduler.session_header.empty()) {
    if (auto it = x.req.find(cfg.scheduler.session_header); it != x.req.end()) {
      info.session = it->value();
    }
  }
  if (info.session.empty()) {
    info.session = peek.user;
  }
  auto& candidates = out.candidates;
  auto& cycle = out.cycle;
  const bool explain = cfg.scheduler.decisions > 0 || cfg.access_log.decisions;
  scheduler::Decision decision;
  const auto schedule_start = w.context().time.monotonicNow();
  w.scheduler().pick(profile, info, backend, w.metricsView(), schedule_start, w.random(), list,
                     candidates, cycle, explain ? &decision : nullptr);
  if (explain) {
    if (cfg.access_log.decisions) {
      x.decision = scheduler::describe(decision);
    }
    if (cfg.scheduler.decisions > 0) {
      w.recordDecision(x.request_id, backend.model, std::move(decision), cfg.scheduler.decisions);
    }
  }
  if (x.series) {
    x.series->schedule.observe(
        base::secondsBetween(schedule_start, w.context().time.monotonicNow()));
    if (cycle.prefix_computed && cycle.prefix_total > 0 && !cycle.prefix_blocks.empty()) {
      x.series->prefix_ratio.observe(static_cast<double>(cycle.prefix_blocks[0]) /
                                     cycle.prefix_total);
    }
  }
  if (!candidates.empty()) {
    w.shard().picks(candidates.front()->address).fetch_add(1, std::memory_order_relaxed);
    const auto* view = w.metricsView();
    w.scheduler().onDispatch(profile, info, cycle, *candidates.front(),
                             view ? view->find(candidates.front()->address) : nullptr);
  }
}

int64_t Schedule::expectedWork(size_t i, size_t block_bytes) const {
  // An endpoint's load is the work it was given: the prompt it must compute (less the prefix
  // the index says it holds) plus the expected output.
  const bool known = cycle.prefix_computed && i < cycle.prefix_blocks.size();
  return static_cast<int64_t>(info.expectedWorkOn(known ? cycle.prefix_blocks[i] : 0, block_bytes));
}

}  // namespace sluice::server
