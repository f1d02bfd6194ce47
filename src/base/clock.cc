#include "base/clock.h"

namespace sluice::base {

MonoTime RealTimeSource::monotonicNow() const {
  return std::chrono::steady_clock::now();
}
SystemTime RealTimeSource::systemNow() const {
  return std::chrono::system_clock::now();
}

const TimeSource& RealTimeSource::instance() {
  static const RealTimeSource source;
  return source;
}

}  // namespace sluice::base
