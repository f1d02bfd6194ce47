#pragma once

// Backend endpoints from the objects: the ready Pods an InferencePool or ModelServer selects,
// a Service port's EndpointSlices (or, without slices, its selector's Pods). One
// implementation for the full translation (route_table.cc) and for endpoint-only updates
// (endpoint_update.cc), so both always produce the same lists.

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "config/manifest.h"
#include "config/object_store.h"
#include "router/route_table.h"
#include "router/snapshot.h"

namespace sluice::router {

class EndpointResolver {
 public:
  // Indexes the ready Pods and the EndpointSlices of `namespaces` (every namespace when null).
  // Without `index_pods`, each selector scans its namespace's Pods in the store instead:
  // cheaper for the one or two backends a Pod event reaches.
  EndpointResolver(const config::ObjectStore& store, EndpointRegistry& registry,
                   const std::set<std::string>* namespaces = nullptr, bool index_pods = true);

  std::vector<Endpoint> pool(const std::string& ns, const config::InferencePool& pool);
  std::vector<Endpoint> modelServer(const std::string& ns, const config::ModelServer& ms);
  // A Service port's endpoints: from its EndpointSlices when it has any, else from the Pods
  // its selector matches (the target port by number or by the Pods' named ports).
  std::vector<Endpoint> service(const std::string& ns, const std::string& name,
                                const config::Service& svc, const config::Service::Port& port);
  // An IP literal and a port as an endpoint with its live state; nullopt for anything else.
  std::optional<Endpoint> endpoint(const std::string& ip, uint16_t port);

 private:
  struct PodRef {
    const config::Object* obj;
    const config::Pod* pod;
  };
  struct NamespacePods {
    std::vector<PodRef> all;
    std::unordered_map<std::string, std::vector<size_t>> by_label;
  };
  void indexRange(const std::string& prefix);
  // Ready Pods in `ns` whose labels include all of `selector`, by name.
  std::vector<PodRef> selectPods(const std::string& ns,
                                 const std::map<std::string, std::string>& selector) const;
  bool sliceEndpoints(const std::string& ns, const std::string& name,
                      const config::Service::Port& port, std::vector<Endpoint>& out);

  const config::ObjectStore& store_;
  EndpointRegistry& registry_;
  bool index_pods_;
  std::unordered_map<std::string, NamespacePods> pods_;
  std::unordered_map<std::string, std::vector<const config::EndpointSlice*>> slices_;
};

// The port of `svc` a backendRef's port number names (the last one listed with it, as the
// translation has always chosen), or null.
const config::Service::Port* servicePort(const config::Service& svc, uint16_t number);

// The Ready condition of a backend with `endpoints` ready endpoints (InferencePool,
// ModelServer).
Condition readyCondition(size_t endpoints);

}  // namespace sluice::router
