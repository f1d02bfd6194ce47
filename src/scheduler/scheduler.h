#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/clock.h"
#include "config/router_config.h"
#include "scheduler/framework.h"
#include "scheduler/prefix_index.h"

namespace sluice::scheduler {

// Runs profiles. One Scheduler per process: it owns the prefix index that every profile's
// prefix-aware plugins share. Thread-safe; workers call pick() concurrently.
class Scheduler {
 public:
  explicit Scheduler(std::shared_ptr<PrefixIndex> index);

  // The named presets: random, round-robin, least-request, kthena-default, gie-default,
  // sglang-cache-aware, sluice-default. Null for an unknown name.
  std::unique_ptr<Profile> makePreset(std::string_view name) const;
  static const std::vector<std::string_view>& presetNames();
  // A profile from configuration (EndpointPickerConfig shape); null if a plugin type is unknown
  // (configuration validation prevents that). A profile without a picker gets max-score.
  std::unique_ptr<Profile> makeProfile(
      const config::RouterConfig::ProfileSpec& spec,
      const std::vector<config::RouterConfig::PluginSpec>& plugins) const;
  // A preset or a configured profile by name.
  std::unique_ptr<Profile> makeNamed(const std::string& name,
                                     const config::RouterConfig::Scheduler& config) const;

  // Orders the backend's endpoints for this request, best first, at most `n`. `state` is
  // filled for onDispatch(); `decision`, when given, receives the scores.
  void pick(const Profile& profile, const RequestInfo& req, const router::Backend& backend,
            const backends::MetricsView* view, base::MonoTime now, base::Random& random, size_t n,
            std::vector<const router::Endpoint*>& out, CycleState& state,
            Decision* decision = nullptr) const;

  // Called when the request is sent to `chosen`: the prefix index learns that the endpoint
  // now holds this prompt (so a burst of siblings lands together), and cold picks are counted.
  void onDispatch(const Profile& profile, const RequestInfo& req, const CycleState& state,
                  const router::Endpoint& chosen, const backends::EndpointMetrics* metrics);

  PrefixIndex& index() { return *index_; }
  // sluice_scheduler_plugin_duration_seconds{plugin} for every plugin seen so far.
  void appendMetrics(std::string& out) const;
  const std::shared_ptr<PrefixIndex>& sharedIndex() const { return index_; }

 private:
  // Gives each plugin of `p` its timer (kept by plugin name across reloads).
  std::unique_ptr<Profile> withTimers(std::unique_ptr<Profile> p) const;
  metrics::Histogram* timerFor(const std::string& name) const;

  std::shared_ptr<PrefixIndex> index_;
  std::atomic<uint64_t> cold_seq_{0};
  mutable std::mutex timers_mu_;  // profile building and scrapes only, never a pick
  mutable std::map<std::string, std::unique_ptr<metrics::Histogram>> timers_;
};

// Does any plugin of the profile read the prompt's prefix hashes?
bool usesPrefix(const Profile& profile);

}  // namespace sluice::scheduler

namespace sluice::scheduler {

// The profiles in force: one per model that names its own, and the default.
struct ProfileSet {
  std::shared_ptr<const Profile> default_profile;
  std::unordered_map<std::string, std::shared_ptr<const Profile>> by_model;
  const Profile& forModel(const std::string& model) const {
    auto it = by_model.find(model);
    return it == by_model.end() ? *default_profile : *it->second;
  }
};

}  // namespace sluice::scheduler
