#include "router/route_table.h"

#include <algorithm>
#include <arpa/inet.h>
#include <cstring>
#include <re2/re2.h>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include <fmt/core.h>

#include "base/strings.h"
#include "router/endpoint_resolver.h"

namespace sluice::router {

using config::Kind;
using config::Object;

namespace {

constexpr std::string_view kGatewayGroup = "gateway.networking.k8s.io";
constexpr std::string_view kPoolGroup = "inference.networking.k8s.io";
constexpr std::string_view kPoolGroupAlpha = "inference.networking.x-k8s.io";
constexpr std::string_view kKthenaGroup = "networking.serving.volcano.sh";

std::shared_ptr<re2::RE2> compile(const std::string& pattern, bool anchored) {
  RE2::Options opt;
  opt.set_log_errors(false);
  auto re = std::make_shared<re2::RE2>(anchored ? "^(?:" + pattern + ")$" : pattern, opt);
  return re->ok() ? re : nullptr;
}

bool stringMatches(const config::StringMatch& m, const re2::RE2* re, std::string_view value) {
  switch (m.type) {
    case config::StringMatch::Type::Exact:
      return value == m.value;
    case config::StringMatch::Type::Prefix:
      return value.substr(0, m.value.size()) == m.value;
    case config::StringMatch::Type::RegularExpression:
      return re != nullptr && RE2::FullMatch(re2::StringPiece(value.data(), value.size()), *re);
  }
  return false;
}

// The first value of a query parameter (exact name), undecoded.
std::optional<std::string_view> queryParam(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    size_t eq = pair.find('=');
    if (pair.substr(0, eq) == name) {
      return eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
    }
    if (amp == std::string_view::npos) {
      break;
    }
    query.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

bool condsMatch(const std::vector<MatchEntry::Cond>& conds, const RequestView& req, bool header) {
  for (const auto& c : conds) {
    std::optional<std::string_view> v;
    if (header) {
      v = c.name == kModelHeader && !req.model.empty()
              ? std::optional<std::string_view>(req.model)
              : (req.headers != nullptr ? req.headers->get(c.name) : std::nullopt);
    } else {
      v = queryParam(req.query, c.name);
    }
    if (!v) {
      return false;
    }
    if (c.regex) {
      if (!c.re || !RE2::FullMatch(re2::StringPiece(v->data(), v->size()), *c.re)) {
        return false;
      }
    } else if (*v != c.value) {
      return false;
    }
  }
  return true;
}

bool entryMatches(const MatchEntry& e, const RequestView& req) {
  if (!e.method.empty() && e.method != req.method) {
    return false;
  }
  return condsMatch(e.headers, req, true) && condsMatch(e.query, req, false);
}

bool precedes(const MatchEntry* a, const MatchEntry* b) {
  // Path specificity is the bucket; then method, headers, query, age, name, rule, match.
  bool am = !a->method.empty(), bm = !b->method.empty();
  if (am != bm)
    return am;
  if (a->headers.size() != b->headers.size())
    return a->headers.size() > b->headers.size();
  if (a->query.size() != b->query.size())
    return a->query.size() > b->query.size();
  if (a->creation != b->creation)
    return a->creation < b->creation;
  if (a->route_key != b->route_key)
    return a->route_key < b->route_key;
  if (a->rule != b->rule)
    return a->rule < b->rule;
  return a->index < b->index;
}

// An index drawn in proportion to the weights; `total` is their sum and must be > 0.
template <class Items, class Weight>
size_t weightedIndex(const Items& items, uint64_t total, Weight weight, base::Random& random) {
  uint64_t r = random.uniform(total);
  size_t i = 0;
  for (const auto& item : items) {
    if (r < weight(item))
      return i;
    r -= weight(item);
    ++i;
  }
  return items.size() - 1;
}

std::string stripSlash(std::string_view p) {
  while (p.size() > 1 && p.back() == '/') {
    p.remove_suffix(1);
  }
  return std::string(p);
}

}  // namespace

// --- RuleSet ----------------------------------------------------------------------------------

constexpr uint64_t kFnvOffset = 14695981039346656037ULL;
constexpr uint64_t kFnvPrime = 1099511628211ULL;

uint64_t pathHash(std::string_view path) {
  uint64_t h = kFnvOffset;
  for (char c : path) {
    h = (h ^ static_cast<uint8_t>(c)) * kFnvPrime;
  }
  return h;
}

std::vector<const MatchEntry*>& PathIndex::bucket(const std::string& path) {
  auto [it, fresh] = building_.try_emplace(path, buckets_.size());
  if (fresh) {
    buckets_.push_back({pathHash(path), path, {}});
  }
  return buckets_[it->second].entries;
}

void PathIndex::finish() {
  building_.clear();
  if (buckets_.empty()) {
    slots_.clear();
    return;
  }
  size_t size = 8;
  while (size < buckets_.size() * 2)
    size <<= 1;  // load factor <= 0.5
  slots_.assign(size, Slot{});
  mask_ = size - 1;
  for (size_t i = 0; i < buckets_.size(); ++i) {
    uint64_t slot = buckets_[i].hash & mask_;
    while (slots_[slot].index != 0)
      slot = (slot + 1) & mask_;
    slots_[slot] = {buckets_[i].hash, static_cast<uint32_t>(i + 1)};
  }
}

const std::vector<const MatchEntry*>* PathIndex::find(uint64_t hash, std::string_view path) const {
  if (slots_.empty())
    return nullptr;
  for (uint64_t slot = hash & mask_;; slot = (slot + 1) & mask_) {
    const Slot& s = slots_[slot];
    if (s.index == 0)
      return nullptr;
    if (s.hash == hash) {
      const Bucket& b = buckets_[s.index - 1];
      if (b.path == path)
        return &b.entries;
    }
  }
}

void RuleSet::add(const MatchEntry* entry) {
  ++count_;
  switch (entry->path_type) {
    case config::PathMatch::Type::Exact:
      exact_.bucket(entry->path).push_back(entry);
      break;
    case config::PathMatch::Type::PathPrefix:
      prefix_.bucket(entry->path).push_back(entry);
      break;
    case config::PathMatch::Type::RegularExpression:
      regex_.push_back(entry);
      break;
  }
}

void RuleSet::finish() {
  exact_.forEachBucket([](auto& v) { std::stable_sort(v.begin(), v.end(), precedes); });
  prefix_.forEachBucket([](auto& v) { std::stable_sort(v.begin(), v.end(), precedes); });
  exact_.finish();
  prefix_.finish();
  std::stable_sort(regex_.begin(), regex_.end(), [](const MatchEntry* a, const MatchEntry* b) {
    if (a->path.size() != b->path.size())
      return a->path.size() > b->path.size();
    return precedes(a, b);
  });
}

const MatchEntry* RuleSet::match(const RequestView& req) const {
  if (count_ == 0) {
    return nullptr;
  }
  std::string_view path = req.path;
  // One pass: the hash of the whole path (Exact) and of every prefix ending before a '/'
  // (PathPrefix candidates, longest first). Prefix keys carry no trailing '/'.
  constexpr size_t kMaxCuts = 64;
  size_t cuts[kMaxCuts];
  uint64_t cut_hash[kMaxCuts];
  size_t n = 0;
  uint64_t h = kFnvOffset;
  for (size_t i = 0; i < path.size(); ++i) {
    if (path[i] == '/' && i > 0 && n < kMaxCuts) {
      cuts[n] = i;
      cut_hash[n++] = h;
    }
    h = (h ^ static_cast<uint8_t>(path[i])) * kFnvPrime;
  }
  if (!exact_.empty()) {
    if (const auto* v = exact_.find(h, path)) {
      for (const auto* e : *v) {
        if (entryMatches(*e, req))
          return e;
      }
    }
  }
  if (!prefix_.empty()) {
    auto tryPrefix = [&](uint64_t hash, std::string_view p) -> const MatchEntry* {
      if (const auto* v = prefix_.find(hash, p)) {
        for (const auto* e : *v) {
          if (entryMatches(*e, req))
            return e;
        }
      }
      return nullptr;
    };
    // The whole path unless it ends in '/' (then its last cut is the same key).
    if (!path.empty() && path.back() != '/') {
      if (const auto* e = tryPrefix(h, path))
        return e;
    }
    for (size_t i = n; i-- > 0;) {
      if (const auto* e = tryPrefix(cut_hash[i], path.substr(0, cuts[i])))
        return e;
    }
    static const uint64_t kRootHash = pathHash("/");
    if (const auto* e = tryPrefix(kRootHash, "/"))
      return e;
  }
  for (const auto* e : regex_) {
    if (e->path_re &&
        RE2::FullMatch(re2::StringPiece(req.path.data(), req.path.size()), *e->path_re) &&
        entryMatches(*e, req)) {
      return e;
    }
  }
  return nullptr;
}

// --- lookups ----------------------------------------------------------------------------------

const ListenerRoutes* RouteTable::listenerFor(uint16_t port, std::string_view host) const {
  auto it = ports.find(port);
  if (it == ports.end()) {
    return nullptr;
  }
  for (const auto& l : it->second) {
    if (!l->hostname) {
      return l.get();
    }
    const std::string& h = *l->hostname;
    if (h.size() > 2 && h[0] == '*') {
      std::string_view suffix = std::string_view(h).substr(1);  // ".example.com"
      if (host.size() > suffix.size() && host.substr(host.size() - suffix.size()) == suffix) {
        return l.get();
      }
    } else if (host == h) {
      return l.get();
    }
  }
  return nullptr;
}

Matched RouteTable::matchHttp(const ListenerRoutes& listener, const RequestView& req) {
  if (!listener.exact_hosts.empty()) {
    thread_local std::string host;
    host.assign(req.host.data(), req.host.size());
    if (auto it = listener.exact_hosts.find(host); it != listener.exact_hosts.end()) {
      if (const auto* e = it->second.match(req))
        return {e->action, e};
    }
  }
  for (const auto& [suffix, rules] : listener.wildcard_hosts) {
    if (req.host.size() > suffix.size() &&
        req.host.substr(req.host.size() - suffix.size()) == suffix) {
      if (const auto* e = rules.match(req))
        return {e->action, e};
    }
  }
  if (const auto* e = listener.any_host.match(req))
    return {e->action, e};
  return {};
}

ModelTarget RouteTable::matchModelIn(const ModelSpace& space, const ListenerRoutes& listener,
                                     const RequestView& req, base::Random& random) {
  if (req.model.empty()) {
    return {};
  }
  thread_local std::string key;
  key.assign(req.model.data(), req.model.size());
  bool lora = false;
  auto it = space.by_model.find(key);
  if (it == space.by_model.end()) {
    it = space.by_lora.find(key);
    if (it == space.by_lora.end()) {
      return {};
    }
    lora = true;
  }
  for (const auto& route : it->second) {
    if (!route->section.empty() && route->section != listener.name)
      continue;
    if (route->port && *route->port != listener.port)
      continue;
    for (const auto& rule : route->rules) {
      bool ok = true;
      for (size_t i = 0; i < rule.headers.size() && ok; ++i) {
        auto v = req.headers ? req.headers->get(rule.headers[i].first) : std::nullopt;
        ok = v && stringMatches(rule.headers[i].second, rule.header_res[i].get(), *v);
      }
      if (ok && rule.uri)
        ok = stringMatches(*rule.uri, rule.uri_re.get(), req.path);
      if (ok && rule.body_model)
        ok = *rule.body_model == req.model;
      if (!ok || rule.targets.empty())
        continue;
      size_t pick = 0;
      if (rule.targets.size() > 1 && rule.total_weight > 0) {
        pick = weightedIndex(
            rule.targets, rule.total_weight, [](const auto& t) { return t.weight; }, random);
      }
      return {route.get(), &rule.targets[pick], lora};
    }
  }
  return {};
}

const RouteAction::Target* RouteTable::pickTarget(const RouteAction& action, base::Random& random) {
  if (action.targets.empty() || action.total_weight == 0) {
    return nullptr;
  }
  if (action.targets.size() == 1) {
    return &action.targets[0];
  }
  return &action.targets[weightedIndex(
      action.targets, action.total_weight, [](const auto& t) { return t.weight; }, random)];
}

const ModelRewrite* RouteTable::rewriteFor(const Backend& backend, std::string_view model) {
  if (!backend.exact_rewrites.empty()) {
    thread_local std::string key;
    key.assign(model.data(), model.size());
    if (auto it = backend.exact_rewrites.find(key); it != backend.exact_rewrites.end()) {
      return &it->second.front();
    }
  }
  return backend.catch_all_rewrites.empty() ? nullptr : &backend.catch_all_rewrites.front();
}

std::string_view RouteTable::pickModel(const ModelRewrite& rewrite, base::Random& random) {
  if (rewrite.targets.empty())
    return {};
  if (rewrite.total_weight == 0) {
    return rewrite.targets[random.uniform(rewrite.targets.size())].first;
  }
  return rewrite
      .targets[weightedIndex(
          rewrite.targets, rewrite.total_weight, [](const auto& t) { return t.second; }, random)]
      .first;
}

std::string rewritePath(const config::HttpPathModifier& mod, const MatchEntry& entry,
                        std::string_view path) {
  if (mod.type == config::HttpPathModifier::Type::ReplaceFullPath) {
    return mod.value;
  }
  // ReplacePrefixMatch: swap the matched prefix, keeping the rest on a segment boundary.
  std::string_view rest = path;
  if (entry.path != "/") {
    rest = path.substr(std::min(path.size(), entry.path.size()));
  }
  std::string out = mod.value;
  if (rest.empty()) {
    return out.empty() ? "/" : out;
  }
  if (!out.empty() && out.back() == '/' && rest.front() == '/') {
    out.pop_back();
  } else if ((out.empty() || out.back() != '/') && rest.front() != '/') {
    out.push_back('/');
  }
  out.append(rest);
  return out.empty() ? "/" : out;
}

// --- status JSON ------------------------------------------------------------------------------

namespace {

void appendConditions(std::string& out, const std::vector<Condition>& conds) {
  out += "[";
  for (size_t i = 0; i < conds.size(); ++i) {
    const auto& c = conds[i];
    out += fmt::format("{}{{\"type\":{},\"status\":\"{}\",\"reason\":{},\"message\":{}}}",
                       i ? "," : "", base::jsonQuote(c.type), c.status ? "True" : "False",
                       base::jsonQuote(c.reason), base::jsonQuote(c.message));
  }
  out += "]";
}

}  // namespace

std::string RouteTable::statusJson() const {
  return router::statusJson(status);
}

std::string statusJson(const std::vector<ObjectStatus>& status) {
  std::string out = "{\"objects\":[";
  for (size_t i = 0; i < status.size(); ++i) {
    const auto& s = status[i];
    out += i ? ",\n" : "\n";
    out += fmt::format("{{\"object\":{},\"conditions\":", base::jsonQuote(s.key));
    appendConditions(out, s.conditions);
    if (!s.parents.empty()) {
      out += ",\"parents\":[";
      for (size_t j = 0; j < s.parents.size(); ++j) {
        out += fmt::format("{}{{\"parentRef\":{},\"conditions\":", j ? "," : "",
                           base::jsonQuote(s.parents[j].ref));
        appendConditions(out, s.parents[j].conditions);
        out += "}";
      }
      out += "]";
    }
    if (!s.listeners.empty()) {
      out += ",\"listeners\":[";
      for (size_t j = 0; j < s.listeners.size(); ++j) {
        const auto& l = s.listeners[j];
        out += fmt::format("{}{{\"name\":{},\"attachedRoutes\":{},\"conditions\":", j ? "," : "",
                           base::jsonQuote(l.name), l.attached_routes);
        appendConditions(out, l.conditions);
        out += "}";
      }
      out += "]";
    }
    if (!s.errors.empty()) {
      out += ",\"errors\":[";
      for (size_t j = 0; j < s.errors.size(); ++j) {
        out += (j ? "," : "") + base::jsonQuote(s.errors[j]);
      }
      out += "]";
    }
    out += "}";
  }
  out += "\n]}\n";
  return out;
}

// --- translation ------------------------------------------------------------------------------

namespace {

// Everything the translation needs while it runs.
class Builder {
 public:
  Builder(const config::ObjectStore& store, const RouteBuildOptions& options,
          EndpointRegistry& registry)
      : store_(store), options_(options), resolver_(store, registry) {
    table_ = std::make_shared<RouteTable>();
  }

  std::shared_ptr<RouteTable> build() {
    index();
    parseErrors();
    configModels();
    gatewayClasses();
    gateways();
    pools();
    modelServers();
    rewritesAndObjectives();
    httpRoutes();
    modelRoutes();
    finish();
    return table_;
  }

 private:
  // The router file's models: entries become ModelRoutes of one rule with one target (the
  // entry's endpoints, a backend like a ModelServer's), in a space every listener shares and
  // consults after its own ModelRoutes and HTTPRoutes.
  void configModels() {
    for (size_t i = 0; i < options_.config_models.size(); ++i) {
      const auto& backend = options_.config_models[i];
      auto entry = std::make_shared<ModelRouteEntry>();
      entry->key = "models[" + std::to_string(i) + "]";
      entry->seq = i;
      ModelRouteEntry::Rule rule;
      rule.targets.push_back({backend, 1, ""});
      rule.total_weight = 1;
      entry->rules.push_back(std::move(rule));
      config_space_->by_model[backend->model].push_back(entry);
      auto& st = status("RouterConfig/models/" + backend->model);
      st.conditions.push_back({"Accepted", true, "Accepted", "served on every listener"});
      st.conditions.push_back({"ResolvedRefs", true, "ResolvedRefs",
                               fmt::format("{} endpoint(s)", backend->endpoints.size())});
    }
    sortSpace(*config_space_);
    table_->backends.insert(table_->backends.end(), options_.config_models.begin(),
                            options_.config_models.end());
  }

  ObjectStatus& status(const std::string& key) {
    auto [it, inserted] = status_.try_emplace(key);
    if (inserted)
      it->second.key = key;
    return it->second;
  }

  // Objects of a kind, oldest first (creationTimestamp, then first seen, then key).
  std::vector<const Object*> sorted(Kind kind) const {
    std::vector<const Object*> out;
    for (const auto* o : by_kind_[static_cast<size_t>(kind)])
      out.push_back(o);
    std::sort(out.begin(), out.end(), [](const Object* a, const Object* b) {
      if (a->meta.creation != b->meta.creation)
        return a->meta.creation < b->meta.creation;
      if (a->meta.seq != b->meta.seq)
        return a->meta.seq < b->meta.seq;
      return a->key() < b->key();
    });
    return out;
  }

  void index() {
    for (const auto& [key, ptr] : store_.objects()) {
      const Object& obj = *ptr;
      by_kind_[static_cast<size_t>(obj.kind)].push_back(&obj);
      if (obj.kind == Kind::Namespace) {
        namespaces_[obj.meta.name] = &obj.meta.labels;
      }
    }
  }

  void parseErrors() {
    for (const auto& [source, errors] : store_.errors()) {
      for (const auto& e : errors) {
        ++table_->error_count;
        if (!e.object.empty()) {
          status(e.object).errors.push_back(e.where + ": " + e.message);
        } else {
          status("File/" + e.where).errors.push_back(e.message);
        }
      }
    }
  }

  void gatewayClasses() {
    for (const auto* o : by_kind_[static_cast<size_t>(Kind::GatewayClass)]) {
      const auto& gc = std::get<config::GatewayClass>(o->spec);
      if (gc.controller_name != options_.controller_name) {
        table_->ignored.push_back(fmt::format("{}: controllerName {} is not {}", o->key(),
                                              gc.controller_name, options_.controller_name));
        continue;
      }
      our_classes_.insert(o->meta.name);
      status(o->key()).conditions.push_back(
          {"Accepted", true, "Accepted", "handled by " + options_.controller_name});
    }
  }

  bool ourClass(const std::string& name) const {
    if (our_classes_.count(name) > 0)
      return true;
    // The built-in class, unless a GatewayClass object of that name belongs to someone else.
    // In a cluster only GatewayClass objects count.
    return options_.builtin_class && name == kGatewayClassName &&
           store_.find(fmt::format("GatewayClass/{}", name)) == nullptr;
  }

  struct GatewayInfo {
    const Object* obj;
    const config::Gateway* spec;
    std::vector<std::shared_ptr<ListenerRoutes>> listeners;  // parallel to spec->listeners
    std::vector<bool> usable;
    std::shared_ptr<ModelSpace> space;
    std::set<std::string> pools;  // pools reachable through attached HTTPRoutes
  };

  void gateways() {
    for (const auto* o : sorted(Kind::Gateway)) {
      const auto& gw = std::get<config::Gateway>(o->spec);
      if (!ourClass(gw.gateway_class)) {
        table_->ignored.push_back(fmt::format("{}: gatewayClassName {} is not a class of {}",
                                              o->key(), gw.gateway_class,
                                              options_.controller_name));
        continue;
      }
      table_->has_gateways = true;
      GatewayInfo info{o, &gw, {}, {}, std::make_shared<ModelSpace>(), {}};
      const std::string gw_auth = authAnnotation(*o);
      const std::string gw_limits = rateLimitAnnotation(*o);
      auto& st = status(o->key());
      std::map<uint16_t, std::string> protocol_by_port;
      std::set<std::pair<uint16_t, std::string>> hosts;
      bool all_ok = true;
      for (const auto& l : gw.listeners) {
        ObjectStatus::ListenerStatus ls;
        ls.name = l.name;
        bool ok = true;
        auto [pit, fresh] = protocol_by_port.emplace(l.port, l.protocol);
        std::string host = l.hostname.value_or("");
        if (l.protocol != "HTTP" && l.protocol != "HTTPS") {
          ls.conditions.push_back({"Accepted", false, "UnsupportedProtocol",
                                   fmt::format("protocol {} is not supported", l.protocol)});
          ok = false;
        } else if (!fresh && pit->second != l.protocol) {
          ls.conditions.push_back(
              {"Conflicted", true, "ProtocolConflict",
               fmt::format("port {} is also used with {}", l.port, pit->second)});
          ok = false;
        } else if (!hosts.emplace(l.port, host).second) {
          ls.conditions.push_back(
              {"Conflicted", true, "HostnameConflict",
               fmt::format("another listener on port {} has the same hostname", l.port)});
          ok = false;
        }
        std::string cert_pem, key_pem;
        if (ok && l.protocol == "HTTPS" && l.tls_mode != "Terminate") {
          ls.conditions.push_back(
              {"Accepted", false, "UnsupportedTLSMode", "only tls.mode Terminate is supported"});
          ok = false;
        }
        if (ok && l.protocol == "HTTPS") {
          // The first certificateRef is served; every one must resolve.
          size_t bad_before = ls.conditions.size();
          for (const auto& ref : l.certificate_refs) {
            std::string ns = ref.ns.empty() ? o->meta.ns : ref.ns;
            if (!ref.group.empty() || ref.kind != "Secret") {
              ls.conditions.push_back({"ResolvedRefs", false, "InvalidCertificateRef",
                                       "certificateRefs must name core Secrets"});
            } else if (ns != o->meta.ns &&
                       !granted(kGatewayGroup, "Gateway", o->meta.ns, "", "Secret", ns, ref.name)) {
              ls.conditions.push_back(
                  {"ResolvedRefs", false, "RefNotPermitted",
                   fmt::format("no ReferenceGrant in {} allows this Gateway to use {}", ns,
                               ref.name)});
            } else {
              const auto* sec = store_.find(fmt::format("Secret/{}/{}", ns, ref.name));
              const config::Secret* s = sec ? &std::get<config::Secret>(sec->spec) : nullptr;
              if (!s || s->data.count("tls.crt") == 0 || s->data.count("tls.key") == 0) {
                ls.conditions.push_back(
                    {"ResolvedRefs", false, "InvalidCertificateRef",
                     fmt::format("Secret {}/{} is missing or lacks tls.crt and tls.key", ns,
                                 ref.name)});
              } else if (s->data.at("tls.crt").find("-----BEGIN CERTIFICATE-----") ==
                             std::string::npos ||
                         s->data.at("tls.key").find("PRIVATE KEY-----") == std::string::npos) {
                ls.conditions.push_back(
                    {"ResolvedRefs", false, "InvalidCertificateRef",
                     fmt::format("Secret {}/{}: tls.crt and tls.key must be PEM", ns, ref.name)});
              } else if (cert_pem.empty()) {
                cert_pem = s->data.at("tls.crt");
                key_pem = s->data.at("tls.key");
              }
            }
          }
          ok = ls.conditions.size() == bad_before;
        }
        if (ok) {
          ls.conditions.push_back({"Accepted", true, "Accepted", ""});
          ls.conditions.push_back({"ResolvedRefs", true, "ResolvedRefs", ""});
          ls.conditions.push_back({"Programmed", true, "Programmed", ""});
        }
        all_ok = all_ok && ok;
        auto lr = std::make_shared<ListenerRoutes>();
        lr->gateway = o->meta.ns + "/" + o->meta.name;
        lr->name = l.name;
        lr->hostname =
            l.hostname ? std::optional<std::string>(base::toLower(*l.hostname)) : std::nullopt;
        lr->port = l.port;
        lr->address = options_.default_address;
        lr->space = info.space;
        lr->config_space = config_space_;
        lr->tls = l.protocol == "HTTPS";
        lr->auth_mode = gw_auth;
        lr->rate_limits = gw_limits;
        lr->cert_pem = std::move(cert_pem);
        lr->key_pem = std::move(key_pem);
        info.listeners.push_back(lr);
        info.usable.push_back(ok);
        st.listeners.push_back(std::move(ls));
      }
      st.conditions.push_back({"Accepted", true, "Accepted", ""});
      st.conditions.push_back({"Programmed", all_ok, all_ok ? "Programmed" : "Invalid",
                               all_ok ? "" : "one or more listeners are not served"});
      gateways_[o->meta.ns + "/" + o->meta.name] = std::move(info);
    }
    if (!table_->has_gateways) {
      auto lr = std::make_shared<ListenerRoutes>();
      lr->name = "default";
      lr->port = options_.default_port;
      lr->address = options_.default_address;
      lr->space = default_space_;
      lr->config_space = config_space_;
      default_listener_ = lr;
    }
  }

  // Is a reference from (group, kind, ns) to (group, kind, name) in `to_ns` allowed by a
  // ReferenceGrant in `to_ns`?
  bool granted(std::string_view from_group, std::string_view from_kind, const std::string& from_ns,
               std::string_view to_group, std::string_view to_kind, const std::string& to_ns,
               const std::string& to_name) const {
    for (const auto* o : by_kind_[static_cast<size_t>(Kind::ReferenceGrant)]) {
      if (o->meta.ns != to_ns)
        continue;
      const auto& g = std::get<config::ReferenceGrant>(o->spec);
      bool from_ok = std::any_of(g.from.begin(), g.from.end(), [&](const auto& f) {
        return f.group == from_group && f.kind == from_kind && f.ns == from_ns;
      });
      bool to_ok = std::any_of(g.to.begin(), g.to.end(), [&](const auto& t) {
        return t.group == to_group && t.kind == to_kind && (t.name.empty() || t.name == to_name);
      });
      if (from_ok && to_ok)
        return true;
    }
    return false;
  }

  // `sluice.dev/auth` on a Gateway, HTTPRoute or ModelRoute: off, optional or required.
  std::string authAnnotation(const Object& o) {
    auto it = o.meta.annotations.find("sluice.dev/auth");
    if (it == o.meta.annotations.end())
      return "";
    if (it->second == "off" || it->second == "optional" || it->second == "required") {
      return it->second;
    }
    status(o.key()).conditions.push_back(
        {"Accepted", false, "InvalidAuthAnnotation",
         fmt::format("annotation sluice.dev/auth must be off, optional or required; got \"{}\" "
                     "(ignored)",
                     it->second)});
    return "";
  }

  // `sluice.dev/rate-limits` on a Gateway, HTTPRoute or ModelRoute: which configured
  // rate_limits apply ("a,b"), or "none".
  std::string rateLimitAnnotation(const Object& o) {
    auto it = o.meta.annotations.find("sluice.dev/rate-limits");
    if (it == o.meta.annotations.end())
      return "";
    if (it->second == "none")
      return "none";
    for (const auto& name : base::splitList(it->second)) {
      if (std::find(options_.rate_limits.begin(), options_.rate_limits.end(), name) ==
          options_.rate_limits.end()) {
        status(o.key()).conditions.push_back(
            {"Accepted", false, "InvalidRateLimitAnnotation",
             fmt::format("annotation sluice.dev/rate-limits: no rate limit named \"{}\" "
                         "(ignored: every limit applies)",
                         name)});
        return "";
      }
    }
    return "," + it->second + ",";  // delimited, for a cheap membership test
  }

  // `sluice.dev/scheduler` on a pool or ModelServer picks its scheduling profile.
  void schedulerAnnotation(const Object& o, Backend& b) {
    auto& st = status(o.key());
    auto it = o.meta.annotations.find(std::string(kSchedulerAnnotation));
    if (it == o.meta.annotations.end())
      return;
    const auto& known = options_.profiles;
    if (std::find(known.begin(), known.end(), it->second) == known.end()) {
      st.conditions.push_back(
          {"ResolvedRefs", false, "UnknownSchedulingProfile",
           fmt::format("annotation {}: no preset or profile named \"{}\"; the default is used",
                       kSchedulerAnnotation, it->second)});
      return;
    }
    b.scheduler = it->second;
  }

  void pools() {
    for (const auto* o : sorted(Kind::InferencePool)) {
      const auto& pool = std::get<config::InferencePool>(o->spec);
      auto b = std::make_shared<Backend>();
      b->kind = "InferencePool";
      b->name = o->meta.ns + "/" + o->meta.name;
      b->model = "InferencePool/" + b->name;
      b->h2c = pool.app_protocol == "kubernetes.io/h2c";
      auto engine = o->meta.labels.find("inference.networking.k8s.io/engine-type");
      b->engine = engine != o->meta.labels.end() ? base::toLower(engine->second) : "vllm";
      b->endpoints = resolver_.pool(o->meta.ns, pool);
      schedulerAnnotation(*o, *b);
      if (pool.endpoint_picker) {
        const auto& ref = *pool.endpoint_picker;
        std::string problem;
        if (!ref.group.empty() || ref.kind != "Service") {
          problem =
              fmt::format("endpointPickerRef kind {}/{} is not supported", ref.group, ref.kind);
        } else {
          const auto* svc = store_.find(fmt::format("Service/{}/{}", o->meta.ns, ref.name));
          if (svc == nullptr) {
            problem = fmt::format("Service {}/{} not found", o->meta.ns, ref.name);
          } else if (std::get<config::Service>(svc->spec).type == "ExternalName") {
            problem = "ExternalName Services are not allowed as endpoint pickers";
          }
        }
        if (problem.empty()) {
          std::string reason;
          b->picker = serviceBackend(o->meta.ns, ref.name, ref.port, reason, problem);
          b->picker_fail_open = ref.failure_mode == "FailOpen";
          auto tls = o->meta.annotations.find("sluice.dev/endpoint-picker-tls");
          b->picker_tls = tls != o->meta.annotations.end() && tls->second == "insecure";
        }
        if (!problem.empty()) {
          pool_refs_ok_[b->name] = {false, problem};
          // An unresolvable picker makes the pool fail its requests (5xx), per the spec.
          if (ref.failure_mode == "FailClose") {
            b->error = "the pool's endpoint picker cannot be resolved: " + problem;
          }
        } else {
          pool_refs_ok_[b->name] = {true, ""};
        }
      } else {
        pool_refs_ok_[b->name] = {true, ""};
      }
      pools_[b->name] = b;
    }
  }

  void modelServers() {
    for (const auto* o : sorted(Kind::ModelServer)) {
      const auto& ms = std::get<config::ModelServer>(o->spec);
      auto b = std::make_shared<Backend>();
      b->kind = "ModelServer";
      b->name = o->meta.ns + "/" + o->meta.name;
      b->model = "ModelServer/" + b->name;
      b->upstream_model = ms.model;
      b->engine = base::toLower(ms.inference_engine);
      b->timeout = ms.timeout;
      b->retry_attempts = ms.retry_attempts;
      if (ms.retry_attempts) {
        b->retry_interval = ms.retry_interval;
      }
      b->endpoints = resolver_.modelServer(o->meta.ns, ms);
      schedulerAnnotation(*o, *b);
      b->tls = ms.protocol == "https";
      auto& st = status(o->key());
      st.conditions.push_back({"Accepted", true, "Accepted", ""});
      st.conditions.push_back(readyCondition(b->endpoints.size()));
      servers_[b->name] = b;
    }
    for (const auto* o : sorted(Kind::ExternalModelProvider)) {
      const auto& p = std::get<config::ExternalModelProvider>(o->spec);
      auto b = std::make_shared<Backend>();
      b->kind = "ExternalModelProvider";
      b->name = o->meta.ns + "/" + o->meta.name;
      b->model = "ExternalModelProvider/" + b->name;
      b->upstream_model = p.model;
      auto target = std::make_shared<ProviderTarget>();
      target->type = p.provider_type == "Anthropic" ? ProviderTarget::Type::Anthropic
                                                    : ProviderTarget::Type::OpenAI;
      target->insecure_skip_verify = p.insecure_skip_verify;
      auto& st = status(o->key());
      bool creds = true;
      std::string msg;
      if (!p.secret_name.empty()) {
        const auto* s = store_.find(fmt::format("Secret/{}/{}", o->meta.ns, p.secret_name));
        const auto* data = s != nullptr ? &std::get<config::Secret>(s->spec).data : nullptr;
        auto it = data != nullptr ? data->find(p.secret_key) : decltype(data->end()){};
        creds = data != nullptr && it != data->end() && !base::trim(it->second).empty();
        if (creds) {
          std::string_view token = base::trim(it->second);  // a trailing newline from `echo`
          if (p.auth_scheme == "APIKey") {
            target->auth_header = "x-api-key";
            target->auth_value = std::string(token);
          } else {
            target->auth_header = "Authorization";
            target->auth_value = fmt::format("Bearer {}", token);
          }
        } else {
          msg = fmt::format("Secret {}/{} or its key {} not found (or empty)", o->meta.ns,
                            p.secret_name, p.secret_key);
          b->error = fmt::format("the credentials of ExternalModelProvider {} are not resolved: {}",
                                 b->name, msg);
        }
      }
      for (const auto& [k, v] : p.headers) {
        target->headers.emplace_back(k, v);
      }
      if (auto url = parseProviderUrl(p.base_url); !url) {
        if (b->error.empty()) {
          b->error = fmt::format("ExternalModelProvider {}: spec.baseURL {}", b->name,
                                 url.error().message);
        }
      } else {
        target->host = url->host;
        target->port = url->port;
        target->base_path = url->path;
        const bool v6 = url->host.find(':') != std::string::npos;
        target->authority = v6 ? "[" + url->host + "]" : url->host;
        if (url->port != 443) {
          target->authority += ":" + std::to_string(url->port);
        }
      }
      target->pool_key = fmt::format("{}:{}{}", target->host, target->port,
                                     target->insecure_skip_verify ? "/insecure" : "");
      b->provider = std::move(target);
      st.conditions.push_back(
          {"CredentialsResolved", creds, creds ? "CredentialsResolved" : "SecretNotFound", msg});
      st.conditions.push_back(
          {"Ready", b->error.empty(), b->error.empty() ? "Ready" : "Invalid",
           b->error.empty() ? fmt::format("requests go to https://{}:{}{}", b->provider->host,
                                          b->provider->port, b->provider->base_path)
                            : b->error});
      providers_[b->name] = b;
    }
  }

  void rewritesAndObjectives() {
    auto poolFor = [&](const Object* o, const config::PoolRef& ref) -> Backend* {
      if (ref.kind != "InferencePool" ||
          (ref.group != kPoolGroup && ref.group != kPoolGroupAlpha)) {
        return nullptr;
      }
      auto it = pools_.find(o->meta.ns + "/" + ref.name);
      return it == pools_.end() ? nullptr : it->second.get();
    };
    for (const auto* o : sorted(Kind::InferenceModelRewrite)) {
      const auto& rw = std::get<config::InferenceModelRewrite>(o->spec);
      auto& st = status(o->key());
      Backend* pool = poolFor(o, rw.pool_ref);
      if (pool == nullptr) {
        st.conditions.push_back(
            {"Accepted", false, "PoolNotFound",
             fmt::format("InferencePool {}/{} not found", o->meta.ns, rw.pool_ref.name)});
        continue;
      }
      st.conditions.push_back({"Accepted", true, "Accepted", ""});
      for (const auto& rule : rw.rules) {
        ModelRewrite m;
        m.name = o->meta.ns + "/" + o->meta.name;
        for (const auto& t : rule.targets) {
          m.targets.emplace_back(t.model, t.weight);
          m.total_weight += t.weight;
        }
        if (rule.models.empty()) {
          pool->catch_all_rewrites.push_back(m);
        } else {
          for (const auto& name : rule.models)
            pool->exact_rewrites[name].push_back(m);
        }
      }
    }
    for (const auto* o : sorted(Kind::InferenceObjective)) {
      const auto& obj = std::get<config::InferenceObjective>(o->spec);
      auto& st = status(o->key());
      Backend* pool = poolFor(o, obj.pool_ref);
      if (pool == nullptr) {
        st.conditions.push_back(
            {"Accepted", false, "PoolNotFound",
             fmt::format("InferencePool {}/{} not found", o->meta.ns, obj.pool_ref.name)});
        continue;
      }
      pool->objectives.emplace(o->meta.name, obj.priority);
      st.conditions.push_back({"Accepted", true, "Accepted", ""});
    }
    for (const auto* o : sorted(Kind::InferenceModel)) {
      const auto& m = std::get<config::InferenceModel>(o->spec);
      auto& st = status(o->key());
      Backend* pool = poolFor(o, m.pool_ref);
      if (pool == nullptr) {
        st.conditions.push_back(
            {"Accepted", false, "PoolNotFound",
             fmt::format("InferencePool {}/{} not found", o->meta.ns, m.pool_ref.name)});
        continue;
      }
      if (pool->model_priority.count(m.model_name) > 0) {
        st.conditions.push_back(
            {"Accepted", false, "ModelNameInUse",
             fmt::format("an older InferenceModel on this pool serves {}", m.model_name)});
        continue;
      }
      int32_t prio = m.criticality == "Critical" ? 1 : m.criticality == "Sheddable" ? -1 : 0;
      pool->model_priority[m.model_name] = prio;
      if (!m.target_models.empty()) {
        ModelRewrite rw;
        rw.name = o->meta.ns + "/" + o->meta.name;
        for (const auto& t : m.target_models) {
          rw.targets.emplace_back(t.model, t.weight);
          rw.total_weight += t.weight;
        }
        // Legacy objects rank before rewrites of the same name: they were the older API.
        auto& list = pool->exact_rewrites[m.model_name];
        list.insert(list.begin(), std::move(rw));
      }
      st.conditions.push_back({"Accepted", true, "Accepted", ""});
    }
  }

  // Resolves an HTTPRoute backendRef to a backend; `reason` is set when it cannot.
  std::shared_ptr<const Backend> backendFor(const Object* route, const config::BackendRef& ref,
                                            std::string& reason, std::string& message) {
    std::string ns = ref.ns.empty() ? route->meta.ns : ref.ns;
    bool pool =
        ref.kind == "InferencePool" && (ref.group == kPoolGroup || ref.group == kPoolGroupAlpha);
    bool service = ref.kind == "Service" && ref.group.empty();
    if (!pool && !service) {
      reason = "InvalidKind";
      message = fmt::format("backendRef kind {}/{} is not supported", ref.group, ref.kind);
      return nullptr;
    }
    if (ns != route->meta.ns &&
        !granted(kGatewayGroup, "HTTPRoute", route->meta.ns, ref.group, ref.kind, ns, ref.name)) {
      reason = "RefNotPermitted";
      message = fmt::format("no ReferenceGrant in {} allows a reference to {} {}", ns, ref.kind,
                            ref.name);
      return nullptr;
    }
    if (pool) {
      auto it = pools_.find(ns + "/" + ref.name);
      if (it == pools_.end()) {
        reason = "BackendNotFound";
        message = fmt::format("InferencePool {}/{} not found", ns, ref.name);
        return nullptr;
      }
      return it->second;
    }
    return serviceBackend(ns, ref.name, ref.port, reason, message);
  }

  // A Service port as a backend (shared by every reference to it), or null with the reason.
  std::shared_ptr<const Backend> serviceBackend(const std::string& ns, const std::string& name,
                                                std::optional<uint16_t> port_number,
                                                std::string& reason, std::string& message) {
    std::string key = fmt::format("{}/{}:{}", ns, name, port_number.value_or(0));
    if (auto it = services_.find(key); it != services_.end())
      return it->second;
    const auto* obj = store_.find(fmt::format("Service/{}/{}", ns, name));
    if (obj == nullptr) {
      reason = "BackendNotFound";
      message = fmt::format("Service {}/{} not found", ns, name);
      return nullptr;
    }
    const auto& svc = std::get<config::Service>(obj->spec);
    if (svc.type == "ExternalName") {
      reason = "InvalidKind";
      message = "ExternalName Services are not supported as backends";
      return nullptr;
    }
    const config::Service::Port* port = port_number ? servicePort(svc, *port_number) : nullptr;
    if (port == nullptr) {
      reason = "BackendNotFound";
      message = fmt::format("Service {}/{} has no port {}", ns, name, port_number.value_or(0));
      return nullptr;
    }
    auto b = std::make_shared<Backend>();
    b->kind = "Service";
    b->name = ns + "/" + name;
    b->model = "Service/" + b->name;
    b->engine = "vllm";
    // Backend protocol from the Service port's appProtocol (Gateway API GEP-1911).
    b->h2c = port->app_protocol == "kubernetes.io/h2c";
    b->service_port = port->port;
    b->endpoints = resolver_.service(ns, name, svc, *port);
    services_[key] = b;
    return b;
  }

  // Hostnames a route gets on a listener: the intersection, or nullopt when there is none.
  // An empty vector means "any host the listener accepts".
  static std::optional<std::vector<std::string>> intersect(
      const std::optional<std::string>& listener, const std::vector<std::string>& route) {
    if (route.empty()) {
      if (listener)
        return std::vector<std::string>{*listener};
      return std::vector<std::string>{};
    }
    if (!listener)
      return route;
    std::vector<std::string> out;
    const std::string& l = *listener;
    auto wildcardCovers = [](const std::string& wild, const std::string& name) {
      std::string_view suffix = std::string_view(wild).substr(1);
      return name.size() > suffix.size() && name.substr(name.size() - suffix.size()) == suffix;
    };
    for (const auto& h : route) {
      bool lw = l[0] == '*', hw = h[0] == '*';
      if (!lw && !hw && l == h) {
        out.push_back(h);
      } else if (lw && !hw && wildcardCovers(l, h)) {
        out.push_back(h);
      } else if (!lw && hw && wildcardCovers(h, l)) {
        out.push_back(l);
      } else if (lw && hw) {
        if (l == h || wildcardCovers(l, h.substr(1)))
          out.push_back(h);
        else if (wildcardCovers(h, l.substr(1)))
          out.push_back(l);
      }
    }
    if (out.empty())
      return std::nullopt;
    return out;
  }

  bool namespaceAllowed(const config::Listener& l, const Object* gw,
                        const std::string& route_ns) const {
    if (l.routes_from == "All")
      return true;
    if (l.routes_from == "Same")
      return route_ns == gw->meta.ns;
    if (l.routes_from == "Selector") {
      auto it = namespaces_.find(route_ns);
      static const std::map<std::string, std::string> kNone;
      std::map<std::string, std::string> labels = it == namespaces_.end() ? kNone : *it->second;
      labels["kubernetes.io/metadata.name"] = route_ns;
      return l.routes_selector.matches(labels);
    }
    return false;
  }

  static bool kindAllowed(const config::Listener& l, std::string_view group,
                          std::string_view kind) {
    if (l.route_kinds.empty())
      return true;
    return std::any_of(l.route_kinds.begin(), l.route_kinds.end(),
                       [&](const auto& k) { return k.group == group && k.kind == kind; });
  }

  struct Attachment {
    GatewayInfo* gw;
    std::vector<size_t> listeners;
    std::vector<std::optional<std::vector<std::string>>> hosts;  // HTTPRoute only
  };

  // Resolves one parentRef; fills the parent status and returns where the route attaches.
  std::optional<Attachment> attach(const Object* route, const config::ParentRef& ref,
                                   std::string_view route_group, std::string_view route_kind,
                                   const std::vector<std::string>& hostnames,
                                   ObjectStatus::Parent& ps) {
    std::string ns = ref.ns.empty() ? route->meta.ns : ref.ns;
    ps.ref = fmt::format("Gateway/{}/{}{}{}", ns, ref.name, ref.section_name.empty() ? "" : "/",
                         ref.section_name);
    if (ref.kind != "Gateway" || ref.group != kGatewayGroup) {
      ps.conditions.push_back(
          {"Accepted", false, "NoMatchingParent", "only Gateways can be parents"});
      return std::nullopt;
    }
    auto it = gateways_.find(ns + "/" + ref.name);
    if (it == gateways_.end()) {
      ps.conditions.push_back({"Accepted", false, "NoMatchingParent",
                               fmt::format("Gateway {}/{} not found or not ours", ns, ref.name)});
      return std::nullopt;
    }
    GatewayInfo& gw = it->second;
    Attachment a{&gw, {}, {}};
    bool any_listener = false, any_allowed = false;
    for (size_t i = 0; i < gw.spec->listeners.size(); ++i) {
      const auto& l = gw.spec->listeners[i];
      if (!ref.section_name.empty() && l.name != ref.section_name)
        continue;
      if (ref.port && l.port != *ref.port)
        continue;
      any_listener = true;
      if (!namespaceAllowed(l, gw.obj, route->meta.ns) || !kindAllowed(l, route_group, route_kind))
        continue;
      any_allowed = true;
      auto hosts = intersect(
          l.hostname ? std::optional<std::string>(base::toLower(*l.hostname)) : std::nullopt,
          hostnames);
      if (!hosts)
        continue;
      a.listeners.push_back(i);
      a.hosts.push_back(std::move(hosts));
    }
    if (!any_listener) {
      ps.conditions.push_back(
          {"Accepted", false, "NoMatchingParent", "no listener matches the sectionName and port"});
      return std::nullopt;
    }
    if (!any_allowed) {
      ps.conditions.push_back({"Accepted", false, "NotAllowedByListeners",
                               "no listener allows routes of this kind from this namespace"});
      return std::nullopt;
    }
    if (a.listeners.empty()) {
      ps.conditions.push_back({"Accepted", false, "NoMatchingListenerHostname",
                               "no listener hostname intersects the route's hostnames"});
      return std::nullopt;
    }
    ps.conditions.push_back({"Accepted", true, "Accepted", ""});
    return a;
  }

  void httpRoutes() {
    for (const auto* o : sorted(Kind::HTTPRoute)) {
      const auto& route = std::get<config::HTTPRoute>(o->spec);
      auto& st = status(o->key());
      const std::string route_key = o->meta.ns + "/" + o->meta.name;
      const std::string route_auth = authAnnotation(*o);
      const std::string route_limits = rateLimitAnnotation(*o);
      // Actions and match entries, shared by every listener the route attaches to.
      std::string ref_reason, ref_message;
      std::vector<std::vector<MatchEntry*>> rule_entries;
      std::set<std::string> pools_used;
      for (size_t ri = 0; ri < route.rules.size(); ++ri) {
        const auto& rule = route.rules[ri];
        auto action = std::make_unique<RouteAction>();
        action->route = route_key;
        action->qualified = "HTTPRoute/" + route_key;
        action->rule = ri;
        action->request_timeout = rule.request_timeout;
        action->backend_timeout = rule.backend_timeout;
        action->auth_mode = route_auth;
        action->rate_limits = route_limits;
        action->retry = rule.retry;
        for (const auto& ref : rule.backend_refs) {
          RouteAction::Target t;
          t.weight = ref.weight;
          std::string reason, message;
          t.backend = backendFor(o, ref, reason, message);
          if (!t.backend) {
            t.error = message;
            if (ref_reason.empty()) {
              ref_reason = reason;
              ref_message = message;
            }
          } else if (t.backend->kind == "InferencePool") {
            pools_used.insert(t.backend->name);
          }
          action->total_weight += t.weight;
          action->targets.push_back(std::move(t));
        }
        for (const auto& f : rule.filters) {
          using T = config::HttpRouteFilter::Type;
          switch (f.type) {
            case T::RequestHeaderModifier:
              action->request_headers = f.headers;
              break;
            case T::ResponseHeaderModifier:
              action->response_headers = f.headers;
              break;
            case T::URLRewrite:
              action->rewrite = f;
              break;
            case T::RequestRedirect:
              action->redirect = f;
              break;
            case T::RequestMirror: {
              std::string reason, message;
              auto b = backendFor(o, f.mirror, reason, message);
              if (b) {
                action->mirrors.push_back({b, f.mirror_fraction});
              } else if (ref_reason.empty()) {
                ref_reason = reason;
                ref_message = "requestMirror: " + message;
              }
              break;
            }
          }
        }
        std::vector<MatchEntry*> entries;
        std::vector<config::HttpRouteMatch> matches = rule.matches;
        if (matches.empty())
          matches.emplace_back();
        for (size_t mi = 0; mi < matches.size(); ++mi) {
          const auto& m = matches[mi];
          auto e = std::make_unique<MatchEntry>();
          e->action = action.get();
          e->path_type = m.path.type;
          if (m.path.type == config::PathMatch::Type::RegularExpression) {
            e->path = m.path.value;
            e->path_re = compile(m.path.value, false);
          } else if (m.path.type == config::PathMatch::Type::PathPrefix) {
            e->path = stripSlash(m.path.value);
          } else {
            e->path = m.path.value;
          }
          e->method = m.method;
          for (const auto& h : m.headers) {
            bool rx = h.type == config::StringMatch::Type::RegularExpression;
            e->headers.push_back({h.name, rx, h.value, rx ? compile(h.value, false) : nullptr});
          }
          for (const auto& q : m.query) {
            bool rx = q.type == config::StringMatch::Type::RegularExpression;
            e->query.push_back({q.name, rx, q.value, rx ? compile(q.value, false) : nullptr});
          }
          e->creation = o->meta.creation;
          e->seq = o->meta.seq;
          e->route_key = route_key;
          e->rule = ri;
          e->index = mi;
          entries.push_back(e.get());
          table_->entries.push_back(std::move(e));
        }
        rule_entries.push_back(std::move(entries));
        table_->actions.push_back(std::move(action));
      }
      for (const auto& ref : route.parent_refs) {
        ObjectStatus::Parent ps;
        auto a = attach(o, ref, kGatewayGroup, "HTTPRoute", route.hostnames, ps);
        if (ref_reason.empty()) {
          ps.conditions.push_back({"ResolvedRefs", true, "ResolvedRefs", ""});
        } else {
          ps.conditions.push_back({"ResolvedRefs", false, ref_reason, ref_message});
        }
        st.parents.push_back(std::move(ps));
        if (!a)
          continue;
        for (size_t k = 0; k < a->listeners.size(); ++k) {
          size_t li = a->listeners[k];
          ++attached_[a->gw->obj->key()][li];
          if (!a->gw->usable[li])
            continue;
          ListenerRoutes& lr = *a->gw->listeners[li];
          const auto& hosts = *a->hosts[k];
          for (const auto& entries : rule_entries) {
            for (const auto* e : entries) {
              if (hosts.empty()) {
                lr.any_host.add(e);
              }
              for (const auto& h : hosts) {
                if (h[0] == '*') {
                  std::string suffix = h.substr(1);
                  auto w = std::find_if(lr.wildcard_hosts.begin(), lr.wildcard_hosts.end(),
                                        [&](const auto& p) { return p.first == suffix; });
                  if (w == lr.wildcard_hosts.end()) {
                    lr.wildcard_hosts.emplace_back(suffix, RuleSet{});
                    w = std::prev(lr.wildcard_hosts.end());
                  }
                  w->second.add(e);
                } else {
                  lr.exact_hosts[h].add(e);
                }
              }
            }
          }
        }
        for (const auto& p : pools_used) {
          a->gw->pools.insert(p);
          pool_parents_[p].insert(a->gw->obj->meta.ns + "/" + a->gw->obj->meta.name);
        }
      }
    }
  }

  void modelRoutes() {
    for (const auto* o : sorted(Kind::ModelRoute)) {
      const auto& mr = std::get<config::ModelRoute>(o->spec);
      auto& st = status(o->key());
      auto entry = std::make_shared<ModelRouteEntry>();
      entry->key = o->meta.ns + "/" + o->meta.name;
      entry->qualified = "ModelRoute/" + entry->key;
      entry->creation = o->meta.creation;
      entry->seq = o->meta.seq;
      entry->rate_limit = mr.rate_limit;
      entry->auth_mode = authAnnotation(*o);
      entry->rate_limits = rateLimitAnnotation(*o);
      std::string ref_reason, ref_message;
      for (const auto& rule : mr.rules) {
        ModelRouteEntry::Rule r;
        r.headers = rule.headers;
        for (const auto& [_, m] : rule.headers) {
          r.header_res.push_back(m.type == config::StringMatch::Type::RegularExpression
                                     ? compile(m.value, false)
                                     : nullptr);
        }
        r.uri = rule.uri;
        if (rule.uri && rule.uri->type == config::StringMatch::Type::RegularExpression) {
          r.uri_re = compile(rule.uri->value, false);
        }
        r.body_model = rule.body_model;
        bool weighted = std::any_of(rule.targets.begin(), rule.targets.end(),
                                    [](const auto& t) { return t.weight.has_value(); });
        for (const auto& t : rule.targets) {
          ModelRouteEntry::Rule::Target target;
          target.weight = weighted ? t.weight.value_or(0) : 1;
          if (!t.model_server.empty()) {
            auto it = servers_.find(o->meta.ns + "/" + t.model_server);
            if (it != servers_.end()) {
              target.backend = it->second;
            } else {
              target.error = fmt::format("ModelServer {}/{} not found", o->meta.ns, t.model_server);
            }
          } else {
            auto it = providers_.find(o->meta.ns + "/" + t.external_provider);
            if (it != providers_.end()) {
              target.backend = it->second;
            } else {
              target.error = fmt::format("ExternalModelProvider {}/{} not found", o->meta.ns,
                                         t.external_provider);
            }
          }
          if (!target.backend && ref_reason.empty()) {
            ref_reason = "BackendNotFound";
            ref_message = target.error;
          }
          r.total_weight += target.weight;
          r.targets.push_back(std::move(target));
        }
        entry->rules.push_back(std::move(r));
      }
      auto add = [&](ModelSpace& space, const std::string& section, std::optional<uint16_t> port) {
        auto e = std::make_shared<ModelRouteEntry>(*entry);
        e->section = section;
        e->port = port;
        if (!mr.model_name.empty())
          space.by_model[mr.model_name].push_back(e);
        for (const auto& l : mr.lora_adapters)
          space.by_lora[l].push_back(e);
      };
      st.conditions.push_back({"ResolvedRefs", ref_reason.empty(),
                               ref_reason.empty() ? "ResolvedRefs" : ref_reason, ref_message});
      if (mr.parent_refs.empty()) {
        // No parents: the Gateways of the route's namespace, or the default listener.
        bool any = false;
        if (!table_->has_gateways) {
          add(*default_space_, "", std::nullopt);
          any = true;
        }
        for (auto& [key, gw] : gateways_) {
          if (gw.obj->meta.ns != o->meta.ns)
            continue;
          bool allowed = false;
          for (size_t i = 0; i < gw.spec->listeners.size(); ++i) {
            const auto& l = gw.spec->listeners[i];
            if (namespaceAllowed(l, gw.obj, o->meta.ns) &&
                kindAllowed(l, kKthenaGroup, "ModelRoute")) {
              allowed = true;
              ++attached_[gw.obj->key()][i];
            }
          }
          if (allowed) {
            add(*gw.space, "", std::nullopt);
            any = true;
          }
        }
        st.conditions.push_back({"Accepted", any, any ? "Accepted" : "NoMatchingParent",
                                 any ? "" : "no Gateway in this namespace accepts it"});
        continue;
      }
      bool any = false;
      for (const auto& ref : mr.parent_refs) {
        ObjectStatus::Parent ps;
        auto a = attach(o, ref, kKthenaGroup, "ModelRoute", {}, ps);
        st.parents.push_back(std::move(ps));
        if (!a)
          continue;
        any = true;
        for (size_t li : a->listeners)
          ++attached_[a->gw->obj->key()][li];
        add(*a->gw->space, ref.section_name, ref.port);
      }
      st.conditions.push_back({"Accepted", any, any ? "Accepted" : "NoMatchingParent",
                               any ? "" : "no parentRef was accepted"});
    }
  }

  static void sortSpace(ModelSpace& space) {
    auto older = [](const std::shared_ptr<const ModelRouteEntry>& a,
                    const std::shared_ptr<const ModelRouteEntry>& b) {
      if (a->creation != b->creation)
        return a->creation < b->creation;
      if (a->seq != b->seq)
        return a->seq < b->seq;
      return a->key < b->key;
    };
    std::set<std::string> names;
    for (auto& [name, v] : space.by_model) {
      std::stable_sort(v.begin(), v.end(), older);
      names.insert(name);
    }
    for (auto& [name, v] : space.by_lora) {
      std::stable_sort(v.begin(), v.end(), older);
      names.insert(name);
    }
    for (const auto& n : space.names)
      names.insert(n);
    space.names.assign(names.begin(), names.end());
  }

  static std::string modelsJson(const std::vector<std::string>& names) {
    std::string json = "{\"object\":\"list\",\"data\":[";
    for (size_t i = 0; i < names.size(); ++i) {
      json += i ? "," : "";
      json +=
          fmt::format("{{\"id\":{},\"object\":\"model\",\"created\":0,\"owned_by\":\"sluice\"}}",
                      base::jsonQuote(names[i]));
    }
    return json + "]}";
  }

  void finish() {
    // Model names a Gateway serves through pools: rewrite and legacy names.
    for (auto& [key, gw] : gateways_) {
      for (const auto& p : gw.pools) {
        const auto& pool = *pools_[p];
        for (const auto& [name, _] : pool.exact_rewrites)
          gw.space->names.push_back(name);
        for (const auto& [name, _] : pool.model_priority)
          gw.space->names.push_back(name);
      }
      for (const auto& b : options_.config_models)
        gw.space->names.push_back(b->model);
      sortSpace(*gw.space);
      gw.space->models_json = modelsJson(gw.space->names);
      auto& st = status(gw.obj->key());
      for (size_t i = 0; i < gw.listeners.size(); ++i) {
        st.listeners[i].attached_routes = attached_[gw.obj->key()][i];
        if (gw.usable[i]) {
          auto& lr = *gw.listeners[i];
          auto& group = table_->ports[lr.port];
          if (!group.empty() && group.front()->tls != lr.tls) {
            // Another Gateway serves this port with the other protocol: the first Gateway (by
            // namespace/name) keeps it.
            auto& ls = st.listeners[i];
            ls.conditions.clear();
            ls.conditions.push_back(
                {"Conflicted", true, "ProtocolConflict",
                 fmt::format("port {} is served with {} by Gateway {}", lr.port,
                             group.front()->tls ? "HTTPS" : "HTTP", group.front()->gateway)});
            ls.conditions.push_back({"Programmed", false, "Invalid", ""});
            continue;
          }
          lr.any_host.finish();
          for (auto& [_, rs] : lr.exact_hosts)
            rs.finish();
          for (auto& [_, rs] : lr.wildcard_hosts)
            rs.finish();
          std::stable_sort(
              lr.wildcard_hosts.begin(), lr.wildcard_hosts.end(),
              [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
          group.push_back(gw.listeners[i]);
        }
      }
    }
    if (default_listener_) {
      for (const auto& b : options_.config_models)
        default_space_->names.push_back(b->model);
      sortSpace(*default_space_);
      default_space_->models_json = modelsJson(default_space_->names);
      table_->ports[default_listener_->port].push_back(default_listener_);
    }
    for (auto& [port, list] : table_->ports) {
      auto rank = [](const std::shared_ptr<const ListenerRoutes>& l) {
        if (!l->hostname)
          return 0;
        return (*l->hostname)[0] == '*' ? 1 : 2;
      };
      std::stable_sort(list.begin(), list.end(), [&](const auto& a, const auto& b) {
        int ra = rank(a), rb = rank(b);
        if (ra != rb)
          return ra > rb;
        if (ra == 1)
          return a->hostname->size() > b->hostname->size();
        return false;
      });
    }
    // Pool status: one parent entry per Gateway that reaches it.
    for (const auto* o : sorted(Kind::InferencePool)) {
      auto& st = status(o->key());
      std::string name = o->meta.ns + "/" + o->meta.name;
      const auto& ref = pool_refs_ok_[name];
      for (const auto& gw : pool_parents_[name]) {
        ObjectStatus::Parent ps;
        ps.ref = "Gateway/" + gw;
        ps.conditions.push_back({"Accepted", true, "Accepted", ""});
        ps.conditions.push_back({"ResolvedRefs", ref.first,
                                 ref.first ? "ResolvedRefs" : "InvalidExtensionRef", ref.second});
        st.parents.push_back(std::move(ps));
      }
      const auto& b = *pools_[name];
      st.conditions.push_back(readyCondition(b.endpoints.size()));
      addBackend(pools_[name]);
    }
    for (const auto& [_, b] : servers_)
      addBackend(b);
    for (const auto& [_, b] : services_)
      addBackend(b);
    for (auto& [_, s] : status_)
      table_->status.push_back(std::move(s));
  }

  // A backend whose endpoints come from Pods or EndpointSlices: its slot lets an
  // endpoint-only update replace it in a later snapshot.
  void addBackend(const std::shared_ptr<Backend>& b) {
    b->slot = static_cast<uint32_t>(table_->backends.size());
    table_->backends.push_back(b);
  }

  const config::ObjectStore& store_;
  const RouteBuildOptions& options_;
  EndpointResolver resolver_;
  std::shared_ptr<RouteTable> table_;
  std::vector<const Object*> by_kind_[static_cast<size_t>(Kind::Namespace) + 1];
  std::unordered_map<std::string, const std::map<std::string, std::string>*> namespaces_;
  std::map<std::string, ObjectStatus> status_;
  std::set<std::string> our_classes_;
  std::map<std::string, GatewayInfo> gateways_;
  std::map<std::string, std::shared_ptr<Backend>> pools_;
  std::map<std::string, std::pair<bool, std::string>> pool_refs_ok_;
  std::map<std::string, std::set<std::string>> pool_parents_;
  std::map<std::string, std::shared_ptr<Backend>> servers_;
  std::map<std::string, std::shared_ptr<Backend>> providers_;
  std::map<std::string, std::shared_ptr<Backend>> services_;
  std::map<std::string, std::map<size_t, uint32_t>> attached_;
  std::shared_ptr<ModelSpace> default_space_ = std::make_shared<ModelSpace>();
  std::shared_ptr<ModelSpace> config_space_ = std::make_shared<ModelSpace>();
  std::shared_ptr<ListenerRoutes> default_listener_;
};

}  // namespace

std::shared_ptr<RouteTable> buildRouteTable(const config::ObjectStore& store,
                                            const RouteBuildOptions& options,
                                            EndpointRegistry& registry) {
  return Builder(store, options, registry).build();
}

}  // namespace sluice::router
