#include "config/manifest.h"

#include <algorithm>
#include <atomic>
#include <ctime>
#include <re2/re2.h>
#include <set>

#include <fmt/core.h>
#include <yaml-cpp/yaml.h>

#include "base/strings.h"

namespace sluice::config {

std::string_view kindName(Kind kind) {
  switch (kind) {
    case Kind::GatewayClass:
      return "GatewayClass";
    case Kind::Gateway:
      return "Gateway";
    case Kind::HTTPRoute:
      return "HTTPRoute";
    case Kind::ReferenceGrant:
      return "ReferenceGrant";
    case Kind::InferencePool:
      return "InferencePool";
    case Kind::InferenceObjective:
      return "InferenceObjective";
    case Kind::InferenceModelRewrite:
      return "InferenceModelRewrite";
    case Kind::InferenceModel:
      return "InferenceModel";
    case Kind::ModelRoute:
      return "ModelRoute";
    case Kind::ModelServer:
      return "ModelServer";
    case Kind::ExternalModelProvider:
      return "ExternalModelProvider";
    case Kind::Pod:
      return "Pod";
    case Kind::Service:
      return "Service";
    case Kind::Secret:
      return "Secret";
    case Kind::EndpointSlice:
      return "EndpointSlice";
    case Kind::Namespace:
      return "Namespace";
  }
  return "?";
}

std::string_view kindGroup(Kind kind) {
  switch (kind) {
    case Kind::GatewayClass:
    case Kind::Gateway:
    case Kind::HTTPRoute:
    case Kind::ReferenceGrant:
      return "gateway.networking.k8s.io";
    case Kind::InferencePool:
      return "inference.networking.k8s.io";
    case Kind::InferenceObjective:
    case Kind::InferenceModelRewrite:
    case Kind::InferenceModel:
      return "inference.networking.x-k8s.io";
    case Kind::ModelRoute:
    case Kind::ModelServer:
    case Kind::ExternalModelProvider:
      return "networking.serving.volcano.sh";
    case Kind::EndpointSlice:
      return "discovery.k8s.io";
    default:
      return "";
  }
}

std::string Object::key() const {
  if (meta.ns.empty()) {
    return fmt::format("{}/{}", kindName(kind), meta.name);
  }
  return fmt::format("{}/{}/{}", kindName(kind), meta.ns, meta.name);
}

bool LabelSelector::matches(const std::map<std::string, std::string>& labels) const {
  for (const auto& [k, v] : match_labels) {
    auto it = labels.find(k);
    if (it == labels.end() || it->second != v) {
      return false;
    }
  }
  for (const auto& e : match_expressions) {
    auto it = labels.find(e.key);
    bool in = it != labels.end() &&
              std::find(e.values.begin(), e.values.end(), it->second) != e.values.end();
    if ((e.op == "In" && !in) || (e.op == "NotIn" && in) ||
        (e.op == "Exists" && it == labels.end()) ||
        (e.op == "DoesNotExist" && it != labels.end())) {
      return false;
    }
  }
  return true;
}

bool validDnsLabel(std::string_view s) {
  if (s.empty() || s.size() > 63) {
    return false;
  }
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (!alnum && !(c == '-' && i > 0 && i + 1 < s.size())) {
      return false;
    }
  }
  return true;
}

bool validDnsSubdomain(std::string_view s) {
  if (s.empty() || s.size() > 253) {
    return false;
  }
  size_t start = 0;
  while (true) {
    size_t dot = s.find('.', start);
    if (!validDnsLabel(s.substr(start, dot == std::string_view::npos ? dot : dot - start))) {
      return false;
    }
    if (dot == std::string_view::npos) {
      return true;
    }
    start = dot + 1;
  }
}

bool validHostname(std::string_view s, bool allow_wildcard) {
  if (allow_wildcard && s.substr(0, 2) == "*.") {
    s.remove_prefix(2);
  }
  // An IP address is not a hostname in Gateway API.
  if (!s.empty() &&
      std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || c == '.'; })) {
    return false;
  }
  return validDnsSubdomain(s);
}

namespace {

// Label keys: an optional DNS-subdomain prefix and a name of up to 63 characters.
bool validQualifiedName(std::string_view s) {
  size_t slash = s.find('/');
  if (slash != std::string_view::npos) {
    if (!validDnsSubdomain(s.substr(0, slash))) {
      return false;
    }
    s = s.substr(slash + 1);
  }
  if (s.empty() || s.size() > 63) {
    return false;
  }
  auto alnum = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
  };
  if (!alnum(s.front()) || !alnum(s.back())) {
    return false;
  }
  return std::all_of(s.begin(), s.end(),
                     [&](char c) { return alnum(c) || c == '-' || c == '_' || c == '.'; });
}

bool validLabelValue(std::string_view s) {
  return s.empty() || validQualifiedName(s);
}

bool validHeaderName(std::string_view s) {
  if (s.empty() || s.size() > 256) {
    return false;
  }
  static constexpr std::string_view kTokenPunct = "!#$%&'*+-.^_`|~";
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           kTokenPunct.find(c) != std::string_view::npos;
  });
}

// RFC 3339 "2026-01-02T03:04:05Z" (fractions and offsets accepted) to unix seconds.
std::optional<int64_t> parseTimestamp(std::string_view s) {
  std::tm tm{};
  int y, mo, d, h, mi, sec;
  char tz[16] = {};
  std::string text(s);
  if (std::sscanf(text.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%15s", &y, &mo, &d, &h, &mi, &sec, tz) <
      6) {
    return std::nullopt;
  }
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60) {
    return std::nullopt;
  }
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = sec;
  int64_t t = timegm(&tm);
  std::string_view rest(tz);
  if (!rest.empty() && rest.front() == '.') {
    size_t i = 1;
    while (i < rest.size() && rest[i] >= '0' && rest[i] <= '9') {
      ++i;
    }
    rest.remove_prefix(i);
  }
  if (rest.size() == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':') {
    int oh = (rest[1] - '0') * 10 + (rest[2] - '0');
    int om = (rest[4] - '0') * 10 + (rest[5] - '0');
    int64_t off = oh * 3600 + om * 60;
    t += rest[0] == '+' ? -off : off;
  } else if (rest != "Z" && rest != "z" && !rest.empty()) {
    return std::nullopt;
  }
  return t;
}

// A YAML node with the path that reached it; every accessor reports problems under that path.
class Field {
 public:
  Field(YAML::Node node, std::string path, std::vector<std::string>& errors,
        std::vector<std::string>& warnings)
      : node_(std::move(node)), path_(std::move(path)), errors_(errors), warnings_(warnings) {}

  const std::string& path() const { return path_; }
  // yaml-cpp throws when a missing ("zombie") node is asked its type: check IsDefined first.
  explicit operator bool() const { return node_.IsDefined() && !node_.IsNull(); }
  bool isMap() const { return node_.IsDefined() && node_.IsMap(); }
  bool isSeq() const { return node_.IsDefined() && node_.IsSequence(); }
  bool isScalar() const { return node_.IsDefined() && node_.IsScalar(); }

  void error(const std::string& message) const { errors_.push_back(path_ + ": " + message); }
  void warn(const std::string& message) const { warnings_.push_back(path_ + ": " + message); }

  Field operator[](std::string_view key) const {
    std::string p = path_.empty() ? std::string(key) : path_ + "." + std::string(key);
    // Const lookup (it must not insert the key), and the copy constructor: yaml-cpp's
    // assignment operator would copy contents and throws for a missing node.
    const YAML::Node& parent = node_;
    return Field(isMap() ? parent[std::string(key)] : YAML::Node(), std::move(p), errors_,
                 warnings_);
  }
  Field at(size_t i) const {
    const YAML::Node& seq = node_;
    return Field(seq[i], fmt::format("{}[{}]", path_, i), errors_, warnings_);
  }
  size_t size() const { return isSeq() ? node_.size() : 0; }

  // A mapping whose keys are all known (unknown ones are warnings: the API server would prune
  // them, but they usually mean a typo).
  bool mapping(std::initializer_list<std::string_view> known) const {
    if (!*this) {
      return false;
    }
    if (!isMap()) {
      error("must be an object");
      return false;
    }
    for (const auto& kv : node_) {
      const std::string& k = kv.first.Scalar();
      if (std::find(known.begin(), known.end(), k) == known.end()) {
        (*this)[k].warn("unknown field (ignored)");
      }
    }
    return true;
  }
  // A sequence of at most `max` entries.
  bool list(size_t max, size_t min = 0) const {
    if (!*this) {
      if (min > 0) {
        error(fmt::format("must have at least {} entr{}", min, min == 1 ? "y" : "ies"));
      }
      return false;
    }
    if (!isSeq()) {
      error("must be a list");
      return false;
    }
    if (node_.size() > max) {
      error(fmt::format("must have at most {} entries, got {}", max, node_.size()));
      return false;
    }
    if (node_.size() < min) {
      error(fmt::format("must have at least {} entr{}", min, min == 1 ? "y" : "ies"));
      return false;
    }
    return true;
  }

  std::optional<std::string> str(size_t max_len = 253) const {
    if (!*this) {
      return std::nullopt;
    }
    if (!isScalar()) {
      error("must be a string");
      return std::nullopt;
    }
    if (node_.Scalar().size() > max_len) {
      error(fmt::format("must be at most {} characters", max_len));
      return std::nullopt;
    }
    return node_.Scalar();
  }
  std::string required(size_t max_len = 253) const {
    if (!*this) {
      error("is required");
      return {};
    }
    auto s = str(max_len);
    if (s && s->empty()) {
      error("must not be empty");
    }
    return s.value_or("");
  }
  std::optional<int64_t> integer(int64_t min, int64_t max) const {
    if (!*this) {
      return std::nullopt;
    }
    if (!isScalar()) {
      error(fmt::format("must be an integer in {}..{}", min, max));
      return std::nullopt;
    }
    std::string_view s = node_.Scalar();
    bool neg = !s.empty() && s.front() == '-';
    auto v = base::parseUint(neg ? s.substr(1) : s);
    if (!v || *v > static_cast<uint64_t>(INT64_MAX)) {
      error(fmt::format("must be an integer in {}..{}, got \"{}\"", min, max, s));
      return std::nullopt;
    }
    int64_t x = neg ? -static_cast<int64_t>(*v) : static_cast<int64_t>(*v);
    if (x < min || x > max) {
      error(fmt::format("must be {}..{}, got {}", min, max, x));
      return std::nullopt;
    }
    return x;
  }
  std::optional<bool> boolean() const {
    if (!*this) {
      return std::nullopt;
    }
    if (isScalar() && (node_.Scalar() == "true" || node_.Scalar() == "false")) {
      return node_.Scalar() == "true";
    }
    error("must be true or false");
    return std::nullopt;
  }
  std::string oneOf(std::initializer_list<std::string_view> values, std::string_view dflt) const {
    auto s = str();
    if (!s) {
      return std::string(dflt);
    }
    for (auto v : values) {
      if (v == *s) {
        return *s;
      }
    }
    std::string list;
    for (auto v : values) {
      list += list.empty() ? "" : ", ";
      list += v;
    }
    error(fmt::format("must be one of {}, got \"{}\"", list, *s));
    return std::string(dflt);
  }
  std::optional<std::chrono::milliseconds> duration() const {
    auto s = str();
    if (!s) {
      return std::nullopt;
    }
    // Gateway API durations: "1h", "10s", "500ms", "0s", combinations like "1m30s".
    auto v = base::parseDuration(*s);
    if (!v && (*s == "0" || *s == "0s")) {
      v = std::chrono::milliseconds(0);
    }
    if (!v || v->count() < 0) {
      error(fmt::format("must be a duration such as 500ms, 10s or 1m, got \"{}\"", *s));
      return std::nullopt;
    }
    return v;
  }
  std::map<std::string, std::string> stringMap(size_t max_entries, bool labels) const {
    std::map<std::string, std::string> out;
    if (!*this) {
      return out;
    }
    if (!isMap()) {
      error("must be an object of strings");
      return out;
    }
    if (node_.size() > max_entries) {
      error(fmt::format("must have at most {} entries", max_entries));
    }
    for (const auto& kv : node_) {
      const std::string& k = kv.first.Scalar();
      Field v = (*this)[k];
      if (!kv.second.IsScalar()) {
        v.error("must be a string");
        continue;
      }
      if (labels && !validQualifiedName(k)) {
        v.error("is not a valid label key");
      } else if (labels && !validLabelValue(kv.second.Scalar())) {
        v.error("is not a valid label value");
      }
      out[k] = kv.second.Scalar();
    }
    return out;
  }

  const YAML::Node& node() const { return node_; }

 private:
  YAML::Node node_;
  std::string path_;
  std::vector<std::string>& errors_;
  std::vector<std::string>& warnings_;
};

void checkName(const Field& f, const std::string& name) {
  if (!name.empty() && !validDnsSubdomain(name)) {
    f.error(fmt::format("\"{}\" is not a valid name (lowercase RFC 1123 subdomain)", name));
  }
}

void checkRegex(const Field& f, const std::string& pattern) {
  RE2 re(pattern, RE2::Quiet);
  if (!re.ok()) {
    f.error(fmt::format("invalid regular expression: {}", re.error()));
  }
}

ParentRef parseParentRef(const Field& f) {
  ParentRef r;
  f.mapping({"group", "kind", "namespace", "name", "sectionName", "port"});
  r.group = f["group"].str().value_or(r.group);
  r.kind = f["kind"].str().value_or(r.kind);
  r.ns = f["namespace"].str(63).value_or("");
  r.name = f["name"].required();
  checkName(f["name"], r.name);
  r.section_name = f["sectionName"].str().value_or("");
  if (auto p = f["port"].integer(1, 65535)) {
    r.port = static_cast<uint16_t>(*p);
  }
  return r;
}

std::vector<ParentRef> parseParentRefs(const Field& f) {
  std::vector<ParentRef> out;
  if (f.list(32)) {
    for (size_t i = 0; i < f.size(); ++i) {
      out.push_back(parseParentRef(f.at(i)));
    }
  }
  return out;
}

LabelSelector parseLabelSelector(const Field& f) {
  LabelSelector s;
  if (!f.mapping({"matchLabels", "matchExpressions"})) {
    return s;
  }
  s.match_labels = f["matchLabels"].stringMap(64, true);
  Field ex = f["matchExpressions"];
  if (ex.list(64)) {
    for (size_t i = 0; i < ex.size(); ++i) {
      Field e = ex.at(i);
      e.mapping({"key", "operator", "values"});
      LabelSelector::Expression x;
      x.key = e["key"].required();
      x.op = e["operator"].oneOf({"In", "NotIn", "Exists", "DoesNotExist"}, "");
      if (!e["operator"]) {
        e["operator"].error("is required");
      }
      Field vs = e["values"];
      if (vs.list(64)) {
        for (size_t j = 0; j < vs.size(); ++j) {
          x.values.push_back(vs.at(j).str(63).value_or(""));
        }
      }
      if ((x.op == "In" || x.op == "NotIn") && x.values.empty()) {
        e["values"].error("must not be empty for In and NotIn");
      }
      s.match_expressions.push_back(std::move(x));
    }
  }
  return s;
}

Gateway parseGateway(const Field& spec) {
  Gateway g;
  spec.mapping({"gatewayClassName", "listeners", "addresses", "infrastructure", "backendTLS",
                "allowedListeners"});
  g.gateway_class = spec["gatewayClassName"].required();
  Field ls = spec["listeners"];
  if (ls.list(64, 1)) {
    std::set<std::string> names;
    for (size_t i = 0; i < ls.size(); ++i) {
      Field l = ls.at(i);
      l.mapping({"name", "hostname", "port", "protocol", "tls", "allowedRoutes"});
      Listener out;
      out.name = l["name"].required();
      if (!out.name.empty() && !validDnsLabel(out.name) && !validDnsSubdomain(out.name)) {
        l["name"].error("must be a valid section name");
      }
      if (!names.insert(out.name).second) {
        l["name"].error(fmt::format("duplicate listener name \"{}\"", out.name));
      }
      if (auto h = l["hostname"].str()) {
        if (!validHostname(*h, true)) {
          l["hostname"].error(fmt::format("\"{}\" is not a valid hostname", *h));
        }
        out.hostname = *h;
      }
      if (auto p = l["port"].integer(1, 65535)) {
        out.port = static_cast<uint16_t>(*p);
      } else if (!l["port"]) {
        l["port"].error("is required");
      }
      out.protocol = l["protocol"].required();
      if (Field tls = l["tls"];
          tls.mapping({"mode", "certificateRefs", "options", "frontendValidation"})) {
        out.tls_mode = tls["mode"].oneOf({"Terminate", "Passthrough"}, "Terminate");
        Field refs = tls["certificateRefs"];
        if (refs.list(64)) {
          for (size_t j = 0; j < refs.size(); ++j) {
            Field r = refs.at(j);
            r.mapping({"group", "kind", "name", "namespace"});
            SecretRef ref;
            ref.group = r["group"].str().value_or("");
            ref.kind = r["kind"].str().value_or("Secret");
            ref.name = r["name"].required();
            ref.ns = r["namespace"].str(63).value_or("");
            out.certificate_refs.push_back(std::move(ref));
          }
        }
      }
      if (out.protocol == "HTTPS" && out.tls_mode == "Terminate" && out.certificate_refs.empty()) {
        l["tls.certificateRefs"].error("is required for an HTTPS listener in Terminate mode");
      }
      if (Field ar = l["allowedRoutes"]; ar.mapping({"namespaces", "kinds"})) {
        if (Field ns = ar["namespaces"]; ns.mapping({"from", "selector"})) {
          out.routes_from = ns["from"].oneOf({"Same", "All", "Selector", "None"}, "Same");
          if (out.routes_from == "Selector") {
            if (!ns["selector"]) {
              ns["selector"].error("is required when from is Selector");
            }
            out.routes_selector = parseLabelSelector(ns["selector"]);
          }
        }
        Field kinds = ar["kinds"];
        if (kinds.list(8)) {
          for (size_t j = 0; j < kinds.size(); ++j) {
            Field k = kinds.at(j);
            k.mapping({"group", "kind"});
            Listener::RouteKind rk;
            rk.group = k["group"].str().value_or(rk.group);
            rk.kind = k["kind"].required();
            out.route_kinds.push_back(std::move(rk));
          }
        }
      }
      g.listeners.push_back(std::move(out));
    }
  }
  return g;
}

StringMatch::Type matchType(const Field& f, bool allow_prefix) {
  std::string t = allow_prefix ? f.oneOf({"Exact", "Prefix", "RegularExpression"}, "Exact")
                               : f.oneOf({"Exact", "RegularExpression"}, "Exact");
  if (t == "Prefix")
    return StringMatch::Type::Prefix;
  if (t == "RegularExpression")
    return StringMatch::Type::RegularExpression;
  return StringMatch::Type::Exact;
}

std::vector<HttpRouteMatch::Named> parseNamedMatches(const Field& f, bool header) {
  std::vector<HttpRouteMatch::Named> out;
  if (!f.list(16)) {
    return out;
  }
  std::set<std::string> seen;
  for (size_t i = 0; i < f.size(); ++i) {
    Field m = f.at(i);
    m.mapping({"type", "name", "value"});
    HttpRouteMatch::Named n;
    n.type = matchType(m["type"], false);
    n.name = m["name"].required(256);
    if (header && !n.name.empty() && !validHeaderName(n.name)) {
      m["name"].error(fmt::format("\"{}\" is not a valid header name", n.name));
    }
    n.value = m["value"].str(4096).value_or("");
    if (!m["value"]) {
      m["value"].error("is required");
    }
    if (n.type == StringMatch::Type::RegularExpression) {
      checkRegex(m["value"], n.value);
    }
    std::string key = header ? base::toLower(n.name) : n.name;
    if (!seen.insert(key).second) {
      m["name"].error(fmt::format("duplicate match on \"{}\"", n.name));
    }
    if (header) {
      n.name = key;
    }
    out.push_back(std::move(n));
  }
  return out;
}

HeaderModifier parseHeaderModifier(const Field& f) {
  HeaderModifier h;
  if (!f.mapping({"set", "add", "remove"})) {
    f.error("is required for this filter type");
    return h;
  }
  auto pairs = [&](const Field& list, std::vector<std::pair<std::string, std::string>>& out) {
    if (!list.list(16)) {
      return;
    }
    for (size_t i = 0; i < list.size(); ++i) {
      Field e = list.at(i);
      e.mapping({"name", "value"});
      std::string name = e["name"].required(256);
      if (!name.empty() && !validHeaderName(name)) {
        e["name"].error(fmt::format("\"{}\" is not a valid header name", name));
      }
      std::string value = e["value"].str(4096).value_or("");
      if (value.find_first_of("\r\n") != std::string::npos) {
        e["value"].error("must not contain line breaks");
      }
      out.emplace_back(std::move(name), std::move(value));
    }
  };
  pairs(f["set"], h.set);
  pairs(f["add"], h.add);
  Field rm = f["remove"];
  if (rm.list(16)) {
    for (size_t i = 0; i < rm.size(); ++i) {
      h.remove.push_back(rm.at(i).required(256));
    }
  }
  return h;
}

BackendRef parseBackendRef(const Field& f, bool with_weight) {
  BackendRef b;
  if (with_weight) {
    f.mapping({"group", "kind", "name", "namespace", "port", "weight", "filters"});
  } else {
    f.mapping({"group", "kind", "name", "namespace", "port"});
  }
  b.group = f["group"].str().value_or("");
  b.kind = f["kind"].str().value_or("Service");
  b.name = f["name"].required();
  checkName(f["name"], b.name);
  b.ns = f["namespace"].str(63).value_or("");
  if (auto p = f["port"].integer(1, 65535)) {
    b.port = static_cast<uint16_t>(*p);
  }
  if (with_weight) {
    if (auto w = f["weight"].integer(0, 1000000)) {
      b.weight = static_cast<uint32_t>(*w);
    }
  }
  if (b.group.empty() && b.kind == "Service" && !b.port) {
    f["port"].error("is required when the backend is a Service");
  }
  return b;
}

HttpPathModifier parsePathModifier(const Field& f) {
  HttpPathModifier p;
  f.mapping({"type", "replaceFullPath", "replacePrefixMatch"});
  std::string t = f["type"].oneOf({"ReplaceFullPath", "ReplacePrefixMatch"}, "");
  if (!f["type"]) {
    f["type"].error("is required");
  }
  if (t == "ReplacePrefixMatch") {
    p.type = HttpPathModifier::Type::ReplacePrefixMatch;
    p.value = f["replacePrefixMatch"].str(1024).value_or("");
    if (!f["replacePrefixMatch"]) {
      f["replacePrefixMatch"].error("is required when type is ReplacePrefixMatch");
    }
  } else {
    p.value = f["replaceFullPath"].str(1024).value_or("");
    if (!f["replaceFullPath"]) {
      f["replaceFullPath"].error("is required when type is ReplaceFullPath");
    }
  }
  if (!p.value.empty() && p.value.front() != '/') {
    f.error("the replacement path must start with '/'");
  }
  return p;
}

HttpRouteFilter parseFilter(const Field& f) {
  HttpRouteFilter out;
  f.mapping({"type", "requestHeaderModifier", "responseHeaderModifier", "urlRewrite",
             "requestRedirect", "requestMirror", "extensionRef", "cors", "externalAuth"});
  std::string t = f["type"].required();
  if (t == "RequestHeaderModifier") {
    out.type = HttpRouteFilter::Type::RequestHeaderModifier;
    out.headers = parseHeaderModifier(f["requestHeaderModifier"]);
  } else if (t == "ResponseHeaderModifier") {
    out.type = HttpRouteFilter::Type::ResponseHeaderModifier;
    out.headers = parseHeaderModifier(f["responseHeaderModifier"]);
  } else if (t == "URLRewrite") {
    out.type = HttpRouteFilter::Type::URLRewrite;
    Field u = f["urlRewrite"];
    if (!u.mapping({"hostname", "path"})) {
      u.error("is required when type is URLRewrite");
    }
    if (auto h = u["hostname"].str()) {
      if (!validHostname(*h, false)) {
        u["hostname"].error(fmt::format("\"{}\" is not a valid hostname", *h));
      }
      out.hostname = *h;
    }
    if (u["path"]) {
      out.path = parsePathModifier(u["path"]);
    }
  } else if (t == "RequestRedirect") {
    out.type = HttpRouteFilter::Type::RequestRedirect;
    Field r = f["requestRedirect"];
    if (!r.mapping({"scheme", "hostname", "path", "port", "statusCode"})) {
      r.error("is required when type is RequestRedirect");
    }
    if (r["scheme"]) {
      out.scheme = r["scheme"].oneOf({"http", "https"}, "http");
    }
    if (auto h = r["hostname"].str()) {
      if (!validHostname(*h, false)) {
        r["hostname"].error(fmt::format("\"{}\" is not a valid hostname", *h));
      }
      out.hostname = *h;
    }
    if (r["path"]) {
      out.path = parsePathModifier(r["path"]);
    }
    if (auto p = r["port"].integer(1, 65535)) {
      out.port = static_cast<uint16_t>(*p);
    }
    if (auto s = r["statusCode"].integer(301, 302)) {
      out.status_code = static_cast<int>(*s);
    }
  } else if (t == "RequestMirror") {
    out.type = HttpRouteFilter::Type::RequestMirror;
    Field m = f["requestMirror"];
    if (!m.mapping({"backendRef", "percent", "fraction"})) {
      m.error("is required when type is RequestMirror");
    }
    out.mirror = parseBackendRef(m["backendRef"], false);
    if (!m["backendRef"]) {
      m["backendRef"].error("is required");
    }
    if (auto p = m["percent"].integer(0, 100)) {
      out.mirror_fraction = static_cast<double>(*p) / 100.0;
    }
    if (Field fr = m["fraction"]; fr.mapping({"numerator", "denominator"})) {
      auto num = fr["numerator"].integer(0, 1000000000);
      auto den = fr["denominator"].integer(1, 1000000000).value_or(100);
      if (num) {
        if (*num > den) {
          fr["numerator"].error("must not exceed the denominator");
        }
        out.mirror_fraction = static_cast<double>(*num) / static_cast<double>(den);
      }
      if (m["percent"]) {
        m.error("percent and fraction are mutually exclusive");
      }
    }
  } else if (!t.empty()) {
    f["type"].error(fmt::format(
        "filter type \"{}\" is not supported (RequestHeaderModifier, ResponseHeaderModifier, "
        "URLRewrite, RequestRedirect, RequestMirror)",
        t));
  }
  return out;
}

HTTPRoute parseHttpRoute(const Field& spec) {
  HTTPRoute r;
  spec.mapping({"parentRefs", "hostnames", "rules", "useDefaultGateways"});
  r.parent_refs = parseParentRefs(spec["parentRefs"]);
  Field hs = spec["hostnames"];
  if (hs.list(16)) {
    for (size_t i = 0; i < hs.size(); ++i) {
      std::string h = hs.at(i).required();
      if (!h.empty() && !validHostname(h, true)) {
        hs.at(i).error(fmt::format("\"{}\" is not a valid hostname", h));
      }
      r.hostnames.push_back(base::toLower(h));
    }
  }
  Field rules = spec["rules"];
  size_t total_matches = 0;
  if (rules.list(16)) {
    for (size_t i = 0; i < rules.size(); ++i) {
      Field rf = rules.at(i);
      rf.mapping(
          {"name", "matches", "filters", "backendRefs", "timeouts", "retry", "sessionPersistence"});
      HttpRouteRule rule;
      rule.name = rf["name"].str(253).value_or("");
      Field ms = rf["matches"];
      if (ms.list(64)) {
        for (size_t j = 0; j < ms.size(); ++j) {
          Field m = ms.at(j);
          m.mapping({"path", "headers", "queryParams", "method"});
          HttpRouteMatch match;
          if (Field p = m["path"]; p.mapping({"type", "value"})) {
            std::string t =
                p["type"].oneOf({"Exact", "PathPrefix", "RegularExpression"}, "PathPrefix");
            match.path.type = t == "Exact"               ? PathMatch::Type::Exact
                              : t == "RegularExpression" ? PathMatch::Type::RegularExpression
                                                         : PathMatch::Type::PathPrefix;
            match.path.value = p["value"].str(1024).value_or("/");
            if (match.path.type == PathMatch::Type::RegularExpression) {
              checkRegex(p["value"], match.path.value);
            } else if (match.path.value.empty() || match.path.value.front() != '/') {
              p["value"].error("must start with '/'");
            } else if (match.path.value.find("//") != std::string::npos ||
                       match.path.value.find("/./") != std::string::npos ||
                       match.path.value.find("/../") != std::string::npos ||
                       match.path.value.find('?') != std::string::npos ||
                       match.path.value.find('#') != std::string::npos) {
              p["value"].error("must be a normalised absolute path without query or fragment");
            }
          }
          match.headers = parseNamedMatches(m["headers"], true);
          match.query = parseNamedMatches(m["queryParams"], false);
          if (m["method"]) {
            match.method = m["method"].oneOf(
                {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"},
                "");
          }
          rule.matches.push_back(std::move(match));
        }
        total_matches += ms.size();
      }
      Field fs = rf["filters"];
      if (fs.list(16)) {
        std::set<int> types;
        for (size_t j = 0; j < fs.size(); ++j) {
          auto flt = parseFilter(fs.at(j));
          if (!types.insert(static_cast<int>(flt.type)).second &&
              flt.type != HttpRouteFilter::Type::RequestMirror) {
            fs.at(j)["type"].error("each filter type may appear once per rule");
          }
          rule.filters.push_back(std::move(flt));
        }
        bool rewrite = types.count(static_cast<int>(HttpRouteFilter::Type::URLRewrite)) > 0;
        bool redirect = types.count(static_cast<int>(HttpRouteFilter::Type::RequestRedirect)) > 0;
        if (rewrite && redirect) {
          fs.error("URLRewrite and RequestRedirect cannot be used together");
        }
        for (const auto& flt : rule.filters) {
          if (flt.path && flt.path->type == HttpPathModifier::Type::ReplacePrefixMatch) {
            bool ok = rule.matches.size() == 1 &&
                      rule.matches[0].path.type == PathMatch::Type::PathPrefix;
            if (!ok) {
              fs.error("ReplacePrefixMatch needs exactly one match, of type PathPrefix");
            }
          }
        }
      }
      Field bs = rf["backendRefs"];
      if (bs.list(16)) {
        for (size_t j = 0; j < bs.size(); ++j) {
          rule.backend_refs.push_back(parseBackendRef(bs.at(j), true));
        }
      }
      if (Field t = rf["timeouts"]; t.mapping({"request", "backendRequest"})) {
        if (auto d = t["request"].duration()) {
          rule.request_timeout = *d;
        }
        if (auto d = t["backendRequest"].duration()) {
          rule.backend_timeout = *d;
        }
        if (rule.request_timeout.count() > 0 && rule.backend_timeout > rule.request_timeout) {
          t["backendRequest"].error("must not exceed timeouts.request");
        }
      }
      if (Field rt = rf["retry"]; rt.mapping({"codes", "attempts", "backoff"})) {
        HttpRouteRule::Retry retry;
        Field codes = rt["codes"];
        if (codes.list(16)) {
          for (size_t j = 0; j < codes.size(); ++j) {
            if (auto c = codes.at(j).integer(400, 599)) {
              retry.codes.push_back(static_cast<int>(*c));
            }
          }
        }
        if (auto a = rt["attempts"].integer(0, 100)) {
          retry.attempts = static_cast<uint32_t>(*a);
        }
        if (auto d = rt["backoff"].duration()) {
          retry.backoff = *d;
        }
        rule.retry = std::move(retry);
      }
      r.rules.push_back(std::move(rule));
    }
  }
  if (total_matches > 128) {
    rules.error(
        fmt::format("must have at most 128 matches across all rules, got {}", total_matches));
  }
  return r;
}

ReferenceGrant parseReferenceGrant(const Field& spec) {
  ReferenceGrant g;
  spec.mapping({"from", "to"});
  Field from = spec["from"];
  if (from.list(16, 1)) {
    for (size_t i = 0; i < from.size(); ++i) {
      Field f = from.at(i);
      f.mapping({"group", "kind", "namespace"});
      ReferenceGrant::From x;
      x.group = f["group"].str().value_or("");
      x.kind = f["kind"].required();
      x.ns = f["namespace"].required(63);
      g.from.push_back(std::move(x));
    }
  }
  Field to = spec["to"];
  if (to.list(16, 1)) {
    for (size_t i = 0; i < to.size(); ++i) {
      Field t = to.at(i);
      t.mapping({"group", "kind", "name"});
      ReferenceGrant::To x;
      x.group = t["group"].str().value_or("");
      x.kind = t["kind"].required();
      x.name = t["name"].str().value_or("");
      g.to.push_back(std::move(x));
    }
  }
  return g;
}

std::map<std::string, std::string> poolSelector(const Field& f) {
  auto labels = f.stringMap(64, true);
  if (f && labels.empty() && f.isMap()) {
    f.error("must have at least one label");
  }
  return labels;
}

InferencePool parseInferencePool(const Field& spec, bool v1alpha2) {
  InferencePool p;
  p.from_v1alpha2 = v1alpha2;
  if (v1alpha2) {
    spec.mapping({"selector", "targetPortNumber", "extensionRef"});
    p.selector = poolSelector(spec["selector"]);
    if (!spec["selector"]) {
      spec["selector"].error("is required");
    }
    if (auto port = spec["targetPortNumber"].integer(1, 65535)) {
      p.target_ports.push_back(static_cast<uint16_t>(*port));
    } else if (!spec["targetPortNumber"]) {
      spec["targetPortNumber"].error("is required");
    }
    if (Field e = spec["extensionRef"];
        e.mapping({"group", "kind", "name", "portNumber", "failureMode"})) {
      InferencePool::PickerRef ref;
      ref.group = e["group"].str().value_or("");
      ref.kind = e["kind"].str().value_or("Service");
      ref.name = e["name"].required();
      ref.port = static_cast<uint16_t>(e["portNumber"].integer(1, 65535).value_or(9002));
      ref.failure_mode = e["failureMode"].oneOf({"FailOpen", "FailClose"}, "FailClose");
      p.endpoint_picker = std::move(ref);
    }
    return p;
  }
  spec.mapping({"selector", "targetPorts", "appProtocol", "endpointPickerRef"});
  Field sel = spec["selector"];
  if (sel.mapping({"matchLabels"})) {
    p.selector = poolSelector(sel["matchLabels"]);
    if (!sel["matchLabels"]) {
      sel["matchLabels"].error("is required");
    }
  } else if (!sel) {
    sel.error("is required");
  }
  Field ports = spec["targetPorts"];
  if (ports.list(8, 1)) {
    for (size_t i = 0; i < ports.size(); ++i) {
      Field pf = ports.at(i);
      pf.mapping({"number"});
      if (auto n = pf["number"].integer(1, 65535)) {
        auto port = static_cast<uint16_t>(*n);
        if (std::find(p.target_ports.begin(), p.target_ports.end(), port) != p.target_ports.end()) {
          pf["number"].error("port number must be unique");
        }
        p.target_ports.push_back(port);
      } else if (!pf["number"]) {
        pf["number"].error("is required");
      }
    }
  }
  p.app_protocol = spec["appProtocol"].oneOf({"http", "kubernetes.io/h2c"}, "http");
  if (Field e = spec["endpointPickerRef"];
      e.mapping({"group", "kind", "name", "port", "failureMode"})) {
    InferencePool::PickerRef ref;
    ref.group = e["group"].str().value_or("");
    ref.kind = e["kind"].str().value_or("Service");
    ref.name = e["name"].required();
    checkName(e["name"], ref.name);
    if (Field port = e["port"]; port.mapping({"number"})) {
      if (auto n = port["number"].integer(1, 65535)) {
        ref.port = static_cast<uint16_t>(*n);
      }
    }
    if (ref.kind == "Service" && ref.group.empty() && !ref.port) {
      e["port"].error("is required when kind is Service");
    }
    ref.failure_mode = e["failureMode"].oneOf({"FailOpen", "FailClose"}, "FailClose");
    p.endpoint_picker = std::move(ref);
  }
  return p;
}

PoolRef parsePoolRef(const Field& f, std::string_view default_group) {
  PoolRef r;
  r.group = std::string(default_group);
  if (!f.mapping({"group", "kind", "name"})) {
    f.error("is required");
    return r;
  }
  r.group = f["group"].str().value_or(r.group);
  r.kind = f["kind"].str().value_or(r.kind);
  r.name = f["name"].required();
  return r;
}

std::vector<WeightedModel> parseWeightedModels(const Field& f, std::string_view name_key,
                                               size_t max) {
  std::vector<WeightedModel> out;
  if (!f.list(max)) {
    return out;
  }
  size_t with_weight = 0;
  for (size_t i = 0; i < f.size(); ++i) {
    Field t = f.at(i);
    t.mapping({name_key, "weight"});
    WeightedModel m;
    m.model = t[name_key].required(256);
    if (auto w = t["weight"].integer(0, 1000000)) {
      m.weight = static_cast<uint32_t>(*w);
      ++with_weight;
    }
    out.push_back(std::move(m));
  }
  if (with_weight != 0 && with_weight != out.size()) {
    f.error("weights must be set on all targets or on none");
  }
  return out;
}

InferenceModelRewrite parseRewrite(const Field& spec) {
  InferenceModelRewrite r;
  spec.mapping({"poolRef", "rules"});
  r.pool_ref = parsePoolRef(spec["poolRef"], "inference.networking.k8s.io");
  Field rules = spec["rules"];
  if (rules.list(16, 1)) {
    for (size_t i = 0; i < rules.size(); ++i) {
      Field rf = rules.at(i);
      rf.mapping({"matches", "targets"});
      InferenceModelRewrite::Rule rule;
      Field ms = rf["matches"];
      if (ms.list(16)) {
        for (size_t j = 0; j < ms.size(); ++j) {
          Field m = ms.at(j);
          m.mapping({"model"});
          Field model = m["model"];
          if (model.mapping({"type", "value"})) {
            model["type"].oneOf({"Exact"}, "Exact");
            rule.models.push_back(model["value"].required(256));
          } else if (!model) {
            model.error("is required");
          }
        }
      }
      rule.targets = parseWeightedModels(rf["targets"], "modelRewrite", 16);
      if (rule.targets.empty()) {
        rf["targets"].error("must have at least 1 entry");
      }
      r.rules.push_back(std::move(rule));
    }
  }
  return r;
}

ModelRoute parseModelRoute(const Field& spec) {
  ModelRoute r;
  spec.mapping({"modelName", "loraAdapters", "parentRefs", "rules", "rateLimit"});
  r.model_name = spec["modelName"].str(256).value_or("");
  Field loras = spec["loraAdapters"];
  if (loras.list(10)) {
    for (size_t i = 0; i < loras.size(); ++i) {
      r.lora_adapters.push_back(loras.at(i).required(256));
    }
  }
  if (r.model_name.empty() && r.lora_adapters.empty()) {
    spec.error("at least one of modelName and loraAdapters is required");
  }
  r.parent_refs = parseParentRefs(spec["parentRefs"]);
  Field rules = spec["rules"];
  if (rules.list(16, 1)) {
    for (size_t i = 0; i < rules.size(); ++i) {
      Field rf = rules.at(i);
      rf.mapping({"name", "modelMatch", "targetModels"});
      ModelRoute::Rule rule;
      rule.name = rf["name"].str().value_or("");
      if (Field mm = rf["modelMatch"]; mm.mapping({"headers", "uri", "body"})) {
        auto string_match = [&](const Field& f) {
          StringMatch s;
          f.mapping({"exact", "prefix", "regex"});
          int set = 0;
          if (auto v = f["exact"].str(4096)) {
            s = {StringMatch::Type::Exact, *v};
            ++set;
          }
          if (auto v = f["prefix"].str(4096)) {
            s = {StringMatch::Type::Prefix, *v};
            ++set;
          }
          if (auto v = f["regex"].str(4096)) {
            s = {StringMatch::Type::RegularExpression, *v};
            checkRegex(f["regex"], *v);
            ++set;
          }
          if (set != 1) {
            f.error("exactly one of exact, prefix and regex must be set");
          }
          return s;
        };
        if (Field hs = mm["headers"]; hs) {
          if (!hs.isMap()) {
            hs.error("must be an object of header name to match");
          } else {
            for (const auto& kv : hs.node()) {
              const std::string& name = kv.first.Scalar();
              if (!validHeaderName(name)) {
                hs[name].error("is not a valid header name");
              }
              rule.headers.emplace_back(base::toLower(name), string_match(hs[name]));
            }
          }
        }
        if (mm["uri"]) {
          rule.uri = string_match(mm["uri"]);
        }
        if (Field body = mm["body"]; body.mapping({"model"})) {
          rule.body_model = body["model"].str(256);
        }
      }
      Field ts = rf["targetModels"];
      size_t weighted = 0;
      uint64_t total = 0;
      if (ts.list(16, 1)) {
        for (size_t j = 0; j < ts.size(); ++j) {
          Field t = ts.at(j);
          t.mapping({"modelServerName", "externalModelProviderName", "weight"});
          ModelRoute::Target target;
          target.model_server = t["modelServerName"].str().value_or("");
          target.external_provider = t["externalModelProviderName"].str().value_or("");
          if (target.model_server.empty() == target.external_provider.empty()) {
            t.error("exactly one of modelServerName and externalModelProviderName must be set");
          }
          if (!target.external_provider.empty() && !r.lora_adapters.empty()) {
            t["externalModelProviderName"].error(
                "a route with loraAdapters may only target ModelServers");
          }
          if (auto w = t["weight"].integer(0, 100)) {
            target.weight = static_cast<uint32_t>(*w);
            total += *w;
            ++weighted;
          }
          rule.targets.push_back(std::move(target));
        }
        if (weighted != 0 && weighted != rule.targets.size()) {
          ts.error("weights must be set on all targets or on none");
        } else if (weighted != 0 && total == 0) {
          ts.error("the weights must not all be 0");
        }
      }
      r.rules.push_back(std::move(rule));
    }
  }
  if (Field rl = spec["rateLimit"];
      rl.mapping({"inputTokensPerUnit", "outputTokensPerUnit", "unit", "global"})) {
    ModelRoute::RateLimit lim;
    lim.input_tokens_per_unit =
        static_cast<uint64_t>(rl["inputTokensPerUnit"].integer(1, INT64_MAX).value_or(0));
    lim.output_tokens_per_unit =
        static_cast<uint64_t>(rl["outputTokensPerUnit"].integer(1, INT64_MAX).value_or(0));
    lim.unit = rl["unit"].oneOf({"second", "minute", "hour", "day", "month"}, "second");
    if (Field g = rl["global"]; g.mapping({"redis"})) {
      if (Field redis = g["redis"]; redis.mapping({"address"})) {
        lim.redis_address = redis["address"].required();
      }
    }
    r.rate_limit = std::move(lim);
  }
  return r;
}

ModelServer parseModelServer(const Field& spec) {
  ModelServer s;
  spec.mapping({"model", "inferenceEngine", "workloadSelector", "workloadPort", "trafficPolicy",
                "kvConnector"});
  s.model = spec["model"].str(256).value_or("");
  s.inference_engine = spec["inferenceEngine"].oneOf({"vLLM", "SGLang"}, "vLLM");
  if (!spec["inferenceEngine"]) {
    spec["inferenceEngine"].error("is required (vLLM or SGLang)");
  }
  Field ws = spec["workloadSelector"];
  if (ws.mapping({"matchLabels", "pdGroup"})) {
    s.selector = ws["matchLabels"].stringMap(64, true);
    if (Field pd = ws["pdGroup"]; pd.mapping({"groupKey", "prefillLabels", "decodeLabels"})) {
      ModelServer::PdGroup g;
      g.group_key = pd["groupKey"].required();
      g.prefill_labels = pd["prefillLabels"].stringMap(64, true);
      g.decode_labels = pd["decodeLabels"].stringMap(64, true);
      if (g.prefill_labels.empty()) {
        pd["prefillLabels"].error("must have at least one label");
      }
      if (g.decode_labels.empty()) {
        pd["decodeLabels"].error("must have at least one label");
      }
      s.pd_group = std::move(g);
    }
    if (s.selector.empty() && !s.pd_group) {
      ws["matchLabels"].error("must have at least one label");
    }
  } else if (!ws) {
    ws.error("is required");
  }
  Field wp = spec["workloadPort"];
  if (wp.mapping({"port", "protocol"})) {
    if (auto p = wp["port"].integer(1, 65535)) {
      s.port = static_cast<uint16_t>(*p);
    } else if (!wp["port"]) {
      wp["port"].error("is required");
    }
    s.protocol = wp["protocol"].oneOf({"http", "https"}, "http");
  } else if (!wp) {
    wp.error("is required");
  }
  if (Field tp = spec["trafficPolicy"]; tp.mapping({"timeout", "retry"})) {
    if (auto d = tp["timeout"].duration()) {
      s.timeout = *d;
    }
    if (Field rt = tp["retry"]; rt.mapping({"attempts", "retryInterval"})) {
      if (auto a = rt["attempts"].integer(0, 100)) {
        s.retry_attempts = static_cast<uint32_t>(*a);
      }
      if (auto d = rt["retryInterval"].duration()) {
        s.retry_interval = *d;
      }
    }
  }
  if (Field kv = spec["kvConnector"]; kv.mapping({"type"})) {
    s.kv_connector = kv["type"].oneOf({"http", "lmcache", "nixl", "mooncake"}, "http");
  }
  return s;
}

ExternalModelProvider parseProvider(const Field& spec) {
  ExternalModelProvider p;
  spec.mapping({"providerType", "model", "baseURL", "insecureSkipVerify", "auth", "headers"});
  p.provider_type = spec["providerType"].oneOf({"OpenAI", "Anthropic"}, "OpenAI");
  p.model = spec["model"].str(256).value_or("");
  p.base_url = spec["baseURL"].required(2048);
  if (!p.base_url.empty() && p.base_url.substr(0, 8) != "https://") {
    spec["baseURL"].error("must be an https:// URL");
  }
  p.insecure_skip_verify = spec["insecureSkipVerify"].boolean().value_or(false);
  if (Field a = spec["auth"]; a.mapping({"scheme", "secretRef"})) {
    p.auth_scheme = a["scheme"].oneOf({"Bearer", "APIKey"}, "Bearer");
    if (Field s = a["secretRef"]; s.mapping({"name", "key"})) {
      p.secret_name = s["name"].required();
      p.secret_key = s["key"].required();
    } else {
      a["secretRef"].error("is required");
    }
  }
  p.headers = spec["headers"].stringMap(32, false);
  static const std::set<std::string> kForbidden = {
      "authorization", "x-api-key",      "proxy-authorization", "connection",
      "host",          "content-length", "transfer-encoding",   "te",
      "upgrade",       "keep-alive"};
  for (const auto& [k, v] : p.headers) {
    if (kForbidden.count(base::toLower(k)) > 0) {
      spec["headers"][k].error("credential and hop-by-hop headers cannot be set here");
    }
  }
  return p;
}

Pod parsePod(const Field& obj) {
  Pod p;
  Field status = obj["status"];
  p.ip = status["podIP"].str(64).value_or("");
  bool running = status["phase"].str().value_or("Running") == "Running";
  bool ready = false;
  bool has_ready = false;
  Field conds = status["conditions"];
  if (conds.isSeq()) {
    for (size_t i = 0; i < conds.size(); ++i) {
      Field c = conds.at(i);
      if (c["type"].str().value_or("") == "Ready") {
        has_ready = true;
        ready = c["status"].str().value_or("") == "True";
      }
    }
  }
  // A manifest that states no conditions is taken as ready once it has an IP (hand-written
  // manifests for processes on this machine); a stated Ready condition always decides.
  p.ready = running && !p.ip.empty() && (has_ready ? ready : true);
  if (!p.ip.empty() && !base::isIpLiteral(p.ip)) {
    status["podIP"].error(fmt::format("\"{}\" is not an IP address", p.ip));
  }
  Field containers = obj["spec"]["containers"];
  if (containers.isSeq()) {
    for (size_t i = 0; i < containers.size(); ++i) {
      Field ports = containers.at(i)["ports"];
      if (!ports.isSeq()) {
        continue;
      }
      for (size_t j = 0; j < ports.size(); ++j) {
        Field pt = ports.at(j);
        auto name = pt["name"].str(15);
        auto n = pt["containerPort"].integer(1, 65535);
        if (name && n) {
          p.named_ports[*name] = static_cast<uint16_t>(*n);
        }
      }
    }
  }
  return p;
}

Service parseService(const Field& obj) {
  Service s;
  Field spec = obj["spec"];
  s.type = spec["type"].str().value_or("ClusterIP");
  s.selector = spec["selector"].stringMap(64, true);
  Field ports = spec["ports"];
  if (ports.isSeq()) {
    for (size_t i = 0; i < ports.size(); ++i) {
      Field pf = ports.at(i);
      Service::Port port;
      port.name = pf["name"].str(63).value_or("");
      if (auto n = pf["port"].integer(1, 65535)) {
        port.port = static_cast<uint16_t>(*n);
      } else if (!pf["port"]) {
        pf["port"].error("is required");
      }
      if (Field tp = pf["targetPort"]; tp) {
        auto text = tp.str(63).value_or("");
        if (auto v = base::parseUint(text); v && *v >= 1 && *v <= 65535) {
          port.target_port = static_cast<uint16_t>(*v);
        } else {
          port.target_port_name = text;
        }
      } else {
        port.target_port = port.port;
      }
      port.app_protocol = pf["appProtocol"].str().value_or("");
      s.ports.push_back(std::move(port));
    }
  }
  return s;
}

Secret parseSecret(const Field& obj) {
  Secret s;
  Field data = obj["data"];
  for (const auto& [k, v] : data.stringMap(1024, false)) {
    auto decoded = base::base64Decode(v, true);
    if (!decoded) {
      data[k].error("is not valid base64");
      continue;
    }
    s.data[k] = std::move(*decoded);
  }
  for (const auto& [k, v] : obj["stringData"].stringMap(1024, false)) {
    s.data[k] = v;
  }
  return s;
}

EndpointSlice parseEndpointSlice(const Field& obj) {
  EndpointSlice es;
  es.service = obj["metadata"]["labels"]["kubernetes.io/service-name"].str(63).value_or("");
  es.address_type = obj["addressType"].oneOf({"IPv4", "IPv6", "FQDN"}, "IPv4");
  Field ports = obj["ports"];
  for (size_t i = 0; ports.isSeq() && i < ports.size(); ++i) {
    Field pf = ports.at(i);
    EndpointSlice::Port port;
    port.name = pf["name"].str(63).value_or("");
    port.port = static_cast<uint16_t>(pf["port"].integer(1, 65535).value_or(0));
    es.ports.push_back(std::move(port));
  }
  Field eps = obj["endpoints"];
  for (size_t i = 0; eps.isSeq() && i < eps.size(); ++i) {
    Field ef = eps.at(i);
    EndpointSlice::Endpoint ep;
    Field addrs = ef["addresses"];
    for (size_t j = 0; addrs.isSeq() && j < addrs.size(); ++j) {
      if (auto a = addrs.at(j).str(253)) {
        ep.addresses.push_back(*a);
      }
    }
    ep.ready = ef["conditions"]["ready"].str().value_or("true") != "false";
    es.endpoints.push_back(std::move(ep));
  }
  return es;
}

struct KindInfo {
  std::string_view api_version;
  std::string_view kind;
  Kind value;
  bool namespaced;
};

constexpr KindInfo kKinds[] = {
    {"gateway.networking.k8s.io/v1", "GatewayClass", Kind::GatewayClass, false},
    {"gateway.networking.k8s.io/v1beta1", "GatewayClass", Kind::GatewayClass, false},
    {"gateway.networking.k8s.io/v1", "Gateway", Kind::Gateway, true},
    {"gateway.networking.k8s.io/v1beta1", "Gateway", Kind::Gateway, true},
    {"gateway.networking.k8s.io/v1", "HTTPRoute", Kind::HTTPRoute, true},
    {"gateway.networking.k8s.io/v1beta1", "HTTPRoute", Kind::HTTPRoute, true},
    {"gateway.networking.k8s.io/v1beta1", "ReferenceGrant", Kind::ReferenceGrant, true},
    {"gateway.networking.k8s.io/v1", "ReferenceGrant", Kind::ReferenceGrant, true},
    {"inference.networking.k8s.io/v1", "InferencePool", Kind::InferencePool, true},
    {"inference.networking.x-k8s.io/v1alpha2", "InferencePool", Kind::InferencePool, true},
    {"inference.networking.x-k8s.io/v1alpha2", "InferenceObjective", Kind::InferenceObjective,
     true},
    {"inference.networking.x-k8s.io/v1alpha2", "InferenceModelRewrite", Kind::InferenceModelRewrite,
     true},
    {"inference.networking.x-k8s.io/v1alpha2", "InferenceModel", Kind::InferenceModel, true},
    {"networking.serving.volcano.sh/v1alpha1", "ModelRoute", Kind::ModelRoute, true},
    {"networking.serving.volcano.sh/v1alpha1", "ModelServer", Kind::ModelServer, true},
    {"networking.serving.volcano.sh/v1alpha1", "ExternalModelProvider", Kind::ExternalModelProvider,
     true},
    {"v1", "Pod", Kind::Pod, true},
    {"v1", "Service", Kind::Service, true},
    {"v1", "Secret", Kind::Secret, true},
    {"v1", "Namespace", Kind::Namespace, false},
    {"discovery.k8s.io/v1", "EndpointSlice", Kind::EndpointSlice, true},
};

// The API groups Sluice reads (core "v1" among them): an unknown kind or version in one of
// them is a mistake in a manifest meant for Sluice; any other group is someone else's object.
bool isOurGroup(std::string_view api) {
  auto slash = api.rfind('/');
  std::string_view group = slash == std::string_view::npos ? "" : api.substr(0, slash);
  for (const auto& k : kKinds) {
    auto ks = k.api_version.rfind('/');
    if ((ks == std::string_view::npos ? "" : k.api_version.substr(0, ks)) == group) {
      return !group.empty();
    }
  }
  return false;
}

void parseObject(const YAML::Node& doc, std::string_view source, ParseResult& out, uint64_t& seq) {
  std::vector<std::string> errors;
  std::vector<std::string> warnings;
  Field root(doc, "", errors, warnings);
  auto report = [&](const std::string& object) {
    for (auto& e : errors) {
      out.errors.push_back({std::string(source), object, std::move(e)});
    }
    for (auto& w : warnings) {
      out.warnings.push_back({std::string(source), object, std::move(w)});
    }
  };
  if (!doc.IsMap()) {
    errors.push_back("<document>: must be an object with apiVersion and kind");
    report("");
    return;
  }
  std::string api = root["apiVersion"].str().value_or("");
  std::string kind = root["kind"].str().value_or("");
  if (kind == "List" && api == "v1") {
    Field items = root["items"];
    if (items.isSeq()) {
      for (size_t i = 0; i < items.size(); ++i) {
        parseObject(items.at(i).node(), fmt::format("{}.items[{}]", source, i), out, seq);
      }
    }
    return;
  }
  const KindInfo* info = nullptr;
  for (const auto& k : kKinds) {
    if (k.kind == kind && k.api_version == api) {
      info = &k;
    }
  }
  if (info == nullptr) {
    if (api.empty() || kind.empty()) {
      errors.push_back("<document>: apiVersion and kind are required");
    } else if (isOurGroup(api)) {
      errors.push_back(fmt::format("<document>: unsupported kind {} in {}", kind, api));
    } else {
      // A Deployment or ConfigMap beside the routing objects: not ours, not an error.
      out.warnings.push_back({std::string(source), "",
                              fmt::format("{} ({}) is not used by Sluice; skipped", kind, api),
                              true});
    }
    report("");
    return;
  }
  Object obj;
  obj.kind = info->value;
  obj.api_version = api;
  obj.source = std::string(source);
  Field meta = root["metadata"];
  if (!meta.isMap()) {
    meta.error("is required");
  }
  obj.meta.name = meta["name"].required();
  checkName(meta["name"], obj.meta.name);
  if (info->namespaced) {
    obj.meta.ns = meta["namespace"].str(63).value_or("default");
    if (!validDnsLabel(obj.meta.ns)) {
      meta["namespace"].error(fmt::format("\"{}\" is not a valid namespace", obj.meta.ns));
    }
  }
  obj.meta.labels = meta["labels"].stringMap(256, true);
  obj.meta.annotations = meta["annotations"].stringMap(256, false);
  if (auto ts = meta["creationTimestamp"].str()) {
    if (auto t = parseTimestamp(*ts)) {
      obj.meta.creation = *t;
    } else {
      meta["creationTimestamp"].error(
          fmt::format("\"{}\" is not an RFC 3339 time such as 2026-01-02T03:04:05Z", *ts));
    }
  }
  obj.meta.generation = meta["generation"].integer(0, INT64_MAX).value_or(0);
  obj.meta.terminating = static_cast<bool>(meta["deletionTimestamp"]);
  obj.meta.seq = seq++;
  std::string key =
      obj.meta.name.empty()
          ? ""
          : (info->namespaced ? fmt::format("{}/{}/{}", kind, obj.meta.ns, obj.meta.name)
                              : fmt::format("{}/{}", kind, obj.meta.name));
  Field spec = root["spec"];
  bool needs_spec =
      !(obj.kind == Kind::Pod || obj.kind == Kind::Service || obj.kind == Kind::Secret ||
        obj.kind == Kind::Namespace || obj.kind == Kind::EndpointSlice);
  if (needs_spec && !spec.isMap()) {
    spec.error(spec ? "must be an object" : "is required");
    report(key);
    return;
  }
  switch (obj.kind) {
    case Kind::GatewayClass: {
      GatewayClass g;
      spec.mapping({"controllerName", "parametersRef", "description"});
      g.controller_name = spec["controllerName"].required();
      obj.spec = g;
      break;
    }
    case Kind::Gateway:
      obj.spec = parseGateway(spec);
      break;
    case Kind::HTTPRoute:
      obj.spec = parseHttpRoute(spec);
      break;
    case Kind::ReferenceGrant:
      obj.spec = parseReferenceGrant(spec);
      break;
    case Kind::InferencePool:
      obj.spec = parseInferencePool(spec, api == "inference.networking.x-k8s.io/v1alpha2");
      break;
    case Kind::InferenceObjective: {
      InferenceObjective o;
      spec.mapping({"priority", "poolRef"});
      o.priority = static_cast<int32_t>(spec["priority"].integer(INT32_MIN, INT32_MAX).value_or(0));
      o.pool_ref = parsePoolRef(spec["poolRef"], "inference.networking.k8s.io");
      obj.spec = o;
      break;
    }
    case Kind::InferenceModelRewrite:
      obj.spec = parseRewrite(spec);
      break;
    case Kind::InferenceModel: {
      InferenceModel m;
      spec.mapping({"modelName", "criticality", "targetModels", "poolRef"});
      m.model_name = spec["modelName"].required(256);
      if (spec["criticality"]) {
        m.criticality = spec["criticality"].oneOf({"Critical", "Standard", "Sheddable"}, "");
      }
      m.target_models = parseWeightedModels(spec["targetModels"], "name", 10);
      m.pool_ref = parsePoolRef(spec["poolRef"], "inference.networking.x-k8s.io");
      obj.spec = m;
      break;
    }
    case Kind::ModelRoute:
      obj.spec = parseModelRoute(spec);
      break;
    case Kind::ModelServer:
      obj.spec = parseModelServer(spec);
      break;
    case Kind::ExternalModelProvider:
      obj.spec = parseProvider(spec);
      break;
    case Kind::Pod:
      obj.spec = parsePod(root);
      break;
    case Kind::Service:
      obj.spec = parseService(root);
      break;
    case Kind::Secret:
      obj.spec = parseSecret(root);
      break;
    case Kind::EndpointSlice:
      obj.spec = parseEndpointSlice(root);
      break;
    case Kind::Namespace:
      obj.spec = Namespace{};
      break;
  }
  bool ok = errors.empty();
  report(key);
  if (ok) {
    out.objects.push_back(std::move(obj));
  }
}

}  // namespace

// The order objects were first seen, over every source: the tie-break between equal timestamps.
namespace {
std::atomic<uint64_t> g_seq{1};
}  // namespace

ParseResult parseManifestNode(const YAML::Node& doc, std::string_view source) {
  uint64_t seq = g_seq.fetch_add(1);
  ParseResult out;
  try {
    parseObject(doc, source, out, seq);
  } catch (const std::exception& e) {
    out.errors.push_back({std::string(source), "", fmt::format("<document>: {}", e.what())});
  }
  return out;
}

ParseResult parseManifests(std::string_view text, std::string_view source) {
  ParseResult out;
  if (text.size() > kMaxManifestBytes) {
    out.errors.push_back(
        {std::string(source), "",
         fmt::format("file is {} bytes; the limit is {}", text.size(), kMaxManifestBytes)});
    return out;
  }
  // Documents are split here rather than by YAML::LoadAll, which loops without end on some
  // malformed input (found by the fuzzer). A line starting with "---" is always a document
  // marker in YAML, so the split is exact; it also lets one broken document fail alone.
  struct Chunk {
    std::string_view text;
    size_t first_line;
  };
  std::vector<Chunk> chunks;
  size_t start = 0, line = 0, start_line = 0;
  for (size_t pos = 0; pos <= text.size();) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos)
      eol = text.size();
    std::string_view l = text.substr(pos, eol - pos);
    bool marker =
        l.substr(0, 3) == "---" && (l.size() == 3 || l[3] == ' ' || l[3] == '\t' || l[3] == '\r');
    if (marker && pos > start) {
      chunks.push_back({text.substr(start, pos - start), start_line});
      start = pos;
      start_line = line;
    }
    pos = eol + 1;
    ++line;
  }
  if (start < text.size())
    chunks.push_back({text.substr(start), start_line});
  constexpr size_t kMaxDocuments = 200000;
  if (chunks.size() > kMaxDocuments) {
    out.errors.push_back(
        {std::string(source), "",
         fmt::format("{} documents; the limit is {}", chunks.size(), kMaxDocuments)});
    return out;
  }
  uint64_t seq = g_seq.fetch_add(chunks.size() + 1);
  for (size_t i = 0; i < chunks.size(); ++i) {
    // Each document is named by the line it starts on (after its "---"), as editors count.
    const bool marked = chunks[i].text.substr(0, 3) == "---";
    std::string where = fmt::format("{}:{}", source, chunks[i].first_line + (marked ? 2 : 1));
    YAML::Node doc;
    try {
      doc = YAML::Load(std::string(chunks[i].text));
    } catch (const YAML::Exception& e) {
      out.errors.push_back(
          {where, "",
           fmt::format("line {}, column {}: {}", chunks[i].first_line + e.mark.line + 1,
                       e.mark.column + 1, e.msg)});
      continue;
    } catch (const std::exception& e) {
      out.errors.push_back({where, "", e.what()});
      continue;
    }
    if (!doc.IsDefined() || doc.IsNull()) {
      continue;  // an empty document between separators, or comments only
    }
    try {
      parseObject(doc, where, out, seq);
    } catch (const std::exception& e) {
      out.errors.push_back({where, "", fmt::format("<document>: {}", e.what())});
    }
  }
  return out;
}

}  // namespace sluice::config
