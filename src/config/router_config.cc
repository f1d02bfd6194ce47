#include "config/router_config.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>

#include <fmt/core.h>
#include <yaml-cpp/yaml.h>

#include "config/yaml_parser.h"

namespace sluice::config {
namespace {

void parseKubernetes(Parser& p, const YAML::Node& n, RouterConfig::Kubernetes& k) {
  const std::string path = "kubernetes";
  if (!p.mapWithKeys(n, path,
                     {"kubeconfig", "context", "namespace", "controller_name", "qps", "burst",
                      "debounce", "write_status", "gateway_addresses", "leader_election"})) {
    return;
  }
  p.string(n, "kubeconfig", path, k.kubeconfig);
  p.string(n, "context", path, k.context);
  p.string(n, "namespace", path, k.ns);
  p.string(n, "controller_name", path, k.controller_name);
  p.uint(n, "qps", path, k.qps, 1, 100000);
  p.uint(n, "burst", path, k.burst, 1, 100000);
  p.duration(n, "debounce", path, k.debounce);
  p.boolean(n, "write_status", path, k.write_status);
  if (auto list = n["gateway_addresses"]) {
    if (!list.IsSequence()) {
      p.error("kubernetes.gateway_addresses", "must be a list of IP addresses or host names");
    } else {
      for (size_t i = 0; i < list.size(); ++i) {
        auto v = p.scalar(list[i], fmt::format("kubernetes.gateway_addresses[{}]", i));
        if (v && !v->empty()) {
          k.gateway_addresses.push_back(*v);
        }
      }
    }
  }
  if (k.controller_name.empty() || k.controller_name.find('/') == std::string::npos) {
    p.error("kubernetes.controller_name", "must be a domain-prefixed path such as example.com/x");
  }
  if (auto le = n["leader_election"]) {
    const std::string lpath = "kubernetes.leader_election";
    auto& l = k.leader_election;
    if (p.mapWithKeys(le, lpath,
                      {"enabled", "lease_name", "lease_namespace", "identity", "lease_duration",
                       "renew_deadline", "retry_period"})) {
      p.boolean(le, "enabled", lpath, l.enabled);
      p.string(le, "lease_name", lpath, l.lease_name);
      p.string(le, "lease_namespace", lpath, l.lease_namespace);
      p.string(le, "identity", lpath, l.identity);
      p.duration(le, "lease_duration", lpath, l.lease_duration);
      p.duration(le, "renew_deadline", lpath, l.renew_deadline);
      p.duration(le, "retry_period", lpath, l.retry_period);
      if (!(l.retry_period < l.renew_deadline && l.renew_deadline < l.lease_duration)) {
        p.error(lpath, "needs retry_period < renew_deadline < lease_duration");
      }
      if (l.lease_name.empty()) {
        p.error(lpath + ".lease_name", "must not be empty");
      }
    }
  }
}

}  // namespace

const std::vector<PluginTypeInfo>& schedulerPluginTypes() {
  using K = PluginKind;
  static const std::vector<PluginTypeInfo> kTypes = {
      {"health-filter", K::Filter, {}},
      {"saturation-filter", K::Filter, {"maxWaiting", "maxKvUsage", "staleAfterSeconds"}},
      {"least-request-filter", K::Filter, {"maxWaitingRequests"}},
      {"lora-affinity-filter", K::Filter, {}},
      {"random-scorer", K::Scorer, {}},
      {"round-robin-scorer", K::Scorer, {}},
      {"least-request-scorer", K::Scorer, {}},
      {"queue-scorer", K::Scorer, {}},
      {"kv-cache-utilization-scorer", K::Scorer, {}},
      {"running-requests-scorer", K::Scorer, {}},
      {"token-load-scorer", K::Scorer, {}},
      {"least-latency-scorer", K::Scorer, {"ttftWeight"}},
      {"lora-affinity-scorer", K::Scorer, {}},
      {"prefix-cache-scorer", K::Scorer, {"loadThresholdTokens"}},
      {"no-hit-scorer", K::Scorer, {}},
      {"session-affinity-scorer", K::Scorer, {"maxLoadFactor"}},
      {"sglang-cache-aware-scorer",
       K::Scorer,
       {"balanceAbsThreshold", "balanceRelThreshold", "cacheThreshold"}},
      {"max-score-picker", K::Picker, {}},
      {"weighted-random-picker", K::Picker, {}},
  };
  return kTypes;
}

const PluginTypeInfo* findPluginType(std::string_view type) {
  for (const auto& t : schedulerPluginTypes()) {
    if (t.type == type) {
      return &t;
    }
  }
  return nullptr;
}

const std::vector<std::string_view>& schedulerPresets() {
  static const std::vector<std::string_view> kNames = {
      "random",      "round-robin",        "least-request", "kthena-default",
      "gie-default", "sglang-cache-aware", "sluice-default"};
  return kNames;
}

bool validMetricRef(std::string_view text) {
  if (text.empty()) {
    return true;
  }
  auto name_char = [](char c, bool first) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
           (!first && c >= '0' && c <= '9');
  };
  size_t i = 0;
  while (i < text.size() && name_char(text[i], i == 0)) {
    ++i;
  }
  if (i == 0) {
    return false;
  }
  if (i == text.size()) {
    return true;
  }
  // {label="value"}
  std::string_view rest = text.substr(i);
  if (rest.size() < 6 || rest.front() != '{' || rest.back() != '}') {
    return false;
  }
  rest = rest.substr(1, rest.size() - 2);
  size_t eq = rest.find('=');
  if (eq == std::string_view::npos || eq == 0 || rest.size() < eq + 3 || rest[eq + 1] != '"' ||
      rest.back() != '"') {
    return false;
  }
  for (size_t j = 0; j < eq; ++j) {
    if (!name_char(rest[j], j == 0) || rest[j] == ':') {
      return false;
    }
  }
  std::string_view value = rest.substr(eq + 2, rest.size() - eq - 3);
  return value.find('"') == std::string_view::npos && value.find('\\') == std::string_view::npos;
}

base::Result<RouterConfig> parseRouterConfig(std::string_view text, ConfigErrors& errors) {
  RouterConfig config;
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    errors.errors.push_back(fmt::format("<root>: invalid YAML at line {} column {}: {}",
                                        e.mark.line + 1, e.mark.column + 1, e.msg));
    return base::Error{"invalid configuration"};
  }
  if (!root || root.IsNull()) {
    return config;  // an empty file is the defaults
  }
  Parser p(errors);
  try {
    if (!p.mapWithKeys(root, "", {"listener",     "admin",
                                  "metrics",      "workers",
                                  "limits",       "timeouts",
                                  "upstream",     "metrics_fetcher",
                                  "scheduler",    "access_log",
                                  "metric_names", "models",
                                  "manifests",    "manifests_debounce",
                                  "auth",         "rate_limits",
                                  "flow_control", "redis_timeout",
                                  "redis_auth",   "stop_streams_over_budget",
                                  "kubernetes",   "tracing"})) {
      return base::Error{"invalid configuration"};
    }
    p.address(root, "listener", config.listener);
    p.address(root, "admin", config.admin);
    p.address(root, "metrics", config.metrics);
    p.uint(root, "workers", "", config.workers, 0, 256);
    p.string(root, "manifests", "", config.manifests);
    p.duration(root, "manifests_debounce", "", config.manifests_debounce);
    p.duration(root, "redis_timeout", "", config.redis_timeout);
    if (auto n = root["kubernetes"]) {
      parseKubernetes(p, n, config.kubernetes);
    }
    if (auto n = root["redis_auth"]) {
      if (p.mapWithKeys(n, "redis_auth", {"username", "password_file"})) {
        p.string(n, "username", "redis_auth", config.redis_auth.username);
        p.string(n, "password_file", "redis_auth", config.redis_auth.password_file);
        if (config.redis_auth.password_file.empty()) {
          p.error("redis_auth.password_file", "is required (a file holding the password)");
        }
      }
    }
    if (auto b = root["stop_streams_over_budget"]) {
      auto v = p.scalar(b, "stop_streams_over_budget");
      if (v && (*v == "true" || *v == "false")) {
        config.stop_streams_over_budget = *v == "true";
      } else if (v) {
        p.error("stop_streams_over_budget", "must be true or false");
      }
    }

    if (auto n = root["limits"]) {
      if (p.mapWithKeys(n, "limits", {"max_header_bytes", "max_body_bytes", "max_connections"})) {
        p.bytes(n, "max_header_bytes", "limits", config.limits.max_header_bytes, 1024);
        p.bytes(n, "max_body_bytes", "limits", config.limits.max_body_bytes, 1024);
        p.uint(n, "max_connections", "limits", config.limits.max_connections, 1, 10'000'000);
      }
    }
    if (auto n = root["timeouts"]) {
      if (p.mapWithKeys(
              n, "timeouts",
              {"header_read", "request_body", "idle", "upstream_connect", "upstream_response",
               "stream_idle", "client_write", "drain", "endpoint_picker"})) {
        auto& t = config.timeouts;
        p.duration(n, "header_read", "timeouts", t.header_read);
        p.duration(n, "request_body", "timeouts", t.request_body);
        p.duration(n, "idle", "timeouts", t.idle);
        p.duration(n, "upstream_connect", "timeouts", t.upstream_connect);
        p.duration(n, "upstream_response", "timeouts", t.upstream_response);
        p.duration(n, "stream_idle", "timeouts", t.stream_idle);
        p.duration(n, "client_write", "timeouts", t.client_write);
        p.duration(n, "drain", "timeouts", t.drain);
        p.duration(n, "endpoint_picker", "timeouts", t.endpoint_picker);
      }
    }
    if (auto n = root["upstream"]) {
      if (p.mapWithKeys(n, "upstream",
                        {"max_idle_per_endpoint", "idle_timeout", "retries", "retry_on_status",
                         "eject_after_failures", "ejection", "max_ejection", "ca_file",
                         "verify_workload_tls"})) {
        auto& u = config.upstream;
        if (auto f = n["verify_workload_tls"]) {
          if (auto v = p.scalar(f, "upstream.verify_workload_tls")) {
            if (*v == "true" || *v == "false") {
              u.verify_workload_tls = *v == "true";
            } else {
              p.error("upstream.verify_workload_tls", "must be true or false");
            }
          }
        }
        if (auto f = n["ca_file"]) {
          if (auto v = p.scalar(f, "upstream.ca_file")) {
            u.ca_file = *v;
          }
        }
        p.uint(n, "max_idle_per_endpoint", "upstream", u.max_idle_per_endpoint, 0, 100000);
        p.duration(n, "idle_timeout", "upstream", u.idle_timeout);
        p.uint(n, "retries", "upstream", u.retries, 0, 10);
        p.uint(n, "eject_after_failures", "upstream", u.eject_after_failures, 0, 1000);
        p.duration(n, "ejection", "upstream", u.ejection);
        p.duration(n, "max_ejection", "upstream", u.max_ejection);
        if (auto list = n["retry_on_status"]) {
          if (!list.IsSequence()) {
            p.error("upstream.retry_on_status", "must be a list of HTTP status codes");
          } else {
            u.retry_on_status.clear();
            for (size_t i = 0; i < list.size(); ++i) {
              std::string path = fmt::format("upstream.retry_on_status[{}]", i);
              auto s = p.scalar(list[i], path);
              auto v = s ? base::parseUint(*s) : std::nullopt;
              if (!v || *v < 500 || *v > 599) {
                if (s) {
                  p.error(path, "must be a 5xx status code");
                }
                continue;
              }
              u.retry_on_status.push_back(static_cast<int>(*v));
            }
          }
        }
      }
    }
    if (auto n = root["metrics_fetcher"]) {
      if (p.mapWithKeys(n, "metrics_fetcher",
                        {"enabled", "interval", "timeout", "models_interval", "max_concurrency",
                         "unhealthy_after", "engines"})) {
        auto& f = config.metrics_fetcher;
        if (auto e = n["enabled"]) {
          auto v = p.scalar(e, "metrics_fetcher.enabled");
          if (v && (*v == "true" || *v == "false")) {
            f.enabled = *v == "true";
          } else if (v) {
            p.error("metrics_fetcher.enabled", "must be true or false");
          }
        }
        p.duration(n, "interval", "metrics_fetcher", f.interval);
        p.duration(n, "timeout", "metrics_fetcher", f.timeout);
        p.duration(n, "models_interval", "metrics_fetcher", f.models_interval);
        p.uint(n, "max_concurrency", "metrics_fetcher", f.max_concurrency, 1, 100000);
        p.uint(n, "unhealthy_after", "metrics_fetcher", f.unhealthy_after, 1, 1000);
        if (auto engines = n["engines"]) {
          if (p.mapWithKeys(engines, "metrics_fetcher.engines",
                            {"vllm", "sglang", "trtllm-serve", "triton"})) {
            for (const auto& kv : engines) {
              const std::string engine = kv.first.Scalar();
              const std::string path = "metrics_fetcher.engines." + engine;
              if (!p.mapWithKeys(kv.second, path,
                                 {"waiting", "running", "kv_usage", "ttft_histogram",
                                  "itl_histogram", "lora_info"})) {
                continue;
              }
              for (const auto& signal : kv.second) {
                const std::string key = signal.first.Scalar();
                auto metric = p.scalar(signal.second, path + "." + key);
                if (!metric) {
                  continue;
                }
                if (!validMetricRef(*metric)) {
                  p.error(path + "." + key,
                          fmt::format("must be a metric name, optionally with one label filter "
                                      "like name{{label=\"value\"}}, or \"\" to turn it off; got "
                                      "\"{}\"",
                                      *metric));
                  continue;
                }
                f.engines[engine][key] = *metric;
              }
            }
          }
        }
      }
    }
    auto presetKnown = [](const std::string& name) {
      const auto& names = schedulerPresets();
      return std::find(names.begin(), names.end(), name) != names.end();
    };
    auto presetList = [] {
      std::string list;
      for (auto n : schedulerPresets()) {
        list += (list.empty() ? "" : ", ") + std::string(n);
      }
      return list;
    };
    std::set<std::string> profile_names;
    if (auto n = root["scheduler"]) {
      if (p.mapWithKeys(n, "scheduler",
                        {"preset", "candidates", "plugins", "schedulingProfiles", "defaultProfile",
                         "decisions", "sessionHeader"})) {
        auto& sc = config.scheduler;
        p.string(n, "preset", "scheduler", sc.preset);
        p.uint(n, "candidates", "scheduler", sc.candidates, 1, 64);
        p.uint(n, "decisions", "scheduler", sc.decisions, 0, 100000);
        p.string(n, "sessionHeader", "scheduler", sc.session_header);
        if (!presetKnown(sc.preset)) {
          p.error("scheduler.preset",
                  fmt::format("must be one of {}; got \"{}\"", presetList(), sc.preset));
        }
        std::map<std::string, PluginKind> plugin_kinds;
        if (auto list = n["plugins"]) {
          if (!list.IsSequence()) {
            p.error("scheduler.plugins", "must be a list");
          } else {
            for (size_t i = 0; i < list.size(); ++i) {
              const std::string path = fmt::format("scheduler.plugins[{}]", i);
              if (!p.mapWithKeys(list[i], path, {"type", "name", "parameters"})) {
                continue;
              }
              RouterConfig::PluginSpec spec;
              p.string(list[i], "type", path, spec.type);
              p.string(list[i], "name", path, spec.name);
              if (spec.name.empty()) {
                spec.name =
                    spec.type;  // as in the Inference Extension: the name defaults to the type
              }
              const PluginTypeInfo* info = findPluginType(spec.type);
              if (info == nullptr) {
                std::string types;
                for (const auto& t : schedulerPluginTypes()) {
                  types += (types.empty() ? "" : ", ") + std::string(t.type);
                }
                p.error(path + ".type",
                        fmt::format("unknown plugin type \"{}\"; known: {}", spec.type, types));
                continue;
              }
              if (plugin_kinds.count(spec.name)) {
                p.error(path + ".name", fmt::format("duplicate plugin name \"{}\"", spec.name));
                continue;
              }
              if (auto params = list[i]["parameters"]) {
                if (!params.IsMap()) {
                  p.error(path + ".parameters", "must be a mapping");
                } else {
                  for (const auto& kv : params) {
                    const std::string key = kv.first.Scalar();
                    const std::string ppath = path + ".parameters." + key;
                    if (std::find(info->parameters.begin(), info->parameters.end(), key) ==
                        info->parameters.end()) {
                      p.error(ppath, fmt::format("unknown parameter for {}", spec.type));
                      continue;
                    }
                    auto v = p.scalar(kv.second, ppath);
                    double d = 0;
                    auto [ptr, ec] =
                        v ? std::from_chars(v->data(), v->data() + v->size(), d)
                          : std::from_chars_result{nullptr, std::errc::invalid_argument};
                    if (!v || ec != std::errc() || ptr != v->data() + v->size() || d < 0) {
                      if (v) {
                        p.error(ppath,
                                fmt::format("must be a non-negative number, got \"{}\"", *v));
                      }
                      continue;
                    }
                    spec.parameters[key] = d;
                  }
                }
              }
              plugin_kinds[spec.name] = info->kind;
              sc.plugins.push_back(std::move(spec));
            }
          }
        }
        if (auto list = n["schedulingProfiles"]) {
          if (!list.IsSequence()) {
            p.error("scheduler.schedulingProfiles", "must be a list");
          } else {
            for (size_t i = 0; i < list.size(); ++i) {
              const std::string path = fmt::format("scheduler.schedulingProfiles[{}]", i);
              if (!p.mapWithKeys(list[i], path, {"name", "plugins"})) {
                continue;
              }
              RouterConfig::ProfileSpec prof;
              p.string(list[i], "name", path, prof.name);
              if (prof.name.empty()) {
                p.error(path + ".name", "is required");
              } else if (presetKnown(prof.name) || !profile_names.insert(prof.name).second) {
                p.error(path + ".name",
                        fmt::format("\"{}\" is already a preset or another profile", prof.name));
              }
              auto refs = list[i]["plugins"];
              if (!refs || !refs.IsSequence() || refs.size() == 0) {
                p.error(path + ".plugins", "must be a non-empty list of {pluginRef, weight}");
                continue;
              }
              int pickers = 0;
              int scorers = 0;
              for (size_t j = 0; j < refs.size(); ++j) {
                const std::string rpath = fmt::format("{}.plugins[{}]", path, j);
                if (!p.mapWithKeys(refs[j], rpath, {"pluginRef", "weight"})) {
                  continue;
                }
                RouterConfig::ProfileSpec::Ref ref;
                p.string(refs[j], "pluginRef", rpath, ref.plugin);
                auto kind = plugin_kinds.find(ref.plugin);
                if (kind == plugin_kinds.end()) {
                  p.error(rpath + ".pluginRef",
                          fmt::format("no plugin named \"{}\" in scheduler.plugins", ref.plugin));
                  continue;
                }
                if (auto w = refs[j]["weight"]) {
                  auto v = p.scalar(w, rpath + ".weight");
                  double d = -1;
                  if (v) {
                    std::from_chars(v->data(), v->data() + v->size(), d);
                  }
                  if (d < 0 || d > 1e6) {
                    p.error(rpath + ".weight", "must be a number in 0..1000000");
                    continue;
                  }
                  if (kind->second != PluginKind::Scorer) {
                    p.error(rpath + ".weight", "only scorers take a weight");
                    continue;
                  }
                  ref.weight = d;
                }
                pickers += kind->second == PluginKind::Picker;
                scorers += kind->second == PluginKind::Scorer;
                prof.plugins.push_back(ref);
              }
              if (pickers > 1) {
                p.error(path + ".plugins", "at most one picker");
              }
              if (scorers == 0) {
                p.error(path + ".plugins", "needs at least one scorer");
              }
              sc.profiles.push_back(std::move(prof));
            }
          }
        }
        p.string(n, "defaultProfile", "scheduler", sc.default_profile);
        if (!sc.default_profile.empty() && !presetKnown(sc.default_profile) &&
            profile_names.count(sc.default_profile) == 0) {
          p.error("scheduler.defaultProfile",
                  fmt::format("no preset or profile named \"{}\"", sc.default_profile));
        }
      }
    }
    parseObservability(p, root, config);
    auto limitSpec = [&](const YAML::Node& n, const std::string& path,
                         RouterConfig::LimitSpec& out) {
      if (!p.mapWithKeys(n, path,
                         {"requests", "input_tokens", "output_tokens", "total_tokens", "unit"})) {
        return;
      }
      constexpr uint64_t kMax = 1'000'000'000'000ULL;
      p.uint(n, "requests", path, out.requests, 0, kMax);
      p.uint(n, "input_tokens", path, out.input_tokens, 0, kMax);
      p.uint(n, "output_tokens", path, out.output_tokens, 0, kMax);
      p.uint(n, "total_tokens", path, out.total_tokens, 0, kMax);
      p.string(n, "unit", path, out.unit);
      static constexpr std::string_view kUnits[] = {"second", "minute", "hour", "day", "month"};
      if (std::find(std::begin(kUnits), std::end(kUnits), out.unit) == std::end(kUnits)) {
        p.error(path + ".unit",
                fmt::format("must be second, minute, hour, day or month; got \"{}\"", out.unit));
      }
      if (!out.any()) {
        p.error(path, "sets no limit (requests, input_tokens, output_tokens or total_tokens)");
      }
    };
    auto stringList = [&](const YAML::Node& n, const std::string& path,
                          std::vector<std::string>& out) {
      if (!n.IsSequence()) {
        p.error(path, "must be a list of strings");
        return;
      }
      for (size_t i = 0; i < n.size(); ++i) {
        if (auto s = p.scalar(n[i], fmt::format("{}[{}]", path, i))) {
          out.push_back(*s);
        }
      }
    };
    if (auto n = root["auth"]) {
      auto& a = config.auth;
      if (p.mapWithKeys(n, "auth", {"mode", "forward_credentials", "api_keys", "jwt"})) {
        p.string(n, "mode", "auth", a.mode);
        if (a.mode != "off" && a.mode != "optional" && a.mode != "required") {
          p.error("auth.mode",
                  fmt::format("must be off, optional or required; got \"{}\"", a.mode));
        }
        if (auto f = n["forward_credentials"]) {
          auto v = p.scalar(f, "auth.forward_credentials");
          if (v && (*v == "true" || *v == "false")) {
            a.forward_credentials = *v == "true";
          } else if (v) {
            p.error("auth.forward_credentials", "must be true or false");
          }
        }
        if (auto keys = n["api_keys"]) {
          if (!keys.IsSequence()) {
            p.error("auth.api_keys", "must be a list");
          } else {
            std::set<std::string> ids;
            for (size_t i = 0; i < keys.size(); ++i) {
              std::string path = fmt::format("auth.api_keys[{}]", i);
              const auto& k = keys[i];
              if (!p.mapWithKeys(k, path,
                                 {"id", "tenant", "key_sha256", "secret", "models", "limits"})) {
                continue;
              }
              RouterConfig::Auth::ApiKey key;
              p.string(k, "id", path, key.id);
              p.string(k, "tenant", path, key.tenant);
              p.string(k, "key_sha256", path, key.key_sha256);
              if (key.id.empty()) {
                p.error(path + ".id", "is required");
              } else if (!ids.insert(key.id).second) {
                p.error(path + ".id", fmt::format("duplicate id \"{}\"", key.id));
              }
              if (auto s = k["secret"]) {
                if (p.mapWithKeys(s, path + ".secret", {"namespace", "name", "key"})) {
                  p.string(s, "namespace", path + ".secret", key.secret.ns);
                  p.string(s, "name", path + ".secret", key.secret.name);
                  p.string(s, "key", path + ".secret", key.secret.key);
                  if (key.secret.name.empty() || key.secret.key.empty()) {
                    p.error(path + ".secret", "needs name and key");
                  }
                }
              }
              bool hex_ok = key.key_sha256.size() == 64 &&
                            std::all_of(key.key_sha256.begin(), key.key_sha256.end(), [](char c) {
                              return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
                                     (c >= 'A' && c <= 'F');
                            });
              if (key.key_sha256.empty() == key.secret.name.empty()) {
                p.error(path, "set exactly one of key_sha256 and secret");
              } else if (!key.key_sha256.empty() && !hex_ok) {
                p.error(path + ".key_sha256", "must be 64 hex digits (sha256sum of the key)");
              }
              if (auto m = k["models"]) {
                stringList(m, path + ".models", key.models);
              }
              if (auto l = k["limits"]) {
                limitSpec(l, path + ".limits", key.limits);
              }
              a.api_keys.push_back(std::move(key));
            }
          }
        }
        if (auto j = n["jwt"]) {
          auto& jwt = a.jwt;
          if (p.mapWithKeys(j, "auth.jwt",
                            {"issuer", "audiences", "jwks_file", "jwks_url", "jwks_refresh",
                             "hs256_secret_file", "identity_claim", "tenant_claim", "leeway"})) {
            p.string(j, "issuer", "auth.jwt", jwt.issuer);
            if (auto aud = j["audiences"]) {
              stringList(aud, "auth.jwt.audiences", jwt.audiences);
            }
            p.string(j, "jwks_file", "auth.jwt", jwt.jwks_file);
            p.string(j, "jwks_url", "auth.jwt", jwt.jwks_url);
            p.duration(j, "jwks_refresh", "auth.jwt", jwt.jwks_refresh);
            if (!jwt.jwks_url.empty() && jwt.jwks_url.rfind("https://", 0) != 0 &&
                jwt.jwks_url.rfind("http://127.", 0) != 0 &&
                jwt.jwks_url.rfind("http://localhost", 0) != 0) {
              p.error("auth.jwt.jwks_url", "must be an https:// URL (http only on loopback)");
            }
            p.string(j, "hs256_secret_file", "auth.jwt", jwt.hs256_secret_file);
            p.string(j, "identity_claim", "auth.jwt", jwt.identity_claim);
            p.string(j, "tenant_claim", "auth.jwt", jwt.tenant_claim);
            p.duration(j, "leeway", "auth.jwt", jwt.leeway);
            if (!jwt.enabled()) {
              p.error("auth.jwt", "needs jwks_file, jwks_url or hs256_secret_file");
            }
            if (jwt.identity_claim.empty()) {
              p.error("auth.jwt.identity_claim", "must not be empty");
            }
          }
        }
      }
    }
    if (auto n = root["flow_control"]) {
      auto& fc = config.flow_control;
      if (p.mapWithKeys(n, "flow_control",
                        {"max_in_flight_per_endpoint", "max_waiting_per_endpoint", "max_kv_usage",
                         "queue_ttl", "max_queued", "max_queued_bytes"})) {
        p.uint(n, "max_in_flight_per_endpoint", "flow_control", fc.max_in_flight_per_endpoint, 0,
               1'000'000);
        p.uint(n, "max_waiting_per_endpoint", "flow_control", fc.max_waiting_per_endpoint, 0,
               1'000'000);
        if (auto kv = n["max_kv_usage"]) {
          auto v = p.scalar(kv, "flow_control.max_kv_usage");
          char* end = nullptr;
          double d = v ? std::strtod(v->c_str(), &end) : -1;
          if (!v || end == v->c_str() || *end != '\0' || d < 0 || d > 1) {
            p.error("flow_control.max_kv_usage", "must be a number in 0..1");
          } else {
            fc.max_kv_usage = d;
          }
        }
        p.duration(n, "queue_ttl", "flow_control", fc.queue_ttl);
        p.uint(n, "max_queued", "flow_control", fc.max_queued, 1, 10'000'000);
        p.bytes(n, "max_queued_bytes", "flow_control", fc.max_queued_bytes, 1024);
      }
    }
    if (auto list = root["rate_limits"]) {
      if (!list.IsSequence()) {
        p.error("rate_limits", "must be a list");
      } else {
        std::set<std::string> names;
        for (size_t i = 0; i < list.size(); ++i) {
          std::string path = fmt::format("rate_limits[{}]", i);
          const auto& r = list[i];
          if (!p.mapWithKeys(r, path,
                             {"name", "per", "requests", "input_tokens", "output_tokens",
                              "total_tokens", "unit", "global"})) {
            continue;
          }
          RouterConfig::RateLimit rl;
          p.string(r, "name", path, rl.name);
          if (rl.name.empty()) {
            p.error(path + ".name", "is required");
          } else if (!names.insert(rl.name).second) {
            p.error(path + ".name", fmt::format("duplicate name \"{}\"", rl.name));
          }
          if (auto per = r["per"]) {
            stringList(per, path + ".per", rl.per);
          }
          for (size_t j = 0; j < rl.per.size(); ++j) {
            static constexpr std::string_view kDims[] = {"identity", "tenant", "model", "gateway",
                                                         "route"};
            if (std::find(std::begin(kDims), std::end(kDims), rl.per[j]) == std::end(kDims)) {
              p.error(fmt::format("{}.per[{}]", path, j),
                      fmt::format("must be identity, tenant, model, gateway or route; got \"{}\"",
                                  rl.per[j]));
            }
          }
          if (auto g = r["global"]) {
            std::string gpath = path + ".global";
            if (p.mapWithKeys(g, gpath, {"redis", "lease", "fail"})) {
              p.string(g, "redis", gpath, rl.global.redis);
              p.uint(g, "lease", gpath, rl.global.lease, 0, 1'000'000'000);
              std::string fail = "open";
              p.string(g, "fail", gpath, fail);
              if (fail != "open" && fail != "closed") {
                p.error(gpath + ".fail", fmt::format("must be open or closed; got \"{}\"", fail));
              }
              rl.global.fail_open = fail == "open";
              if (!base::parseHostPort(rl.global.redis)) {
                p.error(gpath + ".redis",
                        fmt::format("must be host:port; got \"{}\"", rl.global.redis));
              }
            }
          }
          YAML::Node spec(YAML::NodeType::Map);
          for (const char* k :
               {"requests", "input_tokens", "output_tokens", "total_tokens", "unit"}) {
            if (r[k]) {
              spec[k] = r[k];
            }
          }
          limitSpec(spec, path, rl.spec);
          config.rate_limits.push_back(std::move(rl));
        }
      }
    }
    if (auto list = root["models"]) {
      if (!list.IsSequence()) {
        p.error("models", "must be a list");
      } else {
        std::set<std::string> seen;
        for (size_t i = 0; i < list.size(); ++i) {
          std::string path = fmt::format("models[{}]", i);
          const auto& m = list[i];
          if (!p.mapWithKeys(m, path,
                             {"name", "upstream_model", "engine", "scheduler", "endpoints"})) {
            continue;
          }
          RouterConfig::Model model;
          p.string(m, "name", path, model.name);
          p.string(m, "upstream_model", path, model.upstream_model);
          p.string(m, "engine", path, model.engine);
          p.string(m, "scheduler", path, model.scheduler);
          if (!model.scheduler.empty() && !presetKnown(model.scheduler) &&
              profile_names.count(model.scheduler) == 0) {
            p.error(path + ".scheduler",
                    fmt::format("must be a profile from scheduler.schedulingProfiles or one of "
                                "{}; got \"{}\"",
                                presetList(), model.scheduler));
          }
          {
            static constexpr std::string_view kEngines[] = {"vllm", "sglang", "trtllm-serve",
                                                            "trtllm", "triton"};
            if (std::find(std::begin(kEngines), std::end(kEngines), model.engine) ==
                std::end(kEngines)) {
              p.error(path + ".engine", fmt::format("must be one of vllm, sglang, trtllm-serve, "
                                                    "triton; got \"{}\"",
                                                    model.engine));
            }
          }
          if (model.name.empty()) {
            p.error(path + ".name", "is required");
          } else if (!seen.insert(model.name).second) {
            p.error(path + ".name", fmt::format("duplicate model name \"{}\"", model.name));
          }
          auto eps = m["endpoints"];
          if (!eps || !eps.IsSequence() || eps.size() == 0) {
            p.error(path + ".endpoints", "must be a non-empty list of host:port");
          } else {
            for (size_t j = 0; j < eps.size(); ++j) {
              std::string ep_path = fmt::format("{}.endpoints[{}]", path, j);
              auto s = p.scalar(eps[j], ep_path);
              if (!s) {
                continue;
              }
              auto hp = base::parseHostPort(*s);
              if (!hp) {
                p.error(ep_path,
                        fmt::format("must be host:port with a port in 1..65535, got \"{}\"", *s));
                continue;
              }
              model.endpoints.push_back(*hp);
            }
          }
          config.models.push_back(std::move(model));
        }
      }
    }
  } catch (const YAML::Exception& e) {
    errors.errors.push_back(fmt::format("<root>: {}", e.what()));
  }
  if (!errors.errors.empty()) {
    return base::Error{"invalid configuration"};
  }
  return config;
}

base::Result<RouterConfig> loadRouterConfig(const std::string& path, ConfigErrors& errors) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    errors.errors.push_back(fmt::format("cannot open: {}", std::strerror(errno)));
    return base::Error{"cannot open configuration"};
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  constexpr size_t kMaxConfigBytes = 16 * 1024 * 1024;
  if (ss.str().size() > kMaxConfigBytes) {
    errors.errors.push_back("file is larger than 16 MiB");
    return base::Error{"configuration too large"};
  }
  return parseRouterConfig(ss.str(), errors);
}

std::string toJson(const RouterConfig& c) {
  auto ms = [](milliseconds d) { return fmt::format("\"{}ms\"", d.count()); };
  auto addr = [](const ListenAddress& a) {
    return fmt::format("{{\"address\":{},\"port\":{}}}", base::jsonQuote(a.address), a.port);
  };
  std::string out = "{";
  out += fmt::format("\"listener\":{},\"admin\":{},\"metrics\":{},\"workers\":{},",
                     addr(c.listener), addr(c.admin), addr(c.metrics), c.workers);
  out += fmt::format("\"manifests\":{},\"manifests_debounce\":{},", base::jsonQuote(c.manifests),
                     ms(c.manifests_debounce));
  out += fmt::format(
      "\"limits\":{{\"max_header_bytes\":{},\"max_body_bytes\":{},\"max_connections\":{}}},",
      c.limits.max_header_bytes, c.limits.max_body_bytes, c.limits.max_connections);
  const auto& t = c.timeouts;
  out += fmt::format(
      "\"timeouts\":{{\"header_read\":{},\"request_body\":{},\"idle\":{},\"upstream_connect\":{},"
      "\"upstream_response\":{},\"stream_idle\":{},\"client_write\":{},\"drain\":{},"
      "\"endpoint_picker\":{}}},",
      ms(t.header_read), ms(t.request_body), ms(t.idle), ms(t.upstream_connect),
      ms(t.upstream_response), ms(t.stream_idle), ms(t.client_write), ms(t.drain),
      ms(t.endpoint_picker));
  std::string statuses;
  for (int s : c.upstream.retry_on_status) {
    statuses += (statuses.empty() ? "" : ",") + std::to_string(s);
  }
  out += fmt::format(
      "\"upstream\":{{\"max_idle_per_endpoint\":{},\"idle_timeout\":{},\"retries\":{},"
      "\"retry_on_status\":[{}]}},",
      c.upstream.max_idle_per_endpoint, ms(c.upstream.idle_timeout), c.upstream.retries, statuses);
  const auto& f = c.metrics_fetcher;
  out += fmt::format(
      "\"metrics_fetcher\":{{\"enabled\":{},\"interval\":{},\"timeout\":{},\"models_interval\":{},"
      "\"max_concurrency\":{},\"unhealthy_after\":{},\"engines\":{{",
      f.enabled, ms(f.interval), ms(f.timeout), ms(f.models_interval), f.max_concurrency,
      f.unhealthy_after);
  bool first_engine = true;
  for (const auto& [engine, signals] : f.engines) {
    out += (first_engine ? "" : ",") + base::jsonQuote(engine) + ":{";
    first_engine = false;
    bool first_signal = true;
    for (const auto& [signal, metric] : signals) {
      out += (first_signal ? "" : ",") + base::jsonQuote(signal) + ":" + base::jsonQuote(metric);
      first_signal = false;
    }
    out += "}";
  }
  out += "}},";
  out += fmt::format("\"scheduler\":{{\"preset\":{},\"candidates\":{},\"defaultProfile\":{},",
                     base::jsonQuote(c.scheduler.preset), c.scheduler.candidates,
                     base::jsonQuote(c.scheduler.default_profile));
  out += "\"plugins\":[";
  for (size_t i = 0; i < c.scheduler.plugins.size(); ++i) {
    const auto& pl = c.scheduler.plugins[i];
    out += fmt::format("{}{{\"type\":{},\"name\":{},\"parameters\":{{", i ? "," : "",
                       base::jsonQuote(pl.type), base::jsonQuote(pl.name));
    bool first = true;
    for (const auto& [k, v] : pl.parameters) {
      out += fmt::format("{}{}:{}", first ? "" : ",", base::jsonQuote(k), v);
      first = false;
    }
    out += "}}";
  }
  out += "],\"schedulingProfiles\":[";
  for (size_t i = 0; i < c.scheduler.profiles.size(); ++i) {
    const auto& pr = c.scheduler.profiles[i];
    out += fmt::format("{}{{\"name\":{},\"plugins\":[", i ? "," : "", base::jsonQuote(pr.name));
    for (size_t j = 0; j < pr.plugins.size(); ++j) {
      out += fmt::format("{}{{\"pluginRef\":{},\"weight\":{}}}", j ? "," : "",
                         base::jsonQuote(pr.plugins[j].plugin), pr.plugins[j].weight);
    }
    out += "]}";
  }
  out += "]},";
  out += fmt::format("\"access_log\":{{\"path\":{}}},", base::jsonQuote(c.access_log.path));
  out += "\"models\":[";
  for (size_t i = 0; i < c.models.size(); ++i) {
    const auto& m = c.models[i];
    out += i ? "," : "";
    out += fmt::format(
        "{{\"name\":{},\"upstream_model\":{},\"engine\":{},\"scheduler\":{},\"endpoints\":[",
        base::jsonQuote(m.name), base::jsonQuote(m.upstream_model), base::jsonQuote(m.engine),
        base::jsonQuote(m.scheduler));
    for (size_t j = 0; j < m.endpoints.size(); ++j) {
      out += j ? "," : "";
      out += base::jsonQuote(fmt::format("{}:{}", m.endpoints[j].host, m.endpoints[j].port));
    }
    out += "]}";
  }
  out += "]}";
  return out;
}

}  // namespace sluice::config
