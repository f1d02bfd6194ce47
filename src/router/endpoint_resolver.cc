#include "router/endpoint_resolver.h"

#include <algorithm>
#include <arpa/inet.h>
#include <cstring>
#include <unordered_set>

#include <fmt/core.h>

namespace sluice::router {

using config::Kind;

namespace {

bool labelsInclude(const std::map<std::string, std::string>& labels,
                   const std::map<std::string, std::string>& selector) {
  for (const auto& [k, v] : selector) {
    auto l = labels.find(k);
    if (l == labels.end() || l->second != v) {
      return false;
    }
  }
  return true;
}

// Ready Pods count; unready and terminating ones do not.
bool servable(const config::Object& obj) {
  const auto& pod = std::get<config::Pod>(obj.spec);
  return pod.ready && !obj.meta.terminating;
}

}  // namespace

EndpointResolver::EndpointResolver(const config::ObjectStore& store, EndpointRegistry& registry,
                                   const std::set<std::string>* namespaces, bool index_pods)
    : store_(store), registry_(registry), index_pods_(index_pods) {
  // Keys are Kind/ns/name in a sorted map: a kind, or a kind in one namespace, is one range.
  for (Kind kind : {Kind::Pod, Kind::EndpointSlice}) {
    if (kind == Kind::Pod && !index_pods_) {
      continue;
    }
    const std::string prefix = std::string(config::kindName(kind)) + "/";
    if (namespaces == nullptr) {
      indexRange(prefix);
      continue;
    }
    for (const auto& ns : *namespaces) {
      indexRange(prefix + ns + "/");
    }
  }
}

void EndpointResolver::indexRange(const std::string& prefix) {
  const auto& objects = store_.objects();
  for (auto it = objects.lower_bound(prefix);
       it != objects.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it) {
    const config::Object& obj = *it->second;
    if (obj.kind == Kind::Pod) {
      if (!servable(obj)) {
        continue;
      }
      auto& ns = pods_[obj.meta.ns];
      const size_t idx = ns.all.size();
      ns.all.push_back({&obj, &std::get<config::Pod>(obj.spec)});
      for (const auto& [k, v] : obj.meta.labels) {
        ns.by_label[k + "=" + v].push_back(idx);
      }
    } else if (obj.kind == Kind::EndpointSlice) {
      const auto& es = std::get<config::EndpointSlice>(obj.spec);
      if (!es.service.empty()) {
        slices_[obj.meta.ns + "/" + es.service].push_back(&es);
      }
    }
  }
}

std::vector<Endpoint> EndpointResolver::pool(const std::string& ns,
                                             const config::InferencePool& pool) {
  std::vector<Endpoint> out;
  for (const auto& p : selectPods(ns, pool.selector)) {
    for (uint16_t port : pool.target_ports) {
      if (auto ep = endpoint(p.pod->ip, port)) {
        out.push_back(std::move(*ep));
      }
    }
  }
  return out;
}

std::vector<Endpoint> EndpointResolver::modelServer(const std::string& ns,
                                                    const config::ModelServer& ms) {
  std::vector<Endpoint> out;
  for (const auto& p : selectPods(ns, ms.selector)) {
    if (auto ep = endpoint(p.pod->ip, ms.port)) {
      out.push_back(std::move(*ep));
    }
  }
  return out;
}

std::vector<Endpoint> EndpointResolver::service(const std::string& ns, const std::string& name,
                                                const config::Service& svc,
                                                const config::Service::Port& port) {
  std::vector<Endpoint> out;
  if (sliceEndpoints(ns, name, port, out)) {
    return out;
  }
  for (const auto& p : selectPods(ns, svc.selector)) {
    uint16_t target = port.target_port;
    if (target == 0) {
      auto np = p.pod->named_ports.find(port.target_port_name);
      if (np == p.pod->named_ports.end()) {
        continue;
      }
      target = np->second;
    }
    if (auto ep = endpoint(p.pod->ip, target)) {
      out.push_back(std::move(*ep));
    }
  }
  return out;
}

// A Service port's ready endpoints from its EndpointSlices (each address once, in slice
// order); false when the Service has none, and the Pods its selector matches are used.
bool EndpointResolver::sliceEndpoints(const std::string& ns, const std::string& name,
                                      const config::Service::Port& port,
                                      std::vector<Endpoint>& out) {
  auto it = slices_.find(ns + "/" + name);
  if (it == slices_.end()) {
    return false;
  }
  std::unordered_set<std::string> seen;
  for (const auto* es : it->second) {
    if (es->address_type == "FQDN") {
      continue;
    }
    uint16_t target = 0;
    for (const auto& p : es->ports) {
      if (p.name == port.name) {
        target = p.port;
      }
    }
    if (target == 0) {
      continue;
    }
    for (const auto& e : es->endpoints) {
      if (!e.ready) {
        continue;
      }
      for (const auto& a : e.addresses) {
        if (seen.insert(fmt::format("{}:{}", a, target)).second) {
          if (auto ep = endpoint(a, target)) {
            out.push_back(std::move(*ep));
          }
        }
      }
    }
  }
  return true;
}

std::vector<EndpointResolver::PodRef> EndpointResolver::selectPods(
    const std::string& ns, const std::map<std::string, std::string>& selector) const {
  std::vector<PodRef> out;
  if (selector.empty()) {
    return out;
  }
  if (!index_pods_) {
    // The namespace's Pods are one range of the store, already in name order.
    const std::string prefix = "Pod/" + ns + "/";
    const auto& objects = store_.objects();
    for (auto it = objects.lower_bound(prefix);
         it != objects.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it) {
      const config::Object& obj = *it->second;
      if (servable(obj) && labelsInclude(obj.meta.labels, selector)) {
        out.push_back({&obj, &std::get<config::Pod>(obj.spec)});
      }
    }
    return out;
  }
  auto it = pods_.find(ns);
  if (it == pods_.end()) {
    return out;
  }
  const auto& nsp = it->second;
  // Walk the shortest posting list and check the rest of the labels.
  const std::vector<size_t>* best = nullptr;
  for (const auto& [k, v] : selector) {
    auto pl = nsp.by_label.find(k + "=" + v);
    if (pl == nsp.by_label.end()) {
      return out;
    }
    if (best == nullptr || pl->second.size() < best->size()) {
      best = &pl->second;
    }
  }
  for (size_t idx : *best) {
    const auto& ref = nsp.all[idx];
    if (labelsInclude(ref.obj->meta.labels, selector)) {
      out.push_back(ref);
    }
  }
  std::sort(out.begin(), out.end(),
            [](const PodRef& a, const PodRef& b) { return a.obj->meta.name < b.obj->meta.name; });
  return out;
}

std::optional<Endpoint> EndpointResolver::endpoint(const std::string& ip, uint16_t port) {
  Endpoint ep;
  ep.port = port;
  in_addr v4{};
  in6_addr v6{};
  if (inet_pton(AF_INET, ip.c_str(), &v4) == 1) {
    std::memcpy(ep.ip.data(), &v4, 4);
    ep.address = fmt::format("{}:{}", ip, port);
  } else if (inet_pton(AF_INET6, ip.c_str(), &v6) == 1) {
    ep.v6 = true;
    std::memcpy(ep.ip.data(), &v6, 16);
    ep.address = fmt::format("[{}]:{}", ip, port);
  } else {
    return std::nullopt;
  }
  ep.state = registry_.get(ep.address);
  return ep;
}

const config::Service::Port* servicePort(const config::Service& svc, uint16_t number) {
  const config::Service::Port* port = nullptr;
  for (const auto& p : svc.ports) {
    if (p.port == number) {
      port = &p;
    }
  }
  return port;
}

Condition readyCondition(size_t endpoints) {
  return {"Ready", endpoints != 0, endpoints != 0 ? "Ready" : "NoReadyEndpoints",
          fmt::format("{} ready endpoint(s)", endpoints)};
}

}  // namespace sluice::router
