#pragma once

#include <cstdint>
#include <string>

namespace sluice::base {

// Injected randomness. Not thread-safe: each worker owns one.
class Random {
 public:
  virtual ~Random() = default;
  virtual uint64_t next() = 0;
  // Uniform in [0, n); n must be > 0.
  uint64_t uniform(uint64_t n) { return next() % n; }
};

// xoshiro256** seeded through splitmix64: fast, good enough for ids and tie-breaks.
class Xoshiro final : public Random {
 public:
  explicit Xoshiro(uint64_t seed);
  uint64_t next() override;

 private:
  uint64_t s_[4];
};

// A seed from the OS; used once per worker at start-up, never on the request path.
uint64_t osSeed();

// 32 lowercase hex characters (a 128-bit id), e.g. for x-request-id.
std::string randomHexId(Random& random);

}  // namespace sluice::base
