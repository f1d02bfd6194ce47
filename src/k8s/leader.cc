#include "k8s/leader.h"

#include <fmt/core.h>

#include "base/log.h"
#include "k8s/resources.h"
#include "k8s/status_writer.h"

namespace sluice::k8s {

using json = nlohmann::json;

LeaderElector::LeaderElector(ApiClient& client, LeaseConfig config, const base::TimeSource& time,
                             OnChange on_change)
    : client_(client), config_(std::move(config)), time_(time), on_change_(std::move(on_change)) {}

void LeaderElector::stop() {
  stopped_ = true;
  if (timer_) {
    timer_->cancel();
  }
}

void LeaderElector::setLeader(bool leader) {
  if (leader != leader_) {
    leader_ = leader;
    ++transitions_;
    SLUICE_LOG(Info, "k8s", "{} lease {}/{} as {}", leader ? "acquired" : "lost", config_.ns,
               config_.name, config_.identity);
    on_change_(leader);
  }
}

json LeaderElector::leaseBody(const json& previous, bool acquire) const {
  const auto now_us =
      std::chrono::duration_cast<std::chrono::microseconds>(time_.systemNow().time_since_epoch())
          .count();
  json lease = previous.is_object() ? previous : json::object();
  lease["apiVersion"] = "coordination.k8s.io/v1";
  lease["kind"] = "Lease";
  if (!lease["metadata"].is_object()) {
    lease["metadata"] = {{"name", config_.name}, {"namespace", config_.ns}};
  }
  lease["metadata"].erase("managedFields");
  json spec = lease.value("spec", json::object());
  if (!spec.is_object()) {
    spec = json::object();
  }
  const std::string now = rfc3339Micro(now_us);
  if (acquire) {
    spec["acquireTime"] = now;
    const bool had_holder = spec.value("holderIdentity", json()).is_string() &&
                            !spec["holderIdentity"].get<std::string>().empty();
    const json t = spec.value("leaseTransitions", json(0));
    const int64_t transitions = t.is_number_integer() ? t.get<int64_t>() : 0;
    spec["leaseTransitions"] = had_holder ? transitions + 1 : transitions;
  }
  spec["holderIdentity"] = config_.identity;
  spec["leaseDurationSeconds"] = std::max<int64_t>(
      1, std::chrono::duration_cast<std::chrono::seconds>(config_.lease_duration).count());
  spec["renewTime"] = now;
  lease["spec"] = spec;
  return lease;
}

awaitable<bool> LeaderElector::tryAcquireOrRenew() {
  const auto& lease = leaseResource();
  const std::string path = lease.objectPath(config_.ns, config_.name);
  auto got = co_await client_.request("GET", path);
  if (got.status == 404) {
    auto created = co_await client_.request("POST", lease.collectionPath(config_.ns),
                                            leaseBody(json(), true).dump(), "application/json");
    if (created.ok()) {
      holder_ = config_.identity;
      co_return true;
    }
    if (created.status != 409) {
      SLUICE_LOG(Warn, "k8s", "lease {}/{}: create: {}", config_.ns, config_.name,
                 created.describe());
    }
    co_return false;
  }
  if (!got.ok()) {
    SLUICE_LOG(Warn, "k8s", "lease {}/{}: {}", config_.ns, config_.name, got.describe());
    co_return false;
  }
  json current = json::parse(got.body, nullptr, false);
  if (!current.is_object()) {
    co_return false;
  }
  const json spec = current.value("spec", json::object());
  const std::string holder = spec.is_object() && spec.value("holderIdentity", json()).is_string()
                                 ? spec["holderIdentity"].get<std::string>()
                                 : std::string();
  const std::string record =
      holder + "|" + (spec.is_object() ? spec.value("renewTime", json()).dump() : "");
  const auto now = time_.monotonicNow();
  if (record != observed_record_) {
    observed_record_ = record;
    observed_at_ = now;
  }
  holder_ = holder;
  const bool mine = holder == config_.identity;
  const bool expired = holder.empty() || now - observed_at_ >= config_.lease_duration;
  if (!mine && !expired) {
    co_return false;
  }
  auto updated =
      co_await client_.request("PUT", path, leaseBody(current, !mine).dump(), "application/json");
  if (!updated.ok()) {
    if (updated.status != 409) {
      SLUICE_LOG(Warn, "k8s", "lease {}/{}: update: {}", config_.ns, config_.name,
                 updated.describe());
    }
    co_return false;
  }
  holder_ = config_.identity;
  co_return true;
}

awaitable<void> LeaderElector::run() {
  auto ex = co_await asio::this_coro::executor;
  while (!stopped_) {
    bool held = false;
    try {
      held = co_await tryAcquireOrRenew();
    } catch (const std::exception& e) {
      SLUICE_LOG(Error, "k8s", "lease {}/{}: {}", config_.ns, config_.name, e.what());
    }
    if (stopped_) {
      break;
    }
    const auto now = time_.monotonicNow();
    if (held) {
      renewed_at_ = now;
      setLeader(true);
    } else if (leader_ && now - renewed_at_ >= config_.renew_deadline) {
      setLeader(false);  // could not renew in time: another may take it from here
    } else if (leader_ && holder_ != config_.identity && !holder_.empty()) {
      setLeader(false);
    }
    timer_ = std::make_unique<SteadyTimer>(ex, config_.retry_period);
    error_code ec;
    co_await timer_->async_wait(asio::redirect_error(use_awaitable, ec));
  }
}

awaitable<void> LeaderElector::release() {
  if (!leader_) {
    co_return;
  }
  const auto& lease = leaseResource();
  const std::string path = lease.objectPath(config_.ns, config_.name);
  auto got = co_await client_.request("GET", path, {}, {}, std::chrono::seconds(2));
  json current = got.ok() ? json::parse(got.body, nullptr, false) : json();
  if (current.is_object() && current["spec"].is_object() &&
      current["spec"].value("holderIdentity", std::string()) == config_.identity) {
    current["spec"]["holderIdentity"] = "";
    current["spec"]["leaseDurationSeconds"] = 1;
    co_await client_.request("PUT", path, current.dump(), "application/json",
                             std::chrono::seconds(2));
  }
  leader_ = false;
}

}  // namespace sluice::k8s
