#include "k8s/kubeconfig.h"

#include <fstream>
#include <sstream>

#include <fmt/core.h>
#include <yaml-cpp/yaml.h>

#include "base/strings.h"

namespace sluice::k8s {

namespace {

std::string scalarAt(const YAML::Node& node, const char* key) {
  const YAML::Node v = node[key];
  return v && v.IsScalar() ? v.Scalar() : std::string();
}

std::string resolvePath(const std::string& dir, const std::string& path) {
  if (path.empty() || path[0] == '/' || dir.empty()) {
    return path;
  }
  return dir + "/" + path;
}

// A named entry of one of the kubeconfig's lists (clusters, users, contexts).
YAML::Node findNamed(const YAML::Node& root, const char* list, const std::string& name) {
  const YAML::Node items = root[list];
  if (items && items.IsSequence()) {
    for (const auto& item : items) {
      if (item.IsMap() && scalarAt(item, "name") == name) {
        return item;
      }
    }
  }
  return YAML::Node(YAML::NodeType::Undefined);
}

// "certificate-authority-data" (base64) or the file "certificate-authority"; empty if neither.
base::Result<std::string> pemFrom(const YAML::Node& node, const std::string& dir,
                                  const std::string& data_key, const std::string& file_key,
                                  const std::string& where) {
  if (auto data = scalarAt(node, data_key.c_str()); !data.empty()) {
    auto decoded = base::base64Decode(data, true);
    if (!decoded) {
      return base::Error{fmt::format("{}.{}: not valid base64", where, data_key)};
    }
    return *decoded;
  }
  if (auto file = scalarAt(node, file_key.c_str()); !file.empty()) {
    auto text = readSmallFile(resolvePath(dir, file));
    if (!text) {
      return base::Error{fmt::format("{}.{}: {}", where, file_key, text.error().message)};
    }
    return *text;
  }
  return std::string();
}

base::Result<void> readUser(const YAML::Node& user, const std::string& dir, ClusterAccess& a) {
  const std::string where = "users[" + scalarAt(user, "name") + "].user";
  const YAML::Node u = user["user"];
  if (!u || !u.IsMap()) {
    return {};  // anonymous
  }
  if (u["exec"] || u["auth-provider"]) {
    return base::Error{where + ": exec and auth-provider credentials are not supported; use a " +
                       "token, tokenFile or client certificate"};
  }
  a.token = scalarAt(u, "token");
  if (auto f = scalarAt(u, "tokenFile"); !f.empty()) {
    a.token_file = resolvePath(dir, f);
  }
  auto cert = pemFrom(u, dir, "client-certificate-data", "client-certificate", where);
  if (!cert) {
    return cert.error();
  }
  auto key = pemFrom(u, dir, "client-key-data", "client-key", where);
  if (!key) {
    return key.error();
  }
  a.client_cert_pem = *cert;
  a.client_key_pem = *key;
  if (a.client_cert_pem.empty() != a.client_key_pem.empty()) {
    return base::Error{where + ": a client certificate needs both the certificate and the key"};
  }
  return {};
}

}  // namespace

base::Result<std::string> readSmallFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return base::Error{fmt::format("cannot read {}", path)};
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (ss.str().size() > (1u << 20)) {
    return base::Error{fmt::format("{} is larger than 1 MiB", path)};
  }
  return ss.str();
}

base::Result<void> splitServer(ClusterAccess& a) {
  std::string_view s = a.server;
  if (s.rfind("https://", 0) != 0) {
    return base::Error{fmt::format("server \"{}\" must be an https:// URL", a.server)};
  }
  s.remove_prefix(8);
  s = s.substr(0, s.find('/'));
  std::string_view host = s, port = "443";
  if (!s.empty() && s.front() == '[') {
    auto close = s.find(']');
    if (close == std::string_view::npos) {
      return base::Error{fmt::format("server \"{}\": unterminated IPv6 address", a.server)};
    }
    host = s.substr(1, close - 1);
    if (close + 1 < s.size() && s[close + 1] == ':') {
      port = s.substr(close + 2);
    }
  } else if (auto colon = s.rfind(':'); colon != std::string_view::npos) {
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
  }
  auto n = base::parseUint(port);
  if (host.empty() || !n || *n == 0 || *n > 65535) {
    return base::Error{fmt::format("server \"{}\": expected https://host[:port]", a.server)};
  }
  a.host = std::string(host);
  a.port = std::string(port);
  return {};
}

base::Result<ClusterAccess> parseKubeconfig(const std::string& text, const std::string& dir,
                                            const std::string& context) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return base::Error{fmt::format("line {}: {}", e.mark.line + 1, e.msg)};
  }
  if (!root.IsMap()) {
    return base::Error{"not a kubeconfig (expected a mapping with clusters, users, contexts)"};
  }
  try {
    const std::string name = context.empty() ? scalarAt(root, "current-context") : context;
    if (name.empty()) {
      return base::Error{"current-context: not set (pass --context NAME)"};
    }
    const YAML::Node ctx = findNamed(root, "contexts", name);
    if (!ctx || !ctx["context"].IsMap()) {
      return base::Error{fmt::format("contexts: no context named \"{}\"", name)};
    }
    ClusterAccess a;
    a.origin = fmt::format("context {}", name);
    a.ns = scalarAt(ctx["context"], "namespace");
    const std::string cluster_name = scalarAt(ctx["context"], "cluster");
    const YAML::Node cluster = findNamed(root, "clusters", cluster_name)["cluster"];
    if (!cluster || !cluster.IsMap()) {
      return base::Error{
          fmt::format("clusters: no cluster named \"{}\" (context {})", cluster_name, name)};
    }
    const std::string where = "clusters[" + cluster_name + "].cluster";
    a.server = scalarAt(cluster, "server");
    if (auto r = splitServer(a); !r) {
      return base::Error{where + ".server: " + r.error().message};
    }
    a.tls_server_name = scalarAt(cluster, "tls-server-name");
    a.insecure_skip_verify = scalarAt(cluster, "insecure-skip-tls-verify") == "true";
    auto ca = pemFrom(cluster, dir, "certificate-authority-data", "certificate-authority", where);
    if (!ca) {
      return ca.error();
    }
    a.ca_pem = *ca;
    if (const std::string user = scalarAt(ctx["context"], "user"); !user.empty()) {
      const YAML::Node u = findNamed(root, "users", user);
      if (!u) {
        return base::Error{fmt::format("users: no user named \"{}\" (context {})", user, name)};
      }
      if (auto r = readUser(u, dir, a); !r) {
        return r.error();
      }
    }
    return a;
  } catch (const YAML::Exception& e) {
    return base::Error{e.what()};
  }
}

base::Result<ClusterAccess> loadKubeconfig(const std::string& path, const std::string& context) {
  auto text = readSmallFile(path);
  if (!text) {
    return base::Error{"--kubeconfig: " + text.error().message};
  }
  const auto slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  auto a = parseKubeconfig(*text, dir, context);
  if (!a) {
    return base::Error{fmt::format("kubeconfig {}: {}", path, a.error().message)};
  }
  a->origin = fmt::format("kubeconfig {} ({})", path, a->origin);
  return a;
}

base::Result<ClusterAccess> inClusterAccess(const EnvLookup& env, const std::string& sa_dir) {
  const std::string host = env("KUBERNETES_SERVICE_HOST");
  const std::string port = env("KUBERNETES_SERVICE_PORT");
  if (host.empty()) {
    return base::Error{"in-cluster: KUBERNETES_SERVICE_HOST is not set"};
  }
  ClusterAccess a;
  a.origin = "in-cluster service account";
  const bool v6 = host.find(':') != std::string::npos;
  a.server = fmt::format("https://{}{}{}:{}", v6 ? "[" : "", host, v6 ? "]" : "",
                         port.empty() ? "443" : port);
  if (auto r = splitServer(a); !r) {
    return base::Error{"in-cluster: " + r.error().message};
  }
  a.token_file = sa_dir + "/token";
  auto ca = readSmallFile(sa_dir + "/ca.crt");
  if (!ca) {
    return base::Error{"in-cluster: " + ca.error().message};
  }
  a.ca_pem = *ca;
  if (auto ns = readSmallFile(sa_dir + "/namespace")) {
    a.ns = std::string(base::trimWhitespace(*ns));
  }
  if (auto t = readSmallFile(a.token_file); !t) {
    return base::Error{"in-cluster: " + t.error().message};
  }
  return a;
}

}  // namespace sluice::k8s
