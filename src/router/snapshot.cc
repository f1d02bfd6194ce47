#include "router/snapshot.h"

#include <algorithm>
#include <arpa/inet.h>
#include <cstring>
#include <netdb.h>
#include <sys/socket.h>

#include <fmt/core.h>

#include "base/strings.h"
#include "config/object_store.h"
#include "router/route_table.h"

namespace sluice::router {

const Backend* Snapshot::findModel(std::string_view name) const {
  // Heterogeneous lookup arrives with C++20 unordered containers only in newer libstdc++.
  auto it = models.find(std::string(name));
  return it == models.end() ? nullptr : it->second.get();
}

std::vector<ObjectStatus> Snapshot::statuses() const {
  std::vector<ObjectStatus> out = routes->status;
  if (status_patch.empty()) {
    return out;
  }
  for (auto& st : out) {
    if (auto it = status_patch.find(st.key); it != status_patch.end()) {
      st = *it->second;
    }
  }
  return out;
}

std::shared_ptr<EndpointState> EndpointRegistry::get(const std::string& address) {
  auto& slot = states_[address];
  if (!slot) {
    slot = std::make_shared<EndpointState>();
  }
  return slot;
}

void EndpointRegistry::prune() {
  for (auto it = states_.begin(); it != states_.end();) {
    if (it->second.use_count() == 1) {
      it = states_.erase(it);
    } else {
      ++it;
    }
  }
}

namespace {

base::Result<Endpoint> resolve(const base::HostPort& hp) {
  Endpoint ep;
  ep.port = hp.port;
  in_addr v4{};
  in6_addr v6{};
  if (inet_pton(AF_INET, hp.host.c_str(), &v4) == 1) {
    std::memcpy(ep.ip.data(), &v4, 4);
  } else if (inet_pton(AF_INET6, hp.host.c_str(), &v6) == 1) {
    ep.v6 = true;
    std::memcpy(ep.ip.data(), &v6, 16);
  } else {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    int rc = getaddrinfo(hp.host.c_str(), nullptr, &hints, &res);
    if (rc != 0 || res == nullptr) {
      return base::Error{fmt::format("cannot resolve \"{}\": {}", hp.host, gai_strerror(rc))};
    }
    if (res->ai_family == AF_INET6) {
      ep.v6 = true;
      std::memcpy(ep.ip.data(), &reinterpret_cast<sockaddr_in6*>(res->ai_addr)->sin6_addr, 16);
    } else {
      std::memcpy(ep.ip.data(), &reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr, 4);
    }
    freeaddrinfo(res);
  }
  char text[INET6_ADDRSTRLEN] = {};
  inet_ntop(ep.v6 ? AF_INET6 : AF_INET, ep.ip.data(), text, sizeof(text));
  ep.address = ep.v6 ? fmt::format("[{}]:{}", text, ep.port) : fmt::format("{}:{}", text, ep.port);
  return ep;
}

}  // namespace

base::Result<std::shared_ptr<const Snapshot>> buildSnapshot(const config::RouterConfig& config,
                                                            uint64_t version,
                                                            EndpointRegistry& registry,
                                                            const config::ObjectStore* objects,
                                                            uint16_t default_port) {
  auto snap = std::make_shared<Snapshot>();
  snap->version = version;
  snap->config = config;
  std::vector<std::string> names;
  for (size_t i = 0; i < config.models.size(); ++i) {
    const auto& m = config.models[i];
    auto backend = std::make_shared<Backend>();
    backend->model = m.name;
    backend->upstream_model = m.upstream_model;
    backend->engine = m.engine;
    backend->scheduler = m.scheduler;
    for (size_t j = 0; j < m.endpoints.size(); ++j) {
      auto ep = resolve(m.endpoints[j]);
      if (!ep) {
        return base::Error{fmt::format("models[{}].endpoints[{}]: {}", i, j, ep.error().message)};
      }
      ep->state = registry.get(ep->address);
      backend->endpoints.push_back(std::move(*ep));
    }
    names.push_back(m.name);
    snap->models[m.name] = std::move(backend);
  }
  std::sort(names.begin(), names.end());
  std::string json = "{\"object\":\"list\",\"data\":[";
  for (size_t i = 0; i < names.size(); ++i) {
    json += i ? "," : "";
    json += fmt::format("{{\"id\":{},\"object\":\"model\",\"created\":0,\"owned_by\":\"sluice\"}}",
                        base::jsonQuote(names[i]));
  }
  json += "]}";
  snap->models_json = std::move(json);
  RouteBuildOptions options;
  options.default_address = config.listener.address;
  options.default_port = default_port != 0 ? default_port : config.listener.port;
  options.controller_name = config.kubernetes.controller_name;
  options.builtin_class = !config.kubernetes.enabled();
  for (const auto& m : config.models) {
    options.config_models.push_back(snap->models.at(m.name));
  }
  for (auto p : config::schedulerPresets()) {
    options.profiles.emplace_back(p);
  }
  for (const auto& p : config.scheduler.profiles) {
    options.profiles.push_back(p.name);
  }
  for (const auto& l : config.rate_limits) {
    options.rate_limits.push_back(l.name);
  }
  static const config::ObjectStore kEmpty;
  snap->routes = buildRouteTable(objects ? *objects : kEmpty, options, registry);
  return std::shared_ptr<const Snapshot>(std::move(snap));
}

base::Result<ProviderUrl> parseProviderUrl(std::string_view url) {
  constexpr std::string_view kScheme = "https://";
  if (url.size() < kScheme.size() || !base::iequals(url.substr(0, kScheme.size()), kScheme)) {
    return base::Error{"must be an https:// URL"};
  }
  std::string_view rest = url.substr(kScheme.size());
  if (rest.find_first_of("?#") != std::string_view::npos) {
    return base::Error{"must not have a query or fragment"};
  }
  const size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? "" : rest.substr(slash);
  if (authority.find('@') != std::string_view::npos) {
    return base::Error{"must not carry user information (put credentials in auth.secretRef)"};
  }
  ProviderUrl out;
  std::string_view host = authority;
  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      return base::Error{"has an unterminated IPv6 address"};
    }
    host = authority.substr(1, close - 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') {
        return base::Error{"has junk after the IPv6 address"};
      }
      port = after.substr(1);
    }
  } else if (const size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.empty()) {
    return base::Error{"has no host"};
  }
  for (char c : host) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '.' || c == ':';
    if (!ok) {
      return base::Error{fmt::format("has an invalid host '{}'", host)};
    }
  }
  if (!port.empty()) {
    auto n = base::parseUint(port);
    if (!n || *n == 0 || *n > 65535) {
      return base::Error{fmt::format("has an invalid port '{}'", port)};
    }
    out.port = static_cast<uint16_t>(*n);
  }
  out.host = base::toLower(host);
  while (!path.empty() && path.back() == '/') {
    path.remove_suffix(1);
  }
  out.path = std::string(path);
  return out;
}

}  // namespace sluice::router
