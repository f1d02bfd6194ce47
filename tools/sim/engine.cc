#include "sim/engine.h"

#include <algorithm>
#include <cmath>
#include <set>

namespace sluice::sim {
namespace {

uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

uint64_t hashString(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  return h;
}

uint32_t ceilDiv(uint32_t a, uint32_t b) {
  return (a + b - 1) / b;
}

}  // namespace

std::vector<uint32_t> tokenize(std::string_view text) {
  std::vector<uint32_t> tokens;
  tokens.reserve(text.size() / 4 + 1);
  for (size_t i = 0; i < text.size(); i += 4) {
    tokens.push_back(static_cast<uint32_t>(hashString(text.substr(i, 4)) % 50000) + 1);
  }
  return tokens;
}

std::vector<uint64_t> Engine::blockHashes(const std::vector<uint32_t>& tokens, uint32_t block_size,
                                          std::string_view lora) {
  std::vector<uint64_t> hashes;
  // An adapter's KV differs from the base model's: its name seeds the chain.
  uint64_t h = mix(hashString(lora) + 0x9e3779b97f4a7c15ULL);
  const size_t full = tokens.size() / block_size;
  hashes.reserve(full);
  for (size_t b = 0; b < full; ++b) {
    for (size_t i = b * block_size; i < (b + 1) * block_size; ++i) {
      h = mix(h ^ (tokens[i] + 0x9e3779b97f4a7c15ULL + (h << 6)));
    }
    hashes.push_back(h == 0 ? 1 : h);  // 0 means "unregistered"
  }
  return hashes;
}

Engine::Engine(EngineConfig config) : config_(std::move(config)) {
  config_.block_size = std::max(1u, config_.block_size);
  config_.num_gpu_blocks = std::max(1u, config_.num_gpu_blocks);
  config_.max_num_batched_tokens = std::max(1u, config_.max_num_batched_tokens);
  config_.max_num_seqs = std::max(1u, config_.max_num_seqs);
  blocks_.resize(config_.num_gpu_blocks);
  free_.reserve(config_.num_gpu_blocks);
  for (uint32_t i = config_.num_gpu_blocks; i > 0; --i) {
    free_.push_back(i - 1);
  }
}

uint64_t Engine::submit(RequestSpec spec, double now_ms) {
  const uint64_t total = spec.prompt_tokens.size() + spec.max_tokens;
  const uint64_t capacity = static_cast<uint64_t>(config_.num_gpu_blocks) * config_.block_size;
  if (spec.prompt_tokens.empty() || total > config_.max_model_len || total > capacity) {
    return 0;  // the caller answers 400: the request can never fit
  }
  auto r = std::make_unique<Request>();
  r->id = next_id_++;
  r->hashes = blockHashes(spec.prompt_tokens, config_.block_size, spec.lora);
  r->spec = std::move(spec);
  r->timing.arrival = now_ms;
  const uint64_t id = r->id;
  waiting_.push_back(id);
  requests_.emplace(id, std::move(r));
  return id;
}

void Engine::cancel(uint64_t id) {
  auto it = requests_.find(id);
  if (it == requests_.end()) {
    return;
  }
  Request& r = *it->second;
  if (r.running) {
    releaseBlocks(r);
    running_.erase(std::find(running_.begin(), running_.end(), id));
  } else {
    waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), id), waiting_.end());
    releaseBlocks(r);
  }
  requests_.erase(it);
}

std::optional<uint32_t> Engine::takeBlock() {
  if (!free_.empty()) {
    uint32_t b = free_.back();
    free_.pop_back();
    return b;
  }
  if (!lru_.empty()) {
    uint32_t b = lru_.front();
    lru_.pop_front();
    Block& blk = blocks_[b];
    blk.in_lru = false;
    cache_.erase(blk.hash);
    blk.hash = 0;
    return b;
  }
  return std::nullopt;
}

bool Engine::allocateBlocks(Request& r, uint32_t tokens) {
  const uint32_t want = ceilDiv(tokens, config_.block_size);
  while (r.blocks.size() < want) {
    auto b = takeBlock();
    if (!b) {
      return false;
    }
    blocks_[*b].refs = 1;
    ++used_blocks_;
    r.blocks.push_back(*b);
  }
  return true;
}

void Engine::releaseBlocks(Request& r) {
  for (uint32_t b : r.blocks) {
    Block& blk = blocks_[b];
    if (--blk.refs == 0) {
      --used_blocks_;
      if (blk.hash != 0) {
        blk.lru = lru_.insert(lru_.end(), b);
        blk.in_lru = true;
      } else {
        free_.push_back(b);
      }
    }
  }
  r.blocks.clear();
}

void Engine::registerFullBlocks(Request& r) {
  // Blocks of the prompt whose KV is now complete become reusable by other requests at once.
  const uint32_t bs = config_.block_size;
  for (size_t i = 0; i < r.hashes.size() && i < r.blocks.size() && (i + 1) * bs <= r.computed;
       ++i) {
    Block& blk = blocks_[r.blocks[i]];
    if (blk.hash != 0) {
      continue;
    }
    if (cache_.count(r.hashes[i]) != 0) {
      continue;  // another request computed the same block first; this copy stays private
    }
    blk.hash = r.hashes[i];
    cache_[blk.hash] = r.blocks[i];
  }
}

bool Engine::loraReady(const std::string& lora, double now_ms) {
  if (lora.empty()) {
    return true;
  }
  auto it = loras_.find(lora);
  if (it != loras_.end()) {
    return it->second <= now_ms;
  }
  if (loras_.size() >= config_.max_loras) {
    // Evict a resident adapter no running request uses.
    std::set<std::string> busy;
    for (uint64_t id : running_) {
      busy.insert(requests_.at(id)->spec.lora);
    }
    auto victim = std::find_if(loras_.begin(), loras_.end(), [&](const auto& kv) {
      return kv.second <= now_ms && busy.count(kv.first) == 0;
    });
    if (victim == loras_.end()) {
      return false;
    }
    loras_.erase(victim);
  }
  loras_[lora] = now_ms + config_.lora_load_ms;
  return config_.lora_load_ms <= 0;
}

std::optional<double> Engine::nextLoraReady() const {
  std::optional<double> next;
  for (const auto& [_, ready] : loras_) {
    if (!next || ready < *next) {
      next = ready;
    }
  }
  return next;
}

void Engine::preemptOne(const Request* keep) {
  // Recompute-style preemption of the most recently admitted request, as vLLM does.
  for (auto it = running_.rbegin(); it != running_.rend(); ++it) {
    Request& victim = *requests_.at(*it);
    if (&victim == keep) {
      continue;
    }
    releaseBlocks(victim);
    victim.running = false;
    victim.computed = 0;
    victim.scheduled_now = 0;
    waiting_.push_front(victim.id);
    running_.erase(std::next(it).base());
    ++preemptions_;
    return;
  }
}

bool Engine::admit(Request& r, uint32_t& budget, double now_ms) {
  const uint32_t bs = config_.block_size;
  const uint32_t target = r.prefillTarget();
  // Longest cached prefix of full prompt blocks; at least one token is always computed.
  uint32_t cached = 0;
  while (cached < r.hashes.size() && cache_.count(r.hashes[cached]) != 0) {
    ++cached;
  }
  while (cached > 0 && cached * bs >= target) {
    --cached;
  }
  // Reference the cached blocks first so allocation cannot evict them.
  for (uint32_t i = 0; i < cached; ++i) {
    uint32_t b = cache_.at(r.hashes[i]);
    Block& blk = blocks_[b];
    if (blk.refs++ == 0) {
      ++used_blocks_;
      if (blk.in_lru) {
        lru_.erase(blk.lru);
        blk.in_lru = false;
      }
    }
    r.blocks.push_back(b);
  }
  const uint32_t cached_tokens = cached * bs;
  const uint32_t chunk = std::min(target - cached_tokens, budget);
  if (!allocateBlocks(r, cached_tokens + chunk)) {
    releaseBlocks(r);  // not enough KV space: it waits (head of line, as in vLLM)
    return false;
  }
  if (r.generated == 0 && r.timing.scheduled < 0) {
    prefix_queries_ += r.spec.prompt_tokens.size();
    prefix_hits_ += cached_tokens;
    r.timing.cached_tokens = cached_tokens;
    r.timing.scheduled = now_ms;
  }
  r.computed = cached_tokens;
  r.scheduled_now = chunk;
  r.running = true;
  r.admit_seq = ++admit_seq_;
  budget -= chunk;
  return true;
}

std::optional<double> Engine::planStep(double now_ms) {
  uint32_t budget = config_.max_num_batched_tokens;
  // Decodes first (one token each), then prefill chunks of running requests, in admission order.
  for (int pass = 0; pass < 2; ++pass) {
    const std::vector<uint64_t> ids = running_;
    for (uint64_t id : ids) {
      auto it = requests_.find(id);
      if (it == requests_.end() || !it->second->running) {
        continue;
      }
      Request& r = *it->second;
      const uint32_t need = r.prefillTarget() - r.computed;
      const bool decode = r.generated > 0 && need == 1;
      if ((pass == 0) != decode || budget == 0) {
        continue;
      }
      const uint32_t chunk = std::min(need, budget);
      while (!allocateBlocks(r, r.computed + chunk)) {
        if (running_.size() <= 1) {
          break;  // cannot happen: submit() refuses requests larger than the cache
        }
        preemptOne(&r);
      }
      r.scheduled_now = chunk;
      budget -= chunk;
    }
  }
  // Admit waiting requests while budget, sequence slots and KV space last.
  size_t scanned = 0;
  for (auto it = waiting_.begin();
       it != waiting_.end() && budget > 0 && running_.size() < config_.max_num_seqs && scanned < 64;
       ++scanned) {
    Request& r = *requests_.at(*it);
    if (!loraReady(r.spec.lora, now_ms)) {
      ++it;  // its adapter is loading or no slot is free: later requests may go first
      continue;
    }
    if (!admit(r, budget, now_ms)) {
      break;
    }
    running_.push_back(r.id);
    it = waiting_.erase(it);
  }

  uint32_t prefill_tokens = 0;
  uint32_t decode_seqs = 0;
  for (uint64_t id : running_) {
    const Request& r = *requests_.at(id);
    if (r.scheduled_now == 0) {
      continue;
    }
    if (r.generated > 0 && r.prefillTarget() - r.computed == 1) {
      ++decode_seqs;
    } else {
      prefill_tokens += r.scheduled_now;
    }
  }
  if (prefill_tokens == 0 && decode_seqs == 0) {
    planned_ = false;
    return std::nullopt;
  }
  planned_ = true;
  return config_.step_overhead_ms + prefill_tokens * config_.prefill_ms_per_token +
         decode_seqs * config_.decode_ms_per_seq;
}

void Engine::completeStep(double now_ms, std::vector<TokenEvent>& events) {
  if (!planned_) {
    return;
  }
  planned_ = false;
  ++steps_;
  const std::vector<uint64_t> ids = running_;
  for (uint64_t id : ids) {
    auto it = requests_.find(id);
    if (it == requests_.end()) {
      continue;  // cancelled during the step
    }
    Request& r = *it->second;
    if (r.scheduled_now == 0) {
      continue;
    }
    r.computed += r.scheduled_now;
    r.scheduled_now = 0;
    registerFullBlocks(r);
    if (r.computed < r.prefillTarget()) {
      continue;  // a prefill chunk, more to come
    }
    ++r.generated;
    TokenEvent ev;
    ev.id = id;
    ev.tokens = 1;
    ev.first = r.generated == 1;
    if (ev.first) {
      r.timing.first_token = now_ms;
    }
    if (r.generated >= r.spec.max_tokens) {
      ev.finished = true;
      releaseBlocks(r);
      running_.erase(std::find(running_.begin(), running_.end(), id));
      requests_.erase(it);
    }
    events.push_back(ev);
  }
}

std::optional<Engine::Timing> Engine::timing(uint64_t id) const {
  auto it = requests_.find(id);
  if (it == requests_.end()) {
    return std::nullopt;
  }
  return it->second->timing;
}

EngineStats Engine::stats() const {
  EngineStats s;
  s.running = static_cast<uint32_t>(running_.size());
  s.waiting = static_cast<uint32_t>(waiting_.size());
  s.used_blocks = used_blocks_;
  s.cached_blocks = static_cast<uint32_t>(lru_.size());
  s.kv_usage = static_cast<double>(used_blocks_) / config_.num_gpu_blocks;
  s.prefix_queries_tokens = prefix_queries_;
  s.prefix_hit_tokens = prefix_hits_;
  s.preemptions = preemptions_;
  s.steps = steps_;
  std::set<std::string> running, waiting;
  for (uint64_t id : running_) {
    const auto& lora = requests_.at(id)->spec.lora;
    if (!lora.empty()) {
      running.insert(lora);
    }
  }
  for (uint64_t id : waiting_) {
    const auto& lora = requests_.at(id)->spec.lora;
    if (!lora.empty() && running.count(lora) == 0) {
      waiting.insert(lora);
    }
  }
  s.running_loras.assign(running.begin(), running.end());
  s.waiting_loras.assign(waiting.begin(), waiting.end());
  for (const auto& [name, _] : loras_) {
    s.loaded_loras.push_back(name);
  }
  return s;
}

}  // namespace sluice::sim
