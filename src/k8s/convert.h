#pragma once

// An object as the API server sends it (JSON) into the router's object model: the same
// validation as a manifest document, so a bad object is reported with field paths and skipped.
// What the status writer needs (resourceVersion, generation, the current status) is kept
// beside it.

#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

#include "config/manifest.h"
#include "k8s/resources.h"

namespace sluice::k8s {

struct Converted {
  std::string key;  // the store key; empty when the object has no name
  std::optional<config::Object> object;
  std::vector<config::ManifestError> errors;
  std::string resource_version;
  int64_t generation = 0;
};

// `item` may lack apiVersion and kind (list items of built-in kinds do); they are set from
// `type`. managedFields and, but for Pods, status are dropped before validation.
Converted convertObject(const ResourceType& type, const nlohmann::json& item);

// "Kind/ns/name" for `item` without validating it (deletions of objects that never validated).
std::string storeKey(const ResourceType& type, const nlohmann::json& item);

}  // namespace sluice::k8s
