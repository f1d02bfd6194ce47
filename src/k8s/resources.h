#pragma once

// The resources the router lists and watches, with their REST paths. Asio-free.

#include <string>
#include <string_view>
#include <vector>

#include "config/manifest.h"

namespace sluice::k8s {

struct ResourceType {
  config::Kind kind;
  std::string_view group;  // "" = core
  std::string_view version;
  std::string_view plural;
  std::string_view kind_name;
  bool namespaced = true;
  bool writes_status = false;  // the router writes this kind's status subresource

  std::string apiVersion() const;
  // "pods.v1" or "httproutes.v1.gateway.networking.k8s.io": a name for logs and metrics.
  std::string id() const;
  // The collection: /api/v1/pods, /api/v1/namespaces/NS/pods, /apis/G/V/namespaces/NS/P...
  std::string collectionPath(std::string_view ns) const;
  std::string objectPath(std::string_view ns, std::string_view name,
                         std::string_view subresource = {}) const;
};

// Every resource watched, in precedence order: when two resources give the same store key
// (InferencePool v1 and v1alpha2), the earlier one wins. Secrets are not in this list: they
// are watched one by one, only those the configuration references.
const std::vector<ResourceType>& watchedResources();
const ResourceType& secretResource();
const ResourceType& leaseResource();

// Percent-encoding for a query parameter value.
std::string queryEscape(std::string_view s);

}  // namespace sluice::k8s
