#pragma once

// The status the router owes each object, in the API's own shape (Gateway API conditions with
// observedGeneration and lastTransitionTime; per-parent entries for HTTPRoutes and
// InferencePools carrying our controllerName), computed from the route table's status and
// what the server holds now. Only our own entries are replaced: parents written by other
// controllers stay. A condition whose status did not change keeps its lastTransitionTime, so
// an unchanged status compares equal and is not written again. Asio-free.

#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "k8s/resources.h"
#include "router/route_table.h"

namespace sluice::k8s {

// What the server holds of an object whose status the router writes.
struct Observed {
  const ResourceType* type = nullptr;
  std::string ns;
  std::string name;
  std::string resource_version;
  int64_t generation = 0;
  nlohmann::json status;       // null when none
  nlohmann::json parent_refs;  // spec.parentRefs (routes)
  nlohmann::json listeners;    // spec.listeners (Gateways)
};

struct StatusContext {
  std::string controller_name;
  std::string now;  // RFC 3339, for new transitions
  // Gateway status.addresses: {type, value}.
  std::vector<std::pair<std::string, std::string>> addresses;
  // Whether Gateway ns/name is one of ours (its class names our controller).
  std::function<bool(std::string_view ns, std::string_view name)> our_gateway;
};

// The fields of `status` the router sets on `obs`; nullopt when it owes nothing there.
std::optional<nlohmann::json> desiredStatus(const router::ObjectStatus& st, const Observed& obs,
                                            const StatusContext& ctx);

// Whether any field of `desired` differs from the server's `observed` status.
bool statusDiffers(const nlohmann::json& desired, const nlohmann::json& observed);

// The merge patch that writes `desired`, with the resourceVersion as a precondition.
std::string statusPatch(const nlohmann::json& desired, const std::string& resource_version);

// RFC 3339 in UTC with seconds ("2026-12-01T19:38:26Z") and with microseconds (Lease times).
std::string rfc3339(int64_t unix_seconds);
std::string rfc3339Micro(int64_t unix_micros);

}  // namespace sluice::k8s
