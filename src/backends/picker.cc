#include "backends/picker.h"

#include <algorithm>

namespace sluice::backends {

void pickEndpoints(const router::Backend& backend, base::Random& random, size_t max_candidates,
                   std::vector<const router::Endpoint*>& out, const MetricsView* view) {
  out.clear();
  const auto& eps = backend.endpoints;
  if (eps.empty()) {
    return;
  }
  // Rotate the start randomly so equal loads spread, then order by in-flight count.
  size_t start = random.uniform(eps.size());
  for (size_t i = 0; i < eps.size(); ++i) {
    out.push_back(&eps[(start + i) % eps.size()]);
  }
  auto unhealthy = [view](const router::Endpoint* e) {
    if (view == nullptr) {
      return false;
    }
    const EndpointMetrics* m = view->find(e->address);
    return m != nullptr && !m->healthy;
  };
  std::stable_sort(out.begin(), out.end(),
                   [&](const router::Endpoint* a, const router::Endpoint* b) {
                     const bool ua = unhealthy(a);
                     const bool ub = unhealthy(b);
                     if (ua != ub) {
                       return ub;  // healthy before unhealthy
                     }
                     return a->state->in_flight.load(std::memory_order_relaxed) <
                            b->state->in_flight.load(std::memory_order_relaxed);
                   });
  if (out.size() > max_candidates) {
    out.resize(max_candidates);
  }
}

}  // namespace sluice::backends
