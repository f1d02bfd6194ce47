#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "base/strings.h"

namespace sluice::config {

using std::chrono::milliseconds;

struct ListenAddress {
  std::string address;
  uint16_t port = 0;  // 0 = pick a free port (tests)
};

// The router's own configuration file (no Kubernetes needed). Defaults are the documented ones.
struct RouterConfig {
  ListenAddress listener{"0.0.0.0", 8080};
  ListenAddress admin{"127.0.0.1", 15000};
  ListenAddress metrics{"0.0.0.0", 9090};
  // The metric-name sets /metrics exports (metrics::MetricNames): sluice, inference_extension,
  // kthena; all by default.
  uint32_t metric_names = 7;
  int workers = 0;  // 0 = one per core
  // A directory of Kubernetes manifests (Gateway API, Inference Extension, Kthena, Pods),
  // watched for changes; empty = none. `sluice serve --manifests DIR` sets it too.
  std::string manifests;
  milliseconds manifests_debounce{100};  // quiet time after a change before re-reading

  // The Kubernetes API server as the source of objects (`sluice serve --kubeconfig FILE`, or
  // in-cluster when KUBERNETES_SERVICE_HOST is set and no --manifests is given).
  struct Kubernetes {
    std::string kubeconfig;  // empty = in-cluster (or none)
    std::string context;     // empty = the kubeconfig's current-context
    std::string ns;          // watch only this namespace; empty = all
    std::string controller_name = "sluice.dev/gateway-controller";
    uint32_t qps = 50;  // client-side rate limit towards the API server
    uint32_t burst = 100;
    milliseconds debounce{20};  // events are batched this long before routes are rebuilt
    bool write_status = true;
    // Gateway status.addresses (IPs or host names clients use: the Service's or load
    // balancer's); empty = $POD_IP.
    std::vector<std::string> gateway_addresses;
    struct LeaderElection {
      bool enabled = true;
      std::string lease_name = "sluice-router";
      std::string lease_namespace;  // empty = the Pod's namespace, else "default"
      std::string identity;         // empty = $POD_NAME, else the host name
      milliseconds lease_duration{15'000};
      milliseconds renew_deadline{10'000};
      milliseconds retry_period{2'000};
    } leader_election;
    bool enabled() const { return !kubeconfig.empty() || in_cluster; }
    bool in_cluster = false;  // set by `serve` from the environment, not by the file
  } kubernetes;

  // `sluice epp`: serve one InferencePool as the Inference Extension's endpoint picker (Envoy
  // ext_proc over gRPC) instead of proxying HTTP. Set from the command line, not the file.
  struct Epp {
    bool enabled = false;
    std::string pool_namespace = "default";
    std::string pool_name;
    ListenAddress grpc{"0.0.0.0", 9002};    // ext_proc (and health)
    ListenAddress health{"0.0.0.0", 9003};  // gRPC health (and ext_proc)
    uint32_t fallbacks = 2;  // endpoints after the first in x-gateway-destination-endpoint
    std::string tls_cert_file, tls_key_file;  // TLS (ALPN h2) on both ports when set
  } epp;

  struct Limits {
    uint64_t max_header_bytes = 64 * 1024;
    uint64_t max_body_bytes = 32 * 1024 * 1024;
    uint64_t max_connections = 10000;
  } limits;

  struct Timeouts {
    milliseconds header_read{10'000};         // first byte to end of headers; 408 after
    milliseconds request_body{60'000};        // end of headers to end of body; 408 after
    milliseconds idle{60'000};                // keep-alive wait for the next request
    milliseconds upstream_connect{5'000};     // TCP connect to an endpoint
    milliseconds upstream_response{300'000};  // request sent to response headers
    milliseconds stream_idle{300'000};        // gap between two upstream body reads
    milliseconds client_write{60'000};        // one write to a client that does not read
    milliseconds drain{30'000};               // SIGTERM: wait this long for in-flight requests
    // An InferencePool's endpoint picker (ext_proc): connect and answer the request phase
    // within this (it may queue the request); beyond, the pool's failureMode applies.
    milliseconds endpoint_picker{60'000};
  } timeouts;

  struct Upstream {
    uint32_t max_idle_per_endpoint = 64;  // per worker
    milliseconds idle_timeout{60'000};
    uint32_t retries = 2;  // extra attempts on other endpoints
    std::vector<int> retry_on_status{500, 502, 503, 504};
    uint32_t eject_after_failures = 5;  // consecutive failed attempts; 0 = never eject
    milliseconds ejection{10'000};      // first ejection; doubles each time
    milliseconds max_ejection{300'000};
    // Extra CA certificates (PEM) trusted for external providers, besides the system's.
    std::string ca_file;
    // ModelServers with workloadPort.protocol https: check the engine's certificate (chain to
    // the system's CAs or ca_file, and the Pod IP in its names). Off: encrypted, not verified.
    bool verify_workload_tls = false;
  } upstream;

  struct MetricsFetcher {
    bool enabled = true;
    milliseconds interval{50};
    milliseconds timeout{1000};
    milliseconds models_interval{5000};
    uint32_t max_concurrency = 128;
    uint32_t unhealthy_after = 3;
    // engine -> signal -> metric ("name" or name{label="value"}; "" turns the signal off).
    // Signals: waiting, running, kv_usage, ttft_histogram, itl_histogram, lora_info.
    std::map<std::string, std::map<std::string, std::string>> engines;
  } metrics_fetcher;

  // Plugins and profiles in the shape of the Inference Extension's EndpointPickerConfig.
  struct PluginSpec {
    std::string type;
    std::string name;
    std::map<std::string, double> parameters;
  };
  struct ProfileSpec {
    std::string name;
    struct Ref {
      std::string plugin;  // a PluginSpec name
      double weight = 1;   // scorers only
    };
    std::vector<Ref> plugins;
  };
  struct Scheduler {
    std::string preset = "sluice-default";  // see docs/scheduling.md
    uint32_t candidates = 3;                // the fallback list: endpoints tried in order
    std::vector<PluginSpec> plugins;
    std::vector<ProfileSpec> profiles;  // schedulingProfiles
    std::string default_profile;        // a profile or preset name; empty = `preset`
    uint32_t decisions = 0;             // last decisions kept per worker for /debug/decisions
    std::string session_header = "x-session-id";  // the key for session-affinity-scorer
  } scheduler;

  struct AccessLog {
    std::string path = "stdout";      // stdout | stderr | off | a file path
    bool decisions = false;           // add the scheduler's reasons to each record
    std::string format = "json";      // json | text
    std::vector<std::string> fields;  // the fields written, in order; empty = all
  } access_log;

  // OpenTelemetry tracing: spans exported as OTLP/HTTP (protobuf) to `endpoint`; empty = off.
  struct Tracing {
    std::string endpoint;   // http://host:port/v1/traces (a path-less URL gets /v1/traces)
    double sampling = 1.0;  // ratio of new traces recorded; a traceparent's sampled flag rules
    std::string service_name = "sluice";
    milliseconds flush_interval{1000};  // how often queued spans are sent
    milliseconds export_timeout{5000};  // one export: connect, send, answer
    uint64_t queue_bytes = 1 << 20;     // per worker; a full queue drops spans, never blocks
    uint32_t max_batch = 2048;          // spans per export request
    bool enabled() const { return !endpoint.empty(); }
  } tracing;

  // Rate limits: per unit (second, minute, hour, day, month); 0 = that limit is off.
  struct LimitSpec {
    uint64_t requests = 0;
    uint64_t input_tokens = 0;
    uint64_t output_tokens = 0;
    uint64_t total_tokens = 0;
    std::string unit = "minute";
    bool any() const { return requests || input_tokens || output_tokens || total_tokens; }
  };
  struct Auth {
    std::string mode = "off";          // off | optional | required: the default for every route
    bool forward_credentials = false;  // pass Authorization / x-api-key to the model servers
    struct ApiKey {
      std::string id;          // the identity
      std::string tenant;      // optional
      std::string key_sha256;  // hex SHA-256 of the key, or:
      struct SecretRef {
        std::string ns = "default";
        std::string name;
        std::string key;
      } secret;                         // a Secret from the manifests (the key in clear there)
      std::vector<std::string> models;  // allowed models; empty = all
      LimitSpec limits;                 // this key's own limits
    };
    std::vector<ApiKey> api_keys;
    struct Jwt {
      std::string issuer;
      std::vector<std::string> audiences;
      std::string jwks_file;               // read at each (re)load
      std::string jwks_url;                // fetched in the background (https, or http on loopback)
      milliseconds jwks_refresh{600'000};  // how often the URL is fetched again
      std::string hs256_secret_file;       // optional shared secret
      std::string identity_claim = "sub";
      std::string tenant_claim;
      milliseconds leeway{60'000};
      bool enabled() const {
        return !jwks_file.empty() || !jwks_url.empty() || !hs256_secret_file.empty();
      }
    } jwt;
  } auth;
  struct RateLimit {
    std::string name;
    std::vector<std::string> per;  // identity, tenant, model, gateway, route
    LimitSpec spec;
    struct Global {
      std::string redis;      // host:port; empty = a local limit (per router)
      uint64_t lease = 0;     // units a router takes from Redis at a time; 0 = limit / 20
      bool fail_open = true;  // when Redis is unreachable: pass (open) or 503 (closed)
    } global;
  };
  milliseconds redis_timeout{200};  // connect and command timeout for global limits
  // Redis credentials for global limits (AUTH, with an ACL user when `username` is set). The
  // password is read from the file at each connection (rotation works), never kept in config.
  struct RedisAuth {
    std::string username;
    std::string password_file;
    bool operator==(const RedisAuth&) const = default;
  } redis_auth;
  // End a stream with an SSE error once it has sent more events (about one token each) than the
  // output tokens its rate limits reserved (engines that ignore max_tokens, or none was given).
  bool stop_streams_over_budget = false;
  std::vector<RateLimit> rate_limits;

  // Queueing under saturation (docs/filters.md). Off unless max_in_flight_per_endpoint is set.
  struct FlowControl {
    uint32_t max_in_flight_per_endpoint = 0;  // 0 = flow control off
    uint32_t max_waiting_per_endpoint = 0;  // engine queue at which an endpoint is full; 0 = ignore
    double max_kv_usage = 0;                // engine KV usage at which it is full; 0 = ignore
    milliseconds queue_ttl{30'000};         // then 503
    uint32_t max_queued = 10'000;           // per backend; beyond it 429
    uint64_t max_queued_bytes = 256ULL << 20;  // request bodies held per backend; beyond it 429
    bool enabled() const { return max_in_flight_per_endpoint > 0; }
  } flow_control;

  struct Model {
    std::string name;
    std::string upstream_model;   // empty = forward the client's name
    std::string engine = "vllm";  // vllm | sglang | trtllm-serve | triton: metric names to read
    std::string scheduler;        // a preset for this model; empty = scheduler.preset
    std::vector<base::HostPort> endpoints;
  };
  std::vector<Model> models;
};

// Every problem found, each prefixed with its field path ("models[1].endpoints[0]: ...").
struct ConfigErrors {
  std::vector<std::string> errors;
};

// Parses and validates YAML (JSON is YAML too). Unknown keys are errors.
base::Result<RouterConfig> parseRouterConfig(std::string_view text, ConfigErrors& errors);
base::Result<RouterConfig> loadRouterConfig(const std::string& path, ConfigErrors& errors);

// The scheduler presets (kept equal to scheduler::Scheduler::presetNames() by a unit test).
const std::vector<std::string_view>& schedulerPresets();

enum class PluginKind { Filter, Scorer, Picker };
struct PluginTypeInfo {
  std::string_view type;
  PluginKind kind;
  std::vector<std::string_view> parameters;
};
// Every plugin type the scheduler can build (kept in step with it by a unit test).
const std::vector<PluginTypeInfo>& schedulerPluginTypes();
const PluginTypeInfo* findPluginType(std::string_view type);

// "name" or name{label="value"} (one label filter), or "" (a signal turned off).
bool validMetricRef(std::string_view text);

// The effective configuration as JSON, for /debug/config.
std::string toJson(const RouterConfig& config);

}  // namespace sluice::config
