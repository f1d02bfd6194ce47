#include "scheduler/scheduler.h"

#include <algorithm>
#include <iterator>

#include <fmt/format.h>

#include "base/strings.h"
#include "scheduler/plugins.h"

namespace sluice::scheduler {

Scheduler::Scheduler(std::shared_ptr<PrefixIndex> index) : index_(std::move(index)) {}

const std::vector<std::string_view>& Scheduler::presetNames() {
  static const std::vector<std::string_view> kNames = {
      "random",      "round-robin",        "least-request", "kthena-default",
      "gie-default", "sglang-cache-aware", "sluice-default"};
  return kNames;
}

namespace {

const std::vector<double>& pluginBounds() {
  static const std::vector<double> b = {2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 1e-4};
  return b;
}

}  // namespace

metrics::Histogram* Scheduler::timerFor(const std::string& name) const {
  std::lock_guard<std::mutex> lock(timers_mu_);
  auto& slot = timers_[name];
  if (!slot) {
    slot = std::make_unique<metrics::Histogram>(pluginBounds());
  }
  return slot.get();
}

std::unique_ptr<Profile> Scheduler::withTimers(std::unique_ptr<Profile> p) const {
  if (!p) {
    return p;
  }
  p->filter_timers.clear();
  for (const auto& f : p->filters) {
    p->filter_timers.push_back(timerFor(std::string(f->name()) + "-filter"));
  }
  for (auto& ws : p->scorers) {
    ws.timer = timerFor(std::string(ws.scorer->name()) + "-scorer");
  }
  return p;
}

void Scheduler::appendMetrics(std::string& out) const {
  std::lock_guard<std::mutex> lock(timers_mu_);
  metrics::appendHeader(out, "sluice_scheduler_plugin_duration_seconds", "histogram",
                        "Time spent in each scheduling plugin per request.");
  for (const auto& [name, h] : timers_) {
    metrics::HistogramSnapshot snap;
    snap.add(*h);
    metrics::appendHistogram(out, "sluice_scheduler_plugin_duration_seconds",
                             "plugin=\"" + metrics::escapeLabel(name) + "\"", snap);
  }
}

std::unique_ptr<Profile> Scheduler::makePreset(std::string_view name) const {
  auto p = std::make_unique<Profile>();
  p->name = std::string(name);
  p->picker = std::make_unique<MaxScorePicker>();
  auto add = [&](std::unique_ptr<Scorer> s, double w) { p->scorers.push_back({std::move(s), w}); };
  if (name == "random") {
    add(std::make_unique<RandomScorer>(), 1);
  } else if (name == "round-robin") {
    add(std::make_unique<RoundRobinScorer>(), 1);
  } else if (name == "least-request") {
    p->filters.push_back(std::make_unique<LeastRequestFilter>(10));
    add(std::make_unique<LeastRequestScorer>(), 1);
  } else if (name == "kthena-default") {
    // Kthena's shipped configuration: least-request filter at 10 waiting; least-request,
    // least-latency (0.5 TTFT), prefix-cache and GPU usage, each at weight 1.
    p->filters.push_back(std::make_unique<LeastRequestFilter>(10));
    add(std::make_unique<LeastRequestScorer>(), 1);
    add(std::make_unique<LeastLatencyScorer>(0.5), 1);
    add(std::make_unique<PrefixCacheScorer>(index_), 1);
    add(std::make_unique<KvCacheScorer>(), 1);
  } else if (name == "gie-default") {
    // The Inference Extension's default profile: queue 2, kv-cache 2, prefix-cache 3.
    add(std::make_unique<QueueScorer>(), 2);
    add(std::make_unique<KvCacheScorer>(), 2);
    add(std::make_unique<PrefixCacheScorer>(index_), 3);
  } else if (name == "sglang-cache-aware") {
    add(std::make_unique<SglangCacheAwareScorer>(index_, 32, 1.1, 0.5), 1);
  } else if (name == "sluice-default") {
    // Ours: never send to unhealthy or ejected endpoints when others exist; stay on the
    // cache-warm endpoint until the work in flight there (uncached prompt plus output tokens)
    // passes the threshold, then route on the router's zero-lag token load, the engines'
    // queues and KV use; spread cold prefixes; respect LoRA residency.
    p->filters.push_back(std::make_unique<HealthFilter>());
    // No saturation filter: on a fleet that is busy everywhere (KV-bound engines all queue) it
    // dropped the warm engines and halved the hit rate (bench/scheduling.sh kthena-long: 240-300
    // req/s with it, 365-426 without); the gate below and the queue and KV scorers see load.
    p->filters.push_back(std::make_unique<LoraAffinityFilter>());
    // Prefix weight 4 outweighs token load + queue + KV together (min-max normalised, one
    // waiting request swings the queue score fully), so a near-full hit stays under the gate.
    add(std::make_unique<PrefixCacheScorer>(index_, 32768), 4);
    add(std::make_unique<TokenLoadScorer>(), 2);
    add(std::make_unique<QueueScorer>(), 1);
    add(std::make_unique<KvCacheScorer>(), 1);
    add(std::make_unique<NoHitScorer>(index_), 1);
    add(std::make_unique<LoraAffinityScorer>(), 1);
  } else {
    return nullptr;
  }
  return p;
}

std::unique_ptr<Profile> Scheduler::makeProfile(
    const config::RouterConfig::ProfileSpec& spec,
    const std::vector<config::RouterConfig::PluginSpec>& plugins) const {
  auto p = std::make_unique<Profile>();
  p->name = spec.name;
  for (const auto& ref : spec.plugins) {
    auto it = std::find_if(plugins.begin(), plugins.end(),
                           [&](const auto& ps) { return ps.name == ref.plugin; });
    if (it == plugins.end()) {
      return nullptr;
    }
    auto param = [&](const char* key, double fallback) {
      auto v = it->parameters.find(key);
      return v == it->parameters.end() ? fallback : v->second;
    };
    const std::string& t = it->type;
    if (t == "health-filter") {
      p->filters.push_back(std::make_unique<HealthFilter>());
    } else if (t == "saturation-filter") {
      p->filters.push_back(std::make_unique<SaturationFilter>(
          param("maxWaiting", 16), param("maxKvUsage", 0.97), param("staleAfterSeconds", 5),
          param("relative", 0) != 0));
    } else if (t == "least-request-filter") {
      p->filters.push_back(std::make_unique<LeastRequestFilter>(param("maxWaitingRequests", 10)));
    } else if (t == "lora-affinity-filter") {
      p->filters.push_back(std::make_unique<LoraAffinityFilter>());
    } else if (t == "max-score-picker") {
      p->picker = std::make_unique<MaxScorePicker>();
    } else if (t == "weighted-random-picker") {
      p->picker = std::make_unique<WeightedRandomPicker>();
    } else {
      std::unique_ptr<Scorer> scorer;
      if (t == "random-scorer") {
        scorer = std::make_unique<RandomScorer>();
      } else if (t == "round-robin-scorer") {
        scorer = std::make_unique<RoundRobinScorer>();
      } else if (t == "least-request-scorer") {
        scorer = std::make_unique<LeastRequestScorer>();
      } else if (t == "queue-scorer") {
        scorer = std::make_unique<QueueScorer>();
      } else if (t == "kv-cache-utilization-scorer") {
        scorer = std::make_unique<KvCacheScorer>();
      } else if (t == "running-requests-scorer") {
        scorer = std::make_unique<RunningRequestsScorer>();
      } else if (t == "token-load-scorer") {
        scorer = std::make_unique<TokenLoadScorer>();
      } else if (t == "least-latency-scorer") {
        scorer = std::make_unique<LeastLatencyScorer>(param("ttftWeight", 0.5));
      } else if (t == "lora-affinity-scorer") {
        scorer = std::make_unique<LoraAffinityScorer>();
      } else if (t == "prefix-cache-scorer") {
        scorer = std::make_unique<PrefixCacheScorer>(
            index_, static_cast<int64_t>(param("loadThresholdTokens", 0)));
      } else if (t == "no-hit-scorer") {
        scorer = std::make_unique<NoHitScorer>(index_);
      } else if (t == "session-affinity-scorer") {
        scorer = std::make_unique<SessionAffinityScorer>(param("maxLoadFactor", 1.25));
      } else if (t == "sglang-cache-aware-scorer") {
        scorer = std::make_unique<SglangCacheAwareScorer>(index_, param("balanceAbsThreshold", 32),
                                                          param("balanceRelThreshold", 1.1),
                                                          param("cacheThreshold", 0.5));
      } else {
        return nullptr;
      }
      p->scorers.push_back({std::move(scorer), ref.weight});
    }
  }
  if (!p->picker) {
    p->picker = std::make_unique<MaxScorePicker>();
  }
  return p;
}

std::unique_ptr<Profile> Scheduler::makeNamed(const std::string& name,
                                              const config::RouterConfig::Scheduler& config) const {
  for (const auto& spec : config.profiles) {
    if (spec.name == name) {
      return withTimers(makeProfile(spec, config.plugins));
    }
  }
  return withTimers(makePreset(name));
}

std::string describe(const Decision& d) {
  std::string out = d.profile + ": " + d.summary;
  for (size_t r = 0; r < d.rows.size(); ++r) {
    const auto& row = d.rows[r];
    fmt::format_to(std::back_inserter(out), "; {}{} {:.3f} [", r == 0 ? "chose " : "then ",
                   row.address, row.total);
    for (size_t i = 0; i < row.scores.size() && i < d.scorer_names.size(); ++i) {
      fmt::format_to(std::back_inserter(out), "{}{} {:.2f}", i ? ", " : "", d.scorer_names[i],
                     row.scores[i]);
    }
    out += "]";
  }
  return out;
}

std::string decisionJson(const Decision& d) {
  auto q = [](std::string_view s) { return base::jsonQuote(s); };
  std::string out =
      "{\"profile\":" + q(d.profile) + ",\"summary\":" + q(d.summary) + ",\"candidates\":[";
  for (size_t r = 0; r < d.rows.size(); ++r) {
    const auto& row = d.rows[r];
    fmt::format_to(std::back_inserter(out), "{}{{\"endpoint\":{},\"total\":{:.4f},\"scores\":{{",
                   r ? "," : "", q(row.address), row.total);
    for (size_t i = 0; i < row.scores.size() && i < d.scorer_names.size(); ++i) {
      fmt::format_to(std::back_inserter(out), "{}{}:{:.4f}", i ? "," : "", q(d.scorer_names[i]),
                     row.scores[i]);
    }
    out += "}}";
  }
  return out + "]}";
}

bool usesPrefix(const Profile& profile) {
  return std::any_of(profile.scorers.begin(), profile.scorers.end(), [](const WeightedScorer& s) {
    auto n = s.scorer->name();
    return n == "prefix-cache" || n == "no-hit" || n == "sglang-cache-aware";
  });
}

void Scheduler::pick(const Profile& profile, const RequestInfo& req, const router::Backend& backend,
                     const backends::MetricsView* view, base::MonoTime now, base::Random& random,
                     size_t n, std::vector<const router::Endpoint*>& out, CycleState& state,
                     Decision* decision) const {
  out.clear();
  state = CycleState{};
  state.random = &random;
  state.now_ns = now.time_since_epoch().count();
  // Per-thread scratch, reused by every pick on this worker: no allocation per request.
  thread_local std::vector<Candidate> cands;
  thread_local std::vector<double> totals;
  thread_local std::vector<double> scores;
  thread_local std::vector<size_t> order;
  thread_local std::vector<uint32_t> aligned;
  cands.clear();
  cands.reserve(backend.endpoints.size());
  for (const auto& ep : backend.endpoints) {
    Candidate c;
    c.endpoint = &ep;
    c.in_flight = ep.state->in_flight.load(std::memory_order_relaxed);
    c.in_flight_tokens = ep.state->in_flight_tokens.load(std::memory_order_relaxed);
    if (view != nullptr) {
      c.metrics = view->find(ep.address);
      if (c.metrics != nullptr && c.metrics->scraped) {
        c.metrics_age_s = std::chrono::duration<double>(now - c.metrics->updated).count();
      }
    }
    cands.push_back(c);
  }
  if (cands.empty()) {
    return;
  }
  const size_t all = cands.size();
  for (size_t i = 0; i < profile.filters.size(); ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    profile.filters[i]->filter(req, state, cands);
    if (i < profile.filter_timers.size() && profile.filter_timers[i] != nullptr) {
      profile.filter_timers[i]->observe(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
  }
  state.prefix_computed = false;  // prefix matches are per the filtered candidate list
  totals.assign(cands.size(), 0.0);
  scores.resize(cands.size());
  std::vector<std::vector<double>> per_scorer;
  for (const auto& ws : profile.scorers) {
    const auto t0 = std::chrono::steady_clock::now();
    ws.scorer->score(req, state, cands, scores);
    if (ws.timer != nullptr) {
      ws.timer->observe(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    for (size_t i = 0; i < cands.size(); ++i) {
      totals[i] += ws.weight * std::clamp(scores[i], 0.0, 1.0);
    }
    if (decision != nullptr) {
      per_scorer.push_back(scores);
    }
  }
  order.clear();
  profile.picker->pick(totals, random, std::min(n, cands.size()), order);
  for (size_t i : order) {
    out.push_back(cands[i].endpoint);
  }
  // Endpoints the filters removed remain as last-resort fallbacks, in their original order.
  for (const auto& ep : backend.endpoints) {
    if (out.size() >= n) {
      break;
    }
    if (std::find(out.begin(), out.end(), &ep) == out.end()) {
      out.push_back(&ep);
    }
  }
  // Keep the prefix matches aligned with `out` for onDispatch (first entry = chosen).
  if (state.prefix_computed && !order.empty()) {
    aligned.clear();
    for (size_t i : order) {
      aligned.push_back(state.prefix_blocks[i]);
    }
    state.prefix_blocks.swap(aligned);
  }
  if (decision != nullptr) {
    decision->profile = profile.name;
    decision->scorer_names.clear();
    for (const auto& ws : profile.scorers) {
      decision->scorer_names.emplace_back(ws.scorer->name());
    }
    decision->rows.clear();
    for (size_t i : order) {
      Decision::Row row;
      row.address = cands[i].endpoint->address;
      row.total = totals[i];
      for (const auto& s : per_scorer) {
        row.scores.push_back(s[i]);
      }
      decision->rows.push_back(std::move(row));
    }
    decision->summary = fmt::format("{} of {} candidates after filters", cands.size(), all);
    if (state.prefix_computed && state.prefix_total > 0 && !order.empty()) {
      decision->summary += fmt::format(
          ", prefix {:.2f}", static_cast<double>(state.prefix_blocks[0]) / state.prefix_total);
    }
  }
}

void Scheduler::onDispatch(const Profile& profile, const RequestInfo& req, const CycleState& state,
                           const router::Endpoint& chosen,
                           const backends::EndpointMetrics* metrics) {
  if (req.prefix_hashes == nullptr || req.prefix_hashes->empty() || !usesPrefix(profile)) {
    return;
  }
  size_t capacity = 0;
  if (metrics != nullptr && metrics->block_size > 0 && metrics->num_blocks > 0) {
    // The engine's KV capacity in tokens, about four bytes each, in index blocks.
    capacity =
        static_cast<size_t>(metrics->block_size) * metrics->num_blocks * 4 / index_->blockBytes();
  }
  index_->insert(chosen.address, *req.prefix_hashes, capacity);
  const bool cold =
      state.prefix_computed && std::all_of(state.prefix_blocks.begin(), state.prefix_blocks.end(),
                                           [](uint32_t b) { return b == 0; });
  if (cold) {
    chosen.state->last_cold_pick.store(cold_seq_.fetch_add(1, std::memory_order_relaxed) + 1,
                                       std::memory_order_relaxed);
  }
}

}  // namespace sluice::scheduler
