#include "scheduler/prefix_index.h"

#include <algorithm>
#include <xxhash.h>

namespace sluice::scheduler {

PrefixIndex::PrefixIndex(Config config)
    : config_(config), shards_(std::max<size_t>(1, config.shards)) {
  config_.block_bytes = std::max<size_t>(16, config_.block_bytes);
  config_.max_blocks = std::max<size_t>(1, config_.max_blocks);
}

PrefixIndex::~PrefixIndex() = default;

void PrefixIndex::hashPrompt(std::string_view model, std::span<const std::string_view> parts,
                             std::vector<uint64_t>& out) const {
  out.clear();
  const size_t bs = config_.block_bytes;
  const size_t limit = config_.max_blocks * bs;
  uint64_t h = XXH3_64bits(model.data(), model.size());
  if (parts.size() == 1) {
    std::string_view text = parts[0].substr(0, limit);
    for (size_t off = 0; off + bs <= text.size(); off += bs) {
      h = XXH3_64bits_withSeed(text.data() + off, bs, h);
      out.push_back(h);
    }
    return;
  }
  // Several parts (tools, then messages): blocks may straddle them.
  thread_local std::string joined;
  joined.clear();
  for (auto p : parts) {
    if (joined.size() >= limit) {
      break;
    }
    joined.append(p.substr(0, limit - joined.size()));
  }
  for (size_t off = 0; off + bs <= joined.size(); off += bs) {
    h = XXH3_64bits_withSeed(joined.data() + off, bs, h);
    out.push_back(h);
  }
}

std::shared_ptr<PrefixIndex::EndpointLru> PrefixIndex::endpoint(const std::string& address,
                                                                bool create) {
  {
    std::shared_lock<std::shared_mutex> lock(endpoints_mu_);
    auto it = endpoints_.find(address);
    if (it != endpoints_.end() || !create) {
      return it == endpoints_.end() ? nullptr : it->second;
    }
  }
  std::unique_lock<std::shared_mutex> lock(endpoints_mu_);
  auto& slot = endpoints_[address];
  if (!slot) {
    slot = std::make_shared<EndpointLru>();
    slot->id = next_id_++;
    slot->capacity = config_.default_capacity_blocks;
  }
  return slot;
}

void PrefixIndex::addHolder(uint64_t h, uint32_t id) {
  Shard& s = shardFor(h);
  std::lock_guard<std::mutex> lock(s.mu);
  auto& ids = s.holders[h];
  if (std::find(ids.begin(), ids.end(), id) == ids.end()) {
    ids.push_back(id);
  }
}

void PrefixIndex::removeHolder(uint64_t h, uint32_t id) {
  Shard& s = shardFor(h);
  std::lock_guard<std::mutex> lock(s.mu);
  auto it = s.holders.find(h);
  if (it == s.holders.end()) {
    return;
  }
  auto& ids = it->second;
  ids.erase(std::remove(ids.begin(), ids.end(), id), ids.end());
  if (ids.empty()) {
    s.holders.erase(it);
  }
}

void PrefixIndex::match(std::span<const uint64_t> hashes,
                        std::span<const std::string* const> addresses,
                        std::vector<uint32_t>& out) const {
  out.assign(addresses.size(), 0);
  if (hashes.empty() || addresses.empty()) {
    return;
  }
  std::vector<uint32_t> ids(addresses.size(), 0);
  {
    std::shared_lock<std::shared_mutex> lock(endpoints_mu_);
    for (size_t i = 0; i < addresses.size(); ++i) {
      auto it = endpoints_.find(*addresses[i]);
      ids[i] = it == endpoints_.end() ? 0 : it->second->id;
    }
  }
  std::vector<bool> alive(addresses.size());
  size_t still = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    alive[i] = ids[i] != 0;
    still += alive[i];
  }
  for (size_t b = 0; b < hashes.size() && still > 0; ++b) {
    const Shard& s = shardFor(hashes[b]);
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.holders.find(hashes[b]);
    for (size_t i = 0; i < ids.size(); ++i) {
      if (!alive[i]) {
        continue;
      }
      bool holds = it != s.holders.end() &&
                   std::find(it->second.begin(), it->second.end(), ids[i]) != it->second.end();
      if (holds) {
        ++out[i];
      } else {
        alive[i] = false;
        --still;
      }
    }
  }
}

void PrefixIndex::insert(const std::string& address, std::span<const uint64_t> hashes,
                         size_t capacity_blocks) {
  if (hashes.empty()) {
    return;
  }
  auto ep = endpoint(address, true);
  std::lock_guard<std::mutex> lock(ep->mu);
  if (capacity_blocks > 0) {
    ep->capacity = capacity_blocks;
  }
  // Insert from the last block to the first, so the prefix's head ends most recently used and
  // is the last to go.
  for (size_t i = hashes.size(); i-- > 0;) {
    const uint64_t h = hashes[i];
    auto it = ep->pos.find(h);
    if (it != ep->pos.end()) {
      ep->order.splice(ep->order.begin(), ep->order, it->second);
      continue;
    }
    ep->order.push_front(h);
    ep->pos[h] = ep->order.begin();
    addHolder(h, ep->id);
    entries_.fetch_add(1, std::memory_order_relaxed);
  }
  while (ep->order.size() > ep->capacity) {
    const uint64_t victim = ep->order.back();
    ep->order.pop_back();
    ep->pos.erase(victim);
    removeHolder(victim, ep->id);
    entries_.fetch_sub(1, std::memory_order_relaxed);
    evictions_.fetch_add(1, std::memory_order_relaxed);
  }
}

void PrefixIndex::removeEndpoint(const std::string& address) {
  std::shared_ptr<EndpointLru> ep;
  {
    std::unique_lock<std::shared_mutex> lock(endpoints_mu_);
    auto it = endpoints_.find(address);
    if (it == endpoints_.end()) {
      return;
    }
    ep = std::move(it->second);
    endpoints_.erase(it);
  }
  std::lock_guard<std::mutex> lock(ep->mu);
  for (uint64_t h : ep->order) {
    removeHolder(h, ep->id);
  }
  entries_.fetch_sub(ep->order.size(), std::memory_order_relaxed);
  ep->order.clear();
  ep->pos.clear();
}

PrefixIndex::Stats PrefixIndex::stats() const {
  Stats s;
  s.entries = entries_.load(std::memory_order_relaxed);
  s.evictions = evictions_.load(std::memory_order_relaxed);
  for (const auto& shard : shards_) {
    std::lock_guard<std::mutex> lock(shard.mu);
    s.blocks += shard.holders.size();
  }
  std::shared_lock<std::shared_mutex> lock(endpoints_mu_);
  s.endpoints = endpoints_.size();
  return s;
}

}  // namespace sluice::scheduler
