#pragma once

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace sluice::scheduler {

// Which endpoints probably hold which prompt prefixes in their KV cache, learned from the
// router's own dispatches. Keys are chained hashes of fixed-size blocks of the prompt, so a
// match on block i implies a match on every block before it.
//
// Concurrency: a global map from block hash to endpoints, split into shards with one mutex each
// (striped locks), plus one LRU per endpoint (its own mutex) that bounds what the index
// remembers for it. Lock order: endpoint, then shard.
class PrefixIndex {
 public:
  struct Config {
    size_t block_bytes = 256;                  // about 64 tokens
    size_t default_capacity_blocks = 1 << 16;  // per endpoint, until the engine reports its cache
    size_t shards = 64;
    // Only the prompt's first blocks are hashed and indexed (as the Inference Extension's
    // prefix plugin does, 256 by default): 64 KB, about 16k tokens, tells prompts apart, and a
    // 220 KB prompt then costs 256 index updates instead of 880 (they were half the router's
    // CPU at 200 concurrent 220 KB prompts).
    size_t max_blocks = 256;
  };

  PrefixIndex() : PrefixIndex(Config{}) {}
  explicit PrefixIndex(Config config);
  ~PrefixIndex();

  size_t blockBytes() const { return config_.block_bytes; }

  // Chained XXH3 hashes of the full `block_bytes` blocks of the concatenated parts (at most
  // `max_blocks` of them), seeded with the model name (so two models never share entries).
  void hashPrompt(std::string_view model, std::span<const std::string_view> parts,
                  std::vector<uint64_t>& out) const;

  // For each address, how many leading blocks of `hashes` it holds.
  void match(std::span<const uint64_t> hashes, std::span<const std::string* const> addresses,
             std::vector<uint32_t>& out) const;

  // Records that `address` now holds the prefix (called when the request is dispatched).
  // `capacity_blocks` > 0 resizes its LRU (auto-tuned from the engine's cache size).
  void insert(const std::string& address, std::span<const uint64_t> hashes,
              size_t capacity_blocks = 0);
  // Forgets an endpoint that went away.
  void removeEndpoint(const std::string& address);

  struct Stats {
    uint64_t entries = 0;  // (block, endpoint) pairs held
    uint64_t blocks = 0;   // distinct block hashes
    uint64_t evictions = 0;
    uint64_t endpoints = 0;
  };
  Stats stats() const;

 private:
  struct EndpointLru {
    std::mutex mu;
    uint32_t id = 0;
    size_t capacity = 0;
    std::list<uint64_t> order;  // most recent first
    std::unordered_map<uint64_t, std::list<uint64_t>::iterator> pos;
  };
  struct Shard {
    mutable std::mutex mu;
    std::unordered_map<uint64_t, std::vector<uint32_t>> holders;  // block -> endpoint ids
  };

  Shard& shardFor(uint64_t h) const { return shards_[h % shards_.size()]; }
  std::shared_ptr<EndpointLru> endpoint(const std::string& address, bool create);
  void addHolder(uint64_t h, uint32_t id);
  void removeHolder(uint64_t h, uint32_t id);

  Config config_;
  mutable std::vector<Shard> shards_;
  mutable std::shared_mutex endpoints_mu_;  // the address -> endpoint map only
  std::unordered_map<std::string, std::shared_ptr<EndpointLru>> endpoints_;
  uint32_t next_id_ = 1;
  std::atomic<uint64_t> entries_{0};
  std::atomic<uint64_t> evictions_{0};
};

}  // namespace sluice::scheduler
