#pragma once

// List-then-watch of one resource, as client-go's reflector does it: a paged list (limit and
// continue) gives every object and a resourceVersion; a watch from there (with bookmarks)
// streams changes; a watch the server ends is resumed from the last resourceVersion seen; a
// 410 Gone (the version was compacted away) relists; errors back off exponentially with
// jitter. A resource the server does not know (its CRD is not installed: 404) is reported and
// retried, and does not hold up the others.

#include <chrono>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "base/asio.h"
#include "base/random.h"
#include "k8s/api_client.h"
#include "k8s/resources.h"

namespace sluice::k8s {

enum class InformerState { Starting, Synced, Missing, Failing };
std::string_view stateName(InformerState s);

struct InformerStats {
  uint64_t lists = 0;
  uint64_t relists = 0;  // after a 410
  uint64_t watches = 0;  // watch requests made
  uint64_t events = 0;
  uint64_t bookmarks = 0;
  uint64_t errors = 0;
};

class Informer {
 public:
  struct Handler {
    // The whole current set (first list and every relist).
    std::function<void(const ResourceType&, std::vector<nlohmann::json>&&)> replace;
    // One watch event: "ADDED", "MODIFIED" or "DELETED".
    std::function<void(const ResourceType&, std::string_view, nlohmann::json&&)> event;
    std::function<void(const ResourceType&, InformerState, const std::string& detail)> state;
  };
  struct Options {
    std::string ns;              // empty = every namespace
    std::string field_selector;  // e.g. metadata.name=x
    std::string label_selector;
    uint32_t page_size = 500;
    std::chrono::milliseconds backoff_initial{200};
    std::chrono::milliseconds backoff_max{30'000};
    std::chrono::milliseconds missing_retry{10'000};  // a resource not served: look again
    std::chrono::seconds watch_timeout{300};          // asked of the server, randomised x1-2
  };

  Informer(ApiClient& client, const ResourceType& type, Options options, Handler handler,
           uint64_t seed);

  // Runs until stop(); spawn it on the client's io_context.
  awaitable<void> run();
  void stop();
  InformerState state() const { return state_; }
  bool synced() const { return synced_; }
  const InformerStats& stats() const { return stats_; }
  const ResourceType& type() const { return type_; }
  const std::string& resourceVersion() const { return rv_; }

 private:
  // Lists every page; false on failure (then `failure` says why).
  awaitable<void> runOnce();
  awaitable<bool> list(Response& failure);
  // Watches from rv_; returns when the stream ends. Sets relist_ on 410.
  awaitable<Response> watch();
  bool onLine(std::string_view line);
  awaitable<void> sleep(std::chrono::milliseconds d);
  std::chrono::milliseconds nextBackoff();
  void setState(InformerState s, const std::string& detail);
  std::string query(bool watch, const std::string& cont) const;

  ApiClient& client_;
  const ResourceType& type_;
  Options options_;
  Handler handler_;
  mutable base::Xoshiro random_;  // jitter only
  std::string rv_;
  bool relist_ = true;
  bool stopped_ = false;
  bool synced_ = false;
  InformerState state_ = InformerState::Starting;
  std::chrono::milliseconds backoff_{0};
  std::unique_ptr<SteadyTimer> timer_;
  InformerStats stats_;
};

}  // namespace sluice::k8s
