// The simulator's physics, stepped in virtual time: no sleeping, fully deterministic.
#include "sim/engine.h"

#include <map>

#include <gtest/gtest.h>

namespace sluice::sim {
namespace {

std::vector<uint32_t> tokens(uint32_t n, uint32_t seed) {
  std::vector<uint32_t> t(n);
  for (uint32_t i = 0; i < n; ++i) {
    t[i] = seed * 100000 + i + 1;
  }
  return t;
}

// Drives an engine in virtual time and records what each request saw.
struct VirtualRun {
  explicit VirtualRun(EngineConfig c) : engine(std::move(c)) {}
  Engine engine;
  double now = 0;
  std::map<uint64_t, double> first_token;
  std::map<uint64_t, double> finished;
  std::map<uint64_t, uint32_t> produced;
  uint32_t max_running = 0;
  uint32_t max_waiting = 0;

  uint64_t submit(std::vector<uint32_t> prompt, uint32_t max_tokens, std::string lora = "") {
    return engine.submit({std::move(prompt), max_tokens, std::move(lora)}, now);
  }
  bool step() {
    auto d = engine.planStep(now);
    if (!d) {
      auto ready = engine.nextLoraReady();
      if (ready && *ready > now && engine.stats().waiting > 0) {
        now = *ready;
        return true;
      }
      return false;
    }
    auto s = engine.stats();
    max_running = std::max(max_running, s.running);
    max_waiting = std::max(max_waiting, s.waiting);
    now += *d;
    std::vector<TokenEvent> events;
    engine.completeStep(now, events);
    for (const auto& ev : events) {
      produced[ev.id] += ev.tokens;
      if (ev.first) {
        first_token[ev.id] = now;
      }
      if (ev.finished) {
        finished[ev.id] = now;
      }
    }
    return true;
  }
  void runUntilIdle(int max_steps = 1000000) {
    for (int i = 0; i < max_steps && step(); ++i) {
    }
  }
};

TEST(Engine, StepTimeFollowsTheCostModel) {
  EngineConfig c;
  VirtualRun run(c);
  uint64_t id = run.submit(tokens(2048, 1), 3);
  run.runUntilIdle();
  // One prefill step of 2048 tokens, then two decode steps of one sequence.
  const double prefill = c.step_overhead_ms + 2048 * c.prefill_ms_per_token;
  const double decode = c.step_overhead_ms + c.decode_ms_per_seq;
  EXPECT_NEAR(run.first_token[id], prefill, 1e-9);
  EXPECT_NEAR(run.finished[id], prefill + 2 * decode, 1e-9);
  EXPECT_EQ(run.produced[id], 3u);
}

TEST(Engine, ASharedPrefixSkipsThePrefillItCovers) {
  EngineConfig c;
  VirtualRun run(c);
  auto shared = tokens(2048, 7);
  uint64_t a = run.submit(shared, 1);
  run.runUntilIdle();
  const double ttft_a = run.first_token[a];
  auto with_question = shared;
  auto q = tokens(64, 8);
  with_question.insert(with_question.end(), q.begin(), q.end());
  const double t0 = run.now;
  uint64_t b = run.submit(with_question, 1);
  run.runUntilIdle();
  const double ttft_b = run.first_token[b] - t0;
  // The 2048 shared tokens (128 full blocks) are cached: only the 64 new ones are computed.
  EXPECT_NEAR(ttft_b, c.step_overhead_ms + 64 * c.prefill_ms_per_token, 1e-9);
  EXPECT_NEAR(ttft_a - ttft_b, (2048 - 64) * c.prefill_ms_per_token, 1e-9);
  auto s = run.engine.stats();
  EXPECT_EQ(s.prefix_queries_tokens, 2048u + 2112u);
  EXPECT_EQ(s.prefix_hit_tokens, 2048u);
}

TEST(Engine, AFullyCachedPromptStillComputesOneBlock) {
  EngineConfig c;
  VirtualRun run(c);
  run.submit(tokens(256, 3), 1);
  run.runUntilIdle();
  const double t0 = run.now;
  uint64_t again = run.submit(tokens(256, 3), 1);
  run.runUntilIdle();
  // vLLM recomputes the last block so there is a token to sample from.
  EXPECT_NEAR(run.first_token[again] - t0, c.step_overhead_ms + 16 * c.prefill_ms_per_token, 1e-9);
}

TEST(Engine, DifferentAdaptersDoNotShareCache) {
  EngineConfig c;
  c.lora_adapters = {"a"};
  c.lora_load_ms = 0;
  VirtualRun run(c);
  run.submit(tokens(512, 4), 1);
  run.runUntilIdle();
  run.submit(tokens(512, 4), 1, "a");
  run.runUntilIdle();
  EXPECT_EQ(run.engine.stats().prefix_hit_tokens, 0u);
}

TEST(Engine, ChunkedPrefillSharesTheTokenBudget) {
  EngineConfig c;
  c.max_num_batched_tokens = 1000;
  VirtualRun run(c);
  uint64_t id = run.submit(tokens(2500, 1), 1);
  run.runUntilIdle();
  // 1000 + 1000 + 500 tokens over three steps.
  EXPECT_NEAR(run.first_token[id], 3 * c.step_overhead_ms + 2500 * c.prefill_ms_per_token, 1e-9);
}

TEST(Engine, MoreLoadMeansMoreQueueingAndLaterFirstTokens) {
  EngineConfig c;
  c.max_num_seqs = 8;
  VirtualRun alone(c);
  uint64_t solo = alone.submit(tokens(4096, 1), 8);
  alone.runUntilIdle();

  VirtualRun busy(c);
  std::vector<uint64_t> ids;
  for (uint32_t i = 0; i < 32; ++i) {
    ids.push_back(busy.submit(tokens(4096, 100 + i), 8));
  }
  busy.runUntilIdle();
  EXPECT_EQ(busy.max_running, 8u);
  EXPECT_GE(busy.max_waiting, 24u);
  double worst = 0;
  for (auto id : ids) {
    worst = std::max(worst, busy.first_token[id]);
    EXPECT_EQ(busy.produced[id], 8u);
  }
  EXPECT_GT(worst, 10 * alone.first_token[solo]);
  // Requests further back in the queue wait longer.
  EXPECT_LT(busy.first_token[ids.front()], busy.first_token[ids.back()]);
}

TEST(Engine, KvExhaustionQueuesThenPreempts) {
  EngineConfig c;
  c.num_gpu_blocks = 64;  // 1024 tokens
  c.block_size = 16;
  VirtualRun run(c);
  std::vector<uint64_t> ids;
  for (uint32_t i = 0; i < 3; ++i) {
    ids.push_back(run.submit(tokens(400, 10 + i), 400));
  }
  run.runUntilIdle();
  auto s = run.engine.stats();
  // The third prompt does not fit next to the first two: it waits.
  EXPECT_GE(run.max_waiting, 1u);
  // Two sequences growing to 800 tokens each cannot both stay resident: one is preempted.
  EXPECT_GT(s.preemptions, 0u);
  for (auto id : ids) {
    EXPECT_EQ(run.produced[id], 400u) << id;
  }
  EXPECT_EQ(s.used_blocks, 0u);
  EXPECT_EQ(s.running, 0u);
}

TEST(Engine, RefusesRequestsThatCanNeverFit) {
  EngineConfig c;
  c.num_gpu_blocks = 8;
  c.block_size = 16;
  Engine e(c);
  EXPECT_EQ(e.submit({tokens(100, 1), 100, ""}, 0), 0u);  // 200 tokens > 128 of KV
  EXPECT_EQ(e.submit({{}, 10, ""}, 0), 0u);               // empty prompt
  EXPECT_NE(e.submit({tokens(50, 1), 10, ""}, 0), 0u);
}

TEST(Engine, LoraSlotsLimitResidentAdapters) {
  EngineConfig c;
  c.max_loras = 1;
  c.lora_load_ms = 40;
  c.lora_adapters = {"a", "b"};
  VirtualRun run(c);
  uint64_t a = run.submit(tokens(64, 1), 50, "a");
  uint64_t b = run.submit(tokens(64, 2), 50, "b");
  uint64_t base = run.submit(tokens(64, 3), 5);
  bool saw_b_waiting = false;
  while (run.step()) {
    auto s = run.engine.stats();
    EXPECT_LE(s.running_loras.size(), 1u);
    if (!s.running_loras.empty() && s.running_loras[0] == "a" && !s.waiting_loras.empty()) {
      saw_b_waiting = s.waiting_loras[0] == "b";
    }
  }
  EXPECT_TRUE(saw_b_waiting);
  // The base-model request does not wait for adapters.
  EXPECT_LT(run.first_token[base], c.lora_load_ms);
  EXPECT_GE(run.first_token[a], c.lora_load_ms);
  // b loads only after a's requests finish and free the slot.
  EXPECT_GE(run.first_token[b], run.finished[a] + c.lora_load_ms);
  EXPECT_EQ(run.produced[b], 50u);
}

TEST(Engine, CancelReleasesBlocks) {
  EngineConfig c;
  VirtualRun run(c);
  uint64_t id = run.submit(tokens(1000, 1), 100);
  run.step();
  EXPECT_GT(run.engine.stats().used_blocks, 0u);
  run.engine.cancel(id);
  EXPECT_EQ(run.engine.stats().used_blocks, 0u);
  EXPECT_EQ(run.engine.stats().running, 0u);
  EXPECT_FALSE(run.engine.planStep(run.now));
}

TEST(Engine, CachedBlocksAreEvictedLeastRecentlyUsedFirst) {
  EngineConfig c;
  c.num_gpu_blocks = 40;
  c.block_size = 16;
  VirtualRun run(c);
  run.submit(tokens(320, 1), 1);  // 20 blocks, cached afterwards
  run.runUntilIdle();
  run.submit(tokens(320, 2), 1);  // 20 more: the cache is now full of two prefixes
  run.runUntilIdle();
  run.submit(tokens(320, 1), 1);  // touch prefix 1 again (hit)
  run.runUntilIdle();
  const auto hits_before = run.engine.stats().prefix_hit_tokens;
  run.submit(tokens(320, 3), 1);  // needs 20 blocks: evicts prefix 2, the least recently used
  run.runUntilIdle();
  run.submit(tokens(320, 1), 1);
  run.runUntilIdle();
  EXPECT_GT(run.engine.stats().prefix_hit_tokens, hits_before + 256);
}

TEST(Tokenize, IsDeterministicAndAboutFourCharsPerToken) {
  auto a = tokenize("The quick brown fox jumps over the lazy dog");
  auto b = tokenize("The quick brown fox jumps over the lazy dog");
  EXPECT_EQ(a, b);
  EXPECT_EQ(a.size(), 11u);
  auto c = tokenize("The quick brown fox jumps over the lazy cat");
  EXPECT_EQ(std::vector<uint32_t>(a.begin(), a.begin() + 10),
            std::vector<uint32_t>(c.begin(), c.begin() + 10));
  EXPECT_NE(a.back(), c.back());
}

}  // namespace
}  // namespace sluice::sim
