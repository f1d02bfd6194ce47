#pragma once

#include <cstdint>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace sluice::sim {

// The physics of one simulated inference engine, free of I/O and of real time: the caller asks
// for the next step's duration (model milliseconds), waits it out however it likes (a timer in
// sluice-sim, nothing at all in tests), then completes the step and receives the tokens it
// produced. Defaults are modelled on an 8B model on one H100 running vLLM v1.
struct EngineConfig {
  uint32_t max_num_seqs = 256;             // running sequences at most
  uint32_t max_num_batched_tokens = 8192;  // per-step token budget, prefill chunks and decodes
  uint32_t block_size = 16;                // tokens per KV block
  uint32_t num_gpu_blocks = 16384;         // KV capacity: 262,144 tokens
  uint32_t max_model_len = 32768;          // prompt plus output, at most
  double step_overhead_ms = 5.0;           // fixed cost of one forward pass
  double prefill_ms_per_token = 0.06;      // about 16k prompt tokens/s
  double decode_ms_per_seq = 0.04;         // per sequence decoded in the step
  uint32_t max_loras = 4;                  // adapters resident at once
  double lora_load_ms = 30.0;              // time to load an adapter into a slot
  std::vector<std::string> lora_adapters;  // adapters this engine can serve
};

struct RequestSpec {
  std::vector<uint32_t> prompt_tokens;
  uint32_t max_tokens = 16;
  std::string lora;  // empty: the base model
};

// What a completed step produced for one request.
struct TokenEvent {
  uint64_t id = 0;
  uint32_t tokens = 0;    // new output tokens (0 or 1 per step)
  bool first = false;     // this step produced the request's first token
  bool finished = false;  // the request is complete and its resources are released
};

struct EngineStats {
  uint32_t running = 0;
  uint32_t waiting = 0;
  uint32_t used_blocks = 0;    // blocks referenced by running requests
  uint32_t cached_blocks = 0;  // free blocks still holding a reusable prefix
  double kv_usage = 0;         // used_blocks / num_gpu_blocks
  uint64_t prefix_queries_tokens = 0;
  uint64_t prefix_hit_tokens = 0;
  uint64_t preemptions = 0;
  uint64_t steps = 0;
  std::vector<std::string> running_loras;
  std::vector<std::string> waiting_loras;
  std::vector<std::string> loaded_loras;
};

class Engine {
 public:
  explicit Engine(EngineConfig config);

  const EngineConfig& config() const { return config_; }

  // Queues a request arriving at `now_ms`. Returns its id.
  uint64_t submit(RequestSpec spec, double now_ms);
  // Drops a request (client gone); its blocks are released at once.
  void cancel(uint64_t id);

  // Plans the next step at `now_ms` and returns its duration in model milliseconds, or nullopt
  // when there is nothing to do (the caller waits for the next submit).
  std::optional<double> planStep(double now_ms);
  // Applies the planned step, ending at `now_ms`, appending what it produced to `events`.
  void completeStep(double now_ms, std::vector<TokenEvent>& events);
  bool stepPlanned() const { return planned_; }
  // When an adapter load in progress finishes (the caller may need to wake up then).
  std::optional<double> nextLoraReady() const;

  EngineStats stats() const;

  // Per-request timing, in model ms, for tests and metrics.
  struct Timing {
    double arrival = 0;
    double scheduled = -1;
    double first_token = -1;
    uint32_t cached_tokens = 0;
  };
  std::optional<Timing> timing(uint64_t id) const;

  // Chained hashes of the full blocks of `tokens` (the prefix-cache keys).
  static std::vector<uint64_t> blockHashes(const std::vector<uint32_t>& tokens, uint32_t block_size,
                                           std::string_view lora);

 private:
  struct Request {
    uint64_t id = 0;
    RequestSpec spec;
    std::vector<uint64_t> hashes;  // of the prompt's full blocks
    std::vector<uint32_t> blocks;  // KV blocks held
    uint32_t computed = 0;         // tokens whose KV exists (prompt, then recomputed output)
    uint32_t generated = 0;        // output tokens produced
    uint32_t scheduled_now = 0;    // tokens in the planned step
    bool running = false;
    Timing timing;
    uint64_t admit_seq = 0;
    uint32_t context() const {
      return static_cast<uint32_t>(spec.prompt_tokens.size()) + generated;
    }
    // Tokens whose KV must exist before the next token can be decoded.
    uint32_t prefillTarget() const { return context(); }
  };
  struct Block {
    uint64_t hash = 0;  // 0: not registered in the prefix cache
    uint32_t refs = 0;
    std::list<uint32_t>::iterator lru;
    bool in_lru = false;
  };

  bool admit(Request& r, uint32_t& budget, double now_ms);
  bool allocateBlocks(Request& r, uint32_t tokens);
  std::optional<uint32_t> takeBlock();
  void releaseBlocks(Request& r);
  void preemptOne(const Request* keep);
  void registerFullBlocks(Request& r);
  bool loraReady(const std::string& lora, double now_ms);

  EngineConfig config_;
  std::vector<Block> blocks_;
  std::vector<uint32_t> free_;                    // never-hashed free blocks
  std::list<uint32_t> lru_;                       // free blocks holding a prefix, oldest first
  std::unordered_map<uint64_t, uint32_t> cache_;  // block hash -> block
  std::unordered_map<uint64_t, std::unique_ptr<Request>> requests_;
  std::deque<uint64_t> waiting_;
  std::vector<uint64_t> running_;        // in admission order
  std::map<std::string, double> loras_;  // resident or loading adapters -> ready time
  uint64_t next_id_ = 1;
  uint64_t admit_seq_ = 0;
  bool planned_ = false;
  uint64_t prefix_queries_ = 0;
  uint64_t prefix_hits_ = 0;
  uint64_t preemptions_ = 0;
  uint64_t steps_ = 0;
  uint32_t used_blocks_ = 0;
};

// Deterministic tokenisation: about four characters per token, the same text always giving the
// same ids, so identical prompt prefixes share cache blocks.
std::vector<uint32_t> tokenize(std::string_view text);

}  // namespace sluice::sim
