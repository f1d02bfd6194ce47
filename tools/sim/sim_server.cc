#include "sim/sim_server.h"

#include <algorithm>
#include <iterator>

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <fmt/format.h>
#include <simdjson.h>

#include "base/clock.h"
#include "base/net.h"
#include "base/padded_buffer.h"
#include "base/strings.h"
#include "http/padded_body.h"
#include "openai/errors.h"
#include "openai/peek.h"

namespace sluice::sim {

namespace bhttp = boost::beast::http;
namespace od = simdjson::ondemand;

std::string SimControl::lastRequestHead() {
  std::lock_guard<std::mutex> lock(mu_);
  return last_head_;
}

std::string SimControl::lastRequestBody() {
  std::lock_guard<std::mutex> lock(mu_);
  return last_body_;
}

void SimControl::record(std::string head, std::string body) {
  std::lock_guard<std::mutex> lock(mu_);
  last_head_ = std::move(head);
  last_body_ = std::move(body);
}

EngineKind parseEngineKind(std::string_view text, bool& ok) {
  ok = true;
  if (text == "vllm") {
    return EngineKind::Vllm;
  }
  if (text == "vllm-v0") {
    return EngineKind::VllmV0;
  }
  if (text == "sglang") {
    return EngineKind::Sglang;
  }
  ok = false;
  return EngineKind::Vllm;
}

int parseErrorTypes(std::string_view text) {
  int mask = 0;
  while (!text.empty()) {
    size_t comma = text.find(',');
    std::string_view item = base::trim(text.substr(0, comma));
    if (item == "429") {
      mask |= 1;
    } else if (item == "500") {
      mask |= 2;
    } else if (item == "503") {
      mask |= 4;
    } else if (!item.empty()) {
      return -1;
    }
    if (comma == std::string_view::npos) {
      break;
    }
    text.remove_prefix(comma + 1);
  }
  return mask;
}

namespace {

// vLLM's histogram boundaries (seconds).
const std::vector<double>& ttftBuckets() {
  static const std::vector<double> b = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08,
                                        0.1,   0.25,  0.5,  0.75, 1.0,  2.5,  5.0,
                                        7.5,   10.0,  20.0, 40.0, 80.0, 160.0};
  return b;
}
const std::vector<double>& itlBuckets() {
  static const std::vector<double> b = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,  0.3,  0.4, 0.5,
                                        0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
  return b;
}
const std::vector<double>& e2eBuckets() {
  static const std::vector<double> b = {0.3,  0.5,   0.8,   1.0,   1.5,   2.0,   2.5,
                                        5.0,  10.0,  15.0,  20.0,  30.0,  40.0,  50.0,
                                        60.0, 120.0, 240.0, 480.0, 960.0, 1920.0};
  return b;
}

double uniform01(base::Random& r) {
  return static_cast<double>(r.next() >> 11) * 0x1.0p-53;
}

std::string headFor(int status, std::string_view content_type, std::string_view engine,
                    std::optional<size_t> length) {
  std::string head =
      fmt::format("HTTP/1.1 {} {}\r\nContent-Type: {}\r\nx-sim-engine: {}\r\n", status,
                  bhttp::obsolete_reason(static_cast<bhttp::status>(status)), content_type, engine);
  if (length) {
    fmt::format_to(std::back_inserter(head), "Content-Length: {}\r\n\r\n", *length);
  } else {
    head += "Transfer-Encoding: chunked\r\n\r\n";
  }
  return head;
}

void appendChunk(std::string& out, std::string_view data) {
  fmt::format_to(std::back_inserter(out), "{:x}\r\n", data.size());
  out += data;
  out += "\r\n";
}

std::string tokenText(uint32_t i) {
  return fmt::format("tok{} ", i);
}

std::string streamEvent(bool chat, std::string_view model, uint32_t i, bool last) {
  const char* finish = last ? "\"length\"" : "null";
  if (chat) {
    return fmt::format(
        "data: {{\"id\":\"chatcmpl-sim\",\"object\":\"chat.completion.chunk\",\"created\":0,"
        "\"model\":{},\"choices\":[{{\"index\":0,\"delta\":{{{}\"content\":\"{}\"}},"
        "\"finish_reason\":{}}}]}}\n\n",
        base::jsonQuote(model), i == 0 ? "\"role\":\"assistant\"," : "", tokenText(i), finish);
  }
  return fmt::format(
      "data: {{\"id\":\"cmpl-sim\",\"object\":\"text_completion\",\"created\":0,\"model\":{},"
      "\"choices\":[{{\"index\":0,\"text\":\"{}\",\"finish_reason\":{}}}]}}\n\n",
      base::jsonQuote(model), tokenText(i), finish);
}

std::string usageJson(uint64_t prompt, uint64_t completion) {
  return fmt::format("{{\"prompt_tokens\":{},\"completion_tokens\":{},\"total_tokens\":{}}}",
                     prompt, completion, prompt + completion);
}

// Appends the text of a message's content: a string, or an array of {type:text,text} parts.
void appendContent(od::value content, std::string& out) {
  std::string_view text;
  if (content.get_string().get(text) == simdjson::SUCCESS) {
    out += text;
    return;
  }
  od::array parts;
  if (content.get_array().get(parts) != simdjson::SUCCESS) {
    return;
  }
  for (auto part_result : parts) {
    od::object part;
    if (std::move(part_result).get_object().get(part) != simdjson::SUCCESS) {
      continue;
    }
    std::string_view t;
    if (part["text"].get_string().get(t) == simdjson::SUCCESS) {
      out += t;
    }
  }
}

// The prompt as the engine sees it: chat messages rendered through one fixed template,
// completions prompts as text (or token ids, used as they are).
std::vector<uint32_t> promptTokens(const openai::RequestPeek& peek, std::string_view body) {
  std::string_view raw = body.substr(peek.prompt.offset, peek.prompt.length);
  base::PaddedBuffer buf;
  buf.append(raw);
  od::parser parser;
  od::document doc;
  std::string text;
  std::vector<uint32_t> ids;
  if (raw.empty() || parser
                         .iterate(simdjson::padded_string_view(
                             buf.data(), buf.size(), buf.capacity() + base::PaddedBuffer::kPadding))
                         .get(doc)) {
    return tokenize(raw);
  }
  if (peek.prompt_field == openai::PromptField::Messages) {
    od::array messages;
    if (doc.get_array().get(messages) == simdjson::SUCCESS) {
      for (auto m_result : messages) {
        od::object m;
        if (std::move(m_result).get_object().get(m) != simdjson::SUCCESS) {
          continue;
        }
        std::string role = "user";
        std::string content;
        for (auto f_result : m) {
          od::field f;
          std::string_view key;
          if (std::move(f_result).get(f) || f.unescaped_key().get(key)) {
            break;
          }
          if (key == "role") {
            std::string_view r;
            if (f.value().get_string().get(r) == simdjson::SUCCESS) {
              role = r;
            }
          } else if (key == "content") {
            appendContent(f.value(), content);
          }
        }
        fmt::format_to(std::back_inserter(text), "<|{}|>\n{}<|end|>\n", role, content);
      }
    }
    text += "<|assistant|>\n";
    return tokenize(text);
  }
  // prompt / input: a string, an array of strings, or an array of token ids.
  std::string_view s;
  if (doc.get_string().get(s) == simdjson::SUCCESS) {
    return tokenize(s);
  }
  od::array arr;
  if (doc.get_array().get(arr) == simdjson::SUCCESS) {
    for (auto item_result : arr) {
      od::value item;
      if (std::move(item_result).get(item)) {
        break;
      }
      uint64_t id = 0;
      std::string_view piece;
      if (item.get_uint64().get(id) == simdjson::SUCCESS) {
        ids.push_back(static_cast<uint32_t>(id));
      } else if (item.get_string().get(piece) == simdjson::SUCCESS) {
        text += piece;
      }
    }
  }
  if (!ids.empty()) {
    return ids;
  }
  return tokenize(text);
}

}  // namespace

struct SimServer::Pending {
  explicit Pending(const Executor& ex, double arrival) : wake(ex), arrival_ms(arrival) {
    wake.expires_at(SteadyTimer::time_point::max());
  }
  SteadyTimer wake;
  uint32_t produced = 0;
  bool finished = false;
  bool peer_gone = false;
  double arrival_ms;
  double last_token_ms = -1;
};

SimServer::SimServer(asio::io_context& ioc, SimOptions options, std::shared_ptr<SimControl> control)
    : ioc_(ioc),
      options_(std::move(options)),
      control_(std::move(control)),
      acceptor_(ioc),
      gate_(ioc),
      step_timer_(ioc),
      engine_(options_.engine),
      random_(options_.seed),
      start_(std::chrono::steady_clock::now()),
      ttft_(ttftBuckets()),
      itl_(itlBuckets()),
      e2e_(e2eBuckets()) {
  if (options_.served_names.empty()) {
    options_.served_names.push_back("sim-model");
  }
  options_.time_scale = std::max(1e-3, options_.time_scale);
  gate_.expires_at(SteadyTimer::time_point::max());
}

SimServer::~SimServer() = default;

error_code SimServer::listen(const tcp::endpoint& endpoint) {
  return base::listenOn(acceptor_, endpoint);
}

uint16_t SimServer::port() const {
  error_code ec;
  return acceptor_.local_endpoint(ec).port();
}

void SimServer::start() {
  asio::co_spawn(ioc_, acceptLoop(), asio::detached);
}

void SimServer::release() {
  asio::post(ioc_, [this] {
    control_->hold_after_first = false;
    gate_.cancel();
  });
}

double SimServer::modelNow() const {
  auto real = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_);
  return real.count() * options_.time_scale;
}

// --- the engine clock -------------------------------------------------------------------------

void SimServer::kick() {
  if (!stepping_) {
    step();
  }
}

void SimServer::step() {
  const double now = modelNow();
  auto duration = engine_.planStep(now);
  if (!duration) {
    stepping_ = false;
    // Nothing runnable; if an adapter is loading, look again when it is ready.
    if (auto ready = engine_.nextLoraReady(); ready && *ready > now && engine_.stats().waiting) {
      stepping_ = true;
      step_timer_.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
          std::chrono::duration<double, std::milli>((*ready - now) / options_.time_scale)));
      step_timer_.async_wait([this](const error_code& ec) {
        if (!ec) {
          step();
        }
      });
    }
    return;
  }
  stepping_ = true;
  step_timer_.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double, std::milli>(*duration / options_.time_scale)));
  step_timer_.async_wait([this](const error_code& ec) {
    if (!ec) {
      onStepDone();
    }
  });
}

void SimServer::onStepDone() {
  const double now = modelNow();
  events_.clear();
  engine_.completeStep(now, events_);
  for (const TokenEvent& ev : events_) {
    auto it = pending_.find(ev.id);
    if (it == pending_.end()) {
      continue;
    }
    Pending& p = *it->second;
    p.produced += ev.tokens;
    if (ev.first) {
      ttft_.observe((now - p.arrival_ms) / 1e3);
    } else if (p.last_token_ms >= 0) {
      itl_.observe((now - p.last_token_ms) / 1e3);
    }
    p.last_token_ms = now;
    if (ev.finished) {
      p.finished = true;
      e2e_.observe((now - p.arrival_ms) / 1e3);
      ++finished_;
    }
    p.wake.cancel();
  }
  step();
}

// --- HTTP -------------------------------------------------------------------------------------

awaitable<void> SimServer::acceptLoop() {
  while (acceptor_.is_open()) {
    error_code ec;
    tcp::socket socket = co_await acceptor_.async_accept(asio::redirect_error(use_awaitable, ec));
    if (ec) {
      if (ec == asio::error::operation_aborted) {
        break;
      }
      continue;
    }
    control_->connections.fetch_add(1);
    asio::co_spawn(ioc_, serve(std::move(socket)), asio::detached);
  }
}

namespace {

// Watches the peer while a request is with the engine, so a client that goes away cancels its
// request (as vLLM aborts on disconnect).
struct PeerWatch {
  explicit PeerWatch(const Executor& ex) : done(ex) {
    done.expires_at(SteadyTimer::time_point::max());
  }
  bool running = true;
  bool stopping = false;
  bool gone = false;
  SimServer::Pending* pending = nullptr;
  SteadyTimer done;
};

awaitable<void> watchPeer(TcpStream& stream, beast::flat_buffer& buffer,
                          std::shared_ptr<PeerWatch> w, SteadyTimer* wake) {
  while (!w->stopping && buffer.size() < 65536) {
    error_code ec;
    size_t n = co_await stream.async_read_some(buffer.prepare(1024),
                                               asio::redirect_error(use_awaitable, ec));
    if (ec) {
      if (!w->stopping) {
        w->gone = true;
        wake->cancel();
      }
      break;
    }
    buffer.commit(n);
  }
  w->running = false;
  w->done.cancel();
}

}  // namespace

awaitable<void> SimServer::serve(tcp::socket socket) {
  error_code nodelay_ec;
  // Tokens are small writes: without this, Nagle holds them for the peer's delayed ACK.
  socket.set_option(tcp::no_delay(true), nodelay_ec);
  TcpStream stream(std::move(socket));
  beast::flat_buffer buffer;
  auto& ctl = *control_;
  const std::string& base_model = options_.served_names.front();
  while (true) {
    error_code ec;
    bhttp::request_parser<http::PaddedBody> parser;
    parser.body_limit(64 * 1024 * 1024);
    parser.header_limit(1024 * 1024);
    co_await bhttp::async_read(stream, buffer, parser, asio::redirect_error(use_awaitable, ec));
    if (ec) {
      break;
    }
    auto& req = parser.get();
    std::string_view target = req.target();
    std::string_view path = target.substr(0, target.find('?'));
    const bool inference = path == "/v1/chat/completions" || path == "/v1/completions";
    if (inference) {
      ctl.requests.fetch_add(1);
      std::string head;
      for (const auto& f : req) {
        fmt::format_to(std::back_inserter(head), "{}: {}\n", f.name_string(), f.value());
      }
      ctl.record(std::move(head), std::string(req.body().view()));
    }
    const Fault fault = ctl.currentFault();
    if (inference && fault == Fault::Reset) {
      break;
    }
    if (inference && fault == Fault::Hang) {
      // Keep the connection open and silent until the peer gives up.
      co_await stream.async_read_some(buffer.prepare(1), asio::redirect_error(use_awaitable, ec));
      ctl.cancelled.fetch_add(1);
      break;
    }

    int status = 200;
    std::string content_type = "application/json";
    std::string body;
    std::optional<openai::RequestPeek> peek;
    std::string lora;
    if (path == "/health") {
      if (modelNow() < ctl.ready_at_ms.load()) {
        status = 503;
      }
    } else if (path == "/v1/models") {
      body = "{\"object\":\"list\",\"data\":[";
      for (size_t i = 0; i < options_.served_names.size(); ++i) {
        fmt::format_to(std::back_inserter(body),
                       "{}{{\"id\":{},\"object\":\"model\",\"created\":0,\"owned_by\":\"sim\","
                       "\"root\":{},\"parent\":null,\"max_model_len\":{}}}",
                       i ? "," : "", base::jsonQuote(options_.served_names[i]),
                       base::jsonQuote(base_model), options_.engine.max_model_len);
      }
      for (const auto& adapter : options_.engine.lora_adapters) {
        fmt::format_to(std::back_inserter(body),
                       ",{{\"id\":{},\"object\":\"model\",\"created\":0,\"owned_by\":\"sim\","
                       "\"root\":{},\"parent\":{}}}",
                       base::jsonQuote(adapter), base::jsonQuote(adapter),
                       base::jsonQuote(base_model));
      }
      body += "]}";
    } else if (path == "/metrics") {
      if (ctl.metrics_down.load()) {
        status = 500;
        body = "exporter failure\n";
      } else {
        content_type = "text/plain; version=0.0.4";
        body = renderMetrics();
      }
    } else if (path == "/admin") {
      if (req.method() == bhttp::verb::post) {
        auto& b = req.body();
        od::parser p;
        od::document doc;
        od::object obj;
        if (p.iterate(simdjson::padded_string_view(b.data(), b.size(),
                                                   b.capacity() + base::PaddedBuffer::kPadding))
                .get(doc) ||
            doc.get_object().get(obj)) {
          status = 400;
          body = openai::errorBody(openai::ErrorKind::InvalidRequest, "expected a JSON object");
        } else {
          for (auto f_result : obj) {
            od::field f;
            std::string_view key;
            if (std::move(f_result).get(f) || f.unescaped_key().get(key)) {
              break;
            }
            double d = 0;
            std::string_view s;
            if (key == "error_types" && f.value().get_string().get(s) == simdjson::SUCCESS) {
              if (int mask = parseErrorTypes(s); mask >= 0) {
                ctl.error_types = mask;
              }
            } else if (key == "fault" && f.value().get_string().get(s) == simdjson::SUCCESS) {
              static const std::pair<std::string_view, Fault> kFaults[] = {
                  {"none", Fault::None},     {"reset", Fault::Reset},
                  {"hang", Fault::Hang},     {"503", Fault::Status503},
                  {"500", Fault::Status500}, {"break", Fault::BreakMidStream}};
              for (auto [n, v] : kFaults) {
                if (n == s) {
                  ctl.setFault(v);
                }
              }
            } else if (f.value().get_double().get(d) == simdjson::SUCCESS) {
              if (key == "error_rate") {
                ctl.error_rate = d;
              } else if (key == "error_status") {
                ctl.error_status = static_cast<int>(d);
              } else if (key == "stall_rate") {
                ctl.stall_rate = d;
              } else if (key == "stall_ms") {
                ctl.stall_ms = d;
              } else if (key == "disconnect_rate") {
                ctl.disconnect_rate = d;
              } else if (key == "ready_in_ms") {
                ctl.ready_at_ms = modelNow() + d;
              } else if (key == "metrics_down") {
                ctl.metrics_down = d != 0;
              } else if (key == "break_after_events") {
                ctl.break_after_events = static_cast<int>(d);
              }
            }
          }
        }
      }
      if (status == 200) {
        EngineStats st = engine_.stats();
        body = fmt::format(
            "{{\"fault\":{},\"error_rate\":{},\"error_status\":{},\"stall_rate\":{},"
            "\"stall_ms\":{},\"disconnect_rate\":{},\"ready\":{},\"running\":{},\"waiting\":{},"
            "\"kv_usage\":{},\"requests\":{},\"completed\":{},\"cancelled\":{}}}",
            ctl.fault.load(), ctl.error_rate.load(), ctl.error_status.load(), ctl.stall_rate.load(),
            ctl.stall_ms.load(), ctl.disconnect_rate.load(), modelNow() >= ctl.ready_at_ms.load(),
            st.running, st.waiting, st.kv_usage, ctl.requests.load(), ctl.completed.load(),
            ctl.cancelled.load());
      }
    } else if (inference && (fault == Fault::Status503 || fault == Fault::Status500)) {
      status = fault == Fault::Status503 ? 503 : 500;
      body = openai::errorBody(openai::ErrorKind::Unavailable, "simulated failure");
    } else if (inference && modelNow() < ctl.ready_at_ms.load()) {
      status = 503;
      body = openai::errorBody(openai::ErrorKind::Unavailable, "the engine is still starting");
    } else if (inference && ctl.error_rate.load() > 0 &&
               uniform01(random_) < ctl.error_rate.load()) {
      status = ctl.error_status.load();
      if (const int mask = ctl.error_types.load(); mask != 0) {
        // A mix of failure types: pick one of those enabled, uniformly.
        static constexpr int kStatuses[] = {429, 500, 503};
        int enabled[3];
        int n = 0;
        for (int b = 0; b < 3; ++b) {
          if (mask & (1 << b)) {
            enabled[n++] = kStatuses[b];
          }
        }
        status = enabled[random_.uniform(static_cast<uint64_t>(n))];
      }
      body = openai::errorBody(status == 429   ? openai::ErrorKind::RateLimited
                               : status == 500 ? openai::ErrorKind::Internal
                                               : openai::ErrorKind::Unavailable,
                               "simulated failure");
    } else if (inference) {
      auto& b = req.body();
      auto parsed = openai::peekRequest(b.view(), b.capacity() + base::PaddedBuffer::kPadding);
      if (!parsed) {
        status = 400;
        body = openai::errorBody(openai::ErrorKind::InvalidRequest, parsed.error().message);
      } else if (std::find(options_.served_names.begin(), options_.served_names.end(),
                           parsed->model) != options_.served_names.end()) {
        peek = std::move(*parsed);
      } else if (std::find(options_.engine.lora_adapters.begin(),
                           options_.engine.lora_adapters.end(),
                           parsed->model) != options_.engine.lora_adapters.end()) {
        lora = parsed->model;
        peek = std::move(*parsed);
      } else {
        status = 404;
        body = openai::errorBody(openai::ErrorKind::ModelNotFound,
                                 fmt::format("The model `{}` does not exist.", parsed->model));
      }
    } else {
      status = 404;
      body = openai::errorBody(openai::ErrorKind::NotFound, "not found");
    }

    if (!peek) {
      std::string head = headFor(status, content_type, options_.name, body.size());
      std::vector<asio::const_buffer> bufs{asio::buffer(head), asio::buffer(body)};
      co_await asio::async_write(stream, bufs, asio::redirect_error(use_awaitable, ec));
      if (ec || !req.keep_alive()) {
        break;
      }
      continue;
    }

    // Inference through the engine.
    const bool chat = path == "/v1/chat/completions";
    RequestSpec spec;
    spec.prompt_tokens = promptTokens(*peek, req.body().view());
    spec.max_tokens = static_cast<uint32_t>(std::max<uint64_t>(
        1, std::min<uint64_t>(peek->max_tokens.value_or(options_.default_max_tokens),
                              options_.engine.max_model_len)));
    spec.lora = lora;
    const uint64_t prompt_tokens = spec.prompt_tokens.size();
    const uint32_t n_tokens = spec.max_tokens;
    const double arrival = modelNow();
    const uint64_t id = engine_.submit(std::move(spec), arrival);
    if (id == 0) {
      std::string err = openai::errorBody(
          openai::ErrorKind::InvalidRequest,
          fmt::format("This model's maximum context length is {} tokens; the request has {} "
                      "prompt tokens and asks for {} more.",
                      options_.engine.max_model_len, prompt_tokens, n_tokens));
      std::string head = headFor(400, "application/json", options_.name, err.size());
      std::vector<asio::const_buffer> bufs{asio::buffer(head), asio::buffer(err)};
      co_await asio::async_write(stream, bufs, asio::redirect_error(use_awaitable, ec));
      if (ec) {
        break;
      }
      continue;
    }
    ctl.active.fetch_add(1);
    Pending pending(stream.get_executor(), arrival);
    pending_[id] = &pending;
    kick();
    auto watch = std::make_shared<PeerWatch>(stream.get_executor());
    stream.expires_never();
    asio::co_spawn(stream.get_executor(), watchPeer(stream, buffer, watch, &pending.wake),
                   asio::detached);

    const std::string model = peek->model;
    bool ok = true;
    uint32_t written = 0;
    const bool stream_mode = peek->stream;
    // Random stream faults, drawn once per request.
    const bool stall = stream_mode && uniform01(random_) < ctl.stall_rate.load();
    const bool cut = stream_mode && uniform01(random_) < ctl.disconnect_rate.load();
    const uint32_t fault_at =
        n_tokens > 1 ? 1 + static_cast<uint32_t>(random_.uniform(n_tokens - 1)) : 1;
    bool stalled = false;
    if (stream_mode) {
      std::string head = headFor(200, "text/event-stream", options_.name, std::nullopt);
      co_await asio::async_write(stream, asio::buffer(head),
                                 asio::redirect_error(use_awaitable, ec));
      ok = !ec;
    }
    std::string out;
    while (ok) {
      if (watch->gone) {
        ok = false;
        break;
      }
      if (stream_mode && written < pending.produced) {
        out.clear();
        while (written < pending.produced) {
          if (fault == Fault::BreakMidStream &&
              written >= static_cast<uint32_t>(ctl.break_after_events.load())) {
            break;
          }
          if ((cut || stall) && written == fault_at && !stalled) {
            break;
          }
          appendChunk(out, streamEvent(chat, model, written, written + 1 == n_tokens));
          ++written;
          if (written == 1 && ctl.hold_after_first.load()) {
            break;
          }
        }
        if (!out.empty()) {
          co_await asio::async_write(stream, asio::buffer(out),
                                     asio::redirect_error(use_awaitable, ec));
          if (ec) {
            ok = false;
            break;
          }
        }
        if (fault == Fault::BreakMidStream &&
            written >= static_cast<uint32_t>(ctl.break_after_events.load())) {
          ok = false;
          break;
        }
        if (cut && written == fault_at) {
          ok = false;  // the simulated crash: the connection closes mid-stream
          break;
        }
        if (stall && written == fault_at && !stalled) {
          stalled = true;
          SteadyTimer t(stream.get_executor());
          t.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
              std::chrono::duration<double, std::milli>(ctl.stall_ms.load() /
                                                        options_.time_scale)));
          co_await t.async_wait(asio::redirect_error(use_awaitable, ec));
          continue;
        }
        if (written == 1 && ctl.hold_after_first.load()) {
          co_await gate_.async_wait(asio::redirect_error(use_awaitable, ec));
        }
        continue;
      }
      if (pending.finished && (!stream_mode || written == pending.produced)) {
        break;
      }
      co_await pending.wake.async_wait(asio::redirect_error(use_awaitable, ec));
      pending.wake.expires_at(SteadyTimer::time_point::max());
    }
    if (ok && pending.finished) {
      if (stream_mode) {
        out.clear();
        if (peek->include_usage.value_or(false)) {
          appendChunk(out, fmt::format("data: {{\"id\":\"sim\",\"object\":\"{}\",\"created\":0,"
                                       "\"model\":{},\"choices\":[],\"usage\":{}}}\n\n",
                                       chat ? "chat.completion.chunk" : "text_completion",
                                       base::jsonQuote(model), usageJson(prompt_tokens, n_tokens)));
        }
        appendChunk(out, "data: [DONE]\n\n");
        out += "0\r\n\r\n";
        co_await asio::async_write(stream, asio::buffer(out),
                                   asio::redirect_error(use_awaitable, ec));
        ok = !ec;
      } else {
        std::string text;
        for (uint32_t i = 0; i < n_tokens; ++i) {
          text += tokenText(i);
        }
        std::string json =
            chat ? fmt::format(
                       "{{\"id\":\"chatcmpl-sim\",\"object\":\"chat.completion\",\"created\":0,"
                       "\"model\":{},\"choices\":[{{\"index\":0,\"message\":{{\"role\":"
                       "\"assistant\",\"content\":{}}},\"finish_reason\":\"length\"}}],"
                       "\"usage\":{}}}",
                       base::jsonQuote(model), base::jsonQuote(text),
                       usageJson(prompt_tokens, n_tokens))
                 : fmt::format(
                       "{{\"id\":\"cmpl-sim\",\"object\":\"text_completion\","
                       "\"created\":0,\"model\":{},\"choices\":[{{\"index\":0,\"text\":{},"
                       "\"finish_reason\":\"length\"}}],\"usage\":{}}}",
                       base::jsonQuote(model), base::jsonQuote(text),
                       usageJson(prompt_tokens, n_tokens));
        std::string head = headFor(200, "application/json", options_.name, json.size());
        std::vector<asio::const_buffer> bufs{asio::buffer(head), asio::buffer(json)};
        co_await asio::async_write(stream, bufs, asio::redirect_error(use_awaitable, ec));
        ok = !ec;
      }
    }
    // Stop watching the peer before the buffer is used for the next request.
    watch->stopping = true;
    if (watch->running) {
      stream.socket().cancel(ec);
      co_await watch->done.async_wait(asio::redirect_error(use_awaitable, ec));
    }
    pending_.erase(id);
    if (!pending.finished) {
      engine_.cancel(id);
    }
    ctl.active.fetch_sub(1);
    if (!ok) {
      if (fault != Fault::BreakMidStream && !cut) {
        ctl.cancelled.fetch_add(1);
      }
      break;
    }
    ctl.completed.fetch_add(1);
    if (!req.keep_alive()) {
      break;
    }
  }
  error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  stream.close();
}

// --- metrics ----------------------------------------------------------------------------------

std::string SimServer::renderMetrics() const {
  using metrics::appendHeader;
  using metrics::appendHistogram;
  const EngineStats st = engine_.stats();
  const std::string labels =
      fmt::format("model_name=\"{}\"", metrics::escapeLabel(options_.served_names.front()));
  std::string out;
  out.reserve(8192);
  auto gauge = [&](std::string_view name, std::string_view help, double v) {
    appendHeader(out, name, "gauge", help);
    fmt::format_to(std::back_inserter(out), "{}{{{}}} {}\n", name, labels, v);
  };
  auto counter = [&](std::string_view name, std::string_view help, double v) {
    appendHeader(out, name, "counter", help);
    fmt::format_to(std::back_inserter(out), "{}{{{}}} {}\n", name, labels, v);
  };
  auto histogram = [&](std::string_view name, std::string_view help, const metrics::Histogram& h) {
    appendHeader(out, name, "histogram", help);
    metrics::HistogramSnapshot snap;
    snap.add(h);
    appendHistogram(out, name, labels, snap);
  };
  const auto& cfg = options_.engine;
  if (options_.kind == EngineKind::Sglang) {
    gauge("sglang:num_running_reqs", "The number of running requests.", st.running);
    gauge("sglang:num_queue_reqs", "The number of requests in the waiting queue.", st.waiting);
    gauge("sglang:token_usage", "The token usage.", st.kv_usage);
    gauge("sglang:cache_hit_rate", "The prefix cache hit rate.",
          st.prefix_queries_tokens ? static_cast<double>(st.prefix_hit_tokens) /
                                         static_cast<double>(st.prefix_queries_tokens)
                                   : 0.0);
    histogram("sglang:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
              ttft_);
    histogram("sglang:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
              itl_);
    histogram("sglang:e2e_request_latency_seconds", "Histogram of End-to-end request latency.",
              e2e_);
    appendHeader(out, "sglang:cache_config_info", "gauge", "Information of the KV cache.");
    fmt::format_to(std::back_inserter(out),
                   "sglang:cache_config_info{{{},page_size=\"{}\",num_pages=\"{}\"}} 1\n", labels,
                   cfg.block_size, cfg.num_gpu_blocks);
    return out;
  }
  const bool v0 = options_.kind == EngineKind::VllmV0;
  gauge("vllm:num_requests_running", "Number of requests in model execution batches.", st.running);
  gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", st.waiting);
  gauge(v0 ? "vllm:gpu_cache_usage_perc" : "vllm:kv_cache_usage_perc",
        "KV-cache usage. 1 means 100 percent usage.", st.kv_usage);
  counter("vllm:prefix_cache_queries_total", "Prefix cache queries, in terms of number of tokens.",
          static_cast<double>(st.prefix_queries_tokens));
  counter("vllm:prefix_cache_hits_total", "Prefix cache hits, in terms of number of tokens.",
          static_cast<double>(st.prefix_hit_tokens));
  counter("vllm:num_preemptions_total", "Cumulative number of preemption from the engine.",
          static_cast<double>(st.preemptions));
  counter("vllm:request_success_total", "Count of successfully processed requests.",
          static_cast<double>(finished_));
  histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
            ttft_);
  histogram(v0 ? "vllm:time_per_output_token_seconds" : "vllm:inter_token_latency_seconds",
            "Histogram of inter-token latency in seconds.", itl_);
  histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
            e2e_);
  appendHeader(out, "vllm:cache_config_info", "gauge", "Information of the LLMEngine CacheConfig");
  fmt::format_to(std::back_inserter(out),
                 "vllm:cache_config_info{{{},block_size=\"{}\",num_gpu_blocks=\"{}\","
                 "enable_prefix_caching=\"True\"}} 1.0\n",
                 labels, cfg.block_size, cfg.num_gpu_blocks);
  auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) {
      s += (s.empty() ? "" : ",") + x;
    }
    return s;
  };
  appendHeader(out, "vllm:lora_requests_info", "gauge", "Running stats on lora requests.");
  fmt::format_to(
      std::back_inserter(out),
      "vllm:lora_requests_info{{{},max_lora=\"{}\",running_lora_adapters=\"{}\","
      "waiting_lora_adapters=\"{}\"}} {}\n",
      labels, cfg.max_loras, metrics::escapeLabel(join(st.running_loras)),
      metrics::escapeLabel(join(st.waiting_loras)),
      std::chrono::duration<double>(base::RealTimeSource::instance().systemNow().time_since_epoch())
          .count());
  return out;
}

}  // namespace sluice::sim
