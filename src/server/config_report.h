#pragma once

#include <set>
#include <string>
#include <vector>

#include "config/object_store.h"
#include "router/snapshot.h"

namespace sluice::server {

// One line saying what a snapshot serves: listeners, routes, backends by kind, endpoints and
// models, for the startup log.
std::string loadedSummary(const router::Snapshot& snap);

// What is wrong with the objects right now, one line each: validation errors ("file:line:
// Kind/ns/name: field: message") and refused objects ("HTTPRoute/ns/r: ResolvedRefs=False
// (BackendNotFound: ...)").
std::vector<std::string> configProblems(const config::ObjectStore& store,
                                        const std::vector<router::ObjectStatus>& status);

// Logs each problem once, when it appears, and once more when it is gone: a reload says which
// object failed and why without repeating what the previous reload already said.
class ProblemLog {
 public:
  struct Change {
    std::vector<std::string> appeared, resolved;
  };
  // Logs what changed since the last call and returns it.
  Change update(const std::vector<std::string>& problems);

 private:
  std::set<std::string> current_;
};

}  // namespace sluice::server
