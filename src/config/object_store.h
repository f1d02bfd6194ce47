#pragma once

// The set of Kubernetes objects the router currently knows, fed by config sources (a manifest
// directory today, an API server later). Each source replaces what it provided; an object
// whose new version fails validation keeps its last good version, with the errors recorded
// for status.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "config/manifest.h"

namespace sluice::config {

struct StoreEvent {
  enum class Type { Added, Updated, Deleted };
  Type type;
  std::string key;
};

class ObjectStore {
 public:
  // Replaces everything `source` provided with `result`. Objects it no longer holds are
  // deleted, unless their document failed to parse (then the last good version stays).
  std::vector<StoreEvent> applySource(const std::string& source, ParseResult result);
  std::vector<StoreEvent> removeSource(const std::string& source);
  // Single-object events (API server watches).
  StoreEvent put(Object object);
  std::vector<StoreEvent> erase(const std::string& key);
  // The validation errors of what `source` delivered one object at a time (an API-server
  // object's key); empty clears them.
  void setErrors(const std::string& source, std::vector<ManifestError> errors);
  // Makes this copy of `from` current again after `events` (every change `from` made since
  // the copy, or more): the objects of their keys, and `from`'s errors and warnings. Costs
  // O(events), where a fresh copy costs O(objects).
  void follow(const ObjectStore& from, const std::vector<StoreEvent>& events);

  // Objects are shared, never changed in place: copying a store (each rebuild takes one)
  // copies pointers, not 30,000 objects.
  using Objects = std::map<std::string, std::shared_ptr<const Object>>;
  const Objects& objects() const { return objects_; }
  const Object* find(std::string_view key) const;
  // Errors and warnings from the last parse of each source.
  const std::map<std::string, std::vector<ManifestError>>& errors() const { return errors_; }
  const std::map<std::string, std::vector<ManifestError>>& warnings() const { return warnings_; }
  size_t errorCount() const;
  uint64_t generation() const { return generation_; }

 private:
  Objects objects_;
  std::map<std::string, std::string> owner_;  // key -> source
  std::map<std::string, std::vector<ManifestError>> errors_;
  std::map<std::string, std::vector<ManifestError>> warnings_;
  uint64_t generation_ = 0;
};

}  // namespace sluice::config
