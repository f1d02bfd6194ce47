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
#include "server/worker.h"

namespace sluice::server {

namespace bhttp = boost::beast::http;
using openai::ErrorKind;

namespace {

using Request = bhttp::request<http::PaddedBody>;
constexpr size_t kMaxPipelinedBytes = 64 * 1024;
constexpr size_t kMaxUsageCopyBytes = 4 * 1024 * 1024;
// Output tokens assumed for load accounting when a request sets no max_tokens.
constexpr uint64_t kDefaultExpectedOutput = 256;

std::string_view reasonFor(int status) {
  if (status == 499) {
    return "Client Closed Request";
  }
  return bhttp::obsolete_reason(static_cast<bhttp::status>(status));
}

// What happened to one request; feeds metrics and the access log.
struct Exchange {
  Exchange(Session& s, Request& r, GenerationPtr g) : session(s), req(r), gen(std::move(g)) {}
  Session& session;
  Request& req;
  // The configuration this request is served by, whatever reloads happen meanwhile.
  const GenerationPtr gen;
  std::string_view method;
  std::string_view target;
  std::string_view path;
  std::string request_id;
  base::MonoTime start{};
  bool keep_alive = true;
  bool http10 = false;

  int status = 0;
  std::string_view error_type;
  std::string model_label{metrics::kNoModel};
  std::string endpoint;
  int attempts = 0;
  openai::Usage usage;
  double ttft_ms = -1;
  bool stream = false;
  metrics::ModelSeries* series = nullptr;  // once the model is known
  std::string decision;                    // opt-in access-log field
  std::string_view host;                   // Host without the port, lower case
  int32_t priority = 0;                    // InferenceObjective priority (filters use it)
  std::optional<base::MonoTime> deadline;  // HTTPRoute timeouts.request
  // Filters: the chain this request was admitted by, and what it reserved.
  std::shared_ptr<const filters::FilterChain> filters;
  filters::Admission admission;
  bool strip_credentials = false;  // auth consumed them; they do not go upstream
  bool served = false;             // an upstream produced the response
  std::string identity_tag;
  // Flow control: the queue this request holds a slot in, released when it ends.
  std::shared_ptr<filters::FlowQueue> flow;
  const router::Backend* flow_backend = nullptr;
  double queue_ms = -1;        // waited in a flow-control queue
  uint64_t output_budget = 0;  // stop_streams_over_budget: events allowed; 0 = unlimited
  bool over_budget = false;
};

// Flow-control capacity of a backend: max_in_flight_per_endpoint for each live endpoint whose
// engine metrics do not say it is full.
int64_t flowCapacity(const router::Backend& b, const config::RouterConfig::FlowControl& fc,
                     const backends::MetricsView* view, int64_t now_ns) {
  int64_t cap = 0;
  for (const auto& ep : b.endpoints) {
    if (ep.state->ejected(now_ns)) {
      continue;
    }
    if (view != nullptr && (fc.max_waiting_per_endpoint > 0 || fc.max_kv_usage > 0)) {
      if (const auto* m = view->find(ep.address); m != nullptr && m->scraped) {
        if (fc.max_waiting_per_endpoint > 0 && m->waiting >= fc.max_waiting_per_endpoint) {
          continue;
        }
        if (fc.max_kv_usage > 0 && m->kv_usage >= fc.max_kv_usage) {
          continue;
        }
      }
    }
    cap += fc.max_in_flight_per_endpoint;
  }
  return cap;
}

// Where routing sent a request and what the route asks to be done on the way.
struct RouteChoice {
  const router::Backend* backend = nullptr;
  std::string upstream_model;  // the model sent upstream; empty = the client's, unchanged
  const router::RouteAction* action = nullptr;  // the HTTPRoute rule, when one matched
  const router::MatchEntry* entry = nullptr;
  std::string rewritten_path;  // URLRewrite, with the query kept
  bool lora = false;           // the model is a LoRA adapter (a ModelRoute's loraAdapters)
};

// Request headers for route matching, by lower-case name.
class BeastHeaders final : public router::HeaderLookup {
 public:
  explicit BeastHeaders(const Request& req) : req_(req) {}
  std::optional<std::string_view> get(std::string_view lower_name) const override {
    auto it = req_.find(beast::string_view(lower_name.data(), lower_name.size()));
    if (it == req_.end()) {
      return std::nullopt;
    }
    return std::string_view(it->value().data(), it->value().size());
  }

 private:
  const Request& req_;
};

// Headers routing consumes; they never reach the model server.
bool controlHeader(std::string_view name) {
  return base::iequals(name, router::kObjectiveHeader) ||
         base::iequals(name, "x-gateway-inference-fairness-id") ||
         base::iequals(name, "x-gateway-model-name-rewrite") ||
         base::iequals(name, "x-gateway-destination-endpoint") ||
         base::iequals(name, "x-gateway-destination-endpoint-served");
}

bool listedIn(const std::vector<std::string>& names, std::string_view name) {
  return std::any_of(names.begin(), names.end(),
                     [&](const std::string& n) { return base::iequals(n, name); });
}
bool listedIn(const std::vector<std::pair<std::string, std::string>>& pairs,
              std::string_view name) {
  return std::any_of(pairs.begin(), pairs.end(),
                     [&](const auto& p) { return base::iequals(p.first, name); });
}

void appendHeaderEdits(std::string& head, const config::HeaderModifier& mod) {
  for (const auto& [name, value] : mod.set) {
    head += name;
    head += ": ";
    head += value;
    head += "\r\n";
  }
  for (const auto& [name, value] : mod.add) {
    head += name;
    head += ": ";
    head += value;
    head += "\r\n";
  }
}

bool validRequestId(std::string_view id) {
  if (id.empty() || id.size() > 128) {
    return false;
  }
  return std::all_of(id.begin(), id.end(), [](char c) { return c > 0x20 && c < 0x7f; });
}

// --- writing to the client --------------------------------------------------------------------

// Client I/O goes through TLS on HTTPS listeners and straight to TCP otherwise; timeouts and
// cancellation always act on the TCP layer.
awaitable<size_t> clientReadSome(Session& s, asio::mutable_buffer buf, error_code& ec) {
  if (s.tls) {
    co_return co_await s.tls->async_read_some(buf, asio::redirect_error(asio::use_awaitable, ec));
  }
  co_return co_await s.stream.async_read_some(buf, asio::redirect_error(asio::use_awaitable, ec));
}

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

awaitable<bool> writeClient(Session& s, const std::vector<asio::const_buffer>& bufs,
                            std::chrono::milliseconds timeout) {
  error_code ec;
  s.stream.expires_after(timeout);
  if (s.tls) {
    // TLS writes one record per buffer: gather small pieces into one record first.
    size_t total = asio::buffer_size(bufs);
    if (bufs.size() > 1 && total <= 16384) {
      std::string joined;
      joined.reserve(total);
      for (const auto& b : bufs) {
        joined.append(static_cast<const char*>(b.data()), b.size());
      }
      co_await asio::async_write(*s.tls, asio::buffer(joined),
                                 asio::redirect_error(asio::use_awaitable, ec));
    } else {
      co_await asio::async_write(*s.tls, bufs, asio::redirect_error(asio::use_awaitable, ec));
    }
    co_return !ec;
  }
  co_await asio::async_write(s.stream, bufs, asio::redirect_error(asio::use_awaitable, ec));
  co_return !ec;
}

std::string simpleHead(int status, std::string_view content_type, size_t length,
                       std::string_view request_id, bool close,
                       std::string_view extra_headers = {}) {
  std::string head = fmt::format("HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n",
                                 status, reasonFor(status), content_type, length);
  if (!request_id.empty()) {
    head += fmt::format("x-request-id: {}\r\n", request_id);
  }
  head += extra_headers;
  if (close) {
    head += "Connection: close\r\n";
  }
  head += "\r\n";
  return head;
}

awaitable<void> writeSimple(Exchange& x, int status, std::string_view content_type,
                            std::string_view body, std::string_view extra_headers = {}) {
  x.status = status;
  const auto& cfg = x.gen->snapshot->config;
  std::string head =
      simpleHead(status, content_type, body.size(), x.request_id, !x.keep_alive, extra_headers);
  std::vector<asio::const_buffer> bufs{asio::buffer(head)};
  if (x.method != "HEAD" && !body.empty()) {
    bufs.push_back(asio::buffer(body.data(), body.size()));
  }
  if (!co_await writeClient(x.session, bufs, cfg.timeouts.client_write)) {
    x.keep_alive = false;
  }
}

awaitable<void> writeError(Exchange& x, ErrorKind kind, std::string_view message,
                           std::string_view extra_headers = {}) {
  const auto& info = openai::errorInfo(kind);
  x.error_type = info.code;
  std::string body = openai::errorBody(kind, message);
  co_await writeSimple(x, info.status, "application/json", body, extra_headers);
}

// Errors raised before a request is parsed: no exchange exists yet.
awaitable<void> writeEarlyError(Session& s, ErrorKind kind, std::string_view message,
                                std::chrono::milliseconds timeout) {
  const auto& info = openai::errorInfo(kind);
  std::string body = openai::errorBody(kind, message);
  std::string head = simpleHead(info.status, "application/json", body.size(), {}, true);
  std::vector<asio::const_buffer> bufs{asio::buffer(head), asio::buffer(body)};
  co_await writeClient(s, bufs, timeout);
}

// --- watching the client while the upstream works ---------------------------------------------

// While a request is with the upstream, one read stays pending on the client socket: it keeps
// pipelined bytes for later, and it notices at once when the client goes away, so the upstream
// request is cancelled instead of generating tokens for nobody.
struct ClientWatch {
  explicit ClientWatch(const asio::any_io_executor& ex) : done(ex) {
    done.expires_at(asio::steady_timer::time_point::max());
  }
  bool running = false;
  bool stopping = false;
  bool client_gone = false;
  beast::tcp_stream* upstream = nullptr;
  backends::H2Stream* h2 = nullptr;  // an HTTP/2 upstream stream, reset when the client goes
  asio::steady_timer done;
};

awaitable<void> watchClient(Session& s, std::shared_ptr<ClientWatch> w) {
  while (!w->stopping && s.buffer.size() < kMaxPipelinedBytes) {
    error_code ec;
    size_t n = co_await clientReadSome(s, s.buffer.prepare(4096), ec);
    if (ec) {
      if (!w->stopping) {
        w->client_gone = true;
        if (w->upstream != nullptr) {
          w->upstream->close();
        }
        if (w->h2 != nullptr) {
          w->h2->cancel();
        }
      }
      break;
    }
    s.buffer.commit(n);
  }
  w->running = false;
  w->done.cancel();
}

void startWatch(Session& s, const std::shared_ptr<ClientWatch>& w) {
  s.stream.expires_never();
  w->running = true;
  asio::co_spawn(s.stream.get_executor(), watchClient(s, w), asio::detached);
}

awaitable<void> stopWatch(Session& s, ClientWatch& w) {
  w.stopping = true;
  if (w.running) {
    s.stream.socket().cancel();
    error_code ec;
    co_await w.done.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

// --- the upstream request ---------------------------------------------------------------------

// The request line and forwarded headers, without Host and Content-Length (set per attempt).
std::string upstreamHeadPrefix(const Exchange& x, const RouteChoice& route) {
  const Request& req = x.req;
  const config::HeaderModifier* mod =
      route.action && route.action->request_headers ? &*route.action->request_headers : nullptr;
  std::string head;
  head.reserve(512);
  head += x.method;
  head += ' ';
  head += route.rewritten_path.empty() ? x.target : std::string_view(route.rewritten_path);
  head += " HTTP/1.1\r\n";
  std::string_view connection_value;
  if (auto it = req.find(bhttp::field::connection); it != req.end()) {
    connection_value = it->value();
  }
  std::string_view forwarded_for;
  std::string_view host;
  for (const auto& f : req) {
    std::string_view name = f.name_string();
    if (http::isHopByHop(name) ||
        (!connection_value.empty() && http::connectionListsToken(connection_value, name))) {
      continue;
    }
    switch (f.name()) {
      case bhttp::field::host:
        host = f.value();
        continue;
      case bhttp::field::content_length:
      case bhttp::field::expect:
        continue;
      default:
        break;
    }
    if (base::iequals(name, "x-forwarded-for")) {
      forwarded_for = f.value();
      continue;
    }
    if (base::iequals(name, "x-request-id") || base::iequals(name, "x-forwarded-proto") ||
        base::iequals(name, "x-forwarded-host") || controlHeader(name)) {
      continue;
    }
    if (mod != nullptr && (listedIn(mod->remove, name) || listedIn(mod->set, name))) {
      continue;
    }
    if (x.strip_credentials &&
        (f.name() == bhttp::field::authorization || base::iequals(name, "x-api-key"))) {
      continue;
    }
    head += name;
    head += ": ";
    head += f.value();
    head += "\r\n";
  }
  head += "X-Forwarded-For: ";
  if (!forwarded_for.empty()) {
    head += forwarded_for;
    head += ", ";
  }
  head += x.session.client_ip;
  head += x.session.tls ? "\r\nX-Forwarded-Proto: https\r\n" : "\r\nX-Forwarded-Proto: http\r\n";
  if (!host.empty()) {
    head += "X-Forwarded-Host: ";
    head += host;
    head += "\r\n";
  }
  head += "x-request-id: ";
  head += x.request_id;
  head += "\r\n";
  if (mod != nullptr) {
    appendHeaderEdits(head, *mod);
  }
  return head;
}

bool isTimeout(const error_code& ec) {
  return ec == beast::error::timeout || ec == asio::error::timed_out;
}

bool isStaleConnectionError(const error_code& ec) {
  return ec == bhttp::error::end_of_stream || ec == asio::error::eof ||
         ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
         ec == asio::error::connection_aborted;
}

// Response headers for the client, from the upstream's.
std::string clientHead(const Exchange& x, const bhttp::response_header<>& res,
                       std::optional<uint64_t> content_length, bool chunked, bool close,
                       const config::HeaderModifier* mod) {
  std::string head;
  head.reserve(512);
  int status = static_cast<int>(res.result_int());
  fmt::format_to(std::back_inserter(head), "HTTP/1.1 {} {}\r\n", status, reasonFor(status));
  std::string_view connection_value;
  if (auto it = res.find(bhttp::field::connection); it != res.end()) {
    connection_value = it->value();
  }
  for (const auto& f : res) {
    std::string_view name = f.name_string();
    if (http::isHopByHop(name) || f.name() == bhttp::field::content_length ||
        (!connection_value.empty() && http::connectionListsToken(connection_value, name)) ||
        base::iequals(name, "x-request-id")) {
      continue;
    }
    if (mod != nullptr && (listedIn(mod->remove, name) || listedIn(mod->set, name))) {
      continue;
    }
    head += name;
    head += ": ";
    head += f.value();
    head += "\r\n";
  }
  head += "x-request-id: ";
  head += x.request_id;
  head += "\r\n";
  if (mod != nullptr) {
    appendHeaderEdits(head, *mod);
  }
  if (chunked) {
    head += "Transfer-Encoding: chunked\r\n";
  } else if (content_length) {
    fmt::format_to(std::back_inserter(head), "Content-Length: {}\r\n", *content_length);
  }
  if (close) {
    head += "Connection: close\r\n";
  }
  head += "\r\n";
  return head;
}

struct ChunkWriter {
  explicit ChunkWriter(bool is_chunked) : chunked(is_chunked) {}
  bool chunked;
  std::array<char, 24> size_line{};
  std::vector<asio::const_buffer> bufs;

  // Frames `data` as one chunk (or raw bytes when not chunked).
  std::vector<asio::const_buffer>& frame(std::string_view data) {
    bufs.clear();
    if (chunked) {
      int n = std::snprintf(size_line.data(), size_line.size(), "%zx\r\n", data.size());
      bufs.push_back(asio::buffer(size_line.data(), static_cast<size_t>(n)));
      bufs.push_back(asio::buffer(data.data(), data.size()));
      bufs.push_back(asio::buffer("\r\n", 2));
    } else {
      bufs.push_back(asio::buffer(data.data(), data.size()));
    }
    return bufs;
  }
};

constexpr std::string_view kLastChunk = "0\r\n\r\n";

enum class RelayEnd { Complete, UpstreamFailed, ClientGone, OverBudget };

// The model name to write back into responses when the request's was rewritten.
struct ModelWriteBack {
  std::string from;  // JSON-quoted upstream name
  std::string to;    // JSON-quoted client name
};

class RelayBuffer {
 public:
  explicit RelayBuffer(Worker& w) : worker_(w), buf_(w.takeRelayBuffer()) {}
  ~RelayBuffer() { worker_.returnRelayBuffer(std::move(buf_)); }
  RelayBuffer(const RelayBuffer&) = delete;
  RelayBuffer& operator=(const RelayBuffer&) = delete;
  char* get() { return buf_.get(); }

 private:
  Worker& worker_;
  std::unique_ptr<char[]> buf_;
};

// Streams the upstream body to the client as it arrives. SSE responses are cut into events:
// each read's complete events go out in one write, never held back for later ones.
// An upstream response body read through Beast's parser, from an HTTP/1.1 connection (plain or
// TLS). The relay reads every body through this shape: read(), done(), expire(), buffered().
template <class Conn>
class Http1Body {
 public:
  Http1Body(Conn& conn, bhttp::response_parser<bhttp::buffer_body>& parser)
      : conn_(conn), parser_(parser) {}
  awaitable<size_t> read(char* buf, size_t cap, error_code& ec) {
    parser_.get().body().data = buf;
    parser_.get().body().size = cap;
    co_await bhttp::async_read_some(conn_.stream, conn_.buffer, parser_,
                                    asio::redirect_error(asio::use_awaitable, ec));
    if (ec == bhttp::error::need_buffer) {
      ec = {};
    }
    co_return cap - parser_.get().body().size;
  }
  bool done() const { return parser_.is_done(); }
  void expire(std::chrono::milliseconds d) {
    beast::get_lowest_layer(conn_.stream).expires_after(d);
  }
  bool buffered() const { return conn_.buffer.size() > 0; }
  // The connection may carry another request.
  bool reusable() const { return parser_.keep_alive() && parser_.is_done(); }
  std::optional<uint64_t> contentLength() const {
    auto n = parser_.content_length();
    return n ? std::optional<uint64_t>(*n) : std::nullopt;
  }

 private:
  Conn& conn_;
  bhttp::response_parser<bhttp::buffer_body>& parser_;
};

template <class Body>
awaitable<RelayEnd> relayBody(Exchange& x, Body& upstream, bool sse, bool chunked, bool hide_usage,
                              ClientWatch& watch, std::string& head,
                              const ModelWriteBack* write_back) {
  Session& s = x.session;
  const auto& cfg = x.gen->snapshot->config;  // the request holds its generation
  const auto& time = s.worker.context().time;
  ChunkWriter writer(chunked);
  http::SseSplitter splitter;
  std::string out;
  std::string scratch;
  std::string usage_copy;
  bool usage_copy_ok = !sse;
  base::MonoTime last_event{};
  bool first_event = true;
  uint64_t events = 0;
  // Taken per response from the worker's pool, not held per connection, so idle keep-alive
  // connections stay small.
  RelayBuffer relay(s.worker);
  constexpr size_t kRelayBytes = Worker::kRelayBytes;

  auto onEvent = [&](std::string_view event, bool complete) {
    if (complete) {
      std::string_view data = http::SseSplitter::dataOf(event, scratch);
      if (data.size() > 7 && data.find("\"usage\"") != std::string_view::npos) {
        openai::ChunkInfo info = openai::inspectJson(data);
        if (info.usage) {
          x.usage.update(*info.usage);
          if (hide_usage && info.choices_empty) {
            return;  // the usage-only chunk the client did not ask for
          }
        }
      }
      if (data.empty()) {
        out.append(event);  // comments and keep-alives pass untimed
        return;
      }
      if (x.output_budget > 0 && data != "[DONE]" && ++events > x.output_budget) {
        x.over_budget = true;  // this event and the rest are not sent
      }
    }
    if (x.over_budget) {
      return;
    }
    const auto now = time.monotonicNow();
    if (first_event) {
      first_event = false;
      x.ttft_ms = base::secondsBetween(x.start, now) * 1e3;
      if (x.series) {
        x.series->ttft.observe(x.ttft_ms / 1e3);
      }
    } else if (x.series) {
      x.series->itl.observe(base::secondsBetween(last_event, now));
    }
    last_event = now;
    if (write_back == nullptr ||
        !openai::rewriteModelField(event, write_back->from, write_back->to, out)) {
      out.append(event);
    }
  };
  bool written_back = false;
  bool last_chunk_sent = false;
  std::string rewritten;

  while (!upstream.done()) {
    bool use_rewritten = false;
    error_code ec;
    if (x.deadline) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          *x.deadline - s.worker.context().time.monotonicNow());
      upstream.expire(
          std::max(std::chrono::milliseconds(1), std::min(cfg.timeouts.stream_idle, left)));
    } else {
      upstream.expire(cfg.timeouts.stream_idle);
    }
    const size_t n = co_await upstream.read(relay.get(), kRelayBytes, ec);
    if (watch.client_gone) {
      co_return RelayEnd::ClientGone;
    }
    std::string_view data(relay.get(), n);
    if (ec && n == 0) {
      if (isTimeout(ec)) {
        x.error_type = "upstream_timeout";
      } else {
        x.error_type = "upstream_stream_broken";
      }
      if (x.series) {
        x.series->countUpstreamError(metrics::UpstreamError::StreamBroken);
      }
      co_return RelayEnd::UpstreamFailed;
    }
    if (n == 0) {
      continue;
    }
    if (sse) {
      out.clear();
      splitter.feed(data, onEvent);
      data = out;
      if (x.over_budget) {
        if (!data.empty() || !head.empty()) {
          auto& bufs = writer.frame(data);
          if (!head.empty()) {
            bufs.insert(bufs.begin(), asio::buffer(head));
          }
          if (!co_await writeClient(s, bufs, cfg.timeouts.client_write)) {
            co_return RelayEnd::ClientGone;
          }
          head.clear();
        }
        co_return RelayEnd::OverBudget;
      }
    } else if (write_back != nullptr && !written_back) {
      // A JSON body names its model once, near the start.
      rewritten.clear();
      if (openai::rewriteModelField(data, write_back->from, write_back->to, rewritten)) {
        written_back = true;
        use_rewritten = true;
      }
    }
    if (!sse && usage_copy_ok) {
      if (usage_copy.size() + n <= kMaxUsageCopyBytes) {
        usage_copy.append(data);
      } else {
        usage_copy_ok = false;
        usage_copy.clear();
      }
    }
    if (data.empty()) {
      continue;
    }
    if (use_rewritten) {
      data = rewritten;
    }
    auto& bufs = writer.frame(data);
    if (!head.empty()) {
      // The response head goes out with the first body bytes: one write instead of two.
      bufs.insert(bufs.begin(), asio::buffer(head));
    }
    if (chunked && upstream.done() && splitter.pending().empty()) {
      // And the terminating chunk with the last ones.
      bufs.push_back(asio::buffer(kLastChunk.data(), kLastChunk.size()));
      last_chunk_sent = true;
    }
    if (!co_await writeClient(s, bufs, cfg.timeouts.client_write)) {
      co_return RelayEnd::ClientGone;
    }
    head.clear();
  }
  std::vector<asio::const_buffer> tail;
  if (!head.empty()) {
    tail.push_back(asio::buffer(head));
  }
  std::string rest(sse ? splitter.pending() : std::string_view());
  if (!rest.empty()) {
    // An unterminated last event: pass it on as it is.
    auto& bufs = writer.frame(rest);
    tail.insert(tail.end(), bufs.begin(), bufs.end());
  }
  if (chunked && !last_chunk_sent) {
    tail.push_back(asio::buffer(kLastChunk.data(), kLastChunk.size()));
  }
  if (!tail.empty() && !co_await writeClient(s, tail, cfg.timeouts.client_write)) {
    co_return RelayEnd::ClientGone;
  }
  if (usage_copy_ok && !usage_copy.empty()) {
    if (auto info = openai::inspectJson(usage_copy); info.usage) {
      x.usage = *info.usage;
    }
  }
  co_return RelayEnd::Complete;
}

// Relays an upstream's response (its head already read) to the client: status and headers, then
// the body as it arrives. `upstream_model` non-empty: that name is written back as the client's
// `client_model`. Returns whether the upstream connection may be reused.
template <class Body>
awaitable<bool> relayResponse(Exchange& x, const bhttp::response_header<>& res, Body& upstream,
                              ClientWatch& watch, bool hide_usage, std::string upstream_model,
                              const RouteChoice& route, std::string_view client_model,
                              router::Reservation* held) {
  Session& s = x.session;
  const auto& cfg = x.gen->snapshot->config;  // the request holds its generation
  bool keep = false;
  x.status = static_cast<int>(res.result_int());
  std::string_view content_type;
  if (auto it = res.find(bhttp::field::content_type); it != res.end()) {
    content_type = it->value();
  }
  const bool sse = http::isEventStream(content_type);
  const bool has_body = x.method != "HEAD" && x.status != 204 && x.status != 304 &&
                        !(x.status >= 100 && x.status < 200);
  // The client's model name goes back into the response (a different length: no
  // Content-Length then).
  std::optional<ModelWriteBack> write_back;
  if (!upstream_model.empty()) {
    write_back = ModelWriteBack{base::jsonQuote(upstream_model), base::jsonQuote(client_model)};
  }
  const std::optional<uint64_t> content_length = upstream.contentLength();
  const bool length_known = content_length.has_value() && !sse && !write_back;
  bool chunked = has_body && !length_known && !x.http10;
  if (has_body && !length_known && x.http10) {
    x.keep_alive = false;  // an HTTP/1.0 client learns the end from the close
  }
  std::string head = clientHead(
      x, res, content_length, chunked, !x.keep_alive,
      route.action && route.action->response_headers ? &*route.action->response_headers : nullptr);
  RelayEnd end = RelayEnd::Complete;
  if (!has_body || !upstream.buffered()) {
    // No body bytes yet (a stream whose first token is still being computed): the client gets
    // the status and headers now rather than with the first event.
    std::vector<asio::const_buffer> head_buf{asio::buffer(head)};
    if (!co_await writeClient(s, head_buf, cfg.timeouts.client_write)) {
      end = RelayEnd::ClientGone;
    }
    head.clear();
  }
  if (end == RelayEnd::Complete && has_body) {
    end = co_await relayBody(x, upstream, sse, chunked, hide_usage, watch, head,
                             write_back ? &*write_back : nullptr);
  }
  watch.upstream = nullptr;
  if (held != nullptr) {
    held->release();
  }
  co_await stopWatch(s, watch);
  if (watch.client_gone) {
    end = RelayEnd::ClientGone;
  }

  switch (end) {
    case RelayEnd::Complete:
      keep = upstream.reusable();
      break;
    case RelayEnd::ClientGone:
      x.status = 499;
      x.error_type = "client_closed";
      x.keep_alive = false;
      break;
    case RelayEnd::UpstreamFailed:
    case RelayEnd::OverBudget:
      if (!head.empty()) {
        // Nothing reached the client yet (not even the status line): it gets a whole 502
        // instead of a 200 that breaks off.
        co_await writeError(x, ErrorKind::UpstreamUnavailable,
                            "the upstream response broke off before any of it could be relayed");
        break;
      }
      x.keep_alive = false;
      if (end == RelayEnd::OverBudget) {
        x.error_type = "output_budget_exceeded";
      }
      if (sse && chunked) {
        // The client already has a 200: end the stream with an SSE error event, then close.
        std::string msg =
            end == RelayEnd::OverBudget
                ? openai::errorBody(ErrorKind::RateLimited,
                                    "the stream exceeded the output tokens its rate limit "
                                    "reserved and was stopped")
                : openai::errorBody(ErrorKind::UpstreamUnavailable,
                                    "the upstream stream broke before it finished");
        std::string event = "event: error\ndata: " + msg + "\n\n";
        ChunkWriter writer(true);
        if (co_await writeClient(s, writer.frame(event), cfg.timeouts.client_write)) {
          std::vector<asio::const_buffer> last{asio::buffer(kLastChunk.data(), kLastChunk.size())};
          co_await writeClient(s, last, cfg.timeouts.client_write);
        }
      }
      break;
  }
  co_return keep;
}

// Writes an HTTP/1.1 request and reads the response head, on a plain or TLS connection.
template <class Conn>
awaitable<void> sendAndReadHead(Conn& conn, const std::vector<asio::const_buffer>& bufs,
                                std::optional<bhttp::response_parser<bhttp::buffer_body>>& parser,
                                std::chrono::milliseconds timeout, error_code& ec) {
  beast::get_lowest_layer(conn.stream).expires_after(timeout);
  co_await asio::async_write(conn.stream, bufs, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    co_return;
  }
  parser.emplace();
  parser->header_limit(64 * 1024);
  parser->body_limit(std::numeric_limits<std::uint64_t>::max());
  co_await bhttp::async_read_header(conn.stream, conn.buffer, *parser,
                                    asio::redirect_error(asio::use_awaitable, ec));
}

// The HTTP/2 form of a request head built for HTTP/1.1 (the request line and header lines of
// upstreamHeadPrefix): method and path become pseudo-headers, names go to lower case, and the
// headers HTTP/2 forbids (connection-specific ones) are left out. Host becomes :authority, set
// per attempt; Content-Length is set here from the body.
struct H2Request {
  std::string method;
  std::string path;
  std::vector<backends::H2Connection::Header> headers;
};

H2Request h2RequestOf(std::string_view head) {
  H2Request out;
  size_t line_end = head.find("\r\n");
  std::string_view line = head.substr(0, line_end);
  const size_t sp1 = line.find(' ');
  const size_t sp2 = line.rfind(' ');
  out.method = std::string(line.substr(0, sp1));
  out.path = std::string(line.substr(sp1 + 1, sp2 - sp1 - 1));
  size_t pos = line_end == std::string_view::npos ? head.size() : line_end + 2;
  while (pos < head.size()) {
    size_t end = head.find("\r\n", pos);
    if (end == std::string_view::npos) {
      end = head.size();
    }
    std::string_view h = head.substr(pos, end - pos);
    pos = end + 2;
    const size_t colon = h.find(':');
    if (colon == std::string_view::npos) {
      continue;
    }
    std::string name = base::toLower(h.substr(0, colon));
    std::string_view value = base::trim(h.substr(colon + 1));
    if (name == "host" || name == "connection" || name == "keep-alive" ||
        name == "proxy-connection" || name == "transfer-encoding" || name == "upgrade" ||
        name == "content-length" || (name == "te" && value != "trailers")) {
      continue;
    }
    out.headers.push_back({std::move(name), std::string(value)});
  }
  return out;
}

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

  // Schedule: the profile orders the endpoints; the first is dispatched to at once.
  const scheduler::Profile& profile = x.gen->profiles->forModel(backend.model);
  scheduler::RequestInfo info;
  info.model = route.upstream_model.empty() ? std::string_view(peek.model)
                                            : std::string_view(route.upstream_model);
  info.prompt_tokens = std::max<uint64_t>(1, peek.prompt.length / 4);
  // A LoRA adapter: named so by a ModelRoute, or served or run as one by an engine (one set
  // lookup: the fetcher gathers the adapters when it publishes).
  if (route.lora) {
    info.lora = info.model;
  } else if (const auto* view = w.metricsView();
             view != nullptr && view->isLoraAdapter(info.model)) {
    info.lora = info.model;
  }
  info.max_tokens = peek.max_tokens.value_or(kDefaultExpectedOutput);
  std::vector<uint64_t> prefix_hashes;
  if (scheduler::usesPrefix(profile) && peek.prompt.valid()) {
    // Keys come from the prompt rendered in one canonical form (tools, then each message), so
    // the turns of one conversation share their prefix whatever the client's JSON formatting.
    thread_local std::string rendered;
    openai::renderPrompt(peek, body, x.req.body().capacity() + base::PaddedBuffer::kPadding,
                         rendered);
    std::string_view parts[] = {rendered};
    w.scheduler().index().hashPrompt(info.model, parts, prefix_hashes);
    info.prefix_hashes = &prefix_hashes;
  }
  if (!cfg.scheduler.session_header.empty()) {
    if (auto it = x.req.find(cfg.scheduler.session_header); it != x.req.end()) {
      info.session = it->value();
    }
  }
  if (info.session.empty()) {
    info.session = peek.user;
  }
  std::vector<const router::Endpoint*> candidates;
  scheduler::CycleState cycle;
  const bool explain = cfg.scheduler.decisions > 0 || cfg.access_log.decisions;
  scheduler::Decision decision;
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
  const size_t list = std::min<size_t>(cfg.scheduler.candidates, retries + 1);
  const auto schedule_start = w.context().time.monotonicNow();
  w.scheduler().pick(profile, info, backend, w.metricsView(), schedule_start, w.random(), list,
                     candidates, cycle, explain ? &decision : nullptr);
  if (explain) {
    if (cfg.access_log.decisions) {
      x.decision = scheduler::describe(decision);
    }
    if (cfg.scheduler.decisions > 0) {
      w.recordDecision(x.request_id, backend.model, std::move(decision), cfg.scheduler.decisions);
    }
  }
  if (x.series) {
    x.series->schedule.observe(
        base::secondsBetween(schedule_start, w.context().time.monotonicNow()));
    if (cycle.prefix_computed && cycle.prefix_total > 0 && !cycle.prefix_blocks.empty()) {
      x.series->prefix_ratio.observe(static_cast<double>(cycle.prefix_blocks[0]) /
                                     cycle.prefix_total);
    }
  }
  if (!candidates.empty()) {
    w.shard().picks(candidates.front()->address).fetch_add(1, std::memory_order_relaxed);
    const auto* view = w.metricsView();
    w.scheduler().onDispatch(profile, info, cycle, *candidates.front(),
                             view ? view->find(candidates.front()->address) : nullptr);
  }
  // An endpoint's load is the work it was given: the prompt it must compute (less the prefix the
  // index says it holds) plus the expected output.
  auto expectedWork = [&](size_t i) {
    const bool known = cycle.prefix_computed && i < cycle.prefix_blocks.size();
    return static_cast<int64_t>(info.expectedWorkOn(known ? cycle.prefix_blocks[i] : 0,
                                                    w.scheduler().index().blockBytes()));
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

// The request head for an external provider: its path and Host, the allow-listed client headers,
// the static headers and the credential (the client's own never leave the router).
std::string providerHead(const Exchange& x, const router::ProviderTarget& p,
                         std::string_view target, size_t body_size) {
  std::string head;
  head.reserve(512);
  fmt::format_to(std::back_inserter(head), "{} {} HTTP/1.1\r\nHost: {}\r\n", x.method, target,
                 p.authority);
  bool content_type = false;
  bool anthropic_version = false;
  for (const auto& [name, value] : p.headers) {
    content_type = content_type || base::iequals(name, "content-type");
    anthropic_version = anthropic_version || base::iequals(name, "anthropic-version");
  }
  for (const auto& f : x.req) {
    const std::string_view name = f.name_string();
    if (!backends::forwardsToProvider(name) || listedIn(p.headers, name)) {
      continue;
    }
    content_type = content_type || base::iequals(name, "content-type");
    anthropic_version = anthropic_version || base::iequals(name, "anthropic-version");
    fmt::format_to(std::back_inserter(head), "{}: {}\r\n", f.name_string(), f.value());
  }
  for (const auto& [name, value] : p.headers) {
    fmt::format_to(std::back_inserter(head), "{}: {}\r\n", name, value);
  }
  if (!p.auth_header.empty()) {
    fmt::format_to(std::back_inserter(head), "{}: {}\r\n", p.auth_header, p.auth_value);
  }
  if (!content_type) {
    head += "Content-Type: application/json\r\n";
  }
  if (p.type == router::ProviderTarget::Type::Anthropic && !anthropic_version) {
    head += "anthropic-version: 2023-06-01\r\n";  // required by the API; clients may set theirs
  }
  fmt::format_to(std::back_inserter(head), "x-request-id: {}\r\nContent-Length: {}\r\n\r\n",
                 x.request_id, body_size);
  return head;
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

// A request the filters refused: 401 (with WWW-Authenticate), 403, 429 (with Retry-After) or 503.
awaitable<void> writeRefusal(Exchange& x, const filters::Admission& a) {
  Worker& w = x.session.worker;
  const int status = a.status;
  if (status == 401) {
    w.shard().rejected_unauthorized.fetch_add(1, std::memory_order_relaxed);
  } else if (status == 403) {
    w.shard().rejected_forbidden.fetch_add(1, std::memory_order_relaxed);
  } else {
    w.shard().rejected_rate_limited.fetch_add(1, std::memory_order_relaxed);
  }
  std::string extra = status == 401 ? "WWW-Authenticate: Bearer\r\n"
                      : status == 429 && a.retry_after_s > 0
                          ? fmt::format("Retry-After: {}\r\n", a.retry_after_s)
                          : std::string();
  std::string message = a.message;
  ErrorKind kind = status == 401   ? ErrorKind::Unauthorized
                   : status == 403 ? ErrorKind::Forbidden
                   : status == 503 ? ErrorKind::Unavailable
                                   : ErrorKind::RateLimited;
  co_await writeError(x, kind, message, extra);
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

// RequestMirror: a copy of the request to one endpoint of the mirror backend, fire and
// forget. Its response is read and dropped; it never delays or fails the real request. The
// copy owns its bytes and the snapshot (so the endpoint outlives a reload).
constexpr size_t kMaxMirrorsInFlight = 64;  // per worker

// Sends a mirror copy over HTTP/1.1 and reads the answer to its end.
awaitable<bool> exchangeMirror(backends::UpstreamConnection& conn, const std::string& request,
                               std::chrono::milliseconds timeout) {
  error_code ec;
  beast::get_lowest_layer(conn.stream).expires_after(timeout);
  co_await asio::async_write(conn.stream, asio::buffer(request),
                             asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    co_return false;
  }
  bhttp::response_parser<bhttp::buffer_body> parser;
  parser.header_limit(64 * 1024);
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  char scratch[8192];
  while (!parser.is_done()) {
    parser.get().body().data = scratch;
    parser.get().body().size = sizeof(scratch);
    co_await bhttp::async_read_some(conn.stream, conn.buffer, parser,
                                    asio::redirect_error(asio::use_awaitable, ec));
    if (ec == bhttp::error::need_buffer) {
      ec = {};
    }
    if (ec) {
      co_return false;
    }
  }
  co_return parser.keep_alive();
}

// A RequestMirror copy, fire and forget: the answer is read and dropped. `request` is a whole
// HTTP/1.1 request (head and body); an h2c pool gets it over HTTP/2. (Mirrors go to HTTPRoute
// backends, InferencePools and Services, never to TLS ModelServers.)
awaitable<void> sendMirror(Worker& w, std::shared_ptr<const router::Snapshot> snapshot,
                           const router::Endpoint* ep, bool h2c, std::string request) {
  struct InFlight {
    explicit InFlight(Worker& worker) : w(worker) { ++w.mirrorsInFlight(); }
    ~InFlight() { --w.mirrorsInFlight(); }
    Worker& w;
  } in_flight(w);
  const auto& cfg = snapshot->config;
  const auto timeout = cfg.timeouts.upstream_response;
  error_code ec;
  if (h2c) {
    const size_t head_end = request.find("\r\n\r\n");
    if (head_end == std::string::npos) {
      co_return;
    }
    H2Request h2_request = h2RequestOf(std::string_view(request).substr(0, head_end + 2));
    std::string_view body = std::string_view(request).substr(head_end + 4);
    h2_request.headers.push_back({"content-length", std::to_string(body.size())});
    bool reused = false;
    const bool fresh = false;  // arguments hoisted out of co_await (g++ 12)
    auto h2conn =
        co_await w.h2Pool().acquire(*ep, cfg.timeouts.upstream_connect, fresh, reused, ec);
    if (ec) {
      co_return;
    }
    auto stream = h2conn->submit(h2_request.method, ep->address, h2_request.path,
                                 h2_request.headers, {body}, body.size());
    if (!stream) {
      co_return;
    }
    co_await stream->waitHead(timeout, ec);
    char scratch[8192];
    const size_t cap = sizeof(scratch);
    stream->expire(timeout);
    while (!ec && !stream->done()) {
      co_await stream->read(scratch, cap, ec);
    }
    stream->cancel();  // the body views `request`, which ends with this frame
    co_return;
  }
  auto conn = w.pool().takeIdle(ep->address);
  if (!conn) {
    conn = co_await w.pool().connect(*ep, cfg.timeouts.upstream_connect, ec);
    if (ec) {
      co_return;
    }
  }
  const bool keep = co_await exchangeMirror(*conn, request, timeout);
  if (keep) {
    w.pool().release(ep->address, std::move(conn));
  }
}

void startMirrors(Exchange& x, const router::RouteAction& action,
                  const std::shared_ptr<const router::Snapshot>& snapshot,
                  std::string_view rewritten_target) {
  Worker& w = x.session.worker;
  for (const auto& m : action.mirrors) {
    if (m.fraction < 1.0 &&
        static_cast<double>(w.random().uniform(1'000'000)) >= m.fraction * 1'000'000) {
      continue;
    }
    const auto now = w.context().time.monotonicNow().time_since_epoch().count();
    std::vector<const router::Endpoint*> live;
    for (const auto& ep : snapshot->current(*m.backend).endpoints) {
      if (!ep.state->ejected(now)) {
        live.push_back(&ep);
      }
    }
    if (live.empty() || w.mirrorsInFlight() >= kMaxMirrorsInFlight) {
      w.shard().mirrors_dropped.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    const router::Endpoint* ep = live[w.random().uniform(live.size())];
    std::string_view body = x.req.body().view();
    std::string request;
    request.reserve(256 + body.size());
    request += x.method;
    request += ' ';
    request += rewritten_target.empty() ? x.target : rewritten_target;
    request += " HTTP/1.1\r\n";
    for (const auto& f : x.req) {
      std::string_view name = f.name_string();
      if (http::isHopByHop(name) || f.name() == bhttp::field::host ||
          f.name() == bhttp::field::content_length || f.name() == bhttp::field::expect ||
          controlHeader(name)) {
        continue;
      }
      request += name;
      request += ": ";
      request += f.value();
      request += "\r\n";
    }
    fmt::format_to(std::back_inserter(request),
                   "Host: {}\r\nx-request-id: {}\r\nContent-Length: {}\r\n\r\n", ep->address,
                   x.request_id, body.size());
    request += body;
    w.shard().mirrors_sent.fetch_add(1, std::memory_order_relaxed);
    asio::co_spawn(x.session.stream.get_executor(),
                   sendMirror(w, snapshot, ep, m.backend->h2c, std::move(request)), asio::detached);
  }
}

// Flow control: admitted at once when the backend has room and nobody waits; otherwise shed
// (negative priority), refused (queue full) or queued until a slot frees or the TTL passes.
// Returns false when a response was written.
awaitable<bool> admitFlow(Exchange& x, const router::Backend& backend) {
  const auto& fc = x.gen->snapshot->config.flow_control;
  if (!fc.enabled() || backend.endpoints.empty()) {
    co_return true;
  }
  Worker& w = x.session.worker;
  auto& time = w.context().time;
  auto queue = w.flowQueue(backend.model);
  auto capacity = [&] {
    return flowCapacity(backend, fc, w.metricsView(),
                        time.monotonicNow().time_since_epoch().count());
  };
  auto admitted = [&] {
    x.flow = queue;
    x.flow_backend = &backend;
  };
  if (queue->tryAdmit(capacity())) {
    admitted();
    co_return true;
  }
  if (x.priority < 0) {
    w.shard().flow_shed.fetch_add(1, std::memory_order_relaxed);
    co_await writeError(x, ErrorKind::RateLimited,
                        "the backend is saturated; sheddable request (negative priority) dropped",
                        "Retry-After: 1\r\n");
    co_return false;
  }
  const uint64_t bytes = x.req.body().view().size();
  if (queue->queued() >= fc.max_queued || queue->queuedBytes() + bytes > fc.max_queued_bytes) {
    w.shard().flow_shed.fetch_add(1, std::memory_order_relaxed);
    co_await writeError(x, ErrorKind::RateLimited, "the backend is saturated and its queue is full",
                        "Retry-After: 1\r\n");
    co_return false;
  }
  w.shard().flow_queued.fetch_add(1, std::memory_order_relaxed);
  auto waiter = std::make_shared<filters::FlowWaiter>();
  waiter->priority = x.priority;
  waiter->bytes = bytes;
  if (auto it = x.req.find("x-gateway-inference-fairness-id"); it != x.req.end()) {
    waiter->flow = std::string(it->value());
  } else if (!x.admission.identity.id.empty()) {
    waiter->flow = x.admission.identity.id;
  } else {
    waiter->flow = "default-flow";
  }
  waiter->enqueued_ns = time.monotonicNow().time_since_epoch().count();
  // The timer is shared with the wake-up, which may run after this coroutine moved on.
  auto timer = std::make_shared<asio::steady_timer>(x.session.stream.get_executor());
  waiter->wake = [timer, ex = x.session.stream.get_executor()] {
    asio::post(ex, [timer] { timer->cancel(); });
  };
  queue->enqueue(waiter);
  const auto deadline = time.monotonicNow() + fc.queue_ttl;
  const auto queued_at = time.monotonicNow();
  while (true) {
    x.queue_ms = base::secondsBetween(queued_at, time.monotonicNow()) * 1e3;
    if (waiter->state.load() == filters::FlowWaiter::State::Dispatched) {
      admitted();
      if (x.series)
        x.series->queue_wait.observe(x.queue_ms / 1e3);
      co_return true;
    }
    const auto now = time.monotonicNow();
    if (now >= deadline) {
      if (!queue->cancel(waiter)) {
        admitted();  // dispatched just now: it owns a slot
        co_return true;
      }
      w.shard().flow_expired.fetch_add(1, std::memory_order_relaxed);
      if (x.series)
        x.series->queue_wait.observe(x.queue_ms / 1e3);
      co_await writeError(x, ErrorKind::Unavailable,
                          fmt::format("the request waited {} ms in the saturated backend's queue",
                                      fc.queue_ttl.count()));
      co_return false;
    }
    // Re-check now and then: capacity also returns when engine metrics recover, not only when
    // one of our requests ends.
    queue->dispatch(capacity());
    if (waiter->state.load() == filters::FlowWaiter::State::Dispatched) {
      continue;
    }
    timer->expires_after(
        std::min<std::chrono::nanoseconds>(std::chrono::milliseconds(25), deadline - now));
    error_code ignored;
    co_await timer->async_wait(asio::redirect_error(asio::use_awaitable, ignored));
  }
}

awaitable<void> routeAndProxy(Exchange& x, const router::ListenerRoutes* listener) {
  Worker& w = x.session.worker;
  const auto& snapshot = x.gen->snapshot;
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

  RouteChoice route;
  std::string route_error;
  bool routed = false;
  const router::ModelRouteEntry* model_route_hit = nullptr;
  if (listener != nullptr && !peek.model.empty()) {
    // ModelRoutes first, on /v1 paths (Kthena's precedence): the oldest route whose rules
    // match wins.
    auto mt = router::RouteTable::matchModel(*listener, view, w.random());
    if (mt.target != nullptr) {
      routed = true;
      model_route_hit = mt.route;
      if (!mt.target->backend) {
        route_error = mt.target->error;
      } else {
        route.backend = &snapshot->current(*mt.target->backend);
        route.lora = mt.lora;
        if (!mt.lora && !route.backend->upstream_model.empty()) {
          route.upstream_model = route.backend->upstream_model;
        }
      }
    }
  }
  if (!routed && listener != nullptr) {
    auto m = router::RouteTable::matchHttp(*listener, view);
    if (m.action != nullptr) {
      routed = true;
      const auto& action = *m.action;
      route.action = &action;
      route.entry = m.entry;
      if (action.request_timeout.count() > 0) {
        x.deadline = x.start + action.request_timeout;
      }
      if (action.redirect) {
        std::string location = redirectLocation(x, *m.entry, *action.redirect, listener->port);
        co_await writeSimple(x, action.redirect->status_code, "text/plain", "",
                             fmt::format("Location: {}\r\n", location));
        co_return;
      }
      if (action.rewrite && action.rewrite->path) {
        route.rewritten_path = router::rewritePath(*action.rewrite->path, *m.entry, x.path);
        if (auto q = x.target.find('?'); q != std::string_view::npos) {
          route.rewritten_path.append(x.target.substr(q));
        }
      }
      if (!action.mirrors.empty()) {
        startMirrors(x, action, snapshot, route.rewritten_path);
      }
      const auto* target = router::RouteTable::pickTarget(action, w.random());
      if (target == nullptr) {
        route_error = action.targets.empty() ? "the route has no backends"
                                             : "every backend of the route has weight 0";
      } else if (!target->backend) {
        route_error = target->error;
      } else {
        route.backend = &snapshot->current(*target->backend);
        if (route.backend->kind == "InferencePool" && !peek.model.empty()) {
          // x-gateway-model-name-rewrite presets the target; else InferenceModelRewrite.
          if (auto it = x.req.find("x-gateway-model-name-rewrite"); it != x.req.end()) {
            route.upstream_model = std::string(it->value());
          } else if (const auto* rw = router::RouteTable::rewriteFor(*route.backend, peek.model)) {
            route.upstream_model = std::string(router::RouteTable::pickModel(*rw, w.random()));
          }
          if (auto it = x.req.find(router::kObjectiveHeader); it != x.req.end()) {
            auto o = route.backend->objectives.find(std::string(it->value()));
            if (o != route.backend->objectives.end()) {
              x.priority = o->second;
            }
          } else if (auto p = route.backend->model_priority.find(peek.model);
                     p != route.backend->model_priority.end()) {
            x.priority = p->second;
          }
        }
      }
    }
  }
  if (!routed && listener != nullptr && !peek.model.empty()) {
    // The models: section of the router's own file, compiled into ModelRoutes every listener
    // shares, consulted last.
    auto mt = router::RouteTable::matchConfigModel(*listener, view, w.random());
    if (mt.target != nullptr && mt.target->backend) {
      routed = true;
      route.backend = &snapshot->current(*mt.target->backend);
      route.upstream_model = route.backend->upstream_model;
    }
  }
  // Filters: authentication, model access and rate limits, before anything is revealed about
  // routing (an unauthenticated client learns nothing, not even whether a model exists).
  if (const auto& chain = x.gen->filters; chain && chain->active()) {
    // The mode: the route's annotation, else the Gateway's, else the global default.
    std::string_view mode_text;
    const router::ModelRouteEntry* model_route = nullptr;
    if (route.action != nullptr && !route.action->auth_mode.empty()) {
      mode_text = route.action->auth_mode;
    }
    if (model_route_hit != nullptr) {
      model_route = model_route_hit;
      if (!model_route->auth_mode.empty())
        mode_text = model_route->auth_mode;
    }
    if (mode_text.empty() && listener != nullptr && !listener->auth_mode.empty()) {
      mode_text = listener->auth_mode;
    }
    // Which configured limits apply: the route's annotation, else the Gateway's, else all.
    std::string_view limit_selection;
    if (model_route_hit != nullptr && !model_route_hit->rate_limits.empty()) {
      limit_selection = model_route_hit->rate_limits;
    } else if (route.action != nullptr && !route.action->rate_limits.empty()) {
      limit_selection = route.action->rate_limits;
    } else if (listener != nullptr) {
      limit_selection = listener->rate_limits;
    }
    filters::FilterRequest fr;
    fr.mode = mode_text.empty() ? chain->defaultMode()
                                : filters::parseAuthMode(mode_text).value_or(chain->defaultMode());
    if (auto it = x.req.find(bhttp::field::authorization); it != x.req.end()) {
      fr.authorization = it->value();
    }
    if (auto it = x.req.find("x-api-key"); it != x.req.end()) {
      fr.api_key = it->value();
    }
    fr.model = peek.model;
    fr.limit_selection = limit_selection;
    if (listener != nullptr)
      fr.gateway = listener->gateway;
    if (model_route != nullptr) {
      fr.route = model_route->qualified;
      if (model_route->rate_limit)
        fr.route_limit = &*model_route->rate_limit;
    } else if (route.action != nullptr) {
      fr.route = route.action->qualified;
    }
    fr.input_tokens = peek.prompt.valid() ? std::max<uint64_t>(1, peek.prompt.length / 4) : 0;
    fr.output_tokens = peek.model.empty() ? 0 : peek.max_tokens.value_or(kDefaultExpectedOutput);
    fr.now_ns = w.context().time.monotonicNow().time_since_epoch().count();
    fr.unix_s = std::chrono::duration_cast<std::chrono::seconds>(
                    w.context().time.systemNow().time_since_epoch())
                    .count();
    x.admission = chain->admit(fr, w.buckets());
    // A global limit whose local lease is empty: Redis is being asked; wait for its answer
    // (bounded), then admit again. Most requests never get here.
    for (int round = 0; !x.admission.ok && x.admission.wait_for && round < 3; ++round) {
      auto lease = x.admission.wait_for;
      const auto generation = x.admission.wait_generation;
      const auto until =
          w.context().time.monotonicNow() + 2 * x.gen->snapshot->config.redis_timeout;
      asio::steady_timer pause(x.session.stream.get_executor());
      while (lease->generation.load() == generation && w.context().time.monotonicNow() < until) {
        pause.expires_after(std::chrono::milliseconds(1));
        error_code ignored;
        co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
      }
      fr.now_ns = w.context().time.monotonicNow().time_since_epoch().count();
      x.admission = chain->admit(fr, w.buckets());
    }
    if (!x.admission.ok && x.admission.status == 0) {
      x.admission.status = 503;
      x.admission.message = "a global rate limit could not be checked in time";
    }
    x.filters = chain;
    x.identity_tag = x.admission.identity.tag;
    if (x.admission.ok && x.gen->snapshot->config.stop_streams_over_budget) {
      for (const auto& r : x.admission.reservations) {
        using Kind = filters::Admission::Reservation::Kind;
        if (r.kind == Kind::Output || r.kind == Kind::Total) {
          x.output_budget = std::max<uint64_t>(1, fr.output_tokens);
        }
      }
    }
    x.strip_credentials = fr.mode != filters::AuthMode::Off && x.admission.credentials_present &&
                          !chain->forwardCredentials();
    if (!x.admission.ok) {
      co_await writeRefusal(x, x.admission);
      co_return;
    }
  }
  if (!routed) {
    if (!peek.model.empty()) {
      x.model_label = metrics::kUnknownModel;
      co_await writeError(x, ErrorKind::ModelNotFound,
                          fmt::format("The model '{}' does not exist", peek.model));
    } else {
      co_await writeError(x, ErrorKind::NotFound, fmt::format("no route for path '{}'", x.path));
    }
    co_return;
  }
  if (route.backend == nullptr || !route.backend->error.empty()) {
    // An invalid backend reference: a 500 for this share of the traffic (Gateway API).
    // Built before the co_await: g++ 12 mishandles conditional temporaries across it.
    std::string message = route.backend
                              ? route.backend->error
                              : fmt::format("the route's backend is invalid: {}", route_error);
    co_await writeError(x, ErrorKind::Internal, message);
    co_return;
  }
  // The metrics label stays bounded by configuration: a name the listener serves (ModelRoute,
  // rewrite, models:), else the backend ("InferencePool/ns/name"), never any client string.
  if (peek.model.empty()) {
    x.model_label = metrics::kNoModel;
  } else if (route.backend->kind.empty()) {
    x.model_label = route.backend->model;
  } else if (listener != nullptr && listener->space &&
             std::binary_search(listener->space->names.begin(), listener->space->names.end(),
                                peek.model)) {
    x.model_label = peek.model;
  } else {
    x.model_label = route.backend->model;
  }
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

void finishExchange(Exchange& x) {
  Worker& w = x.session.worker;
  auto& ctx = w.context();
  const auto now = ctx.time.monotonicNow();
  double seconds = base::secondsBetween(x.start, now);
  metrics::ModelSeries& series = x.series ? *x.series : w.shard().model(x.model_label);
  series.countRequest(x.status, seconds);
  series.input_tokens.fetch_add(x.usage.input_tokens, std::memory_order_relaxed);
  if (x.flow) {
    // Free the slot and hand it to the best waiter.
    x.flow->release();
    x.flow->dispatch(flowCapacity(*x.flow_backend, x.gen->snapshot->config.flow_control,
                                  w.metricsView(), now.time_since_epoch().count()));
  }
  if (x.filters && !x.admission.reservations.empty()) {
    // Reconcile the rate-limit reservations with what was really used.
    const bool usage_known = x.usage.input_tokens > 0 || x.usage.output_tokens > 0;
    x.filters->complete(x.admission, usage_known, x.served && x.status < 500, x.usage.input_tokens,
                        x.usage.output_tokens, now.time_since_epoch().count());
  }
  series.output_tokens.fetch_add(x.usage.output_tokens, std::memory_order_relaxed);
  if (ctx.access_log.enabled()) {
    metrics::AccessRecord r;
    r.request_id = x.request_id;
    r.method = x.method;
    r.path = x.path;
    r.status = x.status;
    r.model = x.model_label;
    r.endpoint = x.endpoint;
    r.attempts = x.attempts;
    r.input_tokens = x.usage.input_tokens;
    r.output_tokens = x.usage.output_tokens;
    r.ttft_ms = x.ttft_ms;
    r.duration_ms = seconds * 1e3;
    r.error_type = x.error_type;
    r.client = x.session.client_ip;
    r.stream = x.stream;
    r.decision = x.decision;
    r.identity = x.identity_tag;
    r.limit = x.admission.limit;
    r.queue_ms = x.queue_ms;
    r.unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                    ctx.time.systemNow().time_since_epoch())
                    .count();
    ctx.access_log.write(w.index(), r);
  }
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
