#include "server/validate.h"

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>

#include <fmt/core.h>

#include "config/manifest_source.h"
#include "config/router_config.h"
#include "router/route_table.h"
#include "router/snapshot.h"

namespace sluice::server {

namespace {

using nlohmann::json;

std::string conditionsText(const std::vector<router::Condition>& conds) {
  std::string out;
  for (const auto& c : conds) {
    out += fmt::format("{}{}={} ({}{}{})", out.empty() ? "" : ", ", c.type,
                       c.status ? "True" : "False", c.reason, c.message.empty() ? "" : ": ",
                       c.message);
  }
  return out;
}

bool refused(const std::vector<router::Condition>& conds) {
  return std::any_of(conds.begin(), conds.end(), [](const router::Condition& c) {
    return !c.status && (c.type == "Accepted" || c.type == "ResolvedRefs");
  });
}

// Objects whose status says they are not accepted or cannot resolve a reference.
size_t refusedObjects(const std::vector<router::ObjectStatus>& status) {
  size_t n = 0;
  for (const auto& st : status) {
    bool bad = refused(st.conditions);
    for (const auto& p : st.parents) {
      bad = bad || refused(p.conditions);
    }
    for (const auto& l : st.listeners) {
      bad = bad || refused(l.conditions);
    }
    n += bad ? 1 : 0;
  }
  return n;
}

json messagesJson(const std::map<std::string, std::vector<config::ManifestError>>& by_file,
                  bool skipped) {
  json out = json::array();
  for (const auto& [file, list] : by_file) {
    for (const auto& m : list) {
      if (m.skipped == skipped) {
        out.push_back({{"where", m.where}, {"object", m.object}, {"message", m.message}});
      }
    }
  }
  return out;
}

void printMessages(const char* label,
                   const std::map<std::string, std::vector<config::ManifestError>>& by_file,
                   bool skipped) {
  for (const auto& [file, list] : by_file) {
    for (const auto& m : list) {
      if (m.skipped == skipped) {
        std::printf("%s: %s: %s%s%s\n", label, m.where.c_str(), m.object.c_str(),
                    m.object.empty() ? "" : ": ", m.message.c_str());
      }
    }
  }
}

void printStatus(const std::vector<router::ObjectStatus>& status) {
  for (const auto& st : status) {
    if (st.key.rfind("File/", 0) == 0) {
      continue;  // printed with the errors
    }
    std::printf("%s: %s\n", st.key.c_str(),
                st.conditions.empty() ? "-" : conditionsText(st.conditions).c_str());
    for (const auto& l : st.listeners) {
      std::printf("  listener %s: attachedRoutes=%u, %s\n", l.name.c_str(), l.attached_routes,
                  conditionsText(l.conditions).c_str());
    }
    for (const auto& p : st.parents) {
      std::printf("  parent %s: %s\n", p.ref.c_str(), conditionsText(p.conditions).c_str());
    }
    for (const auto& e : st.errors) {
      std::printf("  error: %s\n", e.c_str());
    }
  }
}

// The manifest directory: parse, validate and translate it as `serve` would, once. Adds the
// problems found to `problems` and the report to `out` (JSON) or stdout (text).
void validateManifests(const config::RouterConfig& cfg, bool as_json, json& out, size_t& problems) {
  auto fail = [&](const std::string& why) {
    ++problems;
    out["manifests"] = {{"directory", cfg.manifests}, {"error", why}};
    if (!as_json) {
      std::printf("error: %s\n", why.c_str());
    }
  };
  config::ManifestDirectory dir(cfg.manifests);
  if (auto scanned = dir.scan(); !scanned) {
    fail(scanned.error().message);
    return;
  }
  router::EndpointRegistry registry;
  auto snap = router::buildSnapshot(cfg, 1, registry, &dir.store(), cfg.listener.port);
  if (!snap) {
    fail(snap.error().message);
    return;
  }
  const auto& store = dir.store();
  const auto& table = *(*snap)->routes;
  std::set<std::string> invalid;  // documents with errors, by file:line
  for (const auto& [file, list] : store.errors()) {
    for (const auto& e : list) {
      invalid.insert(e.where);
    }
  }
  size_t skipped = 0;
  for (const auto& [file, list] : store.warnings()) {
    skipped += static_cast<size_t>(
        std::count_if(list.begin(), list.end(), [](const auto& w) { return w.skipped; }));
  }
  const size_t refused_objects = refusedObjects(table.status);
  problems += invalid.size() + refused_objects;
  const size_t loaded = store.objects().size();
  const size_t documents = loaded + invalid.size() + skipped;
  if (as_json) {
    out["manifests"] = {{"directory", cfg.manifests},
                        {"documents", documents},
                        {"loaded", loaded},
                        {"invalid", invalid.size()},
                        {"skipped", skipped},
                        {"refused", refused_objects},
                        {"errors", messagesJson(store.errors(), false)},
                        {"warnings", messagesJson(store.warnings(), false)},
                        {"skipped_documents", messagesJson(store.warnings(), true)},
                        {"ignored", table.ignored}};
    out["objects"] = json::parse(router::statusJson(table.status))["objects"];
    return;
  }
  printMessages("error", store.errors(), false);
  printMessages("warning", store.warnings(), false);
  printMessages("skipped", store.warnings(), true);
  for (const auto& i : table.ignored) {
    std::printf("ignored: %s\n", i.c_str());
  }
  printStatus(table.status);
  std::printf(
      "%s: %zu document(s): %zu loaded, %zu invalid, %zu skipped; %zu object(s) not accepted; "
      "%zu ignored\n",
      cfg.manifests.c_str(), documents, loaded, invalid.size(), skipped, refused_objects,
      table.ignored.size());
}

}  // namespace

int validate(const ValidateOptions& options) {
  json out = json::object();
  size_t problems = 0;
  config::RouterConfig cfg;
  if (!options.config_path.empty()) {
    config::ConfigErrors errors;
    auto loaded = config::loadRouterConfig(options.config_path, errors);
    problems += errors.errors.size() + (loaded ? 0 : errors.errors.empty());
    json c = {{"file", options.config_path},
              {"valid", static_cast<bool>(loaded)},
              {"errors", errors.errors}};
    if (loaded) {
      cfg = std::move(*loaded);
      c["models"] = cfg.models.size();
    }
    out["config"] = std::move(c);
    if (!options.json) {
      for (const auto& e : errors.errors) {
        std::printf("error: %s: %s\n", options.config_path.c_str(), e.c_str());
      }
      if (loaded) {
        std::printf("%s: ok (%zu model(s))\n", options.config_path.c_str(), cfg.models.size());
      }
    }
  }
  if (!options.manifests.empty()) {
    cfg.manifests = options.manifests;
  }
  if (!cfg.manifests.empty()) {
    validateManifests(cfg, options.json, out, problems);
  }
  out["problems"] = problems;
  out["valid"] = problems == 0;
  if (options.json) {
    std::puts(out.dump(2).c_str());
  } else {
    std::printf("%zu problem(s)\n", problems);
  }
  return problems == 0 ? 0 : 1;
}

}  // namespace sluice::server
