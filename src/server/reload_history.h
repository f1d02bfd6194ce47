#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "base/clock.h"

namespace sluice::server {

// One configuration change the control plane tried to apply: the file, the objects (a manifest
// directory or the API server), an endpoint-only update, or the start itself.
struct ReloadRecord {
  base::SystemTime at;
  std::string trigger;                // "start" | "config file" | "objects" | "endpoints"
  bool applied = false;               // false: refused, the previous snapshot still serves
  uint64_t version = 0;               // the snapshot serving after it
  double ms = 0;                      // time spent building and publishing
  std::string detail;                 // what it loaded, or why it was refused
  std::vector<std::string> appeared;  // configuration problems it brought
  std::vector<std::string> resolved;  // ...and those it cleared
};

// The last kKept records, for the admin status page (/debug/reloads). Not thread-safe: the
// server keeps it under its snapshot mutex.
class ReloadHistory {
 public:
  static constexpr size_t kKept = 64;
  void add(ReloadRecord r);
  std::string json() const;  // {"total":N,"reloads":[newest first]}

 private:
  std::deque<ReloadRecord> records_;
  uint64_t total_ = 0;
};

}  // namespace sluice::server
