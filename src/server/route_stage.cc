#include "server/route_stage.h"

#include <algorithm>

#include <fmt/format.h>

#include "server/client_io.h"
#include "server/completion.h"
#include "server/mirror.h"
#include "server/worker.h"

namespace sluice::server {

using openai::ErrorKind;

namespace {

// RequestRedirect: the Location built from the request and the filter.
std::string redirectLocation(const Exchange& x, const router::MatchEntry& entry,
                             const config::HttpRouteFilter& f, uint16_t listener_port) {
  std::string scheme = f.scheme.value_or(x.session.tls ? "https" : "http");
  std::string host = f.hostname.value_or(std::string(x.host));
  std::optional<uint16_t> port = f.port;
  if (!port && !f.scheme) {
    port = listener_port;
  }
  bool default_port =
      !port || (scheme == "http" && *port == 80) || (scheme == "https" && *port == 443);
  std::string path = f.path ? router::rewritePath(*f.path, entry, x.path) : std::string(x.path);
  std::string_view query;
  if (auto q = x.target.find('?'); q != std::string_view::npos) {
    query = x.target.substr(q);
  }
  return default_port ? fmt::format("{}://{}{}{}", scheme, host, path, query)
                      : fmt::format("{}://{}:{}{}{}", scheme, host, *port, path, query);
}

}  // namespace

void applyPoolPolicy(Exchange& x, const router::Backend& pool, const openai::RequestPeek& peek,
                     RouteChoice& route) {
  if (peek.model.empty()) {
    return;
  }
  // x-gateway-model-name-rewrite presets the target; else InferenceModelRewrite.
  if (auto it = x.req.find("x-gateway-model-name-rewrite"); it != x.req.end()) {
    route.upstream_model = std::string(it->value());
  } else if (const auto* rw = router::RouteTable::rewriteFor(pool, peek.model)) {
    route.upstream_model =
        std::string(router::RouteTable::pickModel(*rw, x.session.worker.random()));
    route.rewrite = rw;
  }
  if (auto it = x.req.find(router::kObjectiveHeader); it != x.req.end()) {
    auto o = pool.objectives.find(std::string(it->value()));
    if (o != pool.objectives.end()) {
      x.priority = o->second;
      x.objective = o->first;
    }
  } else if (auto p = pool.model_priority.find(peek.model); p != pool.model_priority.end()) {
    x.priority = p->second;
  }
}

awaitable<bool> matchRoute(Exchange& x, const router::ListenerRoutes* listener,
                           const router::RequestView& view, const openai::RequestPeek& peek,
                           RouteMatch& out) {
  Worker& w = x.session.worker;
  const auto& snapshot = x.gen->snapshot;
  if (listener != nullptr && !peek.model.empty()) {
    // ModelRoutes first, on /v1 paths (Kthena's precedence): the oldest route whose rules
    // match wins.
    auto mt = router::RouteTable::matchModel(*listener, view, w.random());
    if (mt.target != nullptr) {
      out.routed = true;
      out.model_route = mt.route;
      x.route_kind = "ModelRoute";
      x.route = mt.route->key;
      x.route_qualified = mt.route->qualified;
      for (size_t i = 0; i < mt.route->rules.size(); ++i) {
        const auto& targets = mt.route->rules[i].targets;
        if (!targets.empty() && mt.target >= &targets.front() && mt.target <= &targets.back()) {
          x.route_rule = static_cast<int>(i);
        }
      }
      if (!mt.target->backend) {
        out.error = mt.target->error;
      } else {
        out.route.backend = &snapshot->current(*mt.target->backend);
        out.route.lora = mt.lora;
        if (!mt.lora && !out.route.backend->upstream_model.empty()) {
          out.route.upstream_model = out.route.backend->upstream_model;
        }
      }
    }
  }
  if (!out.routed && listener != nullptr) {
    auto m = router::RouteTable::matchHttp(*listener, view);
    if (m.action != nullptr) {
      out.routed = true;
      const auto& action = *m.action;
      x.route_kind = "HTTPRoute";
      x.route = action.route;
      x.route_qualified = action.qualified;
      x.route_rule = static_cast<int>(action.rule);
      out.route.action = &action;
      out.route.entry = m.entry;
      if (action.request_timeout.count() > 0) {
        x.deadline = x.start + action.request_timeout;
      }
      if (action.redirect) {
        std::string location = redirectLocation(x, *m.entry, *action.redirect, listener->port);
        co_await writeSimple(x, action.redirect->status_code, "text/plain", "",
                             fmt::format("Location: {}\r\n", location));
        co_return false;
      }
      if (action.rewrite && action.rewrite->path) {
        out.route.rewritten_path = router::rewritePath(*action.rewrite->path, *m.entry, x.path);
        if (auto q = x.target.find('?'); q != std::string_view::npos) {
          out.route.rewritten_path.append(x.target.substr(q));
        }
      }
      if (!action.mirrors.empty()) {
        startMirrors(x, action, snapshot, out.route.rewritten_path);
      }
      const auto* target = router::RouteTable::pickTarget(action, w.random());
      if (target == nullptr) {
        out.error = action.targets.empty() ? "the route has no backends"
                                           : "every backend of the route has weight 0";
      } else if (!target->backend) {
        out.error = target->error;
      } else {
        out.route.backend = &snapshot->current(*target->backend);
        if (out.route.backend->kind == "InferencePool") {
          applyPoolPolicy(x, *out.route.backend, peek, out.route);
        }
      }
    }
  }
  if (!out.routed && listener != nullptr && !peek.model.empty()) {
    // The models: section of the router's own file, compiled into ModelRoutes every listener
    // shares, consulted last.
    auto mt = router::RouteTable::matchConfigModel(*listener, view, w.random());
    if (mt.target != nullptr && mt.target->backend) {
      out.routed = true;
      out.route.backend = &snapshot->current(*mt.target->backend);
      out.route.upstream_model = out.route.backend->upstream_model;
    }
  }
  co_return true;
}

void labelRoute(Exchange& x, const router::ListenerRoutes* listener,
                const openai::RequestPeek& peek, const RouteMatch& m) {
  // The model label stays bounded: a name the listener serves (ModelRoute, rewrite, models:),
  // else, for a pool or Service, the client's name under the worker's bound (Shard::series).
  const router::Backend& backend = *m.route.backend;
  bool client_named = false;
  if (peek.model.empty()) {
    x.model_label = metrics::kNoModel;
  } else if (backend.kind.empty()) {
    x.model_label = backend.model;
  } else if (listener != nullptr && listener->space &&
             std::binary_search(listener->space->names.begin(), listener->space->names.end(),
                                peek.model)) {
    x.model_label = peek.model;
  } else {
    x.model_label = peek.model;
    client_named = true;
  }
  labelExchange(x, backend, peek.model, m.route.upstream_model, client_named);
}

awaitable<bool> checkRoute(Exchange& x, const router::ListenerRoutes* listener,
                           const openai::RequestPeek& peek, const RouteMatch& m) {
  if (!m.routed) {
    if (!peek.model.empty()) {
      x.model_label = metrics::kUnknownModel;
      co_await writeError(x, ErrorKind::ModelNotFound,
                          fmt::format("The model '{}' does not exist", peek.model));
    } else {
      co_await writeError(x, ErrorKind::NotFound, fmt::format("no route for path '{}'", x.path));
    }
    co_return false;
  }
  if (m.route.backend == nullptr || !m.route.backend->error.empty()) {
    // An invalid backend reference: a 500 for this share of the traffic (Gateway API).
    // Built before the co_await: g++ 12 mishandles conditional temporaries across it.
    std::string message = m.route.backend
                              ? m.route.backend->error
                              : fmt::format("the route's backend is invalid: {}", m.error);
    co_await writeError(x, ErrorKind::Internal, message);
    co_return false;
  }
  labelRoute(x, listener, peek, m);
  co_return true;
}

}  // namespace sluice::server
