#pragma once

// How to reach and authenticate to a Kubernetes API server: from a kubeconfig file (the
// current or a named context) or from inside a Pod (the service account's token, CA and
// namespace). Asio-free; the client in api_client.h uses the result.

#include <functional>
#include <string>

#include "base/result.h"

namespace sluice::k8s {

struct ClusterAccess {
  std::string server;  // "https://host:port", as written
  std::string host;    // without brackets
  std::string port;
  std::string ca_pem;  // empty = the system's CAs
  std::string client_cert_pem;
  std::string client_key_pem;
  std::string token;       // a bearer token given inline
  std::string token_file;  // a bearer token read from this file, re-read when it changes
  std::string ns;          // the context's (or service account's) namespace; may be empty
  std::string tls_server_name;
  bool insecure_skip_verify = false;  // only when the kubeconfig says so explicitly
  std::string origin;                 // "kubeconfig FILE (context X)" or "in-cluster", for logs
};

// Parses `text` as a kubeconfig whose relative paths are relative to `dir`. `context` empty =
// current-context. Every problem names its field.
base::Result<ClusterAccess> parseKubeconfig(const std::string& text, const std::string& dir,
                                            const std::string& context);
base::Result<ClusterAccess> loadKubeconfig(const std::string& path, const std::string& context);

// In-cluster: KUBERNETES_SERVICE_HOST/PORT from `env`, the token, CA and namespace from
// `sa_dir`.
using EnvLookup = std::function<std::string(const char*)>;
base::Result<ClusterAccess> inClusterAccess(
    const EnvLookup& env,
    const std::string& sa_dir = "/var/run/secrets/kubernetes.io/serviceaccount");

// Splits "https://host:port[/]" into host and port (default 443). Plain http is refused.
base::Result<void> splitServer(ClusterAccess& access);

// Reads a whole (small) file; errors name the path.
base::Result<std::string> readSmallFile(const std::string& path);

}  // namespace sluice::k8s
