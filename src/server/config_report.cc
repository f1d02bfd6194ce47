#include "server/config_report.h"

#include <map>
#include <set>
#include <string_view>

#include <fmt/core.h>

#include "base/log.h"
#include "router/route_table.h"

namespace sluice::server {

namespace {

// "Accepted=False (NotAllowedByListeners: ...)" for each refusing condition, or "".
std::string refusal(const std::vector<router::Condition>& conds) {
  std::string out;
  for (const auto& c : conds) {
    if (!c.status && (c.type == "Accepted" || c.type == "ResolvedRefs")) {
      out += fmt::format("{}{}=False ({}{}{})", out.empty() ? "" : ", ", c.type, c.reason,
                         c.message.empty() ? "" : ": ", c.message);
    }
  }
  return out;
}

}  // namespace

std::string loadedSummary(const router::Snapshot& snap) {
  const auto& table = *snap.routes;
  size_t listeners = 0;
  std::string ports;
  for (const auto& [port, group] : table.ports) {
    listeners += group.size();
    ports += fmt::format("{}{}", ports.empty() ? "" : ",", port);
  }
  std::map<std::string, size_t> kinds;  // routes and objects by kind
  for (const auto& st : table.status) {
    auto slash = st.key.find('/');
    if (slash != std::string::npos && st.key.compare(0, slash, "File") != 0) {
      ++kinds[st.key.substr(0, slash)];
    }
  }
  std::string objects;
  for (const auto& [kind, n] : kinds) {
    objects += fmt::format("{}{} {}", objects.empty() ? "" : ", ", n, kind);
  }
  std::set<std::string_view> endpoints;  // a config model's backend is in both lists
  for (const auto& b : table.backends) {
    if (b == nullptr) {
      continue;
    }
    for (const auto& e : b->endpoints) {
      endpoints.insert(e.address);
    }
  }
  for (const auto& [name, b] : snap.models) {
    for (const auto& e : b->endpoints) {
      endpoints.insert(e.address);
    }
  }
  return fmt::format(
      "loaded: {} listener(s) on port(s) {}; objects: {}; {} backend(s), {} "
      "configured model(s), {} endpoint(s)",
      listeners, ports.empty() ? "-" : ports, objects.empty() ? "none" : objects,
      table.backends.size(), snap.models.size(), endpoints.size());
}

std::vector<std::string> configProblems(const config::ObjectStore& store,
                                        const std::vector<router::ObjectStatus>& status) {
  std::vector<std::string> out;
  for (const auto& [file, errors] : store.errors()) {
    for (const auto& e : errors) {
      out.push_back(
          fmt::format("{}: {}{}{}", e.where, e.object, e.object.empty() ? "" : ": ", e.message));
    }
  }
  for (const auto& st : status) {
    auto why = refusal(st.conditions);
    for (const auto& p : st.parents) {
      auto r = refusal(p.conditions);
      why += r.empty() ? "" : fmt::format("{}parent {}: {}", why.empty() ? "" : "; ", p.ref, r);
    }
    for (const auto& l : st.listeners) {
      auto r = refusal(l.conditions);
      why += r.empty() ? "" : fmt::format("{}listener {}: {}", why.empty() ? "" : "; ", l.name, r);
    }
    if (!why.empty()) {
      out.push_back(fmt::format("{}: {}", st.key, why));
    }
  }
  return out;
}

ProblemLog::Change ProblemLog::update(const std::vector<std::string>& problems) {
  Change change;
  std::set<std::string> next(problems.begin(), problems.end());
  for (const auto& p : next) {
    if (current_.count(p) == 0) {
      SLUICE_LOG(Error, "config", "{}", p);
      change.appeared.push_back(p);
    }
  }
  for (const auto& p : current_) {
    if (next.count(p) == 0) {
      SLUICE_LOG(Info, "config", "resolved: {}", p);
      change.resolved.push_back(p);
    }
  }
  current_ = std::move(next);
  return change;
}

}  // namespace sluice::server
