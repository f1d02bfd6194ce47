// Scheduler plugins with fixed inputs, the prefix index, presets and the accounting.
#include "scheduler/scheduler.h"

#include <set>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "config/router_config.h"
#include "scheduler/plugins.h"

namespace sluice::scheduler {
namespace {

using ::testing::ElementsAre;

// A backend of `n` endpoints with metrics the test sets.
struct Fleet {
  explicit Fleet(size_t n) {
    config::RouterConfig c;
    config::RouterConfig::Model m;
    m.name = "m";
    for (size_t i = 0; i < n; ++i) {
      m.endpoints.push_back({"10.0.0." + std::to_string(i + 1), 8000});
    }
    c.models.push_back(m);
    snap = *router::buildSnapshot(c, 1, registry);
    backend = snap->findModel("m");
    for (const auto& ep : backend->endpoints) {
      backends::EndpointMetrics em;
      em.scraped = true;
      em.updated = now;
      em.waiting = 0;
      em.running = 0;
      em.kv_usage = 0.1;
      view.endpoints[ep.address] = em;
    }
  }
  backends::EndpointMetrics& metrics(size_t i) {
    return view.endpoints[backend->endpoints[i].address];
  }
  const router::Endpoint& ep(size_t i) const { return backend->endpoints[i]; }
  std::vector<Candidate> candidates() {
    std::vector<Candidate> out;
    for (const auto& e : backend->endpoints) {
      Candidate c;
      c.endpoint = &e;
      c.metrics = view.find(e.address);
      c.in_flight = e.state->in_flight;
      c.in_flight_tokens = e.state->in_flight_tokens;
      c.metrics_age_s = 0;
      out.push_back(c);
    }
    return out;
  }
  router::EndpointRegistry registry;
  std::shared_ptr<const router::Snapshot> snap;
  const router::Backend* backend = nullptr;
  backends::MetricsView view;
  base::MonoTime now{std::chrono::seconds(100)};
};

std::vector<double> scoreWith(Scorer& s, Fleet& f, const RequestInfo& req = {}) {
  auto cands = f.candidates();
  std::vector<double> out(cands.size());
  base::Xoshiro rnd(1);
  CycleState state;
  state.random = &rnd;
  s.score(req, state, cands, out);
  return out;
}

TEST(Scorers, QueuePrefersShortQueues) {
  Fleet f(3);
  f.metrics(0).waiting = 10;
  f.metrics(1).waiting = 0;
  f.metrics(2).waiting = 5;
  QueueScorer s;
  EXPECT_THAT(scoreWith(s, f), ElementsAre(0.0, 1.0, 0.5));
}

TEST(Scorers, AllEqualScoresOne) {
  Fleet f(3);
  QueueScorer s;
  EXPECT_THAT(scoreWith(s, f), ElementsAre(1.0, 1.0, 1.0));
}

TEST(Scorers, KvCacheIsOneMinusUsage) {
  Fleet f(2);
  f.metrics(0).kv_usage = 0.25;
  f.metrics(1).kv_usage = 0.9;
  KvCacheScorer s;
  auto out = scoreWith(s, f);
  EXPECT_DOUBLE_EQ(out[0], 0.75);
  EXPECT_NEAR(out[1], 0.1, 1e-12);
}

TEST(Scorers, LeastRequestUsesKthenasFormula) {
  Fleet f(3);
  f.metrics(0).running = 10;     // load 10
  f.metrics(1).waiting = 1;      // load 100
  f.ep(2).state->in_flight = 4;  // load 4 (router count, nothing scraped running)
  LeastRequestScorer s;
  auto out = scoreWith(s, f);
  EXPECT_NEAR(out[0], 90.0 / 96.0, 1e-12);
  EXPECT_DOUBLE_EQ(out[1], 0.0);
  EXPECT_DOUBLE_EQ(out[2], 1.0);
}

TEST(Scorers, TokenLoadIsTheRoutersZeroLagView) {
  Fleet f(2);
  f.ep(0).state->in_flight_tokens = 9000;
  f.ep(1).state->in_flight_tokens = 1000;
  TokenLoadScorer s;
  EXPECT_THAT(scoreWith(s, f), ElementsAre(0.0, 1.0));
}

TEST(Scorers, LeastLatencyBlendsTtftAndItl) {
  Fleet f(2);
  f.metrics(0).ttft_s = 0.1;
  f.metrics(0).itl_s = 0.05;
  f.metrics(1).ttft_s = 0.3;
  f.metrics(1).itl_s = 0.01;
  LeastLatencyScorer s(0.5);
  EXPECT_THAT(scoreWith(s, f), ElementsAre(0.5, 0.5));
  LeastLatencyScorer ttft_only(1.0);
  EXPECT_THAT(scoreWith(ttft_only, f), ElementsAre(1.0, 0.0));
}

TEST(Scorers, LoraAffinityLevels) {
  Fleet f(4);
  for (size_t i = 0; i < 4; ++i) {
    f.metrics(i).max_loras = 2;
  }
  f.metrics(0).running_loras = {"sql"};   // active
  f.metrics(1).running_loras = {"chat"};  // one slot free
  f.metrics(2).running_loras = {"a"};
  f.metrics(2).waiting_loras = {"sql"};     // waiting, no slot
  f.metrics(3).running_loras = {"a", "b"};  // full
  RequestInfo req;
  req.lora = "sql";
  LoraAffinityScorer s;
  EXPECT_THAT(scoreWith(s, f, req), ElementsAre(1.0, 0.8, 0.6, 0.0));
  EXPECT_THAT(scoreWith(s, f), ElementsAre(1.0, 1.0, 1.0, 1.0));  // base model
}

TEST(Scorers, SessionAffinityIsStickyAndBounded) {
  Fleet f(5);
  SessionAffinityScorer s(1.25);
  auto chosen = [&](std::string_view key) {
    RequestInfo req;
    req.session = key;
    auto out = scoreWith(s, f, req);
    return std::max_element(out.begin(), out.end()) - out.begin();
  };
  const auto a = chosen("session-a");
  EXPECT_EQ(chosen("session-a"), a);
  std::set<long> spread;
  for (int i = 0; i < 40; ++i) {
    spread.insert(chosen("s" + std::to_string(i)));
  }
  EXPECT_GE(spread.size(), 4u);  // keys spread over the endpoints
  // The session's endpoint is overloaded: it moves to its next choice, and comes back later.
  f.ep(static_cast<size_t>(a)).state->in_flight = 50;
  EXPECT_NE(chosen("session-a"), a);
  f.ep(static_cast<size_t>(a)).state->in_flight = 0;
  EXPECT_EQ(chosen("session-a"), a);
  EXPECT_THAT(scoreWith(s, f), ElementsAre(0.5, 0.5, 0.5, 0.5, 0.5));  // no key: neutral
}

TEST(Scorers, RoundRobinRotates) {
  Fleet f(3);
  RoundRobinScorer s;
  std::vector<size_t> firsts;
  for (int i = 0; i < 3; ++i) {
    auto out = scoreWith(s, f);
    firsts.push_back(std::max_element(out.begin(), out.end()) - out.begin());
  }
  EXPECT_THAT(firsts, ElementsAre(0, 1, 2));
}

TEST(Filters, SaturationDropsBusyAndStaleButNeverEmpties) {
  Fleet f(3);
  f.metrics(0).waiting = 20;
  f.metrics(2).kv_usage = 0.99;
  SaturationFilter filter(16, 0.97, 5.0);
  auto cands = f.candidates();
  CycleState st;
  filter.filter({}, st, cands);
  ASSERT_EQ(cands.size(), 1u);
  EXPECT_EQ(cands[0].endpoint, &f.ep(1));
  // Stale metrics count as saturated.
  cands = f.candidates();
  cands[1].metrics_age_s = 60;
  filter.filter({}, st, cands);
  EXPECT_EQ(cands.size(), 3u);  // all saturated: keep all rather than none
}

// The load a request puts on an endpoint is the prompt it must compute there plus its output:
// a warm endpoint is charged only the uncached part.
TEST(Accounting, ExpectedWorkLeavesOutTheCachedPrefix) {
  RequestInfo req;
  req.prompt_tokens = 4000;
  req.max_tokens = 100;
  // 256-byte blocks hold about 64 tokens.
  EXPECT_EQ(req.expectedWorkOn(0, 256), 4100u);   // cold, or nothing known
  EXPECT_EQ(req.expectedWorkOn(30, 256), 2180u);  // 1,920 tokens cached
  EXPECT_EQ(req.expectedWorkOn(62, 256), 132u);   // all but 32 tokens
  EXPECT_EQ(req.expectedWorkOn(90, 256), 100u);   // never below the output
  EXPECT_EQ(req.expectedTokens(), 4100u);
}

// Relative mode: saturation is judged against the best fresh candidate, so a fleet that queues
// everywhere keeps all its engines, and only an outlier is dropped.
TEST(Filters, RelativeSaturationDropsOnlyOutliers) {
  Fleet f(3);
  for (size_t i = 0; i < 3; ++i) {
    f.metrics(i).waiting = 20 + static_cast<double>(i);
    f.metrics(i).kv_usage = 0.99;
  }
  SaturationFilter relative(16, 0.97, 5.0, true);
  auto cands = f.candidates();
  CycleState st;
  relative.filter({}, st, cands);
  EXPECT_EQ(cands.size(), 3u);  // all busy about equally: nobody is dropped
  f.metrics(2).waiting = 40;    // 20 more than the shortest queue
  cands = f.candidates();
  relative.filter({}, st, cands);
  ASSERT_EQ(cands.size(), 2u);
  f.metrics(2).waiting = 20;
  f.metrics(0).kv_usage = 0.5;  // one engine has room: the full ones are dropped
  cands = f.candidates();
  relative.filter({}, st, cands);
  ASSERT_EQ(cands.size(), 1u);
  EXPECT_EQ(cands[0].endpoint, &f.ep(0));
}

// A cold start must not herd: endpoints not scraped yet stay candidates (their load is the
// router's own count), next to the scraped idle one.
TEST(Filters, SaturationKeepsEndpointsNotScrapedYet) {
  Fleet f(3);
  f.metrics(0).scraped = false;
  f.view.endpoints.erase(f.ep(1).address);
  SaturationFilter filter(16, 0.97, 5.0);
  auto cands = f.candidates();
  CycleState st;
  filter.filter({}, st, cands);
  EXPECT_EQ(cands.size(), 3u);
  // Scraped once and stale since is another matter.
  cands = f.candidates();
  cands[2].metrics_age_s = 60;
  filter.filter({}, st, cands);
  ASSERT_EQ(cands.size(), 2u);
  EXPECT_EQ(cands[0].endpoint, &f.ep(0));
  EXPECT_EQ(cands[1].endpoint, &f.ep(1));
}

TEST(Filters, HealthAndLora) {
  Fleet f(3);
  f.metrics(1).healthy = false;
  HealthFilter health;
  auto cands = f.candidates();
  CycleState st;
  health.filter({}, st, cands);
  EXPECT_EQ(cands.size(), 2u);
  f.metrics(2).max_loras = 1;
  f.metrics(2).running_loras = {"sql"};
  LoraAffinityFilter lora;
  RequestInfo req;
  req.lora = "sql";
  cands = f.candidates();
  lora.filter(req, st, cands);
  ASSERT_EQ(cands.size(), 1u);
  EXPECT_EQ(cands[0].endpoint, &f.ep(2));
}

TEST(PrefixIndex, MatchesLeadingBlocksPerEndpoint) {
  PrefixIndex index(PrefixIndex::Config{16, 1000, 8});
  std::vector<uint64_t> a, b;
  std::string shared(64, 's');
  std::string text_a = shared + "aaaaaaaaaaaaaaaa";
  std::string_view pa[] = {text_a};
  std::string text_b = shared + "bbbbbbbbbbbbbbbb";
  std::string_view pb[] = {text_b};
  index.hashPrompt("m", pa, a);
  index.hashPrompt("m", pb, b);
  ASSERT_EQ(a.size(), 5u);
  EXPECT_EQ(std::vector<uint64_t>(a.begin(), a.begin() + 4),
            std::vector<uint64_t>(b.begin(), b.begin() + 4));
  EXPECT_NE(a[4], b[4]);
  std::vector<uint64_t> other_model;
  index.hashPrompt("n", pa, other_model);
  EXPECT_NE(a[0], other_model[0]);

  const std::string e1 = "10.0.0.1:1", e2 = "10.0.0.2:1", e3 = "10.0.0.3:1";
  index.insert(e1, a);
  index.insert(e2, std::span(a).first(2));
  std::vector<uint32_t> out;
  const std::string* addrs[] = {&e1, &e2, &e3};
  index.match(b, addrs, out);
  EXPECT_THAT(out, ElementsAre(4u, 2u, 0u));
  EXPECT_EQ(index.stats().entries, 7u);
  index.removeEndpoint(e1);
  index.match(b, addrs, out);
  EXPECT_THAT(out, ElementsAre(0u, 2u, 0u));
  EXPECT_EQ(index.stats().entries, 2u);
}

// Only the first max_blocks blocks are hashed: long prompts cost a bounded number of index
// updates, and two prompts that differ only past that point look the same.
TEST(PrefixIndex, HashesAtMostMaxBlocks) {
  PrefixIndex::Config c;
  c.block_bytes = 16;
  c.max_blocks = 4;
  PrefixIndex index(c);
  std::vector<uint64_t> a, b, split;
  std::string text(200, 'x');
  std::string_view one[] = {text};
  index.hashPrompt("m", one, a);
  EXPECT_EQ(a.size(), 4u);
  std::string other = text.substr(0, 64) + std::string(136, 'y');
  std::string_view two[] = {other};
  index.hashPrompt("m", two, b);
  EXPECT_EQ(a, b);
  // Split into parts, the same text hashes the same, and still stops at the limit.
  std::string_view parts[] = {std::string_view(text).substr(0, 10),
                              std::string_view(text).substr(10)};
  index.hashPrompt("m", parts, split);
  EXPECT_EQ(a, split);
}

TEST(PrefixIndex, PerEndpointLruIsBounded) {
  PrefixIndex index(PrefixIndex::Config{16, 100, 4});
  const std::string e = "10.0.0.1:1";
  for (uint64_t i = 0; i < 1000; ++i) {
    std::vector<uint64_t> h = {i * 7919 + 1, i * 7919 + 2};
    index.insert(e, h);
  }
  auto s = index.stats();
  EXPECT_EQ(s.entries, 100u);
  EXPECT_EQ(s.blocks, 100u);
  EXPECT_EQ(s.evictions, 1900u);
  // A capacity hint from the engine's cache size resizes the bound.
  std::vector<uint64_t> h = {424242};
  index.insert(e, h, 10);
  EXPECT_EQ(index.stats().entries, 10u);
}

TEST(PrefixIndex, ConcurrentInsertsAndMatchesStayConsistent) {
  PrefixIndex index(PrefixIndex::Config{16, 500, 16});
  const std::string eps[] = {"a:1", "b:1", "c:1", "d:1"};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::vector<uint32_t> out;
      const std::string* addrs[] = {&eps[0], &eps[1], &eps[2], &eps[3]};
      for (uint64_t i = 0; i < 5000; ++i) {
        std::vector<uint64_t> h = {i % 50 + 1, i % 50 + 100, i % 50 + 200};
        index.insert(eps[(i + t) % 4], h);
        index.match(h, addrs, out);
      }
    });
  }
  for (auto& th : threads) {
    th.join();
  }
  auto s = index.stats();
  EXPECT_LE(s.entries, 4u * 500u);
  EXPECT_EQ(s.entries, 4u * 150u);  // each endpoint saw all 150 distinct blocks, under its bound
}

TEST(Reservation, CountsRequestsAndTokensAcrossThreads) {
  router::EndpointState state;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        router::Reservation r(&state, 100);
        router::Reservation moved = std::move(r);
        r.release();  // moved-from: no effect
      }
    });
  }
  for (auto& th : threads) {
    th.join();
  }
  EXPECT_EQ(state.in_flight.load(), 0);
  EXPECT_EQ(state.in_flight_tokens.load(), 0);
  {
    router::Reservation a(&state, 50);
    EXPECT_EQ(state.in_flight.load(), 1);
    EXPECT_EQ(state.in_flight_tokens.load(), 50);
  }
  EXPECT_EQ(state.in_flight_tokens.load(), 0);
}

TEST(OutlierDetection, EjectsWithDoublingBackoffAndRecovers) {
  router::EndpointState st;
  const int64_t s1 = 1'000'000'000;
  EXPECT_FALSE(st.onFailure(0, 3, 10 * s1, 60 * s1));
  EXPECT_FALSE(st.onFailure(0, 3, 10 * s1, 60 * s1));
  EXPECT_TRUE(st.onFailure(0, 3, 10 * s1, 60 * s1));
  EXPECT_TRUE(st.ejected(9 * s1));
  EXPECT_FALSE(st.ejected(10 * s1));
  for (int i = 0; i < 3; ++i) {
    st.onFailure(20 * s1, 3, 10 * s1, 60 * s1);
  }
  EXPECT_TRUE(st.ejected(39 * s1));  // second ejection: 20 s
  EXPECT_FALSE(st.ejected(40 * s1));
  for (int e = 0; e < 5; ++e) {
    for (int i = 0; i < 3; ++i) {
      st.onFailure(100 * s1, 3, 10 * s1, 60 * s1);
    }
  }
  EXPECT_FALSE(st.ejected(160 * s1));  // capped at 60 s
  st.onSuccess();
  for (int i = 0; i < 3; ++i) {
    st.onFailure(200 * s1, 3, 10 * s1, 60 * s1);
  }
  EXPECT_FALSE(st.ejected(210 * s1));  // back to the base period after serving again
}

TEST(Filters, HealthDropsEjectedEndpoints) {
  Fleet f(2);
  f.ep(0).state->ejected_until_ns = 1'000'000;
  HealthFilter health;
  auto cands = f.candidates();
  CycleState st;
  st.now_ns = 10;
  health.filter({}, st, cands);
  ASSERT_EQ(cands.size(), 1u);
  EXPECT_EQ(cands[0].endpoint, &f.ep(1));
  f.ep(0).state->ejected_until_ns = 0;
}

TEST(Presets, MatchTheConfigurationsList) {
  std::vector<std::string_view> config_names = config::schedulerPresets();
  EXPECT_EQ(config_names, Scheduler::presetNames());
  Scheduler s(std::make_shared<PrefixIndex>());
  for (auto name : Scheduler::presetNames()) {
    EXPECT_NE(s.makePreset(name), nullptr) << name;
  }
  EXPECT_EQ(s.makePreset("nope"), nullptr);
}

TEST(Profiles, EveryConfigurablePluginTypeCanBeBuilt) {
  Scheduler s(std::make_shared<PrefixIndex>());
  config::RouterConfig::Scheduler sc;
  for (const auto& t : config::schedulerPluginTypes()) {
    config::RouterConfig::PluginSpec spec;
    spec.type = std::string(t.type);
    spec.name = spec.type;
    sc.plugins.push_back(spec);
    config::RouterConfig::ProfileSpec prof;
    prof.name = "p-" + spec.name;
    prof.plugins.push_back({spec.name, 1});
    auto profile = s.makeProfile(prof, sc.plugins);
    ASSERT_NE(profile, nullptr) << t.type;
    const size_t built = profile->filters.size() + profile->scorers.size();
    EXPECT_EQ(built, t.kind == config::PluginKind::Picker ? 0u : 1u) << t.type;
    EXPECT_NE(profile->picker, nullptr);
  }
}

TEST(Profiles, ACustomProfileRunsItsPlugins) {
  Scheduler s(std::make_shared<PrefixIndex>());
  config::RouterConfig::Scheduler sc;
  sc.plugins.push_back({"queue-scorer", "q", {}});
  sc.plugins.push_back(
      {"saturation-filter", "sat", {{"maxWaiting", 3}, {"staleAfterSeconds", 60}}});
  sc.profiles.push_back({"mine", {{"sat", 1}, {"q", 2}}});
  auto p = s.makeNamed("mine", sc);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(p->name, "mine");
  EXPECT_EQ(p->filters.size(), 1u);
  ASSERT_EQ(p->scorers.size(), 1u);
  EXPECT_EQ(p->scorers[0].weight, 2);
  EXPECT_NE(s.makeNamed("gie-default", sc), nullptr);
  Fleet f(3);
  f.metrics(0).waiting = 2;
  f.metrics(1).waiting = 5;  // filtered out: over 3 waiting
  f.metrics(2).waiting = 1;
  base::Xoshiro rnd(1);
  RequestInfo req;
  std::vector<const router::Endpoint*> out;
  CycleState st;
  s.pick(*p, req, *f.backend, &f.view, f.now, rnd, 3, out, st);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0], &f.ep(2));
  EXPECT_EQ(out[1], &f.ep(0));
  EXPECT_EQ(out[2], &f.ep(1));  // the filtered one stays as a last resort
}

// Picks with a preset over a fleet, dispatching like the proxy does.
const router::Endpoint* pickOne(Scheduler& s, const Profile& p, Fleet& f, std::string_view prompt,
                                base::Random& rnd, uint64_t tokens = 1000,
                                Decision* decision = nullptr) {
  std::vector<uint64_t> hashes;
  std::string_view parts[] = {prompt};
  s.index().hashPrompt("m", parts, hashes);
  RequestInfo req;
  req.model = "m";
  req.prompt_tokens = tokens;
  req.prefix_hashes = &hashes;
  std::vector<const router::Endpoint*> out;
  CycleState state;
  s.pick(p, req, *f.backend, &f.view, f.now, rnd, 3, out, state, decision);
  s.onDispatch(p, req, state, *out[0], f.view.find(out[0]->address));
  return out[0];
}

TEST(Presets, SluiceDefaultKeepsAPrefixTogetherUntilTheEndpointIsLoaded) {
  Scheduler s(std::make_shared<PrefixIndex>());
  auto p = s.makePreset("sluice-default");
  Fleet f(4);
  base::Xoshiro rnd(3);
  const std::string system(4096, 'S');
  const router::Endpoint* first = pickOne(s, *p, f, system + "question one", rnd);
  // Same prefix, light load: it stays.
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(pickOne(s, *p, f, system + "question " + std::to_string(i), rnd), first);
  }
  // Moderately busier than the rest (more tokens in flight, a request waiting for the next
  // engine step, more KV in use): a 98% prefix hit is still worth more than that, so it stays.
  size_t warm = 0;
  while (&f.ep(warm) != first)
    ++warm;
  first->state->in_flight_tokens = 8000;
  f.metrics(warm).waiting = 1;
  f.metrics(warm).kv_usage = 0.3;
  EXPECT_EQ(pickOne(s, *p, f, system + "question six", rnd), first);
  // The warm endpoint now carries far more tokens than the rest: affinity lets go.
  first->state->in_flight_tokens = 100000;
  const router::Endpoint* next = pickOne(s, *p, f, system + "another", rnd);
  EXPECT_NE(next, first);
  first->state->in_flight_tokens = 0;
}

TEST(Presets, SluiceDefaultSpreadsColdPrefixes) {
  Scheduler s(std::make_shared<PrefixIndex>());
  auto p = s.makePreset("sluice-default");
  Fleet f(4);
  base::Xoshiro rnd(5);
  std::set<const router::Endpoint*> used;
  for (int i = 0; i < 4; ++i) {
    used.insert(pickOne(s, *p, f, std::string(1024, static_cast<char>('a' + i)), rnd));
  }
  EXPECT_EQ(used.size(), 4u);  // four different cold prefixes went to four endpoints
}

TEST(Presets, GieDefaultExplainsItsDecision) {
  Scheduler s(std::make_shared<PrefixIndex>());
  auto p = s.makePreset("gie-default");
  Fleet f(2);
  f.metrics(1).waiting = 5;
  base::Xoshiro rnd(1);
  Decision d;
  const router::Endpoint* e = pickOne(s, *p, f, std::string(600, 'x'), rnd, 100, &d);
  EXPECT_EQ(e, &f.ep(0));
  EXPECT_EQ(d.profile, "gie-default");
  EXPECT_THAT(d.scorer_names, ElementsAre("queue", "kv-cache", "prefix-cache"));
  ASSERT_EQ(d.rows.size(), 2u);
  EXPECT_EQ(d.rows[0].address, "10.0.0.1:8000");
  EXPECT_DOUBLE_EQ(d.rows[0].total, 2 * 1.0 + 2 * 0.9 + 3 * 0.0);
}

TEST(Decisions, DescribeAndJson) {
  Decision d;
  d.profile = "p";
  d.summary = "2 of 2 candidates after filters, prefix 0.50";
  d.scorer_names = {"queue", "prefix-cache"};
  d.rows.push_back({"10.0.0.1:8000", 2.5, {1.0, 0.75}});
  d.rows.push_back({"10.0.0.2:8000", 1.0, {1.0, 0.0}});
  EXPECT_EQ(describe(d),
            "p: 2 of 2 candidates after filters, prefix 0.50; chose 10.0.0.1:8000 2.500 [queue "
            "1.00, prefix-cache 0.75]; then 10.0.0.2:8000 1.000 [queue 1.00, prefix-cache 0.00]");
  EXPECT_EQ(decisionJson(d),
            "{\"profile\":\"p\",\"summary\":\"2 of 2 candidates after filters, prefix 0.50\","
            "\"candidates\":[{\"endpoint\":\"10.0.0.1:8000\",\"total\":2.5000,\"scores\":{"
            "\"queue\":1.0000,\"prefix-cache\":0.7500}},{\"endpoint\":\"10.0.0.2:8000\",\"total\":"
            "1.0000,\"scores\":{\"queue\":1.0000,\"prefix-cache\":0.0000}}]}");
}

TEST(Presets, SglangCacheAwareFollowsItsBalanceRule) {
  Scheduler s(std::make_shared<PrefixIndex>());
  auto p = s.makePreset("sglang-cache-aware");
  Fleet f(2);
  base::Xoshiro rnd(1);
  const std::string prompt(2048, 'p');
  const router::Endpoint* warm = pickOne(s, *p, f, prompt, rnd);
  EXPECT_EQ(pickOne(s, *p, f, prompt, rnd), warm);   // balanced: the cache wins
  f.metrics(warm == &f.ep(0) ? 0 : 1).waiting = 50;  // imbalanced: shortest queue wins
  EXPECT_NE(pickOne(s, *p, f, prompt, rnd), warm);
}

}  // namespace
}  // namespace sluice::scheduler
