// sluice: the command-line entry point. Everything else lives in libraries that tests link.
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
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
#include "server/validate.h"

namespace {

using namespace sluice;

constexpr std::string_view kUsage = R"(usage:
  sluice serve    [--config FILE] [--manifests DIR] [options]   run the router
  sluice epp      --pool-name NAME [--pool-namespace NS] [--manifests DIR] [options]
                  be the endpoint picker of one InferencePool for an Envoy-based gateway
                  (ext_proc over gRPC, the Gateway API Inference Extension's protocol)
  sluice validate [--config FILE] [--manifests DIR] [--json]     check a configuration and
                  manifests: print every error and each object's status; exit 1 on errors
  sluice version
  sluice help     (or any command with --help): this text

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
                         (epp: also "health"; "listener" is the ext_proc port)
  --log-level LEVEL      trace|debug|info|warn|error (default info)

options for epp (with serve's --config, --manifests, --kubeconfig, --context, --namespace,
--admin, --metrics, --workers, --ready-file, --log-level):
  --pool-name NAME       the InferencePool to serve (required)
  --pool-namespace NS    its namespace (default "default")
  --grpc ADDR:PORT       ext_proc listener (default 0.0.0.0:9002; --grpc-port P for port P)
  --health ADDR:PORT     gRPC health listener (default 0.0.0.0:9003; --grpc-health-port P)
  --fallbacks N          endpoints after the first in x-gateway-destination-endpoint (default 2)
  --tls-cert-file FILE   serve gRPC over TLS (ALPN h2) with this certificate chain...
  --tls-key-file FILE    ...and this key (both or neither; default plaintext h2c)
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

// The command line's addresses and worker count: they override the file at start and at every
// reload of it (SIGHUP).
struct FlagOverrides {
  std::optional<config::ListenAddress> listen, admin, metrics;
  std::optional<int> workers;
  std::optional<config::RouterConfig::Epp> epp;  // `sluice epp`
  void apply(config::RouterConfig& c) const {
    if (epp) {
      c.epp = *epp;
      // The gateway owns the Gateway API status; the picker only reads.
      c.kubernetes.write_status = false;
      c.kubernetes.leader_election.enabled = false;
    }
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

// Everything the command line says.
struct CommandLine {
  std::string command, config_path, ready_file, manifests, kubeconfig, kube_context, kube_namespace;
  bool json = false;
  FlagOverrides flags;
};

// Parses argv[2..]; false (after a message) on a bad flag.
bool parseFlags(int argc, char** argv, CommandLine& cl) {
  const bool epp = cl.command == "epp";
  if (epp) {
    cl.flags.epp.emplace().enabled = true;
  }
  auto& f = cl.flags;
  using Setter = std::function<bool(std::string_view)>;
  auto text = [](std::string& out) {
    return Setter([&out](std::string_view v) {
      out = v;
      return true;
    });
  };
  auto address = [](std::optional<config::ListenAddress>& out) {
    return Setter([&out](std::string_view v) { return parseAddress(v, out.emplace()); });
  };
  auto eppAddress = [&f](config::ListenAddress config::RouterConfig::Epp::*member, bool port_only) {
    return Setter([&f, member, port_only](std::string_view v) {
      config::ListenAddress& a = (*f.epp).*member;
      if (!port_only) {
        return parseAddress(v, a);
      }
      auto n = base::parseUint(v);
      a.port = static_cast<uint16_t>(n.value_or(0));
      return n && *n <= 65535;
    });
  };
  std::map<std::string_view, Setter> with_value = {
      {"--config", text(cl.config_path)},
      {"--manifests", text(cl.manifests)},
      {"--kubeconfig", text(cl.kubeconfig)},
      {"--context", text(cl.kube_context)},
      {"--namespace", text(cl.kube_namespace)},
      {"--ready-file", text(cl.ready_file)},
      {"--listen", address(f.listen)},
      {"--admin", address(f.admin)},
      {"--metrics", address(f.metrics)},
      {"--workers",
       [&f](std::string_view v) {
         auto n = base::parseUint(v);
         f.workers = static_cast<int>(n.value_or(0));
         return n && *n <= 256;
       }},
      {"--log-level",
       [](std::string_view v) {
         base::LogLevel level;
         return base::parseLogLevel(v, level) && (base::setLogLevel(level), true);
       }},
  };
  if (epp) {
    auto& e = *f.epp;
    with_value.emplace("--pool-name", text(e.pool_name));
    with_value.emplace("--pool-namespace", text(e.pool_namespace));
    with_value.emplace("--tls-cert-file", text(e.tls_cert_file));
    with_value.emplace("--tls-key-file", text(e.tls_key_file));
    with_value.emplace("--grpc", eppAddress(&config::RouterConfig::Epp::grpc, false));
    with_value.emplace("--health", eppAddress(&config::RouterConfig::Epp::health, false));
    with_value.emplace("--grpc-port", eppAddress(&config::RouterConfig::Epp::grpc, true));
    with_value.emplace("--grpc-health-port", eppAddress(&config::RouterConfig::Epp::health, true));
    with_value.emplace("--fallbacks", [&e](std::string_view v) {
      auto n = base::parseUint(v);
      e.fallbacks = static_cast<uint32_t>(n.value_or(0));
      return n && *n <= 16;
    });
  }
  for (int i = 2; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--json" && cl.command == "validate") {
      cl.json = true;
      continue;
    }
    auto it = with_value.find(arg);
    if (it == with_value.end()) {
      std::fprintf(stderr, "unknown option \"%s\"\n", argv[i]);
      return false;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "%s needs a value\n", argv[i]);
      return false;
    }
    if (!it->second(argv[++i])) {
      std::fprintf(stderr, "%s: invalid value \"%s\"\n", argv[i - 1], argv[i]);
      return false;
    }
  }
  if (epp && f.epp->pool_name.empty()) {
    std::fprintf(stderr, "epp needs --pool-name\n");
    return false;
  }
  if (epp && f.epp->tls_cert_file.empty() != f.epp->tls_key_file.empty()) {
    std::fprintf(stderr, "--tls-cert-file and --tls-key-file go together\n");
    return false;
  }
  return true;
}

// The configuration the command line describes: the file, then the flags.
std::optional<config::RouterConfig> loadConfig(const CommandLine& cl, int& exit_code) {
  config::RouterConfig cfg;
  exit_code = 0;
  if (!cl.config_path.empty()) {
    config::ConfigErrors errors;
    auto loaded = config::loadRouterConfig(cl.config_path, errors);
    if (!loaded) {
      for (const auto& e : errors.errors) {
        std::fprintf(stderr, "%s: %s\n", cl.config_path.c_str(), e.c_str());
      }
      std::fprintf(stderr, "%zu error(s)\n", errors.errors.size());
      exit_code = 1;
      return std::nullopt;
    }
    cfg = std::move(*loaded);
  }
  if (!cl.manifests.empty()) {
    cfg.manifests = cl.manifests;
  }
  if (!cl.kubeconfig.empty()) {
    cfg.kubernetes.kubeconfig = cl.kubeconfig;
  }
  if (!cl.kube_context.empty()) {
    cfg.kubernetes.context = cl.kube_context;
  }
  if (!cl.kube_namespace.empty()) {
    cfg.kubernetes.ns = cl.kube_namespace;
  }
  if (cfg.kubernetes.kubeconfig.empty() && cfg.manifests.empty() &&
      std::getenv("KUBERNETES_SERVICE_HOST") != nullptr) {
    cfg.kubernetes.in_cluster = true;
  }
  if (cfg.kubernetes.enabled() && !cfg.manifests.empty()) {
    std::fprintf(stderr, "--manifests and the Kubernetes API server cannot be used together\n");
    exit_code = 2;
    return std::nullopt;
  }
  cl.flags.apply(cfg);
  return cfg;
}

void writeReadyFile(const std::string& path, server::Server& server, bool epp) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp);
    out << fmt::format("{{\"listener\":{},\"admin\":{},\"metrics\":{}", server.listenerPort(),
                       server.adminPort(), server.metricsPort());
    if (epp) {
      out << fmt::format(",\"health\":{}", server.healthPort());
    }
    out << "}\n";
  }
  std::rename(tmp.c_str(), path.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  // A peer that closes while a library writes to a plain socket (hiredis) must not end the
  // process; Asio's own sockets already write with MSG_NOSIGNAL.
  std::signal(SIGPIPE, SIG_IGN);
  if (argc < 2) {
    return usage(2);
  }
  CommandLine cl;
  cl.command = argv[1];
  if (cl.command == "version" || cl.command == "--version") {
    std::puts("sluice 0.1.0");
    return 0;
  }
  if (cl.command == "help" || cl.command == "--help" || cl.command == "-h") {
    return usage(0);
  }
  if (cl.command != "serve" && cl.command != "validate" && cl.command != "epp") {
    std::fprintf(stderr, "unknown command \"%s\"\n", argv[1]);
    return usage(2);
  }
  for (int i = 2; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--help" || std::string_view(argv[i]) == "-h") {
      return usage(0);
    }
  }
  if (!parseFlags(argc, argv, cl)) {
    return usage(2);
  }
  if (cl.command == "validate") {
    if (cl.config_path.empty() && cl.manifests.empty()) {
      std::fprintf(stderr, "validate needs --config FILE and/or --manifests DIR\n");
      return 2;
    }
    return server::validate({cl.config_path, cl.manifests, cl.json});
  }
  int code = 0;
  auto cfg = loadConfig(cl, code);
  if (!cfg) {
    return code;
  }
  server::Server server(*cfg);
  server.setConfigPath(cl.config_path,
                       [flags = cl.flags](config::RouterConfig& c) { flags.apply(c); });
  if (auto r = server.start(); !r) {
    std::fprintf(stderr, "sluice: cannot start: %s\n", r.error().message.c_str());
    return 1;
  }
  server.handleSignals();
  if (!cl.ready_file.empty()) {
    writeReadyFile(cl.ready_file, server, cfg->epp.enabled);
  }
  server.wait();
  // 0: drained cleanly; 3: the drain deadline cut requests or streams short.
  return server.drainCutShort() ? 3 : 0;
}
