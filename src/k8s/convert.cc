#include "k8s/convert.h"

#include <nlohmann/json.hpp>

#include <fmt/core.h>
#include <yaml-cpp/yaml.h>

namespace sluice::k8s {

namespace {

using json = nlohmann::json;

// JSON to a YAML node (the manifest validator's input). Depth is bounded by the API server's
// own limits; numbers and booleans become scalars as YAML would have read them.
YAML::Node toNode(const json& v) {
  switch (v.type()) {
    case json::value_t::object: {
      YAML::Node n(YAML::NodeType::Map);
      for (const auto& [k, child] : v.items()) {
        n[k] = toNode(child);
      }
      return n;
    }
    case json::value_t::array: {
      YAML::Node n(YAML::NodeType::Sequence);
      for (const auto& child : v) {
        n.push_back(toNode(child));
      }
      return n;
    }
    case json::value_t::string:
      return YAML::Node(v.get_ref<const std::string&>());
    case json::value_t::boolean:
      return YAML::Node(v.get<bool>() ? "true" : "false");
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float:
      return YAML::Node(v.dump());
    default:
      return YAML::Node(YAML::NodeType::Null);
  }
}

std::string stringAt(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

std::string storeKey(const ResourceType& type, const json& item) {
  const auto meta = item.find("metadata");
  if (meta == item.end() || !meta->is_object()) {
    return {};
  }
  const std::string name = stringAt(*meta, "name");
  if (name.empty()) {
    return {};
  }
  if (!type.namespaced) {
    return fmt::format("{}/{}", type.kind_name, name);
  }
  std::string ns = stringAt(*meta, "namespace");
  return fmt::format("{}/{}/{}", type.kind_name, ns.empty() ? "default" : ns, name);
}

Converted convertObject(const ResourceType& type, const json& item) {
  Converted out;
  if (!item.is_object()) {
    out.errors.push_back({type.id(), "", "<object>: not a JSON object"});
    return out;
  }
  out.key = storeKey(type, item);
  YAML::Node doc(YAML::NodeType::Map);
  for (const auto& [k, v] : item.items()) {
    if (k == "status" && type.kind != config::Kind::Pod) {
      continue;  // only a Pod's status (IP, readiness) is configuration
    }
    if (k == "metadata" && v.is_object()) {
      YAML::Node meta(YAML::NodeType::Map);
      for (const auto& [mk, mv] : v.items()) {
        if (mk != "managedFields") {
          meta[mk] = toNode(mv);
        }
      }
      doc[k] = meta;
      out.resource_version = stringAt(v, "resourceVersion");
      if (auto g = v.find("generation"); g != v.end() && g->is_number_integer()) {
        out.generation = g->get<int64_t>();
      }
      continue;
    }
    doc[k] = toNode(v);
  }
  doc["apiVersion"] = type.apiVersion();
  doc["kind"] = std::string(type.kind_name);
  auto parsed = config::parseManifestNode(doc, out.key.empty() ? type.id() : out.key);
  out.errors = std::move(parsed.errors);
  if (!parsed.objects.empty()) {
    out.object = std::move(parsed.objects.front());
  }
  return out;
}

}  // namespace sluice::k8s
