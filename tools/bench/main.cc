// sluice-bench: a load generator for OpenAI-compatible endpoints. Streams every response and
// records, per request, time to first token, the gaps between tokens, end-to-end latency,
// tokens and status. Closed loop (fixed concurrency) or open loop (Poisson arrivals at a rate).
// Workloads are generated from a seed, so runs repeat.
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <fmt/format.h>

#include "base/asio.h"
#include "base/random.h"
#include "base/strings.h"
#include "http/sse.h"

namespace {

using namespace sluice;
namespace bhttp = boost::beast::http;
using Clock = std::chrono::steady_clock;

constexpr const char* kUsage = R"(usage: sluice-bench --target HOST:PORT [options]
  --model NAME            model to request (default m)
  --workload W            shared-prefix | random (default shared-prefix)
  --groups N              shared-prefix: distinct system prompts (default 16)
  --prompts-per-group N   shared-prefix: requests per system prompt (default 16)
  --requests N            random: number of requests (default 256)
  --system-tokens N       system prompt length in tokens (~4 chars each; default 2048)
  --question-tokens N     question length (default 64)
  --output-tokens N       max_tokens per request (default 64)
  --concurrency N         closed loop: requests in flight (default 32)
  --rate R                open loop: Poisson arrivals per second (overrides --concurrency)
  --seed N                workload seed (default 1)
  --json PATH             write the per-request results and the summary as JSON
)";

struct Options {
  std::string host = "127.0.0.1";
  uint16_t port = 8080;
  std::string model = "m";
  std::string workload = "shared-prefix";
  int groups = 16, per_group = 16, requests = 256;
  int system_tokens = 2048, question_tokens = 64, output_tokens = 64;
  int concurrency = 32;
  double rate = 0;
  uint64_t seed = 1;
  std::string json;
};

struct Result {
  int status = 0;
  double ttft_s = -1;
  double e2e_s = 0;
  int tokens = 0;
  std::vector<double> gaps;
  std::string error;
};

std::string words(base::Random& r, int tokens) {
  static const char* kWords[] = {"river", "mill",  "stone", "water", "wheel", "grain", "light",
                                 "north", "field", "cloud", "bread", "story", "quiet", "night"};
  std::string s;
  while (static_cast<int>(s.size()) < tokens * 4) {
    s += kWords[r.uniform(14)];
    s += ' ';
  }
  s.resize(static_cast<size_t>(tokens) * 4);
  return s;
}

std::vector<std::string> makeBodies(const Options& o) {
  base::Xoshiro r(o.seed);
  std::vector<std::string> bodies;
  auto body = [&](const std::string& system, const std::string& question) {
    return fmt::format(
        R"({{"model":{},"stream":true,"max_tokens":{},"messages":[{{"role":"system","content":{}}},{{"role":"user","content":{}}}]}})",
        base::jsonQuote(o.model), o.output_tokens, base::jsonQuote(system),
        base::jsonQuote(question));
  };
  if (o.workload == "shared-prefix") {
    std::vector<std::string> systems;
    for (int g = 0; g < o.groups; ++g) {
      systems.push_back(fmt::format("group {} ", g) + words(r, o.system_tokens));
    }
    for (int g = 0; g < o.groups; ++g) {
      for (int i = 0; i < o.per_group; ++i) {
        bodies.push_back(body(systems[static_cast<size_t>(g)], words(r, o.question_tokens)));
      }
    }
    // Interleave the groups, as arrivals from many users would.
    for (size_t i = bodies.size(); i > 1; --i) {
      std::swap(bodies[i - 1], bodies[r.uniform(i)]);
    }
  } else {
    for (int i = 0; i < o.requests; ++i) {
      bodies.push_back(body(words(r, o.system_tokens), words(r, o.question_tokens)));
    }
  }
  return bodies;
}

struct Run {
  Options opt;
  std::vector<std::string> bodies;
  std::vector<Result> results;
  size_t next = 0;
  size_t done = 0;
  Clock::time_point start;
};

awaitable<void> oneRequest(Run& run, beast::tcp_stream& stream, bool& connected, size_t index) {
  Result& res = run.results[index];
  const auto t0 = Clock::now();
  error_code ec;
  if (!connected) {
    stream.expires_after(std::chrono::seconds(10));
    co_await stream.async_connect(tcp::endpoint(asio::ip::make_address(run.opt.host), run.opt.port),
                                  asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      res.error = "connect: " + ec.message();
      co_return;
    }
    stream.socket().set_option(tcp::no_delay(true), ec);
    connected = true;
  }
  const std::string& body = run.bodies[index];
  std::string head = fmt::format(
      "POST /v1/chat/completions HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n"
      "Content-Length: {}\r\n\r\n",
      run.opt.host, body.size());
  std::vector<asio::const_buffer> bufs{asio::buffer(head), asio::buffer(body)};
  stream.expires_after(std::chrono::minutes(10));
  co_await asio::async_write(stream, bufs, asio::redirect_error(asio::use_awaitable, ec));
  beast::flat_buffer buffer;
  bhttp::response_parser<bhttp::buffer_body> parser;
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  if (!ec) {
    co_await bhttp::async_read_header(stream, buffer, parser,
                                      asio::redirect_error(asio::use_awaitable, ec));
  }
  if (ec) {
    res.error = ec.message();
    connected = false;
    stream.close();
    co_return;
  }
  res.status = static_cast<int>(parser.get().result_int());
  http::SseSplitter splitter;
  std::string scratch;
  Clock::time_point last{};
  char chunk[16384];
  while (!parser.is_done()) {
    parser.get().body().data = chunk;
    parser.get().body().size = sizeof(chunk);
    co_await bhttp::async_read_some(stream, buffer, parser,
                                    asio::redirect_error(asio::use_awaitable, ec));
    if (ec == bhttp::error::need_buffer) {
      ec = {};
    }
    if (ec) {
      res.error = ec.message();
      connected = false;
      stream.close();
      break;
    }
    const size_t n = sizeof(chunk) - parser.get().body().size;
    const auto now = Clock::now();
    splitter.feed(std::string_view(chunk, n), [&](std::string_view event, bool) {
      std::string_view data = http::SseSplitter::dataOf(event, scratch);
      if (data.empty() || data == "[DONE]" || data.find("\"content\"") == std::string_view::npos) {
        return;
      }
      if (res.tokens == 0) {
        res.ttft_s = std::chrono::duration<double>(now - t0).count();
      } else {
        res.gaps.push_back(std::chrono::duration<double>(now - last).count());
      }
      last = now;
      ++res.tokens;
    });
  }
  if (connected && !parser.keep_alive()) {
    connected = false;
    stream.close();
  }
  res.e2e_s = std::chrono::duration<double>(Clock::now() - t0).count();
}

awaitable<void> closedLoopWorker(Run& run) {
  beast::tcp_stream stream(co_await asio::this_coro::executor);
  bool connected = false;
  while (run.next < run.bodies.size()) {
    size_t i = run.next++;
    co_await oneRequest(run, stream, connected, i);
    ++run.done;
  }
}

awaitable<void> openLoopRequest(Run& run, size_t i) {
  beast::tcp_stream stream(co_await asio::this_coro::executor);
  bool connected = false;
  co_await oneRequest(run, stream, connected, i);
  ++run.done;
}

awaitable<void> openLoop(Run& run) {
  auto ex = co_await asio::this_coro::executor;
  base::Xoshiro r(run.opt.seed * 7919);
  asio::steady_timer timer(ex);
  auto at = Clock::now();
  for (size_t i = 0; i < run.bodies.size(); ++i) {
    asio::co_spawn(ex, openLoopRequest(run, i), asio::detached);
    const double u = (static_cast<double>(r.next() >> 11) + 1) * 0x1.0p-53;
    at += std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(-std::log(u) / run.opt.rate));
    timer.expires_at(at);
    error_code ec;
    co_await timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) {
    return -1;
  }
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(std::ceil(p * static_cast<double>(v.size())));
  return v[std::min(v.size() - 1, i == 0 ? 0 : i - 1)];
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "%s needs a value\n%s", argv[i], kUsage);
      return 2;
    }
    std::string_view v = argv[++i];
    auto num = [&](auto& out) {
      auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
      if (ec != std::errc() || p != v.data() + v.size()) {
        std::fprintf(stderr, "%s: not a number: %s\n", argv[i - 1], argv[i]);
        std::exit(2);
      }
    };
    if (a == "--target") {
      auto hp = base::parseHostPort(v);
      if (!hp) {
        std::fprintf(stderr, "--target: expected HOST:PORT\n");
        return 2;
      }
      o.host = hp->host;
      o.port = hp->port;
    } else if (a == "--model") {
      o.model = v;
    } else if (a == "--workload") {
      o.workload = v;
      if (o.workload != "shared-prefix" && o.workload != "random") {
        std::fprintf(stderr, "--workload: shared-prefix or random\n");
        return 2;
      }
    } else if (a == "--groups") {
      num(o.groups);
    } else if (a == "--prompts-per-group") {
      num(o.per_group);
    } else if (a == "--requests") {
      num(o.requests);
    } else if (a == "--system-tokens") {
      num(o.system_tokens);
    } else if (a == "--question-tokens") {
      num(o.question_tokens);
    } else if (a == "--output-tokens") {
      num(o.output_tokens);
    } else if (a == "--concurrency") {
      num(o.concurrency);
    } else if (a == "--rate") {
      num(o.rate);
    } else if (a == "--seed") {
      num(o.seed);
    } else if (a == "--json") {
      o.json = v;
    } else {
      std::fprintf(stderr, "unknown option %s\n%s", argv[i - 1], kUsage);
      return 2;
    }
  }

  Run run;
  run.opt = o;
  run.bodies = makeBodies(o);
  run.results.resize(run.bodies.size());
  asio::io_context ioc(1);
  run.start = Clock::now();
  if (o.rate > 0) {
    asio::co_spawn(ioc, openLoop(run), asio::detached);
  } else {
    for (int i = 0; i < std::max(1, o.concurrency); ++i) {
      asio::co_spawn(ioc, closedLoopWorker(run), asio::detached);
    }
  }
  ioc.run();
  const double wall = std::chrono::duration<double>(Clock::now() - run.start).count();

  std::vector<double> ttft, e2e, itl;
  int ok = 0;
  long tokens = 0;
  std::map<std::string, int> errors;
  for (const auto& r : run.results) {
    if (r.status == 200 && r.error.empty()) {
      ++ok;
      tokens += r.tokens;
      if (r.ttft_s >= 0) {
        ttft.push_back(r.ttft_s);
      }
      e2e.push_back(r.e2e_s);
      itl.insert(itl.end(), r.gaps.begin(), r.gaps.end());
    } else {
      errors[r.error.empty() ? fmt::format("status {}", r.status) : r.error]++;
    }
  }
  const std::string summary = fmt::format(
      "{{\"requests\":{},\"ok\":{},\"wall_s\":{:.3f},\"req_per_s\":{:.2f},\"output_tok_per_s\":{:."
      "1f},"
      "\"ttft_p50_s\":{:.4f},\"ttft_p90_s\":{:.4f},\"ttft_p99_s\":{:.4f},\"itl_p50_s\":{:.5f},"
      "\"itl_p99_s\":{:.5f},\"e2e_p50_s\":{:.4f},\"e2e_p99_s\":{:.4f}}}",
      run.results.size(), ok, wall, ok / wall, static_cast<double>(tokens) / wall,
      percentile(ttft, 0.5), percentile(ttft, 0.9), percentile(ttft, 0.99), percentile(itl, 0.5),
      percentile(itl, 0.99), percentile(e2e, 0.5), percentile(e2e, 0.99));
  std::printf("%s\n", summary.c_str());
  for (const auto& [e, n] : errors) {
    std::fprintf(stderr, "  %d x %s\n", n, e.c_str());
  }
  if (!o.json.empty()) {
    std::ofstream out(o.json);
    out << "{\"summary\":" << summary << ",\"requests\":[";
    for (size_t i = 0; i < run.results.size(); ++i) {
      const auto& r = run.results[i];
      out << (i ? "," : "")
          << fmt::format("{{\"status\":{},\"ttft_s\":{:.5f},\"e2e_s\":{:.5f},\"tokens\":{}}}",
                         r.status, r.ttft_s, r.e2e_s, r.tokens);
    }
    out << "]}\n";
  }
  return ok == static_cast<int>(run.results.size()) ? 0 : 1;
}
