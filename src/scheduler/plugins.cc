#include "scheduler/plugins.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <xxhash.h>

#include <boost/container/small_vector.hpp>

namespace sluice::scheduler {

namespace {
// Per-candidate scratch values: inline for the usual pool sizes, so scoring allocates nothing.
template <class T>
using Scratch = boost::container::small_vector<T, 16>;
template <class T>
std::span<T> spanOf(Scratch<T>& v) {
  return {v.data(), v.size()};
}
}  // namespace
namespace {

// Keeps the candidates `keep` accepts, unless that would leave none.
template <class Pred>
void keepIf(std::vector<Candidate>& cands, Pred keep) {
  if (std::any_of(cands.begin(), cands.end(), keep)) {
    cands.erase(
        std::remove_if(cands.begin(), cands.end(), [&](const Candidate& c) { return !keep(c); }),
        cands.end());
  }
}

// (max - v) / (max - min): the lowest value scores 1, the highest 0; all equal scores 1.
void lowerIsBetter(std::span<const double> values, std::span<double> out) {
  double lo = HUGE_VAL, hi = -HUGE_VAL;
  for (double v : values) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  for (size_t i = 0; i < values.size(); ++i) {
    out[i] = hi > lo ? (hi - values[i]) / (hi - lo) : 1.0;
  }
}

double waitingOf(const Candidate& c) {
  return c.metrics && c.metrics->waiting >= 0 ? c.metrics->waiting : 0.0;
}

double runningOf(const Candidate& c) {
  // Before the first scrape the router's own count stands in.
  double engine = c.metrics && c.metrics->running >= 0 ? c.metrics->running : 0.0;
  return std::max(engine, static_cast<double>(c.in_flight));
}

bool contains(const std::vector<std::string>& v, std::string_view s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

}  // namespace

void computePrefixMatches(const PrefixIndex& index, const RequestInfo& req, CycleState& state,
                          std::span<const Candidate> cands) {
  if (state.prefix_computed) {
    return;
  }
  state.prefix_computed = true;
  state.prefix_blocks.assign(cands.size(), 0);
  state.prefix_total = req.prefix_hashes ? static_cast<uint32_t>(req.prefix_hashes->size()) : 0;
  if (state.prefix_total == 0) {
    return;
  }
  Scratch<const std::string*> addresses;
  addresses.reserve(cands.size());
  for (const auto& c : cands) {
    addresses.push_back(&c.endpoint->address);
  }
  index.match(*req.prefix_hashes, spanOf(addresses), state.prefix_blocks);
}

// --- filters ---

void HealthFilter::filter(const RequestInfo&, CycleState& state, std::vector<Candidate>& cands) {
  keepIf(cands, [&](const Candidate& c) {
    return (!c.metrics || c.metrics->healthy) && !c.endpoint->state->ejected(state.now_ns);
  });
}

void SaturationFilter::filter(const RequestInfo&, CycleState&, std::vector<Candidate>& cands) {
  auto fresh = [&](const Candidate& c) {
    return c.metrics && c.metrics->scraped && c.metrics_age_s >= 0 &&
           c.metrics_age_s <= stale_after_s_;
  };
  double waiting_floor = 0, kv_limit = max_kv_;
  if (relative_) {
    double least_waiting = HUGE_VAL, least_kv = HUGE_VAL;
    for (const auto& c : cands) {
      if (fresh(c)) {
        least_waiting = std::min(least_waiting, waitingOf(c));
        least_kv = std::min(least_kv, c.metrics->kv_usage < 0 ? 0.0 : c.metrics->kv_usage);
      }
    }
    if (least_waiting != HUGE_VAL) {
      waiting_floor = least_waiting;
      if (least_kv > max_kv_ - 0.1) {
        kv_limit = HUGE_VAL;  // every engine's cache is about as full: not a reason to move
      }
    }
  }
  keepIf(cands, [&](const Candidate& c) {
    if (!c.metrics || !c.metrics->scraped) {
      // Never scraped yet (the router just started, or the endpoint just appeared): the
      // router's own zero-lag accounting is all there is, and the load scorers use it. Dropping
      // these would herd a cold start onto whichever engine answered its first scrape first.
      return true;
    }
    if (c.metrics_age_s < 0 || c.metrics_age_s > stale_after_s_) {
      return false;  // scraped once, nothing fresh since: treat as saturated
    }
    return waitingOf(c) - waiting_floor < max_waiting_ &&
           (c.metrics->kv_usage < 0 || c.metrics->kv_usage < kv_limit);
  });
}

void LeastRequestFilter::filter(const RequestInfo&, CycleState&, std::vector<Candidate>& cands) {
  keepIf(cands, [&](const Candidate& c) { return waitingOf(c) <= max_waiting_; });
}

void LoraAffinityFilter::filter(const RequestInfo& req, CycleState&,
                                std::vector<Candidate>& cands) {
  if (req.lora.empty()) {
    return;
  }
  // Only engines that can serve the adapter at all (it is in their /v1/models, or running or
  // waiting); then those that already hold it; else those with a free adapter slot. A step that
  // would leave nobody is skipped (keepIf): the set never empties here.
  auto active = [&](const Candidate& c) {
    return c.metrics && (contains(c.metrics->running_loras, req.lora) ||
                         contains(c.metrics->waiting_loras, req.lora));
  };
  keepIf(cands, [&](const Candidate& c) {
    return active(c) || (c.metrics && contains(c.metrics->adapters, req.lora));
  });
  if (std::any_of(cands.begin(), cands.end(), active)) {
    keepIf(cands, active);
    return;
  }
  keepIf(cands, [&](const Candidate& c) {
    return c.metrics && c.metrics->max_loras > 0 &&
           static_cast<int>(c.metrics->running_loras.size() + c.metrics->waiting_loras.size()) <
               c.metrics->max_loras;
  });
}

// --- scorers ---

void RandomScorer::score(const RequestInfo&, CycleState& state, std::span<const Candidate> cands,
                         std::span<double> out) {
  for (size_t i = 0; i < cands.size(); ++i) {
    out[i] = static_cast<double>(state.random->next() >> 11) * 0x1.0p-53;
  }
}

void RoundRobinScorer::score(const RequestInfo&, CycleState&, std::span<const Candidate> cands,
                             std::span<double> out) {
  const uint64_t turn = next_.fetch_add(1, std::memory_order_relaxed);
  const size_t n = cands.size();
  for (size_t i = 0; i < n; ++i) {
    // The endpoint whose turn it is scores 1, the next 1 - 1/n, and so on around the ring.
    out[i] = 1.0 - static_cast<double>((i + n - turn % n) % n) / static_cast<double>(n);
  }
}

void LeastRequestScorer::score(const RequestInfo&, CycleState&, std::span<const Candidate> cands,
                               std::span<double> out) {
  Scratch<double> load(cands.size());
  for (size_t i = 0; i < cands.size(); ++i) {
    load[i] = runningOf(cands[i]) + 100.0 * waitingOf(cands[i]);
  }
  lowerIsBetter(spanOf(load), out);
}

void QueueScorer::score(const RequestInfo&, CycleState&, std::span<const Candidate> cands,
                        std::span<double> out) {
  Scratch<double> q(cands.size());
  for (size_t i = 0; i < cands.size(); ++i) {
    q[i] = waitingOf(cands[i]);
  }
  lowerIsBetter(spanOf(q), out);
}

void KvCacheScorer::score(const RequestInfo&, CycleState&, std::span<const Candidate> cands,
                          std::span<double> out) {
  for (size_t i = 0; i < cands.size(); ++i) {
    const auto* m = cands[i].metrics;
    out[i] = m && m->kv_usage >= 0 ? std::clamp(1.0 - m->kv_usage, 0.0, 1.0) : 0.5;
  }
}

void RunningRequestsScorer::score(const RequestInfo&, CycleState&, std::span<const Candidate> cands,
                                  std::span<double> out) {
  Scratch<double> r(cands.size());
  for (size_t i = 0; i < cands.size(); ++i) {
    r[i] = runningOf(cands[i]);
  }
  lowerIsBetter(spanOf(r), out);
}

void TokenLoadScorer::score(const RequestInfo&, CycleState&, std::span<const Candidate> cands,
                            std::span<double> out) {
  Scratch<double> t(cands.size());
  for (size_t i = 0; i < cands.size(); ++i) {
    t[i] = static_cast<double>(cands[i].in_flight_tokens);
  }
  lowerIsBetter(spanOf(t), out);
}

void LeastLatencyScorer::score(const RequestInfo&, CycleState&, std::span<const Candidate> cands,
                               std::span<double> out) {
  const size_t n = cands.size();
  Scratch<double> ttft(n), itl(n), ttft_s(n), itl_s(n);
  for (size_t i = 0; i < n; ++i) {
    const auto* m = cands[i].metrics;
    ttft[i] = m && m->ttft_s >= 0 ? m->ttft_s : 0.0;
    itl[i] = m && m->itl_s >= 0 ? m->itl_s : 0.0;
  }
  lowerIsBetter(spanOf(ttft), spanOf(ttft_s));
  lowerIsBetter(spanOf(itl), spanOf(itl_s));
  for (size_t i = 0; i < n; ++i) {
    out[i] = ttft_weight_ * ttft_s[i] + (1 - ttft_weight_) * itl_s[i];
  }
}

void LoraAffinityScorer::score(const RequestInfo& req, CycleState&,
                               std::span<const Candidate> cands, std::span<double> out) {
  for (size_t i = 0; i < cands.size(); ++i) {
    const auto* m = cands[i].metrics;
    if (req.lora.empty()) {
      out[i] = 1.0;
    } else if (m && contains(m->running_loras, req.lora)) {
      out[i] = 1.0;
    } else if (m && m->max_loras > 0 &&
               static_cast<int>(m->running_loras.size() + m->waiting_loras.size()) < m->max_loras) {
      out[i] = 0.8;
    } else if (m && contains(m->waiting_loras, req.lora)) {
      out[i] = 0.6;
    } else {
      out[i] = 0.0;
    }
  }
}

void PrefixCacheScorer::score(const RequestInfo& req, CycleState& state,
                              std::span<const Candidate> cands, std::span<double> out) {
  computePrefixMatches(*index_, req, state, cands);
  int64_t least = INT64_MAX;
  for (const auto& c : cands) {
    least = std::min(least, c.in_flight_tokens);
  }
  for (size_t i = 0; i < cands.size(); ++i) {
    if (state.prefix_total == 0) {
      out[i] = 0;
      continue;
    }
    out[i] = static_cast<double>(state.prefix_blocks[i]) / state.prefix_total;
    if (load_threshold_tokens_ > 0 && cands[i].in_flight_tokens - least > load_threshold_tokens_) {
      out[i] = 0;  // warm but overloaded: let the load scorers decide
    }
  }
}

void NoHitScorer::score(const RequestInfo& req, CycleState& state, std::span<const Candidate> cands,
                        std::span<double> out) {
  computePrefixMatches(*index_, req, state, cands);
  const bool cold = std::all_of(state.prefix_blocks.begin(), state.prefix_blocks.end(),
                                [](uint32_t b) { return b == 0; });
  if (!cold || cands.size() < 2) {
    std::fill(out.begin(), out.end(), 0.5);
    return;
  }
  Scratch<double> last(cands.size());
  for (size_t i = 0; i < cands.size(); ++i) {
    last[i] = static_cast<double>(
        cands[i].endpoint->state->last_cold_pick.load(std::memory_order_relaxed));
  }
  lowerIsBetter(spanOf(last), out);
}

void SessionAffinityScorer::score(const RequestInfo& req, CycleState&,
                                  std::span<const Candidate> cands, std::span<double> out) {
  if (req.session.empty() || cands.empty()) {
    std::fill(out.begin(), out.end(), 0.5);
    return;
  }
  double avg = 0;
  for (const auto& c : cands) {
    avg += static_cast<double>(c.in_flight);
  }
  avg /= static_cast<double>(cands.size());
  const double cap = max_load_factor_ * (avg + 1);
  const uint64_t key = XXH3_64bits(req.session.data(), req.session.size());
  std::vector<std::pair<uint64_t, size_t>> ranked;
  for (size_t i = 0; i < cands.size(); ++i) {
    const auto& a = cands[i].endpoint->address;
    ranked.push_back({XXH3_64bits_withSeed(a.data(), a.size(), key), i});
  }
  std::sort(ranked.begin(), ranked.end(), std::greater<>());
  size_t chosen = ranked.front().second;
  for (const auto& [_, i] : ranked) {
    if (static_cast<double>(cands[i].in_flight) <= cap) {
      chosen = i;
      break;
    }
  }
  std::fill(out.begin(), out.end(), 0.0);
  out[chosen] = 1.0;
}

void SglangCacheAwareScorer::score(const RequestInfo& req, CycleState& state,
                                   std::span<const Candidate> cands, std::span<double> out) {
  computePrefixMatches(*index_, req, state, cands);
  const size_t n = cands.size();
  Scratch<double> load(n);
  double lo = HUGE_VAL, hi = -HUGE_VAL;
  for (size_t i = 0; i < n; ++i) {
    load[i] = runningOf(cands[i]) + waitingOf(cands[i]);
    lo = std::min(lo, load[i]);
    hi = std::max(hi, load[i]);
  }
  Scratch<double> by_load(n);
  lowerIsBetter(spanOf(load), spanOf(by_load));
  const bool imbalanced = hi - lo > abs_ && hi > rel_ * lo;
  size_t best = 0;
  for (size_t i = 1; i < n; ++i) {
    if (state.prefix_blocks[i] > state.prefix_blocks[best]) {
      best = i;
    }
  }
  const double ratio = state.prefix_total
                           ? static_cast<double>(state.prefix_blocks[best]) / state.prefix_total
                           : 0.0;
  for (size_t i = 0; i < n; ++i) {
    // The load order decides unless the cache-affinity branch applies; then the best match
    // scores above everything else.
    out[i] = 0.5 * by_load[i];
    if (!imbalanced && ratio > cache_threshold_ && i == best) {
      out[i] = 1.0;
    }
  }
}

// --- pickers ---

void MaxScorePicker::pick(std::span<const double> totals, base::Random& random, size_t n,
                          std::vector<size_t>& order) {
  order.resize(totals.size());
  std::iota(order.begin(), order.end(), 0);
  // Shuffle, then a stable sort: equal scores come out in random order.
  for (size_t i = order.size(); i > 1; --i) {
    std::swap(order[i - 1], order[random.uniform(i)]);
  }
  auto better = [&](size_t a, size_t b) { return totals[a] > totals[b]; };
  if (order.size() <= 32) {
    // Insertion sort: stable, and no temporary buffer for the usual pool sizes.
    for (size_t i = 1; i < order.size(); ++i) {
      const size_t v = order[i];
      size_t j = i;
      for (; j > 0 && better(v, order[j - 1]); --j) {
        order[j] = order[j - 1];
      }
      order[j] = v;
    }
  } else {
    std::stable_sort(order.begin(), order.end(), better);
  }
  if (order.size() > n) {
    order.resize(n);
  }
}

void WeightedRandomPicker::pick(std::span<const double> totals, base::Random& random, size_t n,
                                std::vector<size_t>& order) {
  order.clear();
  Scratch<double> w(totals.begin(), totals.end());
  for (double& x : w) {
    x = std::max(x, 1e-9);
  }
  while (order.size() < n && order.size() < w.size()) {
    double sum = 0;
    for (double x : w) {
      sum += x;
    }
    double r = static_cast<double>(random.next() >> 11) * 0x1.0p-53 * sum;
    size_t chosen = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      if (w[i] <= 0) {
        continue;
      }
      chosen = i;
      r -= w[i];
      if (r <= 0) {
        break;
      }
    }
    order.push_back(chosen);
    w[chosen] = 0;
  }
}

}  // namespace sluice::scheduler
