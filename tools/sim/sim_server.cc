#include "sim/sim_server.h"

#include <boost/asio/buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <fmt/core.h>

#include "base/strings.h"
#include "http/padded_body.h"
#include "openai/errors.h"
#include "openai/peek.h"

namespace sluice::sim {

namespace bhttp = boost::beast::http;

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

SimServer::SimServer(asio::io_context& ioc, SimOptions options, std::shared_ptr<SimControl> control)
    : ioc_(ioc),
      options_(std::move(options)),
      control_(std::move(control)),
      acceptor_(ioc),
      gate_(ioc) {
  gate_.expires_at(asio::steady_timer::time_point::max());
}

error_code SimServer::listen(const tcp::endpoint& endpoint) {
  error_code ec;
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) {
    acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  }
  if (!ec) {
    acceptor_.bind(endpoint, ec);
  }
  if (!ec) {
    acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  }
  return ec;
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

awaitable<void> SimServer::acceptLoop() {
  while (acceptor_.is_open()) {
    error_code ec;
    tcp::socket socket =
        co_await acceptor_.async_accept(asio::redirect_error(asio::use_awaitable, ec));
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

struct Reply {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
};

std::string headFor(int status, std::string_view content_type, std::string_view engine,
                    std::optional<size_t> length) {
  std::string head =
      fmt::format("HTTP/1.1 {} {}\r\nContent-Type: {}\r\nx-sim-engine: {}\r\n", status,
                  bhttp::obsolete_reason(static_cast<bhttp::status>(status)), content_type, engine);
  if (length) {
    head += fmt::format("Content-Length: {}\r\n\r\n", *length);
  } else {
    head += "Transfer-Encoding: chunked\r\n\r\n";
  }
  return head;
}

std::string chunk(std::string_view data) {
  return fmt::format("{:x}\r\n{}\r\n", data.size(), data);
}

bool isChat(std::string_view path) {
  return path == "/v1/chat/completions";
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

}  // namespace

awaitable<void> SimServer::serve(tcp::socket socket) {
  beast::tcp_stream stream(std::move(socket));
  beast::flat_buffer buffer;
  auto& ctl = *control_;
  while (true) {
    error_code ec;
    bhttp::request_parser<http::PaddedBody> parser;
    parser.body_limit(64 * 1024 * 1024);
    parser.header_limit(1024 * 1024);
    co_await bhttp::async_read(stream, buffer, parser,
                               asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      break;
    }
    auto& req = parser.get();
    ctl.requests.fetch_add(1);
    {
      std::string head;
      for (const auto& f : req) {
        head += fmt::format("{}: {}\n", f.name_string(), f.value());
      }
      ctl.record(std::move(head), std::string(req.body().view()));
    }
    std::string_view target = req.target();
    std::string_view path = target.substr(0, target.find('?'));
    const Fault fault = ctl.currentFault();
    const bool inference = path == "/v1/chat/completions" || path == "/v1/completions";
    if (inference && fault == Fault::Reset) {
      break;
    }
    if (inference && fault == Fault::Hang) {
      // Keep the connection open and silent until the peer gives up.
      co_await stream.async_read_some(buffer.prepare(1),
                                      asio::redirect_error(asio::use_awaitable, ec));
      ctl.cancelled.fetch_add(1);
      break;
    }

    Reply reply;
    std::optional<openai::RequestPeek> peek;
    if (path == "/health") {
      reply.body = "";
    } else if (path == "/v1/models") {
      reply.body = fmt::format(
          "{{\"object\":\"list\",\"data\":[{{\"id\":{},\"object\":\"model\",\"created\":0,"
          "\"owned_by\":\"sim\"}}]}}",
          base::jsonQuote(options_.model));
    } else if (path == "/metrics") {
      reply.content_type = "text/plain; version=0.0.4";
      reply.body = fmt::format(
          "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{{model_name={}}} {}\n"
          "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{{model_name={}}} 0\n",
          base::jsonQuote(options_.model), ctl.active.load(), base::jsonQuote(options_.model));
    } else if (inference && (fault == Fault::Status503 || fault == Fault::Status500)) {
      reply.status = fault == Fault::Status503 ? 503 : 500;
      reply.body = openai::errorBody(openai::ErrorKind::Unavailable, "simulated failure");
    } else if (inference) {
      auto& body = req.body();
      auto parsed =
          openai::peekRequest(body.view(), body.capacity() + base::PaddedBuffer::kPadding);
      if (!parsed) {
        reply.status = 400;
        reply.body = openai::errorBody(openai::ErrorKind::InvalidRequest, parsed.error().message);
      } else {
        peek = std::move(*parsed);
      }
    } else {
      reply.status = 404;
      reply.body = openai::errorBody(openai::ErrorKind::NotFound, "not found");
    }

    if (!peek) {
      std::string head =
          headFor(reply.status, reply.content_type, options_.name, reply.body.size());
      std::vector<asio::const_buffer> bufs{asio::buffer(head), asio::buffer(reply.body)};
      co_await asio::async_write(stream, bufs, asio::redirect_error(asio::use_awaitable, ec));
      if (ec || !req.keep_alive()) {
        break;
      }
      continue;
    }

    // Inference.
    ctl.active.fetch_add(1);
    const bool chat = isChat(path);
    const uint32_t n_tokens =
        static_cast<uint32_t>(peek->max_tokens.value_or(options_.default_max_tokens));
    const uint64_t prompt_tokens = std::max<uint64_t>(1, peek->prompt.length / 4);
    const std::string model = peek->model;
    asio::steady_timer timer(stream.get_executor());
    bool ok = true;
    if (options_.ttft.count() > 0) {
      timer.expires_after(options_.ttft);
      co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    if (peek->stream) {
      std::string head = headFor(200, "text/event-stream", options_.name, std::nullopt);
      co_await asio::async_write(stream, asio::buffer(head),
                                 asio::redirect_error(asio::use_awaitable, ec));
      ok = !ec;
      int events = 0;
      for (uint32_t i = 0; ok && i < n_tokens; ++i) {
        if (fault == Fault::BreakMidStream && events >= ctl.break_after_events.load()) {
          ok = false;
          break;
        }
        if (i > 0 && options_.itl.count() > 0) {
          timer.expires_after(options_.itl);
          co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        }
        std::string c = chunk(streamEvent(chat, model, i, i + 1 == n_tokens));
        co_await asio::async_write(stream, asio::buffer(c),
                                   asio::redirect_error(asio::use_awaitable, ec));
        ok = !ec;
        ++events;
        if (ok && i == 0 && ctl.hold_after_first.load()) {
          co_await gate_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        }
      }
      if (ok && fault != Fault::BreakMidStream) {
        std::string tail;
        if (peek->include_usage.value_or(false)) {
          tail += chunk(fmt::format(
              "data: {{\"id\":\"sim\",\"object\":\"{}\",\"created\":0,\"model\":{},\"choices\":[],"
              "\"usage\":{}}}\n\n",
              chat ? "chat.completion.chunk" : "text_completion", base::jsonQuote(model),
              usageJson(prompt_tokens, n_tokens)));
        }
        tail += chunk("data: [DONE]\n\n");
        tail += "0\r\n\r\n";
        co_await asio::async_write(stream, asio::buffer(tail),
                                   asio::redirect_error(asio::use_awaitable, ec));
        ok = !ec;
      } else {
        ok = false;
      }
    } else {
      if (options_.itl.count() > 0 && n_tokens > 1) {
        timer.expires_after(options_.itl * (n_tokens - 1));
        co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      }
      std::string text;
      for (uint32_t i = 0; i < n_tokens; ++i) {
        text += tokenText(i);
      }
      std::string body =
          chat ? fmt::format(
                     "{{\"id\":\"chatcmpl-sim\",\"object\":\"chat.completion\",\"created\":0,"
                     "\"model\":{},\"choices\":[{{\"index\":0,\"message\":{{\"role\":"
                     "\"assistant\",\"content\":{}}},\"finish_reason\":\"length\"}}],"
                     "\"usage\":{}}}",
                     base::jsonQuote(model), base::jsonQuote(text),
                     usageJson(prompt_tokens, n_tokens))
               : fmt::format(
                     "{{\"id\":\"cmpl-sim\",\"object\":\"text_completion\",\"created\":0,"
                     "\"model\":{},\"choices\":[{{\"index\":0,\"text\":{},"
                     "\"finish_reason\":\"length\"}}],\"usage\":{}}}",
                     base::jsonQuote(model), base::jsonQuote(text),
                     usageJson(prompt_tokens, n_tokens));
      std::string head = headFor(200, "application/json", options_.name, body.size());
      std::vector<asio::const_buffer> bufs{asio::buffer(head), asio::buffer(body)};
      co_await asio::async_write(stream, bufs, asio::redirect_error(asio::use_awaitable, ec));
      ok = !ec;
    }
    ctl.active.fetch_sub(1);
    if (!ok) {
      if (fault != Fault::BreakMidStream) {
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

}  // namespace sluice::sim
