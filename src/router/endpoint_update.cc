#include "router/endpoint_update.h"

#include <algorithm>
#include <map>
#include <set>
#include <string>

#include "router/endpoint_resolver.h"
#include "router/route_table.h"

namespace sluice::router {

using config::Kind;
using config::ObjectStore;

namespace {

// What the events changed: each namespace's Pods' label sets (before and after the change)
// and the Services whose EndpointSlices changed.
struct Changes {
  std::set<std::string> namespaces;
  std::map<std::string, std::vector<const std::map<std::string, std::string>*>> labels;
  std::set<std::string> sliced_services;  // ns/name
};

bool startsWith(const std::string& s, std::string_view prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

std::optional<Changes> collect(const ObjectStore& before, const ObjectStore& after,
                               const std::vector<config::StoreEvent>& events) {
  Changes c;
  for (const auto& e : events) {
    const bool pod = startsWith(e.key, "Pod/");
    if (!pod && !startsWith(e.key, "EndpointSlice/")) {
      return std::nullopt;
    }
    for (const auto* store : {&before, &after}) {
      const config::Object* o = store->find(e.key);
      if (o == nullptr) {
        continue;
      }
      c.namespaces.insert(o->meta.ns);
      if (pod) {
        c.labels[o->meta.ns].push_back(&o->meta.labels);
      } else if (const auto& es = std::get<config::EndpointSlice>(o->spec); !es.service.empty()) {
        c.sliced_services.insert(o->meta.ns + "/" + es.service);
      }
    }
  }
  return c;
}

bool sameErrors(const ObjectStore& a, const ObjectStore& b) {
  const auto& x = a.errors();
  const auto& y = b.errors();
  return x.size() == y.size() &&
         std::equal(x.begin(), x.end(), y.begin(), [](const auto& p, const auto& q) {
           return p.first == q.first && p.second.size() == q.second.size() &&
                  std::equal(p.second.begin(), p.second.end(), q.second.begin(),
                             [](const config::ManifestError& m, const config::ManifestError& n) {
                               return m.where == n.where && m.message == n.message;
                             });
         });
}

bool selects(const std::map<std::string, std::string>& selector,
             const std::map<std::string, std::string>& labels) {
  if (selector.empty()) {
    return false;
  }
  for (const auto& [k, v] : selector) {
    auto it = labels.find(k);
    if (it == labels.end() || it->second != v) {
      return false;
    }
  }
  return true;
}

bool anySelected(const Changes& c, const std::string& ns,
                 const std::map<std::string, std::string>& selector) {
  auto it = c.labels.find(ns);
  if (it == c.labels.end()) {
    return false;
  }
  return std::any_of(it->second.begin(), it->second.end(),
                     [&](const auto* labels) { return selects(selector, *labels); });
}

bool sameAddresses(const std::vector<Endpoint>& a, const std::vector<Endpoint>& b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(),
                    [](const auto& x, const auto& y) { return x.address == y.address; });
}

// The backend's object when one of the changes can move its endpoints, else null.
const config::Object* affected(const Backend& b, const ObjectStore& after, const Changes& c) {
  const std::string ns = b.name.substr(0, b.name.find('/'));
  if (c.namespaces.count(ns) == 0) {
    return nullptr;
  }
  const config::Object* o = after.find(b.kind + "/" + b.name);
  if (o == nullptr) {
    return nullptr;
  }
  if (const auto* pool = std::get_if<config::InferencePool>(&o->spec)) {
    return anySelected(c, ns, pool->selector) ? o : nullptr;
  }
  if (const auto* ms = std::get_if<config::ModelServer>(&o->spec)) {
    return anySelected(c, ns, ms->selector) ? o : nullptr;
  }
  if (const auto* svc = std::get_if<config::Service>(&o->spec)) {
    return c.sliced_services.count(b.name) > 0 || anySelected(c, ns, svc->selector) ? o : nullptr;
  }
  return nullptr;
}

std::vector<Endpoint> resolve(const Backend& b, const config::Object& o,
                              EndpointResolver& resolver) {
  if (const auto* pool = std::get_if<config::InferencePool>(&o.spec)) {
    return resolver.pool(o.meta.ns, *pool);
  }
  if (const auto* ms = std::get_if<config::ModelServer>(&o.spec)) {
    return resolver.modelServer(o.meta.ns, *ms);
  }
  const auto& svc = std::get<config::Service>(o.spec);
  const auto* port = servicePort(svc, b.service_port);
  return port ? resolver.service(o.meta.ns, o.meta.name, svc, *port) : std::vector<Endpoint>{};
}

// The status of `key` as `base` serves it (the route table's, or an earlier update's).
const ObjectStatus* statusOf(const Snapshot& base, const std::string& key) {
  if (auto it = base.status_patch.find(key); it != base.status_patch.end()) {
    return it->second.get();
  }
  const auto& all = base.routes->status;  // sorted by key: emitted from an ordered map
  auto it = std::lower_bound(all.begin(), all.end(), key,
                             [](const ObjectStatus& s, const std::string& k) { return s.key < k; });
  return it != all.end() && it->key == key ? &*it : nullptr;
}

}  // namespace

std::optional<EndpointUpdate> updateEndpoints(const Snapshot& base, uint64_t version,
                                              const ObjectStore& before, const ObjectStore& after,
                                              const std::vector<config::StoreEvent>& events,
                                              EndpointRegistry& registry) {
  if (events.empty() || !base.routes || !sameErrors(before, after)) {
    return std::nullopt;
  }
  auto changes = collect(before, after, events);
  if (!changes) {
    return std::nullopt;
  }
  // Which backends the changes can reach (a selector matching a changed Pod's labels, before
  // or after), then their endpoints: a few by scanning the namespace's Pods, many through an
  // index of them.
  std::vector<std::pair<const Backend*, const config::Object*>> reached;
  for (const auto& b : base.routes->backends) {
    if (b->slot == Backend::kNoSlot) {
      continue;
    }
    const Backend& cur = base.current(*b);
    if (const config::Object* o = affected(cur, after, *changes)) {
      reached.emplace_back(&cur, o);
    }
  }
  constexpr size_t kIndexAbove = 4;
  EndpointResolver resolver(after, registry, &changes->namespaces, reached.size() > kIndexAbove);
  std::vector<std::shared_ptr<const Backend>> updated = base.updated;
  std::map<std::string, size_t> ready;  // status key -> ready endpoints
  EndpointUpdate result;
  for (const auto& [cur, o] : reached) {
    auto eps = resolve(*cur, *o, resolver);
    if (sameAddresses(eps, cur->endpoints)) {
      continue;
    }
    auto copy = std::make_shared<Backend>(*cur);
    copy->endpoints = std::move(eps);
    if (copy->kind == "InferencePool" || copy->kind == "ModelServer") {
      ready[copy->kind + "/" + copy->name] = copy->endpoints.size();
    }
    updated.resize(std::max<size_t>(updated.size(), copy->slot + 1));
    updated[copy->slot] = std::move(copy);
    ++result.backends_changed;
  }
  if (result.backends_changed == 0) {
    return result;
  }
  auto snap = std::make_shared<Snapshot>(base);
  snap->version = version;
  snap->updated = std::move(updated);
  for (const auto& [key, count] : ready) {
    const ObjectStatus* was = statusOf(base, key);
    if (was == nullptr) {
      continue;
    }
    auto st = std::make_shared<ObjectStatus>(*was);
    for (auto& cond : st->conditions) {
      if (cond.type == "Ready") {
        cond = readyCondition(count);
      }
    }
    result.statuses.push_back(*st);
    snap->status_patch[key] = std::move(st);
  }
  result.snapshot = std::move(snap);
  return result;
}

}  // namespace sluice::router
