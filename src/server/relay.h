#pragma once

// The relay stage: an upstream response to the client as it arrives. Status and headers, then
// the body: SSE cut into events (usage read, the model name written back, time to first token
// and inter-token latency observed, output budgets enforced), JSON passed through with its
// model rewritten; broken streams end with an SSE error event. Templates over the body source
// (HTTP/1.1 plain or TLS, HTTP/2), instantiated by the attempt loops.

#include <array>
#include <cstdio>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

#include "base/strings.h"
#include "http/headers.h"
#include "http/sse.h"
#include "openai/errors.h"
#include "openai/response_rewrite.h"
#include "openai/usage.h"
#include "server/client_io.h"
#include "server/exchange.h"
#include "server/header_policy.h"
#include "server/picker_stage.h"
#include "server/worker.h"

namespace sluice::server {

using openai::ErrorKind;

inline bool isTimeout(const error_code& ec) {
  return ec == beast::error::timeout || ec == asio::error::timed_out;
}

inline bool isStaleConnectionError(const error_code& ec) {
  return ec == bhttp::error::end_of_stream || ec == asio::error::eof ||
         ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
         ec == asio::error::connection_aborted;
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

inline constexpr std::string_view kLastChunk = "0\r\n\r\n";

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
                                    asio::redirect_error(use_awaitable, ec));
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

// The SSE side of the relay, event by event as the splitter cuts them: usage read (and the
// usage-only chunk the client did not ask for dropped), the output budget counted, time to
// first token and inter-token gaps observed, the model written back; what goes to the client
// is appended to `out`.
class SseEvents {
 public:
  SseEvents(Exchange& x, bool hide_usage, const ModelWriteBack* write_back)
      : x_(x), hide_usage_(hide_usage), write_back_(write_back) {}
  void operator()(std::string_view event, bool complete);
  std::string out;

 private:
  Exchange& x_;
  bool hide_usage_;
  const ModelWriteBack* write_back_;
  std::string scratch_;
  base::MonoTime last_event_{};
  bool first_event_ = true;
  uint64_t events_ = 0;
};

// A JSON body's copy, for the usage it reports (bounded: past kMaxUsageCopyBytes, none).
class UsageCopy {
 public:
  explicit UsageCopy(bool wanted) : ok_(wanted) {}
  void add(std::string_view data);
  void applyTo(Exchange& x) const;

 private:
  bool ok_;
  std::string copy_;
};

template <class Body>
awaitable<RelayEnd> relayBody(Exchange& x, Body& upstream, bool sse, bool chunked, bool hide_usage,
                              ClientWatch& watch, std::string& head,
                              const ModelWriteBack* write_back) {
  Session& s = x.session;
  const auto& cfg = x.gen->snapshot->config;  // the request holds its generation
  ChunkWriter writer(chunked);
  http::SseSplitter splitter;
  SseEvents on_event(x, hide_usage, write_back);
  UsageCopy usage_copy(!sse);
  // Taken per response from the worker's pool, not held per connection, so idle keep-alive
  // connections stay small.
  RelayBuffer relay(s.worker);
  constexpr size_t kRelayBytes = Worker::kRelayBytes;

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
      if (x.session.cut_by_shutdown) {
        x.error_type = "shutdown";
      } else if (isTimeout(ec)) {
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
      on_event.out.clear();
      splitter.feed(data, on_event);
      data = on_event.out;
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
    usage_copy.add(data);
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
  usage_copy.applyTo(x);
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
      route.action && route.action->response_headers ? &*route.action->response_headers : nullptr,
      x.picker != nullptr ? &x.picker->response_mutation : nullptr);
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
      if (end == RelayEnd::OverBudget) {
        x.error_type = "output_budget_exceeded";
      }
      if (!(sse && chunked)) {
        // A body that cannot say it broke off: the close is what tells the client.
        x.keep_alive = false;
      } else {
        // The client already has a 200: the stream ends with an SSE error event and the last
        // chunk, so its framing ends cleanly and the connection stays usable.
        std::string msg =
            end == RelayEnd::OverBudget
                ? openai::errorBody(ErrorKind::RateLimited,
                                    "the stream exceeded the output tokens its rate limit "
                                    "reserved and was stopped")
            : s.cut_by_shutdown
                ? openai::errorBody(ErrorKind::Unavailable,
                                    "the router is shutting down: the stream was cut at the "
                                    "drain deadline")
                : openai::errorBody(ErrorKind::UpstreamUnavailable,
                                    "the upstream stream broke before it finished");
        std::string event = "event: error\ndata: " + msg + "\n\n";
        ChunkWriter writer(true);
        bool ended = co_await writeClient(s, writer.frame(event), cfg.timeouts.client_write);
        if (ended) {
          std::vector<asio::const_buffer> last{asio::buffer(kLastChunk.data(), kLastChunk.size())};
          ended = co_await writeClient(s, last, cfg.timeouts.client_write);
        }
        if (!ended) {
          x.keep_alive = false;
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
  co_await asio::async_write(conn.stream, bufs, asio::redirect_error(use_awaitable, ec));
  if (ec) {
    co_return;
  }
  parser.emplace();
  parser->header_limit(64 * 1024);
  parser->body_limit(std::numeric_limits<std::uint64_t>::max());
  co_await bhttp::async_read_header(conn.stream, conn.buffer, *parser,
                                    asio::redirect_error(use_awaitable, ec));
}

}  // namespace sluice::server
