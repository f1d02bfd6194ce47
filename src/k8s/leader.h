#pragma once

// Leader election on a coordination.k8s.io/v1 Lease, with client-go's semantics: a candidate
// takes the lease only when the holder has not renewed it for leaseDuration as measured by the
// candidate's own clock (no comparison of clocks across machines); the leader renews every
// retry period and steps down when it could not renew within the renew deadline; a leader
// that stops releases the lease so another takes over at once. Updates carry the
// resourceVersion, so two candidates cannot both win.

#include <chrono>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "base/asio.h"
#include "base/clock.h"
#include "k8s/api_client.h"

namespace sluice::k8s {

struct LeaseConfig {
  std::string name;
  std::string ns;
  std::string identity;
  std::chrono::milliseconds lease_duration{15'000};
  std::chrono::milliseconds renew_deadline{10'000};
  std::chrono::milliseconds retry_period{2'000};
};

class LeaderElector {
 public:
  using OnChange = std::function<void(bool leader)>;
  LeaderElector(ApiClient& client, LeaseConfig config, const base::TimeSource& time,
                OnChange on_change);

  awaitable<void> run();  // until stop()
  void stop();
  // Gives the lease up (best effort, bounded) if held.
  awaitable<void> release();
  bool leader() const { return leader_; }
  const std::string& holder() const { return holder_; }
  uint64_t transitions() const { return transitions_; }

 private:
  // One round: acquire or renew. True when we hold the lease afterwards.
  awaitable<bool> tryAcquireOrRenew();
  nlohmann::json leaseBody(const nlohmann::json& previous, bool acquire) const;
  void setLeader(bool leader);

  ApiClient& client_;
  LeaseConfig config_;
  const base::TimeSource& time_;
  OnChange on_change_;
  bool leader_ = false;
  bool stopped_ = false;
  std::string holder_;
  std::string observed_record_;  // holder + renewTime last seen
  base::MonoTime observed_at_{};
  base::MonoTime renewed_at_{};
  uint64_t transitions_ = 0;
  std::unique_ptr<SteadyTimer> timer_;
};

}  // namespace sluice::k8s
