// Scheduling cost: one decision for 64 endpoints with an 8 KB prompt (hashing included),
// prefix hashing throughput, and the prefix index under a long synthetic stream (its bound and
// memory per entry).
#include <cstdlib>
#include <malloc.h>
#include <string>

#include <benchmark/benchmark.h>

#include "config/router_config.h"
#include "router/snapshot.h"
#include "scheduler/scheduler.h"

namespace {

using namespace sluice;

struct Fleet {
  explicit Fleet(size_t n) {
    config::RouterConfig c;
    config::RouterConfig::Model m;
    m.name = "m";
    for (size_t i = 0; i < n; ++i) {
      m.endpoints.push_back(
          {"10.0." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1), 8000});
    }
    c.models.push_back(m);
    snap = *router::buildSnapshot(c, 1, registry);
    backend = snap->findModel("m");
    for (size_t i = 0; i < n; ++i) {
      backends::EndpointMetrics em;
      em.scraped = true;
      em.waiting = static_cast<double>(i % 5);
      em.running = static_cast<double>(i % 17);
      em.kv_usage = 0.01 * static_cast<double>(i % 90);
      em.ttft_s = 0.05 + 0.001 * static_cast<double>(i);
      em.itl_s = 0.01;
      em.block_size = 16;
      em.num_blocks = 16384;
      view.endpoints[backend->endpoints[i].address] = em;
    }
  }
  router::EndpointRegistry registry;
  std::shared_ptr<const router::Snapshot> snap;
  const router::Backend* backend = nullptr;
  backends::MetricsView view;
};

std::string prompt(size_t bytes, int variant) {
  std::string s = "You are a helpful assistant. ";
  while (s.size() < bytes) {
    s += "Tell me more about the river and the mill, part " + std::to_string(s.size()) + ". ";
  }
  s.resize(bytes);
  s += std::to_string(variant);
  return s;
}

void BM_Decision(benchmark::State& state, const char* preset) {
  Fleet fleet(64);
  scheduler::Scheduler s(std::make_shared<scheduler::PrefixIndex>());
  auto profile = s.makePreset(preset);
  base::Xoshiro rnd(1);
  // Warm the index: 200 conversations spread over the fleet.
  std::vector<std::string> prompts;
  for (int i = 0; i < 200; ++i) {
    prompts.push_back(prompt(8192, i % 50));
  }
  std::vector<uint64_t> hashes;
  std::vector<const router::Endpoint*> out;
  scheduler::CycleState cycle;
  size_t i = 0;
  for (auto _ : state) {
    const std::string& p = prompts[i++ % prompts.size()];
    std::string_view parts[] = {p};
    if (scheduler::usesPrefix(*profile)) {
      s.index().hashPrompt("m", parts, hashes);
    }
    scheduler::RequestInfo req;
    req.model = "m";
    req.prompt_tokens = p.size() / 4;
    req.max_tokens = 256;
    req.prefix_hashes = &hashes;
    s.pick(*profile, req, *fleet.backend, &fleet.view, base::MonoTime{}, rnd, 3, out, cycle);
    s.onDispatch(*profile, req, cycle, *out[0], fleet.view.find(out[0]->address));
    benchmark::DoNotOptimize(out.data());
  }
}
BENCHMARK_CAPTURE(BM_Decision, sluice_default, "sluice-default");
BENCHMARK_CAPTURE(BM_Decision, gie_default, "gie-default");
BENCHMARK_CAPTURE(BM_Decision, kthena_default, "kthena-default");
BENCHMARK_CAPTURE(BM_Decision, random, "random");

void BM_PrefixHashing(benchmark::State& state) {
  scheduler::PrefixIndex::Config c;
  c.max_blocks = 1 << 20;  // the raw hashing rate over the whole prompt, not the default cap
  scheduler::PrefixIndex index(c);
  std::string p = prompt(static_cast<size_t>(state.range(0)), 0);
  std::string_view parts[] = {p};
  std::vector<uint64_t> hashes;
  for (auto _ : state) {
    index.hashPrompt("m", parts, hashes);
    benchmark::DoNotOptimize(hashes.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * p.size()));
}
BENCHMARK(BM_PrefixHashing)->Arg(8192)->Arg(200 * 1024);

// A synthetic stream of requests over 64 endpoints with a per-endpoint bound: the index must
// stay at its bound, and the memory it holds per entry is reported.
void BM_IndexUnderStream(benchmark::State& state) {
  const size_t requests = static_cast<size_t>(state.range(0));
  const size_t bound = 20000;  // blocks per endpoint
  for (auto _ : state) {
    struct mallinfo2 before = mallinfo2();
    scheduler::PrefixIndex index(scheduler::PrefixIndex::Config{256, bound, 64});
    std::vector<std::string> addresses;
    for (int e = 0; e < 64; ++e) {
      addresses.push_back("10.0.0." + std::to_string(e + 1) + ":8000");
    }
    base::Xoshiro rnd(7);
    std::vector<uint64_t> hashes(32);
    uint64_t max_entries = 0;
    for (size_t r = 0; r < requests; ++r) {
      // 32 blocks per request: a shared head from one of 1000 system prompts, a unique tail.
      uint64_t head = rnd.uniform(1000) + 1;
      for (size_t b = 0; b < hashes.size(); ++b) {
        hashes[b] = b < 16 ? head * 1000003 + b : rnd.next() | 1;
      }
      index.insert(addresses[r % 64], hashes);
      if (r % 100000 == 0) {
        max_entries = std::max<uint64_t>(max_entries, index.stats().entries);
      }
    }
    auto st = index.stats();
    struct mallinfo2 after = mallinfo2();
    state.counters["entries"] = static_cast<double>(st.entries);
    state.counters["bound"] = static_cast<double>(bound * 64);
    state.counters["max_entries_seen"] = static_cast<double>(std::max(max_entries, st.entries));
    state.counters["evictions"] = static_cast<double>(st.evictions);
    state.counters["bytes_per_entry"] =
        static_cast<double>(after.uordblks - before.uordblks) / static_cast<double>(st.entries);
  }
}
BENCHMARK(BM_IndexUnderStream)->Arg(1'000'000)->Unit(benchmark::kMillisecond)->Iterations(1);

}  // namespace

int main(int argc, char** argv) {
  // The 10-million-request stream takes minutes: only with SLUICE_BENCH_LONG=1.
  if (std::getenv("SLUICE_BENCH_LONG") != nullptr) {
    benchmark::RegisterBenchmark("BM_IndexUnderStream", BM_IndexUnderStream)
        ->Arg(10'000'000)
        ->Unit(benchmark::kMillisecond)
        ->Iterations(1);
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
