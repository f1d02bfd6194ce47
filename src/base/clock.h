#pragma once

#include <chrono>

namespace sluice::base {

using MonoTime = std::chrono::steady_clock::time_point;
using SystemTime = std::chrono::system_clock::time_point;

// The only way code reads the time; tests inject a FakeTimeSource.
class TimeSource {
 public:
  virtual ~TimeSource() = default;
  virtual MonoTime monotonicNow() const = 0;
  virtual SystemTime systemNow() const = 0;
};

class RealTimeSource final : public TimeSource {
 public:
  MonoTime monotonicNow() const override;
  SystemTime systemNow() const override;
  // A process-wide instance for production wiring.
  static const TimeSource& instance();
};

// Manually advanced time for deterministic tests.
class FakeTimeSource final : public TimeSource {
 public:
  MonoTime monotonicNow() const override { return mono_; }
  SystemTime systemNow() const override { return sys_; }
  void advance(std::chrono::nanoseconds d) {
    mono_ += d;
    sys_ += std::chrono::duration_cast<SystemTime::duration>(d);
  }
  void setSystem(SystemTime t) { sys_ = t; }

 private:
  MonoTime mono_{std::chrono::seconds(1000)};
  SystemTime sys_{std::chrono::seconds(1700000000)};
};

inline double secondsBetween(MonoTime a, MonoTime b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace sluice::base
