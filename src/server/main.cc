// sluice: the command-line entry point. Everything else lives in libraries that tests link.
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <string_view>
#include <unistd.h>

#include <fmt/core.h>

#include "base/log.h"
#include "base/strings.h"
#include "config/manifest_source.h"
#include "config/router_config.h"
#include "router/route_table.h"
#include "server/server.h"

namespace {

using namespace sluice;

constexpr std::string_view kUsage = R"(usage:
  sluice serve    [--config FILE] [--manifests DIR] [options]   run the router
  sluice validate [--config FILE] [--manifests DIR] [--json]     check a configuration and
                  manifests: print every error and each object's status; exit 1 on errors
  sluice version

options for serve:
  --manifests DIR        Kubernetes manifests (Gateway API, Inference Extension, Kthena, Pods),
                         watched for changes (overrides manifests:)
  --kubeconfig FILE      read the objects from the Kubernetes API server this kubeconfig names,
                         and write their status (overrides kubernetes.kubeconfig); without it and
                         without --manifests, in a Pod (KUBERNETES_SERVICE_HOST set), the
                         service account is used
  --context NAME         the kubeconfig context (default: its current-context)
  --namespace NS         watch only this namespace (overrides kubernetes.namespace)
  --listen ADDR:PORT     inference listener (overrides listener:)
  --admin ADDR:PORT      admin listener (overrides admin:)
  --metrics ADDR:PORT    metrics listener (overrides metrics:)
  --workers N            worker threads (0 = one per core)
  --ready-file PATH      write {"listener":P,"admin":P,"metrics":P} once listening
  --log-level LEVEL      trace|debug|info|warn|error (default info)
)";

int usage(int code) {
  std::fputs(kUsage.data(), code == 0 ? stdout : stderr);
  return code;
}

bool parseAddress(std::string_view text, config::ListenAddress& out) {
  auto hp = base::parseHostPort(text);
  if (!hp) {
    // Port 0 is allowed here (tests pick free ports), which parseHostPort refuses.
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos || text.substr(colon + 1) != "0") {
      return false;
    }
    out.address = std::string(text.substr(0, colon));
    out.port = 0;
    return !out.address.empty();
  }
  out.address = hp->host;
  out.port = hp->port;
  return true;
}

std::string conditionsText(const std::vector<router::Condition>& conds) {
  std::string out;
  for (const auto& c : conds) {
    out += fmt::format("{}{}={} ({}{}{})", out.empty() ? "" : ", ", c.type,
                       c.status ? "True" : "False", c.reason, c.message.empty() ? "" : ": ",
                       c.message);
  }
  return out;
}

// `sluice validate --manifests DIR`: the whole pipeline (parse, validate, translate), then
// every error, warning and status condition. Non-zero when anything is invalid or unresolved.
int validateManifests(const config::RouterConfig& cfg, bool json) {
  config::ManifestDirectory dir(cfg.manifests);
  auto scanned = dir.scan();
  if (!scanned) {
    std::fprintf(stderr, "%s\n", scanned.error().message.c_str());
    return 1;
  }
  router::EndpointRegistry registry;
  auto snap = router::buildSnapshot(cfg, 1, registry, &dir.store(), cfg.listener.port);
  if (!snap) {
    std::fprintf(stderr, "%s\n", snap.error().message.c_str());
    return 1;
  }
  const auto& table = *(*snap)->routes;
  size_t problems = dir.store().errorCount();
  for (const auto& st : table.status) {
    auto bad = [](const std::vector<router::Condition>& conds) {
      return std::any_of(conds.begin(), conds.end(), [](const router::Condition& c) {
        return !c.status && (c.type == "Accepted" || c.type == "ResolvedRefs");
      });
    };
    problems += bad(st.conditions) ? 1 : 0;
    for (const auto& p : st.parents) {
      problems += bad(p.conditions) ? 1 : 0;
    }
    for (const auto& l : st.listeners) {
      problems += bad(l.conditions) ? 1 : 0;
    }
  }
  if (json) {
    std::fputs(table.statusJson().c_str(), stdout);
    return problems == 0 ? 0 : 1;
  }
  for (const auto& [file, errors] : dir.store().errors()) {
    for (const auto& e : errors) {
      std::printf("error: %s: %s%s%s\n", e.where.c_str(), e.object.c_str(),
                  e.object.empty() ? "" : ": ", e.message.c_str());
    }
  }
  for (const auto& [file, warnings] : dir.store().warnings()) {
    for (const auto& w : warnings) {
      std::printf("warning: %s: %s%s%s\n", w.where.c_str(), w.object.c_str(),
                  w.object.empty() ? "" : ": ", w.message.c_str());
    }
  }
  for (const auto& st : table.status) {
    if (st.key.rfind("File/", 0) == 0) {
      continue;  // already printed as errors
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
      std::printf("  error (last good version kept): %s\n", e.c_str());
    }
  }
  std::printf("%zu objects, %zu problem(s)\n", dir.store().objects().size(), problems);
  return problems == 0 ? 0 : 1;
}

// The command line's addresses and worker count: they override the file at start and at every
// reload of it (SIGHUP).
struct FlagOverrides {
  std::optional<config::ListenAddress> listen, admin, metrics;
  std::optional<int> workers;
  void apply(config::RouterConfig& c) const {
    if (listen) {
      c.listener = *listen;
    }
    if (admin) {
      c.admin = *admin;
    }
    if (metrics) {
      c.metrics = *metrics;
    }
    if (workers) {
      c.workers = *workers;
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  // A peer that closes while a library writes to a plain socket (hiredis) must not end the
  // process; Asio's own sockets already write with MSG_NOSIGNAL.
  std::signal(SIGPIPE, SIG_IGN);
  if (argc < 2) {
    return usage(2);
  }
  std::string_view command = argv[1];
  if (command == "version" || command == "--version") {
    std::puts("sluice 0.1.0");
    return 0;
  }
  if (command == "help" || command == "--help" || command == "-h") {
    return usage(0);
  }
  if (command != "serve" && command != "validate") {
    std::fprintf(stderr, "unknown command \"%s\"\n", argv[1]);
    return usage(2);
  }

  std::string config_path, ready_file, manifests, kubeconfig, kube_context, kube_namespace;
  bool json = false;
  FlagOverrides flags;
  auto& [listen, admin, metrics, workers] = flags;
  for (int i = 2; i < argc; ++i) {
    std::string_view arg = argv[i];
    auto value = [&](std::string_view name) -> std::optional<std::string_view> {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%.*s needs a value\n", static_cast<int>(name.size()), name.data());
        return std::nullopt;
      }
      return std::string_view(argv[++i]);
    };
    std::optional<std::string_view> v;
    if (arg == "--config") {
      if (!(v = value(arg))) {
        return 2;
      }
      config_path = *v;
    } else if (arg == "--manifests") {
      if (!(v = value(arg))) {
        return 2;
      }
      manifests = *v;
    } else if (arg == "--kubeconfig" || arg == "--context" || arg == "--namespace") {
      if (!(v = value(arg))) {
        return 2;
      }
      (arg == "--kubeconfig" ? kubeconfig
       : arg == "--context"  ? kube_context
                             : kube_namespace) = *v;
    } else if (arg == "--json") {
      json = true;
    } else if (arg == "--listen" || arg == "--admin" || arg == "--metrics") {
      if (!(v = value(arg))) {
        return 2;
      }
      config::ListenAddress a;
      if (!parseAddress(*v, a)) {
        std::fprintf(stderr, "%s: expected ADDR:PORT, got \"%s\"\n", argv[i - 1], argv[i]);
        return 2;
      }
      (arg == "--listen" ? listen : arg == "--admin" ? admin : metrics) = a;
    } else if (arg == "--workers") {
      if (!(v = value(arg))) {
        return 2;
      }
      auto n = base::parseUint(*v);
      if (!n || *n > 256) {
        std::fprintf(stderr, "--workers: expected 0..256\n");
        return 2;
      }
      workers = static_cast<int>(*n);
    } else if (arg == "--ready-file") {
      if (!(v = value(arg))) {
        return 2;
      }
      ready_file = *v;
    } else if (arg == "--log-level") {
      if (!(v = value(arg))) {
        return 2;
      }
      base::LogLevel level;
      if (!base::parseLogLevel(*v, level)) {
        std::fprintf(stderr, "--log-level: expected trace|debug|info|warn|error\n");
        return 2;
      }
      base::setLogLevel(level);
    } else {
      std::fprintf(stderr, "unknown option \"%s\"\n", argv[i]);
      return usage(2);
    }
  }

  config::RouterConfig cfg;
  if (!config_path.empty()) {
    config::ConfigErrors errors;
    auto loaded = config::loadRouterConfig(config_path, errors);
    if (!loaded) {
      for (const auto& e : errors.errors) {
        std::fprintf(stderr, "%s: %s\n", config_path.c_str(), e.c_str());
      }
      std::fprintf(stderr, "%zu error(s)\n", errors.errors.size());
      return 1;
    }
    cfg = std::move(*loaded);
  } else if (command == "validate" && manifests.empty()) {
    std::fprintf(stderr, "validate needs --config FILE and/or --manifests DIR\n");
    return 2;
  }
  if (!manifests.empty()) {
    cfg.manifests = manifests;
  }
  if (command == "validate") {
    if (!cfg.manifests.empty()) {
      return validateManifests(cfg, json);
    }
    std::printf("%s: ok (%zu models)\n", config_path.c_str(), cfg.models.size());
    return 0;
  }
  if (!kubeconfig.empty()) {
    cfg.kubernetes.kubeconfig = kubeconfig;
  }
  if (!kube_context.empty()) {
    cfg.kubernetes.context = kube_context;
  }
  if (!kube_namespace.empty()) {
    cfg.kubernetes.ns = kube_namespace;
  }
  if (cfg.kubernetes.kubeconfig.empty() && cfg.manifests.empty() &&
      std::getenv("KUBERNETES_SERVICE_HOST") != nullptr) {
    cfg.kubernetes.in_cluster = true;
  }
  if (cfg.kubernetes.enabled() && !cfg.manifests.empty()) {
    std::fprintf(stderr, "--manifests and the Kubernetes API server cannot be used together\n");
    return 2;
  }
  flags.apply(cfg);
  server::Server server(cfg);
  server.setConfigPath(config_path, [flags](config::RouterConfig& c) { flags.apply(c); });
  if (auto r = server.start(); !r) {
    std::fprintf(stderr, "sluice: cannot start: %s\n", r.error().message.c_str());
    return 1;
  }
  server.handleSignals();
  if (!ready_file.empty()) {
    std::string tmp = ready_file + ".tmp";
    {
      std::ofstream out(tmp);
      out << fmt::format("{{\"listener\":{},\"admin\":{},\"metrics\":{}}}\n", server.listenerPort(),
                         server.adminPort(), server.metricsPort());
    }
    std::rename(tmp.c_str(), ready_file.c_str());
  }
  server.wait();
  // 0: drained cleanly; 3: the drain deadline cut requests or streams short.
  return server.drainCutShort() ? 3 : 0;
}
