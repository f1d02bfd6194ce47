#pragma once

// The Kubernetes objects Sluice reads (Gateway API, Inference Extension, Kthena, core v1), as
// plain values. Only the fields the router honours or validates are kept; parsing checks them
// and reports every problem with its field path. See docs/configuration.md.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace YAML {
class Node;
}  // namespace YAML

namespace sluice::config {

enum class Kind {
  GatewayClass,
  Gateway,
  HTTPRoute,
  ReferenceGrant,
  InferencePool,
  InferenceObjective,
  InferenceModelRewrite,
  InferenceModel,
  ModelRoute,
  ModelServer,
  ExternalModelProvider,
  Pod,
  Service,
  Secret,
  EndpointSlice,
  Namespace,  // last: arrays are sized by it
};
std::string_view kindName(Kind kind);
// The API group a kind belongs to ("" for core v1).
std::string_view kindGroup(Kind kind);

struct ObjectMeta {
  std::string name;
  std::string ns;  // empty for cluster-scoped kinds (GatewayClass, Namespace)
  std::map<std::string, std::string> labels;
  std::map<std::string, std::string> annotations;
  int64_t creation = 0;  // creationTimestamp as unix seconds; 0 = not given
  int64_t generation = 0;
  bool terminating = false;  // deletionTimestamp set
  uint64_t seq = 0;          // order first seen: the tie-break when timestamps are equal
};

struct LabelSelector {
  std::map<std::string, std::string> match_labels;
  struct Expression {
    std::string key;
    std::string op;  // In | NotIn | Exists | DoesNotExist
    std::vector<std::string> values;
  };
  std::vector<Expression> match_expressions;
  bool matches(const std::map<std::string, std::string>& labels) const;
};

struct ParentRef {
  std::string group = "gateway.networking.k8s.io";
  std::string kind = "Gateway";
  std::string ns;  // empty = the route's namespace
  std::string name;
  std::string section_name;
  std::optional<uint16_t> port;
};

// --- gateway.networking.k8s.io ---------------------------------------------------------------

struct GatewayClass {
  std::string controller_name;
};

struct SecretRef {
  std::string group;
  std::string kind = "Secret";
  std::string ns;
  std::string name;
};

struct Listener {
  std::string name;
  std::optional<std::string> hostname;
  uint16_t port = 0;
  std::string protocol;  // HTTP | HTTPS | TLS | TCP | UDP | custom
  std::string tls_mode = "Terminate";
  std::vector<SecretRef> certificate_refs;
  std::string routes_from = "Same";  // Same | All | Selector
  LabelSelector routes_selector;
  struct RouteKind {
    std::string group = "gateway.networking.k8s.io";
    std::string kind;
  };
  std::vector<RouteKind> route_kinds;  // empty = what the protocol supports
};

struct Gateway {
  std::string gateway_class;
  std::vector<Listener> listeners;
};

struct StringMatch {
  enum class Type { Exact, Prefix, RegularExpression };
  Type type = Type::Exact;
  std::string value;
};

struct PathMatch {
  enum class Type { Exact, PathPrefix, RegularExpression };
  Type type = Type::PathPrefix;
  std::string value = "/";
};

struct HttpRouteMatch {
  PathMatch path;
  struct Named {
    std::string name;
    StringMatch::Type type = StringMatch::Type::Exact;
    std::string value;
  };
  std::vector<Named> headers;
  std::vector<Named> query;
  std::string method;  // empty = any
};

struct HeaderModifier {
  std::vector<std::pair<std::string, std::string>> set;
  std::vector<std::pair<std::string, std::string>> add;
  std::vector<std::string> remove;
};

struct BackendRef {
  std::string group;  // "" = core (Service)
  std::string kind = "Service";
  std::string ns;  // empty = the route's namespace
  std::string name;
  std::optional<uint16_t> port;
  uint32_t weight = 1;
};

struct HttpPathModifier {
  enum class Type { ReplaceFullPath, ReplacePrefixMatch };
  Type type = Type::ReplaceFullPath;
  std::string value;
};

struct HttpRouteFilter {
  enum class Type {
    RequestHeaderModifier,
    ResponseHeaderModifier,
    URLRewrite,
    RequestRedirect,
    RequestMirror
  };
  Type type = Type::RequestHeaderModifier;
  HeaderModifier headers;
  // URLRewrite and RequestRedirect
  std::optional<std::string> hostname;
  std::optional<HttpPathModifier> path;
  // RequestRedirect
  std::optional<std::string> scheme;
  std::optional<uint16_t> port;
  int status_code = 302;
  // RequestMirror
  BackendRef mirror;
  double mirror_fraction = 1.0;  // percent/100 or numerator/denominator
};

struct HttpRouteRule {
  std::string name;
  std::vector<HttpRouteMatch> matches;  // empty = one PathPrefix "/" match
  std::vector<HttpRouteFilter> filters;
  std::vector<BackendRef> backend_refs;
  std::chrono::milliseconds request_timeout{0};  // 0 = none
  std::chrono::milliseconds backend_timeout{0};
  // retry (Gateway API, experimental): extra attempts for these response codes.
  struct Retry {
    std::vector<int> codes;  // empty = 500, 502, 503, 504
    std::optional<uint32_t> attempts;
    std::chrono::milliseconds backoff{0};
  };
  std::optional<Retry> retry;
};

struct HTTPRoute {
  std::vector<ParentRef> parent_refs;
  std::vector<std::string> hostnames;
  std::vector<HttpRouteRule> rules;
};

struct ReferenceGrant {
  struct From {
    std::string group;
    std::string kind;
    std::string ns;
  };
  struct To {
    std::string group;
    std::string kind;
    std::string name;  // empty = any
  };
  std::vector<From> from;
  std::vector<To> to;
};

// --- inference.networking.k8s.io / inference.networking.x-k8s.io -----------------------------

struct InferencePool {
  std::map<std::string, std::string> selector;
  std::vector<uint16_t> target_ports;
  std::string app_protocol = "http";  // http | kubernetes.io/h2c
  struct PickerRef {
    std::string group;
    std::string kind = "Service";
    std::string name;
    std::optional<uint16_t> port;
    std::string failure_mode = "FailClose";
  };
  std::optional<PickerRef> endpoint_picker;
  bool from_v1alpha2 = false;
};

struct PoolRef {
  std::string group = "inference.networking.k8s.io";
  std::string kind = "InferencePool";
  std::string name;
};

struct InferenceObjective {
  int32_t priority = 0;
  PoolRef pool_ref;
};

struct WeightedModel {
  std::string model;
  uint32_t weight = 1;
};

struct InferenceModelRewrite {
  PoolRef pool_ref;
  struct Rule {
    std::vector<std::string> models;  // Exact matches, ORed; empty = every model
    std::vector<WeightedModel> targets;
  };
  std::vector<Rule> rules;
};

// Legacy (v0.x): converted into a rewrite and an objective when routes are built.
struct InferenceModel {
  std::string model_name;
  std::string criticality;  // Critical | Standard | Sheddable | ""
  std::vector<WeightedModel> target_models;
  PoolRef pool_ref;
};

// --- networking.serving.volcano.sh (Kthena) --------------------------------------------------

struct ModelRoute {
  std::string model_name;
  std::vector<std::string> lora_adapters;
  std::vector<ParentRef> parent_refs;
  struct Target {
    std::string model_server;
    std::string external_provider;
    std::optional<uint32_t> weight;
  };
  struct Rule {
    std::string name;
    std::vector<std::pair<std::string, StringMatch>> headers;
    std::optional<StringMatch> uri;
    std::optional<std::string> body_model;
    std::vector<Target> targets;
  };
  std::vector<Rule> rules;
  struct RateLimit {
    uint64_t input_tokens_per_unit = 0;
    uint64_t output_tokens_per_unit = 0;
    std::string unit = "second";
    std::string redis_address;
  };
  std::optional<RateLimit> rate_limit;
};

struct ModelServer {
  std::string model;             // upstream model name; empty = keep the client's
  std::string inference_engine;  // vLLM | SGLang
  std::map<std::string, std::string> selector;
  struct PdGroup {
    std::string group_key;
    std::map<std::string, std::string> prefill_labels;
    std::map<std::string, std::string> decode_labels;
  };
  std::optional<PdGroup> pd_group;
  uint16_t port = 8000;
  std::string protocol = "http";
  std::chrono::milliseconds timeout{0};  // 0 = the router's default
  std::optional<uint32_t> retry_attempts;
  std::chrono::milliseconds retry_interval{100};
  std::string kv_connector = "http";
};

struct ExternalModelProvider {
  std::string provider_type = "OpenAI";
  std::string model;
  std::string base_url;
  bool insecure_skip_verify = false;
  std::string auth_scheme;  // Bearer | APIKey | ""
  std::string secret_name;
  std::string secret_key;
  std::map<std::string, std::string> headers;
};

// --- core v1 ----------------------------------------------------------------------------------

struct Pod {
  std::string ip;
  bool ready = false;
  std::map<std::string, uint16_t> named_ports;  // container port names
};

struct Service {
  std::string type = "ClusterIP";
  std::map<std::string, std::string> selector;
  struct Port {
    std::string name;
    uint16_t port = 0;
    uint16_t target_port = 0;  // 0 = named (target_port_name) or = port
    std::string target_port_name;
    std::string app_protocol;
  };
  std::vector<Port> ports;
};

struct Secret {
  std::map<std::string, std::string> data;  // decoded
};

// discovery.k8s.io/v1: the endpoints of a Service (kubernetes.io/service-name label), as the
// cluster's endpoint controller (or anyone, for Services without a selector) publishes them.
struct EndpointSlice {
  std::string service;
  std::string address_type = "IPv4";  // IPv4 | IPv6 | FQDN (not routable here)
  struct Port {
    std::string name;
    uint16_t port = 0;
  };
  std::vector<Port> ports;
  struct Endpoint {
    std::vector<std::string> addresses;
    bool ready = true;  // conditions.ready; unset means ready
  };
  std::vector<Endpoint> endpoints;
};

struct Namespace {};

using Spec =
    std::variant<GatewayClass, Gateway, HTTPRoute, ReferenceGrant, InferencePool,
                 InferenceObjective, InferenceModelRewrite, InferenceModel, ModelRoute, ModelServer,
                 ExternalModelProvider, Pod, Service, Secret, EndpointSlice, Namespace>;

struct Object {
  Kind kind = Kind::Namespace;
  std::string api_version;
  ObjectMeta meta;
  Spec spec;
  std::string source;  // "file.yaml#2": where it came from, for messages

  // "Kind/namespace/name" (or "Kind/name" when cluster-scoped): the store key.
  std::string key() const;
};

// One document's problems: `where` names it (source and, when known, Kind/ns/name); each
// error starts with its field path ("spec.rules[0].backendRefs[1].weight: ...").
struct ManifestError {
  std::string where;
  std::string object;  // the store key, when the document had kind and metadata.name
  std::string message;
  bool skipped = false;  // a warning for a document of a kind Sluice does not use
};

struct ParseResult {
  std::vector<Object> objects;        // the documents that validated
  std::vector<ManifestError> errors;  // every problem, per document
  std::vector<ManifestError> warnings;
};

// Parses one YAML or JSON text that may hold several documents (--- separated) or a v1 List.
// A bad document is reported and skipped; the others are returned. Never throws.
ParseResult parseManifests(std::string_view text, std::string_view source);

// One object already held as a node (the API-server source converts each JSON object it
// receives), validated exactly as a manifest document is. Never throws.
ParseResult parseManifestNode(const YAML::Node& doc, std::string_view source);

// Bounds on what a manifest may hold.
inline constexpr size_t kMaxManifestBytes = 32 * 1024 * 1024;  // per file

// RFC 1123 label / subdomain, Kubernetes qualified names, hostnames (with one leading "*.").
bool validDnsLabel(std::string_view s);
bool validDnsSubdomain(std::string_view s);
bool validHostname(std::string_view s, bool allow_wildcard);

}  // namespace sluice::config
