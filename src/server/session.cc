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
#include "server/client_io.h"
#include "server/completion.h"
#include "server/exchange.h"
#include "server/flow_stage.h"
#include "server/header_policy.h"
#include "server/relay.h"
#include "server/route_stage.h"
#include "server/schedule_stage.h"
#include "server/worker.h"

namespace sluice::server {

using openai::ErrorKind;

namespace {

template <class Parser>
awaitable<void> clientReadHeader(Session& s, Parser& parser, error_code& ec) {
  if (s.tls) {
    co_await bhttp::async_read_header(*s.tls, s.buffer, parser,
                                      asio::redirect_error(asio::use_awaitable, ec));
  } else {
    co_await bhttp::async_read_header(s.stream, s.buffer, parser,
                                      asio::redirect_error(asio::use_awaitable, ec));
  }
}

template <class Parser>
awaitable<void> clientReadBody(Session& s, Parser& parser, error_code& ec) {
  if (s.tls) {
    co_await bhttp::async_read(*s.tls, s.buffer, parser,
                               asio::redirect_error(asio::use_awaitable, ec));
  } else {
    co_await bhttp::async_read(s.stream, s.buffer, parser,
                               asio::redirect_error(asio::use_awaitable, ec));
  }
}

bool validRequestId(std::string_view id) {
  if (id.empty() || id.size() > 128) {
    return false;
  }
  return std::all_of(id.begin(), id.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

// --- writing to the client --------------------------------------------------------------------

// Sends the request to the backend's endpoints in order until one answers, then relays.
awaitable<void> proxy(Exchange& x, const RouteChoice& route, const openai::RequestPeek& peek) {
  const router::Backend& backend = *route.backend;
  Session& s = x.session;
  Worker& w = s.worker;
  const auto& snapshot = x.gen->snapshot;
  const auto& cfg = snapshot->config;

  const bool rewrite_model = !route.upstream_model.empty() && route.upstream_model != peek.model;
  openai::BodyEdits edits;
  if (rewrite_model) {
    edits.rewriteModel(peek, route.upstream_model);
  }
  const bool hide_usage = peek.stream && edits.requestUsage(peek);
  std::string_view body = x.req.body().view();
  std::vector<std::string_view> pieces;
  edits.pieces(body, pieces);
  const size_t body_size = edits.editedSize(body.size());
  const std::string head_prefix = upstreamHeadPrefix(x, route);
  const std::string_view host_override =
      route.action && route.action->rewrite && route.action->rewrite->hostname
          ? std::string_view(*route.action->rewrite->hostname)
          : std::string_view();
  // Per attempt: the route's backendRequest timeout, else the ModelServer's, else the default;
  // never past the request's deadline.
  auto attemptTimeout = [&]() {
    auto t = cfg.timeouts.upstream_response;
    if (route.action && route.action->backend_timeout.count() > 0) {
      t = route.action->backend_timeout;
    } else if (backend.timeout.count() > 0) {
      t = backend.timeout;
    }
    if (x.deadline) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          *x.deadline - w.context().time.monotonicNow());
      t = std::max(std::chrono::milliseconds(1), std::min(t, left));
    }
    return t;
  };

  // Extra attempts: the HTTPRoute rule's retry, else the ModelServer's trafficPolicy, else the
  // router's default; the pause between attempts likewise.
  const auto* route_retry = route.action && route.action->retry ? &*route.action->retry : nullptr;
  const uint32_t retries = route_retry && route_retry->attempts ? *route_retry->attempts
                           : backend.retry_attempts             ? *backend.retry_attempts
                                                                : cfg.upstream.retries;
  const auto retry_pause = route_retry && route_retry->backoff.count() > 0 ? route_retry->backoff
                                                                           : backend.retry_interval;
  static const std::vector<int> kDefaultRetryCodes = {500, 502, 503, 504};
  const std::vector<int>& retry_codes =
      route_retry ? (route_retry->codes.empty() ? kDefaultRetryCodes : route_retry->codes)
                  : cfg.upstream.retry_on_status;
  Schedule plan;
  schedule(x, route, peek, std::min<size_t>(cfg.scheduler.candidates, retries + 1), plan);
  const auto& candidates = plan.candidates;
  auto expectedWork = [&](size_t i) {
    return plan.expectedWork(i, w.scheduler().index().blockBytes());
  };
  if (candidates.empty()) {
    co_await writeError(x, ErrorKind::NoEndpoints,
                        fmt::format("model '{}' has no ready endpoints", peek.model));
    co_return;
  }

  auto watch = std::make_shared<ClientWatch>(s.stream.get_executor());
  startWatch(s, watch);

  backends::UpstreamConnectionPtr conn;
  std::optional<bhttp::response_parser<bhttp::buffer_body>> parser;
  std::shared_ptr<backends::H2Stream> h2;  // h2c pools: the stream instead of conn and parser
  backends::ProviderConnectionPtr tconn;   // TLS endpoints: the connection instead of conn
  std::string tls_key;
  const bool verify_tls = cfg.upstream.verify_workload_tls;
  H2Request h2_request;
  if (backend.h2c) {
    h2_request = h2RequestOf(head_prefix);
    h2_request.headers.push_back({"content-length", std::to_string(body_size)});
  }
  const router::Endpoint* chosen = nullptr;
  router::Reservation held;  // the chosen endpoint's load, released when the response ends
  // Outlier detection: every failed attempt counts against its endpoint.
  auto failed = [&](const router::Endpoint& e) {
    const auto& u = cfg.upstream;
    if (u.eject_after_failures > 0 &&
        e.state->onFailure(w.context().time.monotonicNow().time_since_epoch().count(),
                           u.eject_after_failures, std::chrono::nanoseconds(u.ejection).count(),
                           std::chrono::nanoseconds(u.max_ejection).count())) {
      w.shard().ejections.fetch_add(1, std::memory_order_relaxed);
      SLUICE_LOG(Warn, "proxy", "endpoint {} ejected after {} consecutive failures", e.address,
                 u.eject_after_failures);
    }
  };
  ErrorKind failure = ErrorKind::UpstreamUnavailable;
  std::string failure_message = "no endpoint could be reached";
  auto connectFailed = [&](const router::Endpoint& e, const error_code& ec,
                           std::string_view detail = {}) {
    const bool timeout = isTimeout(ec);
    if (x.series) {
      x.series->countUpstreamError(timeout ? metrics::UpstreamError::ConnectTimeout
                                           : metrics::UpstreamError::ConnectFailed);
    }
    failed(e);
    failure = timeout ? ErrorKind::UpstreamTimeout : ErrorKind::UpstreamUnavailable;
    failure_message = fmt::format("connecting to endpoint {} failed: {}", e.address,
                                  timeout          ? std::string_view("timed out")
                                  : detail.empty() ? std::string_view(ec.message())
                                                   : detail);
  };

  for (size_t i = 0; i < candidates.size() && !watch->client_gone; ++i) {
    const router::Endpoint& ep = *candidates[i];
    if (i > 0 && x.series) {
      x.series->retries.fetch_add(1, std::memory_order_relaxed);
    }
    if (i > 0 && x.deadline && w.context().time.monotonicNow() >= *x.deadline) {
      failure = ErrorKind::UpstreamTimeout;
      failure_message = "the request's deadline passed before another attempt";
      break;  // no retry past the request's deadline
    }
    if (i > 0 && retry_pause.count() > 0) {
      // The retry backoff: a pause before the next attempt (never past the request's
      // deadline).
      auto pause = retry_pause;
      if (x.deadline) {
        pause = std::min(pause, std::chrono::duration_cast<std::chrono::milliseconds>(
                                    *x.deadline - w.context().time.monotonicNow()));
      }
      if (pause.count() > 0) {
        asio::steady_timer timer(s.stream.get_executor(), pause);
        error_code ignored;
        co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
      }
    }
    ++x.attempts;
    x.endpoint = ep.address;
    router::Reservation reservation(ep.state.get(), expectedWork(i));
    bool fresh_retry_allowed = true;
    bool answered = false;
    while (true) {
      error_code ec;
      bool reused = false;
      if (backend.h2c) {
        // HTTP/2: a stream on a shared connection to the endpoint.
        // Arguments hoisted out of the co_await: g++ 12 mishandles temporaries across it.
        const bool fresh = !fresh_retry_allowed;
        auto h2conn =
            co_await w.h2Pool().acquire(ep, cfg.timeouts.upstream_connect, fresh, reused, ec);
        if (ec) {
          connectFailed(ep, ec);
          break;
        }
        (reused ? w.shard().upstream_connections_reused : w.shard().upstream_connections_opened)
            .fetch_add(1, std::memory_order_relaxed);
        const std::string_view authority =
            host_override.empty() ? std::string_view(ep.address) : host_override;
        h2 = h2conn->submit(h2_request.method, authority, h2_request.path, h2_request.headers,
                            pieces, body_size);
        if (h2) {
          watch->h2 = h2.get();
          const auto head_timeout = attemptTimeout();
          co_await h2->waitHead(head_timeout, ec);
        } else {
          ec = asio::error::connection_reset;  // the connection could not take the stream
        }
      } else {
        std::string head = head_prefix;
        fmt::format_to(std::back_inserter(head), "Host: {}\r\nContent-Length: {}\r\n\r\n",
                       host_override.empty() ? std::string_view(ep.address) : host_override,
                       body_size);
        std::vector<asio::const_buffer> bufs;
        bufs.reserve(pieces.size() + 1);
        bufs.push_back(asio::buffer(head));
        for (auto p : pieces) {
          bufs.push_back(asio::buffer(p.data(), p.size()));
        }
        const auto head_timeout = attemptTimeout();
        if (backend.tls) {
          // HTTP/1.1 over TLS to the endpoint (ModelServer workloadPort.protocol https).
          tls_key = verify_tls ? ep.address : ep.address + "#unverified";
          tconn = w.providerPool().takeIdle(tls_key);
          if (tconn) {
            reused = true;
            w.shard().upstream_connections_reused.fetch_add(1, std::memory_order_relaxed);
          } else {
            std::string why;
            tconn = co_await w.providerPool().connectEndpoint(
                ep, verify_tls, cfg.timeouts.upstream_connect, ec, why);
            if (ec) {
              connectFailed(ep, ec, why);
              break;
            }
            w.shard().upstream_connections_opened.fetch_add(1, std::memory_order_relaxed);
          }
          watch->upstream = &beast::get_lowest_layer(tconn->stream);
          co_await sendAndReadHead(*tconn, bufs, parser, head_timeout, ec);
        } else {
          conn = w.pool().takeIdle(ep.address);
          if (conn) {
            reused = true;
            w.shard().upstream_connections_reused.fetch_add(1, std::memory_order_relaxed);
          } else {
            conn = co_await w.pool().connect(ep, cfg.timeouts.upstream_connect, ec);
            if (ec) {
              connectFailed(ep, ec);
              break;
            }
            w.shard().upstream_connections_opened.fetch_add(1, std::memory_order_relaxed);
          }
          watch->upstream = &conn->stream;
          co_await sendAndReadHead(*conn, bufs, parser, head_timeout, ec);
        }
      }
      if (watch->client_gone) {
        break;
      }
      if (!ec) {
        answered = true;
        break;
      }
      watch->upstream = nullptr;
      watch->h2 = nullptr;
      // HTTP/2: a refused stream (REFUSED_STREAM, GOAWAY) was not processed, and a connection
      // that died under it is the HTTP/1.1 stale case: both are resent on a fresh connection. A
      // stream the endpoint reset is a failed attempt.
      const bool stale = h2 ? h2->refused() || h2->connectionFailed() : isStaleConnectionError(ec);
      if (h2) {
        h2->cancel();
        h2.reset();
      }
      if (reused && fresh_retry_allowed && (stale || ec == asio::ssl::error::stream_truncated)) {
        // The pooled connection had been closed by the endpoint: retry on a fresh one.
        fresh_retry_allowed = false;
        conn.reset();
        tconn.reset();
        continue;
      }
      bool timeout = isTimeout(ec);
      if (x.series) {
        x.series->countUpstreamError(timeout ? metrics::UpstreamError::ResponseTimeout
                                     : isStaleConnectionError(ec)
                                         ? metrics::UpstreamError::Reset
                                         : metrics::UpstreamError::BadResponse);
      }
      failed(ep);
      failure = timeout ? ErrorKind::UpstreamTimeout : ErrorKind::UpstreamUnavailable;
      failure_message = timeout ? fmt::format("endpoint {} did not answer in time", ep.address)
                                : fmt::format("endpoint {} failed before responding: {}",
                                              ep.address, ec.message());
      conn.reset();
      tconn.reset();
      break;
    }
    if (answered) {
      int status = static_cast<int>(h2 ? h2->head().result_int() : parser->get().result_int());
      bool retriable =
          std::find(retry_codes.begin(), retry_codes.end(), status) != retry_codes.end();
      if (status >= 500) {
        failed(ep);
      } else {
        ep.state->onSuccess();
      }
      if (retriable && i + 1 < candidates.size()) {
        if (x.series) {
          x.series->countUpstreamError(metrics::UpstreamError::Status5xx);
        }
        watch->upstream = nullptr;
        watch->h2 = nullptr;
        conn.reset();
        tconn.reset();
        if (h2) {
          h2->cancel();
          h2.reset();
        }
        continue;
      }
      chosen = &ep;
      held = std::move(reservation);
      break;
    }
    conn.reset();
    tconn.reset();
  }

  if (chosen != nullptr) {
    x.served = true;
  }
  if (chosen == nullptr) {
    co_await stopWatch(s, *watch);
    if (watch->client_gone) {
      x.status = 499;
      x.error_type = "client_closed";
      x.keep_alive = false;
      co_return;
    }
    co_await writeError(x, failure, failure_message);
    co_return;
  }

  // Relay the response.
  // Hoisted out of the co_await: g++ 12 mishandles conditional temporaries across it.
  std::string write_back_from = rewrite_model ? route.upstream_model : std::string();
  if (h2) {
    // The stream ends here whatever happened; the connection stays for other requests.
    co_await relayResponse(x, h2->head(), *h2, *watch, hide_usage, std::move(write_back_from),
                           route, peek.model, &held);
    watch->h2 = nullptr;
    h2->cancel();
    co_return;
  }
  if (tconn) {
    Http1Body tls_body(*tconn, *parser);
    const bool keep = co_await relayResponse(x, parser->get(), tls_body, *watch, hide_usage,
                                             std::move(write_back_from), route, peek.model, &held);
    if (keep) {
      w.providerPool().release(tls_key, std::move(tconn));
    }
    co_return;
  }
  Http1Body body_in(*conn, *parser);
  const bool keep = co_await relayResponse(x, parser->get(), body_in, *watch, hide_usage,
                                           std::move(write_back_from), route, peek.model, &held);
  if (keep) {
    w.pool().release(chosen->address, std::move(conn));
  }
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
  const auto& snapshot = x.gen->snapshot;
  const auto& cfg = snapshot->config;
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
  std::vector<std::string_view> pieces;
  edits.pieces(body, pieces);
  std::string_view query;
  if (auto q = x.target.find('?'); q != std::string_view::npos) {
    query = x.target.substr(q + 1);
  }
  const std::string head = providerHead(x, p, backends::providerRequestTarget(p, x.path, query),
                                        edits.editedSize(body.size()));
  auto attemptTimeout = [&]() {
    auto t = cfg.timeouts.upstream_response;
    if (x.deadline) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          *x.deadline - w.context().time.monotonicNow());
      t = std::max(std::chrono::milliseconds(1), std::min(t, left));
    }
    return t;
  };
  x.endpoint = fmt::format("{}:{}", p.host, p.port);
  ++x.attempts;

  auto watch = std::make_shared<ClientWatch>(s.stream.get_executor());
  startWatch(s, watch);
  auto& pool = w.providerPool();
  backends::ProviderConnectionPtr conn;
  std::optional<bhttp::response_parser<bhttp::buffer_body>> parser;
  bool fresh_retry_allowed = true;
  bool answered = false;
  ErrorKind failure = ErrorKind::UpstreamUnavailable;
  std::string failure_message;
  while (true) {
    error_code ec;
    conn = pool.takeIdle(p.pool_key);
    if (conn) {
      w.shard().upstream_connections_reused.fetch_add(1, std::memory_order_relaxed);
    } else {
      std::string why;
      conn = co_await pool.connect(p, cfg.timeouts.upstream_connect, ec, why);
      if (ec) {
        const bool timeout = isTimeout(ec);
        if (x.series) {
          x.series->countUpstreamError(timeout ? metrics::UpstreamError::ConnectTimeout
                                               : metrics::UpstreamError::ConnectFailed);
        }
        failure = timeout ? ErrorKind::UpstreamTimeout : ErrorKind::UpstreamUnavailable;
        failure_message = fmt::format("external provider {}: {}", backend.name, why);
        SLUICE_LOG(Warn, "proxy", "{}", failure_message);
        break;
      }
      w.shard().upstream_connections_opened.fetch_add(1, std::memory_order_relaxed);
    }
    watch->upstream = &beast::get_lowest_layer(conn->stream);
    std::vector<asio::const_buffer> bufs;
    bufs.reserve(pieces.size() + 1);
    bufs.push_back(asio::buffer(head));
    for (auto piece : pieces) {
      bufs.push_back(asio::buffer(piece.data(), piece.size()));
    }
    beast::get_lowest_layer(conn->stream).expires_after(attemptTimeout());
    co_await asio::async_write(conn->stream, bufs, asio::redirect_error(asio::use_awaitable, ec));
    if (!ec) {
      parser.emplace();
      parser->header_limit(64 * 1024);
      parser->body_limit(std::numeric_limits<std::uint64_t>::max());
      co_await bhttp::async_read_header(conn->stream, conn->buffer, *parser,
                                        asio::redirect_error(asio::use_awaitable, ec));
    }
    if (watch->client_gone) {
      break;
    }
    if (!ec) {
      answered = true;
      break;
    }
    watch->upstream = nullptr;
    const bool stale = isStaleConnectionError(ec) || ec == asio::ssl::error::stream_truncated;
    if (conn->reused && fresh_retry_allowed && stale) {
      fresh_retry_allowed = false;  // the provider had closed the pooled connection
      conn.reset();
      continue;
    }
    const bool timeout = isTimeout(ec);
    if (x.series) {
      x.series->countUpstreamError(timeout ? metrics::UpstreamError::ResponseTimeout
                                   : stale ? metrics::UpstreamError::Reset
                                           : metrics::UpstreamError::BadResponse);
    }
    failure = timeout ? ErrorKind::UpstreamTimeout : ErrorKind::UpstreamUnavailable;
    failure_message = timeout
                          ? fmt::format("external provider {} did not answer in time", backend.name)
                          : fmt::format("external provider {} failed before responding: {}",
                                        backend.name, ec.message());
    conn.reset();
    break;
  }
  if (!answered) {
    co_await stopWatch(s, *watch);
    if (watch->client_gone) {
      x.status = 499;
      x.error_type = "client_closed";
      x.keep_alive = false;
      co_return;
    }
    co_await writeError(x, failure, failure_message);
    co_return;
  }
  x.served = true;
  std::string write_back_from = rewrite_model ? route.upstream_model : std::string();
  Http1Body body_in(*conn, *parser);
  const bool keep = co_await relayResponse(x, parser->get(), body_in, *watch, hide_usage,
                                           std::move(write_back_from), route, peek.model, nullptr);
  if (keep) {
    pool.release(p.pool_key, std::move(conn));
  }
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
  asio::steady_timer timer_;
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
  Worker& w = x.session.worker;
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
  if (!co_await admit(x, listener, match, peek)) {
    co_return;
  }
  if (!co_await checkRoute(x, listener, peek, match)) {
    co_return;
  }
  const RouteChoice& route = match.route;
  x.series = &w.shard().model(x.model_label);
  if (!co_await admitFlow(x, *route.backend)) {
    co_return;
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
    s.tls = std::make_unique<asio::ssl::stream<beast::tcp_stream&>>(s.stream, tls_port->initial());
    error_code ec;
    s.stream.expires_after(accepted->snapshot->config.timeouts.header_read);
    co_await s.tls->async_handshake(asio::ssl::stream_base::server,
                                    asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      s.stream.close();
      co_return;
    }
  }
  while (true) {
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
      s.stream.expires_after(cfg.timeouts.idle);
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
    // A deadline that cancels the read instead of closing the socket, so the client still
    // gets its 408.
    ReadDeadline header_deadline(s, cfg.timeouts.header_read);
    co_await clientReadHeader(s, parser, ec);
    header_deadline.disarm();
    if (ec) {
      if (header_deadline.expired()) {
        co_await writeEarlyError(s, ErrorKind::RequestTimeout,
                                 "request headers were not received in time",
                                 cfg.timeouts.client_write);
      } else if (ec == bhttp::error::header_limit) {
        co_await writeEarlyError(
            s, ErrorKind::HeadersTooLarge,
            fmt::format("request headers exceed {} bytes", cfg.limits.max_header_bytes),
            cfg.timeouts.client_write);
      } else if (ec == bhttp::error::body_limit) {
        co_await writeEarlyError(
            s, ErrorKind::PayloadTooLarge,
            fmt::format("request body exceeds {} bytes", cfg.limits.max_body_bytes),
            cfg.timeouts.client_write);
      } else if (ec != bhttp::error::end_of_stream && ec != asio::error::eof &&
                 ec != asio::error::connection_reset && ec != asio::error::operation_aborted) {
        co_await writeEarlyError(s, ErrorKind::InvalidRequest,
                                 fmt::format("malformed HTTP request: {}", ec.message()),
                                 cfg.timeouts.client_write);
      }
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
    ReadDeadline body_deadline(s, cfg.timeouts.request_body);
    co_await clientReadBody(s, parser, ec);
    body_deadline.disarm();
    if (ec) {
      if (ec == bhttp::error::body_limit) {
        co_await writeEarlyError(
            s, ErrorKind::PayloadTooLarge,
            fmt::format("request body exceeds {} bytes", cfg.limits.max_body_bytes),
            cfg.timeouts.client_write);
      } else if (body_deadline.expired()) {
        co_await writeEarlyError(s, ErrorKind::RequestTimeout,
                                 "request body was not received in time",
                                 cfg.timeouts.client_write);
      } else if (ec != bhttp::error::end_of_stream && ec != asio::error::eof &&
                 ec != asio::error::connection_reset) {
        co_await writeEarlyError(s, ErrorKind::InvalidRequest,
                                 fmt::format("malformed HTTP request: {}", ec.message()),
                                 cfg.timeouts.client_write);
      }
      break;
    }

    Request& req = parser.get();
    Exchange x(s, req, gen);
    x.start = ctx.time.monotonicNow();
    x.method = req.method_string();
    x.target = req.target();
    x.path = x.target.substr(0, x.target.find('?'));
    x.http10 = req.version() < 11;
    x.keep_alive = req.keep_alive() && !ctx.draining.load(std::memory_order_relaxed);
    std::string host_lower;
    if (auto it = req.find(bhttp::field::host); it != req.end()) {
      std::string_view h = it->value();
      // Strip the port (and IPv6 brackets keep theirs); lower-case only when needed.
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
    }
    if (auto it = req.find("x-request-id"); it != req.end() && validRequestId(it->value())) {
      x.request_id = it->value();
    } else {
      x.request_id = base::randomHexId(worker.random());
    }
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
