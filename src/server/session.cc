#include "server/session.h"

#include <algorithm>
#include <cstring>
#include <iterator>
#include <optional>

#include <boost/asio/buffer.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/status.hpp>
#include <fmt/format.h>

#include "backends/h2_client.h"
#include "backends/provider.h"
#include "base/log.h"
#include "base/strings.h"
#include "filters/filter_chain.h"
#include "http/headers.h"
#include "http/padded_body.h"
#include "http/sse.h"
#include "openai/errors.h"
#include "openai/peek.h"
#include "openai/prompt_render.h"
#include "openai/response_rewrite.h"
#include "openai/splice.h"
#include "openai/usage.h"
#include "router/route_table.h"
#include "scheduler/scheduler.h"
#include "server/admission_stage.h"
#include "server/attempts.h"
#include "server/client_io.h"
#include "server/completion.h"
#include "server/exchange.h"
#include "server/flow_stage.h"
#include "server/header_policy.h"
#include "server/picker_stage.h"
#include "server/relay.h"
#include "server/route_stage.h"
#include "server/schedule_stage.h"
#include "server/trace_stage.h"
#include "server/worker.h"

namespace sluice::server {

using openai::ErrorKind;

namespace {

template <class Parser>
awaitable<void> clientReadHeader(Session& s, Parser& parser, error_code& ec) {
  if (s.tls) {
    co_await bhttp::async_read_header(*s.tls, s.buffer, parser,
                                      asio::redirect_error(use_awaitable, ec));
  } else {
    co_await bhttp::async_read_header(s.stream, s.buffer, parser,
                                      asio::redirect_error(use_awaitable, ec));
  }
}

template <class Parser>
awaitable<void> clientReadBody(Session& s, Parser& parser, error_code& ec) {
  if (s.tls) {
    co_await bhttp::async_read(*s.tls, s.buffer, parser, asio::redirect_error(use_awaitable, ec));
  } else {
    co_await bhttp::async_read(s.stream, s.buffer, parser, asio::redirect_error(use_awaitable, ec));
  }
}

enum class ReadPhase { Headers, Body };

// Most requests arrive whole in the first read: they are parsed from the session's buffer
// without an asynchronous read or a deadline. True when the phase is complete or the bytes are
// malformed (`ec` set); false when more bytes must be read (what was parsed stays parsed).
template <class Parser>
bool parseBuffered(Session& s, Parser& parser, ReadPhase phase, error_code& ec) {
  auto complete = [&] {
    return phase == ReadPhase::Headers ? parser.is_header_done() : parser.is_done();
  };
  while (!complete() && s.buffer.size() > 0) {
    const size_t n = parser.put(s.buffer.data(), ec);
    s.buffer.consume(n);
    if (ec == bhttp::error::need_more) {
      ec = {};
      return false;
    }
    if (ec) {
      return true;
    }
    if (n == 0) {
      return false;
    }
  }
  return complete();
}

// A request that could not be read: 408 when its deadline expired, 431/413 over the limits,
// 400 when malformed; nothing when the client just closed.
awaitable<void> answerReadError(Session& s, const config::RouterConfig& cfg, const error_code& ec,
                                bool expired, ReadPhase phase) {
  const bool headers = phase == ReadPhase::Headers;
  const auto timeout = cfg.timeouts.client_write;
  const bool quiet = ec == bhttp::error::end_of_stream || ec == asio::error::eof ||
                     ec == asio::error::connection_reset ||
                     (headers && ec == asio::error::operation_aborted);
  if (ec == bhttp::error::body_limit && !(headers && expired)) {
    co_await writeEarlyError(
        s, ErrorKind::PayloadTooLarge,
        fmt::format("request body exceeds {} bytes", cfg.limits.max_body_bytes), timeout);
  } else if (expired) {
    // Chosen before the co_await: g++ 12 mishandles conditional temporaries across it.
    const std::string_view what = headers ? "request headers were not received in time"
                                          : "request body was not received in time";
    co_await writeEarlyError(s, ErrorKind::RequestTimeout, what, timeout);
  } else if (ec == bhttp::error::header_limit) {
    co_await writeEarlyError(
        s, ErrorKind::HeadersTooLarge,
        fmt::format("request headers exceed {} bytes", cfg.limits.max_header_bytes), timeout);
  } else if (!quiet) {
    co_await writeEarlyError(s, ErrorKind::InvalidRequest,
                             fmt::format("malformed HTTP request: {}", ec.message()), timeout);
  }
}

bool validRequestId(std::string_view id) {
  if (id.empty() || id.size() > 128) {
    return false;
  }
  return std::all_of(id.begin(), id.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

// --- writing to the client --------------------------------------------------------------------

// A pool with an endpoint picker: the picker's answer. False when the response was written
// (its immediate response, or FailClose); `followed` says whether its list is to be used (not
// under FailOpen), with the body it gave back in the request and `picked` peeked from it.
awaitable<bool> consultPicker(Exchange& x, const router::Backend& pool, PickerCall& call,
                              std::vector<const router::Endpoint*>& targets,
                              std::optional<openai::RequestPeek>& picked, bool& followed) {
  followed = false;
  PickerAnswer a;
  co_await askPicker(x, pool, call, a);
  if (a.kind == PickerAnswer::Kind::kImmediate) {
    std::string extra;
    for (const auto& [name, value] : a.immediate_headers) {
      if (!base::iequals(name, "content-type") && !base::iequals(name, "content-length")) {
        extra += fmt::format("{}: {}\r\n", name, value);
      }
    }
    x.error_type = "endpoint_picker";
    co_await writeSimple(x, a.status, "application/json", a.immediate_body, extra);
    co_return false;
  }
  if (a.kind == PickerAnswer::Kind::kUnavailable) {
    SLUICE_LOG(Debug, "picker", "pool {}: {}{}", pool.name, a.error,
               pool.picker_fail_open ? " (FailOpen: the router picks)" : "");
    if (!pool.picker_fail_open) {
      co_await writeError(x, ErrorKind::Unavailable,
                          fmt::format("the pool's endpoint picker is unavailable: {}", a.error));
      co_return false;
    }
    co_return true;
  }
  for (const auto& d : a.destinations) {
    auto it = std::find_if(pool.endpoints.begin(), pool.endpoints.end(),
                           [&](const router::Endpoint& e) { return e.address == d; });
    if (it != pool.endpoints.end()) {
      targets.push_back(&*it);
    }
  }
  if (targets.empty()) {
    co_await writeError(x, ErrorKind::NoEndpoints,
                        "the endpoint picker chose no endpoint of the pool");
    co_return false;
  }
  if (a.body) {
    x.req.body() = base::PaddedBuffer();
    x.req.body().append(*a.body);
    auto p = openai::peekRequest(x.req.body().view(),
                                 x.req.body().capacity() + base::PaddedBuffer::kPadding);
    if (p) {
      picked = std::move(*p);
    }
  }
  followed = true;
  co_return true;
}

// Sends the request to the backend's endpoints in order until one answers, then relays.
awaitable<void> proxy(Exchange& x, const RouteChoice& route,
                      const openai::RequestPeek& client_peek) {
  const router::Backend& backend = *route.backend;
  Session& s = x.session;
  Worker& w = s.worker;
  const auto& cfg = x.gen->snapshot->config;

  // A pool's picker decides the endpoints and the body (its model rewrite replaces ours).
  PickerCall picker;
  std::vector<const router::Endpoint*> picked_targets;
  std::optional<openai::RequestPeek> picked;
  bool followed = false;
  if (backend.picker) {
    const size_t pick = traceOpen(x, "endpoint_picker");
    const bool go_on = co_await consultPicker(x, backend, picker, picked_targets, picked, followed);
    traceClose(x, pick, !go_on);
    if (!go_on) {
      co_return;
    }
  }
  const openai::RequestPeek& peek = picked ? *picked : client_peek;
  const std::string& upstream_model = followed ? std::string() : route.upstream_model;
  const bool rewrite_model = !upstream_model.empty() && upstream_model != peek.model;
  openai::BodyEdits edits;
  if (rewrite_model) {
    edits.rewriteModel(peek, upstream_model);
  }
  const bool hide_usage = peek.stream && edits.requestUsage(peek);
  std::string_view body = x.req.body().view();
  OutgoingRequest out;
  edits.pieces(body, out.pieces);
  out.body_size = edits.editedSize(body.size());
  out.head = upstreamHeadPrefix(x, route);
  if (route.action && route.action->rewrite && route.action->rewrite->hostname) {
    out.host_override = *route.action->rewrite->hostname;
  }

  // Extra attempts: the HTTPRoute rule's retry, else the ModelServer's trafficPolicy, else the
  // router's default; the pause between attempts likewise.
  const auto* route_retry = route.action && route.action->retry ? &*route.action->retry : nullptr;
  const uint32_t retries = route_retry && route_retry->attempts ? *route_retry->attempts
                           : backend.retry_attempts             ? *backend.retry_attempts
                                                                : cfg.upstream.retries;
  static const std::vector<int> kDefaultRetryCodes = {500, 502, 503, 504};
  AttemptPlan plan;
  plan.retry_pause = route_retry && route_retry->backoff.count() > 0 ? route_retry->backoff
                                                                     : backend.retry_interval;
  plan.retry_codes = route_retry
                         ? (route_retry->codes.empty() ? &kDefaultRetryCodes : &route_retry->codes)
                         : &cfg.upstream.retry_on_status;
  // Per attempt: the route's backendRequest timeout, else the ModelServer's, else the default.
  plan.attempt_timeout = route.action && route.action->backend_timeout.count() > 0
                             ? route.action->backend_timeout
                         : backend.timeout.count() > 0 ? backend.timeout
                                                       : cfg.timeouts.upstream_response;
  Schedule scheduled;
  if (followed) {
    // The picker's list, in its order: the attempt loop walks it on retries (as many as the
    // route allows).
    scheduled.candidates = std::move(picked_targets);
    if (scheduled.candidates.size() > retries + 1) {
      scheduled.candidates.resize(retries + 1);
    }
    scheduled.info.prompt_tokens = std::max<uint64_t>(1, peek.prompt.length / 4);
    scheduled.info.max_tokens = peek.max_tokens.value_or(kDefaultExpectedOutput);
    x.picker = &picker;
  } else {
    const size_t span = traceOpen(x, "schedule");
    schedule(x, route, peek, std::min<size_t>(cfg.scheduler.candidates, retries + 1), scheduled);
    traceClose(x, span, scheduled.candidates.empty());
    if (auto* sp = traceSpan(x, span)) {
      sp->set("sluice.candidates", static_cast<int64_t>(scheduled.candidates.size()));
      if (!scheduled.candidates.empty()) {
        sp->set("sluice.endpoint", scheduled.candidates.front()->address);
      }
    }
  }
  if (scheduled.candidates.empty()) {
    co_await writeError(x, ErrorKind::NoEndpoints,
                        fmt::format("model '{}' has no ready endpoints", peek.model));
    co_return;
  }
  plan.schedule = &scheduled;
  plan.head = &out.head;
  plan.targets.reserve(scheduled.candidates.size());
  for (const router::Endpoint* ep : scheduled.candidates) {
    plan.targets.push_back({ep, ep->address, {}});
  }

  auto watch = std::make_shared<ClientWatch>(s);
  startWatch(s, watch);
  RelayArgs relay;
  relay.hide_usage = hide_usage;
  // The client's model name goes back where the router, or the picker, changed it.
  relay.write_back_from = rewrite_model                     ? upstream_model
                          : peek.model != client_peek.model ? peek.model
                                                            : std::string();
  relay.client_model = client_peek.model;
  std::optional<Http1Transport> h1;
  std::optional<TlsTransport> tls;
  std::optional<H2Transport> h2;
  Transport* transport = nullptr;
  if (backend.h2c) {
    transport = &h2.emplace(w, out, *watch);
    x.upstream_protocol = "h2c";
  } else if (backend.tls) {
    transport = &tls.emplace(w, out, *watch, cfg.upstream.verify_workload_tls);
    x.upstream_protocol = "https";
  } else {
    transport = &h1.emplace(w, out, *watch);
    x.upstream_protocol = "http/1.1";
  }
  co_await runAttempts(x, route, *transport, *watch, plan, std::move(relay));
}

// Sends the request to an ExternalModelProvider over HTTPS and relays the answer as it comes.
// One provider, one attempt (plus one on a fresh connection when a pooled one was closed by the
// provider); no scheduling, as there is nothing to choose between.
awaitable<void> proxyProvider(Exchange& x, const RouteChoice& route,
                              const openai::RequestPeek& peek) {
  const router::Backend& backend = *route.backend;
  const router::ProviderTarget& p = *backend.provider;
  Session& s = x.session;
  Worker& w = s.worker;
  const auto& cfg = x.gen->snapshot->config;
  if (x.method != "POST" || !backends::providerServesPath(p.type, x.path)) {
    std::string message =
        fmt::format("model '{}' is served by an external {} provider, which does not serve {} {}",
                    peek.model, backends::providerTypeName(p.type), x.method, x.path);
    co_await writeError(x, ErrorKind::NotFound, message);
    co_return;
  }
  const bool rewrite_model = !route.upstream_model.empty() && route.upstream_model != peek.model;
  openai::BodyEdits edits;
  if (rewrite_model) {
    edits.rewriteModel(peek, route.upstream_model);
  }
  // Usage on OpenAI streams is asked for (and hidden from a client that did not ask), so token
  // limits and metrics see what the provider counted.
  const bool hide_usage = p.type == router::ProviderTarget::Type::OpenAI && peek.stream &&
                          x.path != "/v1/responses" && edits.requestUsage(peek);
  std::string_view body = x.req.body().view();
  OutgoingRequest out;
  edits.pieces(body, out.pieces);
  out.body_size = edits.editedSize(body.size());
  std::string_view query;
  if (auto q = x.target.find('?'); q != std::string_view::npos) {
    query = x.target.substr(q + 1);
  }
  out.head = providerHead(x, p, backends::providerRequestTarget(p, x.path, query), out.body_size);
  AttemptPlan plan;
  plan.attempt_timeout = cfg.timeouts.upstream_response;
  plan.head = &out.head;
  plan.targets.push_back({nullptr, fmt::format("{}:{}", p.host, p.port), backend.name});

  auto watch = std::make_shared<ClientWatch>(s);
  startWatch(s, watch);
  RelayArgs relay;
  relay.hide_usage = hide_usage;
  relay.write_back_from = rewrite_model ? route.upstream_model : std::string();
  relay.client_model = peek.model;
  TlsTransport transport(w, out, *watch, p);
  x.upstream_protocol = "provider";
  co_await runAttempts(x, route, transport, *watch, plan, std::move(relay));
}

// A read deadline that cancels the pending read rather than closing the socket (which is what
// tcp_stream expiry does), so a 408 can still be written.
class ReadDeadline {
 public:
  ReadDeadline(Session& s, std::chrono::milliseconds timeout)
      : timer_(s.stream.get_executor()), state_(std::make_shared<State>()) {
    s.stream.expires_never();
    timer_.expires_after(timeout);
    timer_.async_wait([state = state_, &stream = s.stream](const error_code& ec) {
      // A handler already queued when disarm() ran must not cancel a later read.
      if (!ec && !state->disarmed) {
        state->expired = true;
        error_code ignored;
        stream.socket().cancel(ignored);
      }
    });
  }
  ~ReadDeadline() { disarm(); }
  void disarm() {
    state_->disarmed = true;
    timer_.cancel();
  }
  bool expired() const { return state_->expired; }

 private:
  struct State {
    bool expired = false;
    bool disarmed = false;
  };
  SteadyTimer timer_;
  std::shared_ptr<State> state_;
};

// --- request dispatch -------------------------------------------------------------------------

// The listener a request belongs to: its port and Host pick a Gateway listener.
const router::ListenerRoutes* listenerOf(const Exchange& x, const router::Snapshot& snap) {
  if (!snap.routes) {
    return nullptr;
  }
  return snap.routes->listenerFor(x.session.port, x.host);
}

awaitable<void> handleModels(Exchange& x, const router::ListenerRoutes* listener) {
  Worker& w = x.session.worker;
  const auto& snap = *x.gen->snapshot;
  const bool scoped = listener != nullptr && listener->space;
  // The list is behind the same authentication as the models themselves (the Gateway's mode,
  // else the global one); a key limited to some models sees only those.
  const std::vector<std::string>* allowed = nullptr;
  if (const auto& chain = x.gen->filters; chain && chain->active()) {
    filters::FilterRequest fr;
    fr.mode = chain->defaultMode();
    if (listener != nullptr && !listener->auth_mode.empty()) {
      fr.mode = filters::parseAuthMode(listener->auth_mode).value_or(chain->defaultMode());
    }
    if (auto it = x.req.find(bhttp::field::authorization); it != x.req.end()) {
      fr.authorization = it->value();
    }
    if (auto it = x.req.find("x-api-key"); it != x.req.end()) {
      fr.api_key = it->value();
    }
    fr.unix_s = std::chrono::duration_cast<std::chrono::seconds>(
                    w.context().time.systemNow().time_since_epoch())
                    .count();
    filters::Admission a = chain->authenticate(fr);
    if (!a.ok) {
      co_await writeRefusal(x, a);
      co_return;
    }
    allowed = a.allowed_models;
  }
  auto permitted = [&](std::string_view name) {
    return allowed == nullptr ||
           std::find(allowed->begin(), allowed->end(), name) != allowed->end();
  };
  if (x.path == "/v1/models") {
    std::string_view body = scoped ? listener->space->models_json : snap.models_json;
    if (allowed == nullptr) {
      co_await writeSimple(x, 200, "application/json", body);
      co_return;
    }
    std::string filtered = "{\"object\":\"list\",\"data\":[";
    bool first = true;
    static const std::vector<std::string> kNoNames;
    const auto& names = scoped ? listener->space->names : kNoNames;
    for (const auto& name : names) {
      if (!permitted(name)) {
        continue;
      }
      fmt::format_to(std::back_inserter(filtered),
                     "{}{{\"id\":{},\"object\":\"model\",\"created\":0,\"owned_by\":\"sluice\"}}",
                     first ? "" : ",", base::jsonQuote(name));
      first = false;
    }
    filtered += "]}";
    co_await writeSimple(x, 200, "application/json", filtered);
    co_return;
  }
  std::string_view id = x.path.substr(std::string_view("/v1/models/").size());
  bool known = snap.findModel(id) != nullptr;
  if (!known && scoped) {
    const auto& names = listener->space->names;
    known = std::binary_search(names.begin(), names.end(), id);
  }
  if (known && permitted(id)) {
    std::string body =
        fmt::format("{{\"id\":{},\"object\":\"model\",\"created\":0,\"owned_by\":\"sluice\"}}",
                    base::jsonQuote(id));
    co_await writeSimple(x, 200, "application/json", body);
    co_return;
  }
  co_await writeError(x, ErrorKind::ModelNotFound,
                      fmt::format("The model '{}' does not exist", id));
}

awaitable<void> routeAndProxy(Exchange& x, const router::ListenerRoutes* listener) {
  const bool is_v1 = x.path.substr(0, 4) == "/v1/";
  // Inference requests carry a JSON body whose model drives routing; other requests reach
  // HTTPRoutes as they are.
  openai::RequestPeek peek;
  auto& body = x.req.body();
  if (x.method == "POST" && (is_v1 || body.view().size() > 0)) {
    auto parsed = openai::peekRequest(body.view(), body.capacity() + base::PaddedBuffer::kPadding);
    if (parsed) {
      peek = std::move(*parsed);
    } else if (is_v1) {
      co_await writeError(x, ErrorKind::InvalidRequest, parsed.error().message);
      co_return;
    }
  }
  x.stream = peek.stream;
  x.requested_model = peek.model;
  BeastHeaders headers(x.req);
  router::RequestView view;
  view.method = x.method;
  view.path = x.path;
  if (auto q = x.target.find('?'); q != std::string_view::npos) {
    view.query = x.target.substr(q + 1);
  }
  view.host = x.host;
  view.headers = &headers;
  view.model = peek.model;

  RouteMatch match;
  if (!co_await matchRoute(x, listener, view, peek, match)) {
    co_return;
  }
  const size_t admission = traceOpen(x, "admission");
  if (!co_await admit(x, listener, match, peek)) {
    traceClose(x, admission, true);
    co_return;
  }
  traceClose(x, admission);
  if (!co_await checkRoute(x, listener, peek, match)) {
    co_return;
  }
  const RouteChoice& route = match.route;
  // A pool with an endpoint picker queues there: the picker runs the pool's flow control.
  if (!route.backend->picker) {
    const size_t queue = traceOpen(x, "queue");
    if (!co_await admitFlow(x, *route.backend)) {
      traceClose(x, queue, true);
      co_return;
    }
    traceClose(x, queue);
    if (x.flow == nullptr && x.trace) {
      x.trace->drop(queue);  // no flow control on this backend: nothing waited
    }
  }
  if (route.backend->provider) {
    co_await proxyProvider(x, route, peek);
    co_return;
  }
  co_await proxy(x, route, peek);
}

awaitable<void> dispatch(Exchange& x) {
  const auto& snapshot = x.gen->snapshot;
  const router::ListenerRoutes* listener = listenerOf(x, *snapshot);
  x.listener = listener;
  if (snapshot->routes && listener == nullptr) {
    co_await writeError(x, ErrorKind::NotFound,
                        fmt::format("no listener on this port serves host '{}'", x.host));
    co_return;
  }
  const bool has_http_routes = snapshot->routes && snapshot->routes->has_gateways;
  if (x.path == "/v1/models" || x.path.substr(0, 11) == "/v1/models/") {
    if (x.method != "GET" && x.method != "HEAD") {
      co_await writeError(x, ErrorKind::MethodNotAllowed, "use GET for /v1/models",
                          "Allow: GET, HEAD\r\n");
      co_return;
    }
    co_await handleModels(x, listener);
    co_return;
  }
  const bool is_v1 = x.path.substr(0, 4) == "/v1/";
  if (!is_v1 && !has_http_routes) {
    co_await writeError(x, ErrorKind::NotFound, fmt::format("no route for path '{}'", x.path));
    co_return;
  }
  if (is_v1 && x.method != "POST" && !has_http_routes) {
    co_await writeError(x, ErrorKind::MethodNotAllowed, fmt::format("use POST for {}", x.path),
                        "Allow: POST\r\n");
    co_return;
  }
  co_await routeAndProxy(x, listener);
}

// What makes a request head unusable before anything else is read: untrustworthy framing
// (smuggling), or a missing, repeated or invalid Host.
std::optional<std::string> requestProblem(const Request& head) {
  if (auto problem = framingProblem(head)) {
    return problem;
  }
  return hostProblem(head, head.version());
}

// The exchange's target, path and host: an absolute-form target's authority replaces Host
// (RFC 9112 3.2.2); the host loses its port (IPv6 brackets keep theirs) and is lower-cased
// only when needed. False when an absolute-form target is unusable.
bool readTarget(Exchange& x, std::string& host_lower) {
  const Request& req = x.req;
  auto parts = splitTarget(req.target(), x.owned_target);
  if (!parts) {
    return false;
  }
  x.target = parts->origin;
  x.path = x.target.substr(0, x.target.find('?'));
  std::string_view h = parts->authority;
  if (h.empty()) {
    if (auto it = req.find(bhttp::field::host); it != req.end()) {
      h = it->value();
    }
  }
  x.authority = h;
  if (!h.empty() && h.front() != '[') {
    h = h.substr(0, h.find(':'));
  } else if (auto close = h.find(']'); close != std::string_view::npos) {
    h = h.substr(0, close + 1);
  }
  if (std::any_of(h.begin(), h.end(), [](char c) { return c >= 'A' && c <= 'Z'; })) {
    host_lower = base::toLower(h);
    h = host_lower;
  }
  x.host = h;
  return true;
}

}  // namespace

Session::Session(Worker& w, tcp::socket socket, uint16_t listener_port)
    : worker(w), stream(std::move(socket)), port(listener_port) {
  error_code ec;
  auto remote = stream.socket().remote_endpoint(ec);
  if (!ec) {
    client_ip = remote.address().to_string();
  }
  stream.socket().set_option(tcp::no_delay(true), ec);
  worker.sessions().insert(this);
  worker.shard().active_connections.fetch_add(1, std::memory_order_relaxed);
  worker.shard().connections_total.fetch_add(1, std::memory_order_relaxed);
}

Session::~Session() {
  worker.sessions().erase(this);
  worker.shard().active_connections.fetch_sub(1, std::memory_order_relaxed);
  worker.context().connections.fetch_sub(1, std::memory_order_relaxed);
}

awaitable<void> runSession(Worker& worker, tcp::socket socket, uint16_t port) {
  Session s(worker, std::move(socket), port);
  ServerContext& ctx = worker.context();
  // The connection's TLS contexts come from the generation current when it was accepted.
  const GenerationPtr accepted = worker.generation();
  if (TlsPort* tls_port = accepted->tls ? accepted->tls->find(port) : nullptr) {
    // HTTPS listener: the handshake (SNI picks the listener's certificate) within the header
    // read timeout.
    s.tls_config = accepted->tls;
    s.tls = std::make_unique<asio::ssl::stream<TcpStream&>>(s.stream, tls_port->initial());
    error_code ec;
    s.stream.expires_after(accepted->snapshot->config.timeouts.header_read);
    co_await s.tls->async_handshake(asio::ssl::stream_base::server,
                                    asio::redirect_error(use_awaitable, ec));
    if (ec) {
      s.stream.close();
      co_return;
    }
  }
  for (bool first_request = true;; first_request = false) {
    // One generation per request: taken here, held by the exchange until it is finished.
    const GenerationPtr gen = worker.generation();
    const auto& cfg = gen->snapshot->config;
    error_code ec;

    // Wait for the first byte of the next request (keep-alive idle time).
    if (s.buffer.size() == 0) {
      if (ctx.draining.load(std::memory_order_relaxed)) {
        break;
      }
      s.idle = true;
      // A new connection must start its request within the header timeout (or the idle
      // timeout, when shorter); between requests a keep-alive connection may idle for the
      // idle timeout.
      s.stream.expires_after(first_request ? std::min(cfg.timeouts.header_read, cfg.timeouts.idle)
                                           : cfg.timeouts.idle);
      size_t n = co_await clientReadSome(s, s.buffer.prepare(8192), ec);
      s.idle = false;
      if (ec) {
        break;  // closed, idle timeout or drain: nothing to answer
      }
      s.buffer.commit(n);
    }

    bhttp::request_parser<http::PaddedBody> parser;
    parser.header_limit(static_cast<std::uint32_t>(
        std::min<uint64_t>(cfg.limits.max_header_bytes, std::numeric_limits<uint32_t>::max())));
    parser.body_limit(cfg.limits.max_body_bytes);
    bool expired = false;
    if (!parseBuffered(s, parser, ReadPhase::Headers, ec)) {
      // A deadline that cancels the read instead of closing the socket, so the client still
      // gets its 408.
      ReadDeadline header_deadline(s, cfg.timeouts.header_read);
      co_await clientReadHeader(s, parser, ec);
      header_deadline.disarm();
      expired = header_deadline.expired();
    }
    if (ec) {
      co_await answerReadError(s, cfg, ec, expired, ReadPhase::Headers);
      break;
    }
    if (auto problem = requestProblem(parser.get())) {
      // Framing the router cannot trust: answer and close, never read on.
      co_await writeEarlyError(s, ErrorKind::InvalidRequest, *problem, cfg.timeouts.client_write);
      break;
    }
    {
      auto& h = parser.get();
      if (auto it = h.find(bhttp::field::expect); it != h.end()) {
        if (base::iequals(it->value(), "100-continue")) {
          static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
          std::vector<asio::const_buffer> bufs{asio::buffer(kContinue.data(), kContinue.size())};
          if (!co_await writeClient(s, bufs, cfg.timeouts.client_write)) {
            break;
          }
        }
      }
    }
    if (!parseBuffered(s, parser, ReadPhase::Body, ec)) {
      ReadDeadline body_deadline(s, cfg.timeouts.request_body);
      co_await clientReadBody(s, parser, ec);
      body_deadline.disarm();
      expired = body_deadline.expired();
    }
    if (ec) {
      co_await answerReadError(s, cfg, ec, expired, ReadPhase::Body);
      break;
    }

    Request& req = parser.get();
    Exchange x(s, req, gen);
    x.start = ctx.time.monotonicNow();
    x.method = req.method_string();
    x.http10 = req.version() < 11;
    x.keep_alive = req.keep_alive() && !ctx.draining.load(std::memory_order_relaxed);
    std::string host_lower;
    if (!readTarget(x, host_lower)) {
      co_await writeEarlyError(s, ErrorKind::InvalidRequest,
                               "the absolute-form request target has no valid authority",
                               cfg.timeouts.client_write);
      break;
    }
    if (auto it = req.find("x-request-id"); it != req.end() && validRequestId(it->value())) {
      x.request_id = it->value();
    } else {
      x.request_id = base::randomHexId(worker.random());
    }
    startTrace(x);
    worker.shard().active_requests.fetch_add(1, std::memory_order_relaxed);
    co_await dispatch(x);
    worker.shard().active_requests.fetch_sub(1, std::memory_order_relaxed);
    finishExchange(x);
    if (!x.keep_alive) {
      break;
    }
  }
  error_code ignored;
  s.stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
  s.stream.close();
}

}  // namespace sluice::server
