#include "k8s/status_writer.h"

#include <ctime>

#include <fmt/core.h>

namespace sluice::k8s {

namespace {

using json = nlohmann::json;
constexpr std::string_view kGatewayGroup = "gateway.networking.k8s.io";

// A string field, or `dflt` when absent or of another type: the server's objects may hold
// anything another writer put there.
std::string str(const json& j, const char* key, const char* dflt = "") {
  if (!j.is_object()) {
    return dflt;
  }
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string(dflt);
}

const json* findCondition(const json& list, const std::string& type) {
  if (!list.is_array()) {
    return nullptr;
  }
  for (const auto& c : list) {
    if (c.is_object() && str(c, "type") == type) {
      return &c;
    }
  }
  return nullptr;
}

// Conditions in the API's shape; `previous` is the list the server holds at the same place.
json conditions(const std::vector<router::Condition>& conds, const json& previous,
                int64_t generation, const std::string& now) {
  json out = json::array();
  for (const auto& c : conds) {
    const std::string status = c.status ? "True" : "False";
    std::string since = now;
    if (const json* old = findCondition(previous, c.type);
        old != nullptr && str(*old, "status") == status &&
        old->value("lastTransitionTime", json()).is_string()) {
      since = (*old)["lastTransitionTime"].get<std::string>();
    }
    out.push_back({{"type", c.type},
                   {"status", status},
                   {"reason", c.reason},
                   {"message", c.message.substr(0, 32768)},
                   {"lastTransitionTime", since},
                   {"observedGeneration", generation}});
  }
  return out;
}

// "Gateway/ns/name[/section]" from the route table.
struct ParentName {
  std::string ns, name, section;
};
std::optional<ParentName> parseParent(std::string_view ref) {
  if (ref.rfind("Gateway/", 0) != 0) {
    return std::nullopt;
  }
  ref.remove_prefix(8);
  ParentName p;
  auto slash = ref.find('/');
  if (slash == std::string_view::npos) {
    return std::nullopt;
  }
  p.ns = std::string(ref.substr(0, slash));
  ref.remove_prefix(slash + 1);
  slash = ref.find('/');
  p.name = std::string(ref.substr(0, slash));
  if (slash != std::string_view::npos) {
    p.section = std::string(ref.substr(slash + 1));
  }
  return p;
}

bool sameParentRef(const json& a, const json& b) {
  auto field = [](const json& j, const char* k, const char* dflt) { return str(j, k, dflt); };
  auto port = [](const json& j) { return j.is_object() ? j.value("port", json()) : json(); };
  return field(a, "group", "gateway.networking.k8s.io") ==
             field(b, "group", "gateway.networking.k8s.io") &&
         field(a, "kind", "Gateway") == field(b, "kind", "Gateway") &&
         field(a, "namespace", "") == field(b, "namespace", "") &&
         field(a, "name", "") == field(b, "name", "") &&
         field(a, "sectionName", "") == field(b, "sectionName", "") && port(a) == port(b);
}

// Route parents: one entry per parentRef naming one of our Gateways, beside the entries of
// other controllers (kept as the server holds them).
json routeParents(const router::ObjectStatus& st, const Observed& obs, const StatusContext& ctx,
                  const char* list_key) {
  const json& held = obs.status.is_object() ? obs.status.value(list_key, json::array()) : json();
  json out = json::array();
  if (held.is_array()) {
    for (const auto& p : held) {
      if (p.is_object() && str(p, "controllerName") != ctx.controller_name) {
        out.push_back(p);
      }
    }
  }
  auto previous = [&](const json& ref) {
    if (held.is_array()) {
      for (const auto& p : held) {
        if (p.is_object() && sameParentRef(p.value("parentRef", json()), ref)) {
          return p.value("conditions", json::array());
        }
      }
    }
    return json::array();
  };
  for (size_t i = 0; i < st.parents.size(); ++i) {
    auto name = parseParent(st.parents[i].ref);
    if (!name || !ctx.our_gateway(name->ns, name->name)) {
      continue;  // someone else's Gateway (or none): not ours to report on
    }
    json ref;
    if (obs.parent_refs.is_array() && i < obs.parent_refs.size() &&
        obs.parent_refs[i].is_object()) {
      ref = obs.parent_refs[i];  // as written in the spec, so clients can match it
      if (!ref.contains("namespace")) {
        ref["namespace"] = name->ns;
      }
    } else {
      ref = {{"group", kGatewayGroup},
             {"kind", "Gateway"},
             {"namespace", name->ns},
             {"name", name->name}};
      if (!name->section.empty()) {
        ref["sectionName"] = name->section;
      }
    }
    out.push_back({{"parentRef", ref},
                   {"controllerName", ctx.controller_name},
                   {"conditions",
                    conditions(st.parents[i].conditions, previous(ref), obs.generation, ctx.now)}});
  }
  return out;
}

json supportedKinds(const json& listener) {
  json kinds = json::array();
  const json* allowed = nullptr;
  if (listener.is_object()) {
    if (auto ar = listener.find("allowedRoutes"); ar != listener.end() && ar->is_object()) {
      if (auto k = ar->find("kinds"); k != ar->end() && k->is_array() && !k->empty()) {
        allowed = &*k;
      }
    }
  }
  if (allowed == nullptr) {
    // What an HTTP(S) listener takes when allowedRoutes.kinds is empty.
    kinds.push_back({{"group", kGatewayGroup}, {"kind", "HTTPRoute"}});
    kinds.push_back({{"group", "networking.serving.volcano.sh"}, {"kind", "ModelRoute"}});
    return kinds;
  }
  for (const auto& k : *allowed) {
    const std::string group = str(k, "group", kGatewayGroup.data());
    const std::string kind = k.is_object() ? str(k, "kind") : "";
    if ((group == kGatewayGroup && kind == "HTTPRoute") ||
        (group == "networking.serving.volcano.sh" && kind == "ModelRoute")) {
      kinds.push_back({{"group", group}, {"kind", kind}});
    }
  }
  return kinds;
}

json gatewayStatus(const router::ObjectStatus& st, const Observed& obs, const StatusContext& ctx) {
  const json held = obs.status.is_object() ? obs.status : json::object();
  json out = json::object();
  json addresses = json::array();
  for (const auto& [type, value] : ctx.addresses) {
    addresses.push_back({{"type", type}, {"value", value}});
  }
  out["addresses"] = addresses;
  out["conditions"] =
      conditions(st.conditions, held.value("conditions", json()), obs.generation, ctx.now);
  json listeners = json::array();
  const json held_listeners = held.value("listeners", json::array());
  for (size_t i = 0; i < st.listeners.size(); ++i) {
    const auto& l = st.listeners[i];
    json previous = json::array();
    for (const auto& h : held_listeners) {
      if (h.is_object() && str(h, "name") == l.name) {
        previous = h.value("conditions", json::array());
      }
    }
    const json spec =
        obs.listeners.is_array() && i < obs.listeners.size() ? obs.listeners[i] : json();
    listeners.push_back(
        {{"name", l.name},
         {"supportedKinds", supportedKinds(spec)},
         {"attachedRoutes", l.attached_routes},
         {"conditions", conditions(l.conditions, previous, obs.generation, ctx.now)}});
  }
  out["listeners"] = listeners;
  return out;
}

// An object whose current version failed validation: Accepted=False with the errors, for
// each parent its spec names (routes) or on the object. The router may still serve the last
// valid version; the message says so.
router::ObjectStatus invalidStatus(const router::ObjectStatus& st, const Observed& obs) {
  std::string message;
  for (const auto& e : st.errors) {
    message += (message.empty() ? "" : "; ") + e;
  }
  if (!st.conditions.empty() || !st.parents.empty()) {
    message += " (the last valid version is still served)";
  }
  router::ObjectStatus out;
  out.key = st.key;
  out.listeners = st.listeners;
  const bool route = obs.type->kind == config::Kind::HTTPRoute;
  const router::Condition rejected{"Accepted", false, route ? "UnsupportedValue" : "Invalid",
                                   message};
  if (!route) {
    out.conditions.push_back(rejected);
    if (obs.type->kind == config::Kind::Gateway) {
      out.conditions.push_back({"Programmed", false, "Invalid", ""});
    }
    return out;
  }
  if (obs.parent_refs.is_array()) {
    for (const auto& ref : obs.parent_refs) {
      if (str(ref, "kind", "Gateway") != "Gateway" ||
          str(ref, "group", kGatewayGroup.data()) != kGatewayGroup) {
        out.parents.push_back({"-", {}});  // keeps the index aligned with the spec
        continue;
      }
      const std::string ns = str(ref, "namespace", obs.ns.c_str());
      const std::string section = str(ref, "sectionName");
      out.parents.push_back({fmt::format("Gateway/{}/{}{}{}", ns, str(ref, "name"),
                                         section.empty() ? "" : "/", section),
                             {rejected}});
    }
  }
  return out;
}

}  // namespace

std::optional<json> desiredStatus(const router::ObjectStatus& st, const Observed& obs,
                                  const StatusContext& ctx) {
  if (obs.type == nullptr || !obs.type->writes_status) {
    return std::nullopt;
  }
  if (!st.errors.empty() && obs.type->kind != config::Kind::GatewayClass) {
    router::ObjectStatus rejected = invalidStatus(st, obs);
    rejected.errors.clear();
    return desiredStatus(rejected, obs, ctx);
  }
  const json held = obs.status.is_object() ? obs.status : json::object();
  using config::Kind;
  switch (obs.type->kind) {
    case Kind::Gateway:
      if (!ctx.our_gateway(obs.ns, obs.name)) {
        return std::nullopt;
      }
      return gatewayStatus(st, obs, ctx);
    case Kind::HTTPRoute:
    case Kind::InferencePool: {
      // v1alpha2 pools named the list "parent".
      const char* key = obs.type->version == "v1alpha2" ? "parent" : "parents";
      json parents = routeParents(st, obs, ctx, key);
      auto ours = [&](const json& list) {
        size_t n = 0;
        for (const auto& p : list.is_array() ? list : json::array()) {
          n += p.is_object() && str(p, "controllerName") == ctx.controller_name;
        }
        return n;
      };
      if (ours(parents) == 0 && ours(held.value(key, json())) == 0) {
        return std::nullopt;  // nothing of ours there, before or now
      }
      return json{{key, std::move(parents)}};
    }
    case Kind::GatewayClass:
      if (st.conditions.empty()) {
        return std::nullopt;  // another controller's class
      }
      [[fallthrough]];
    default: {
      if (st.conditions.empty()) {
        return std::nullopt;
      }
      json out = {{"conditions", conditions(st.conditions, held.value("conditions", json()),
                                            obs.generation, ctx.now)}};
      if (obs.type->kind != Kind::GatewayClass) {
        out["observedGeneration"] = obs.generation;
      }
      return out;
    }
  }
}

bool statusDiffers(const json& desired, const json& observed) {
  if (!observed.is_object()) {
    return true;
  }
  for (const auto& [k, v] : desired.items()) {
    auto it = observed.find(k);
    if (it == observed.end() || *it != v) {
      return true;
    }
  }
  return false;
}

std::string statusPatch(const json& desired, const std::string& resource_version) {
  json patch = {{"status", desired}};
  if (!resource_version.empty()) {
    patch["metadata"] = {{"resourceVersion", resource_version}};
  }
  return patch.dump();
}

std::string rfc3339(int64_t unix_seconds) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

std::string rfc3339Micro(int64_t unix_micros) {
  std::string s = rfc3339(unix_micros / 1'000'000);
  s.pop_back();
  return fmt::format("{}.{:06}Z", s, unix_micros % 1'000'000);
}

}  // namespace sluice::k8s
