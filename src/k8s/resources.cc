#include "k8s/resources.h"

#include <fmt/core.h>

namespace sluice::k8s {

using config::Kind;

std::string ResourceType::apiVersion() const {
  return group.empty() ? std::string(version) : fmt::format("{}/{}", group, version);
}

std::string ResourceType::id() const {
  return group.empty() ? fmt::format("{}.{}", plural, version)
                       : fmt::format("{}.{}.{}", plural, version, group);
}

std::string ResourceType::collectionPath(std::string_view ns) const {
  std::string out =
      group.empty() ? fmt::format("/api/{}", version) : fmt::format("/apis/{}/{}", group, version);
  if (namespaced && !ns.empty()) {
    out += fmt::format("/namespaces/{}", ns);
  }
  out += '/';
  out += plural;
  return out;
}

std::string ResourceType::objectPath(std::string_view ns, std::string_view name,
                                     std::string_view subresource) const {
  std::string out = collectionPath(ns) + "/" + std::string(name);
  if (!subresource.empty()) {
    out += '/';
    out += subresource;
  }
  return out;
}

const std::vector<ResourceType>& watchedResources() {
  constexpr std::string_view kGateway = "gateway.networking.k8s.io";
  constexpr std::string_view kInference = "inference.networking.k8s.io";
  constexpr std::string_view kInferenceX = "inference.networking.x-k8s.io";
  constexpr std::string_view kKthena = "networking.serving.volcano.sh";
  static const std::vector<ResourceType> kTypes = {
      {Kind::GatewayClass, kGateway, "v1", "gatewayclasses", "GatewayClass", false, true},
      {Kind::Gateway, kGateway, "v1", "gateways", "Gateway", true, true},
      {Kind::HTTPRoute, kGateway, "v1", "httproutes", "HTTPRoute", true, true},
      {Kind::ReferenceGrant, kGateway, "v1beta1", "referencegrants", "ReferenceGrant", true, false},
      {Kind::Namespace, "", "v1", "namespaces", "Namespace", false, false},
      {Kind::Service, "", "v1", "services", "Service", true, false},
      {Kind::Pod, "", "v1", "pods", "Pod", true, false},
      {Kind::EndpointSlice, "discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", true,
       false},
      {Kind::InferencePool, kInference, "v1", "inferencepools", "InferencePool", true, true},
      {Kind::InferencePool, kInferenceX, "v1alpha2", "inferencepools", "InferencePool", true, true},
      {Kind::InferenceObjective, kInferenceX, "v1alpha2", "inferenceobjectives",
       "InferenceObjective", true, true},
      {Kind::InferenceModelRewrite, kInferenceX, "v1alpha2", "inferencemodelrewrites",
       "InferenceModelRewrite", true, true},
      {Kind::InferenceModel, kInferenceX, "v1alpha2", "inferencemodels", "InferenceModel", true,
       false},
      {Kind::ModelRoute, kKthena, "v1alpha1", "modelroutes", "ModelRoute", true, true},
      {Kind::ModelServer, kKthena, "v1alpha1", "modelservers", "ModelServer", true, true},
      {Kind::ExternalModelProvider, kKthena, "v1alpha1", "externalmodelproviders",
       "ExternalModelProvider", true, true},
  };
  return kTypes;
}

const ResourceType& secretResource() {
  static const ResourceType kSecret{Kind::Secret, "", "v1", "secrets", "Secret", true, false};
  return kSecret;
}

const ResourceType& leaseResource() {
  // Not a config kind; `kind` is unused for leases.
  static const ResourceType kLease{
      Kind::Namespace, "coordination.k8s.io", "v1", "leases", "Lease", true, false};
  return kLease;
}

std::string queryEscape(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  return out;
}

}  // namespace sluice::k8s
