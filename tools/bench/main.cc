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
#include <unistd.h>
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
  --workload W            shared-prefix | random | multi-turn | lora | large-prompt
                          (default shared-prefix)
  --groups N              shared-prefix: distinct system prompts (default 16)
  --prompts-per-group N   shared-prefix: requests per system prompt (default 16)
  --requests N            random, lora, large-prompt: number of requests (default 256)
  --conversations N       multi-turn: conversations (default 32)
  --turns N               multi-turn: turns per conversation, each sent after the previous
                          one's answer, with the whole history (default 6)
  --adapters N            lora: adapters named ADAPTER-PREFIX0..N-1 (default 8)
  --adapter-prefix S      lora: adapter name prefix (default lora-)
  --skew X                lora: Zipf exponent of adapter popularity (default 1.0)
  --prompt-kb N           large-prompt: prompt size in KB (default 220)
  --system-tokens N       system prompt length in tokens (~4 chars each; default 2048)
  --question-tokens N     question length (default 64)
  --output-tokens N       max_tokens per request (default 64)
  --concurrency N         closed loop: requests (conversations) in flight (default 32)
  --rate R                open loop: Poisson arrivals per second (overrides --concurrency)
  --header "NAME: VALUE"  extra request header (repeatable)
  --session-header NAME   multi-turn: send NAME: conv-<i> with every turn of conversation i
  --seed N                workload seed (default 1)
  --json PATH             write the per-request results and the summary as JSON
  --progress on|off|auto  progress bar on stderr (default auto: when stderr is a terminal)
The summary is one JSON line on stdout; a table goes to stderr.
)";

struct Options {
  std::string host = "127.0.0.1";
  uint16_t port = 8080;
  std::string model = "m";
  std::string workload = "shared-prefix";
  int groups = 16, per_group = 16, requests = 256;
  int conversations = 32, turns = 6;
  int adapters = 8;
  std::string adapter_prefix = "lora-";
  double skew = 1.0;
  int prompt_kb = 220;
  int system_tokens = 2048, question_tokens = 64, output_tokens = 64;
  int concurrency = 32;
  double rate = 0;
  uint64_t seed = 1;
  std::string json;
  std::string extra_headers;  // "Name: value\r\n" lines
  std::string session_header;
  std::string progress = "auto";
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

// One request of a job; a job's requests run one after another on one connection (the turns
// of a conversation), jobs run concurrently.
struct Job {
  std::vector<size_t> requests;  // indexes into Run::bodies
  std::string session;           // multi-turn: the conversation's session id
};

struct Workload {
  std::vector<std::string> bodies;
  std::vector<Job> jobs;
};

std::string chatBody(const std::string& model, int max_tokens,
                     const std::vector<std::pair<const char*, std::string>>& messages) {
  std::string out = fmt::format(R"({{"model":{},"stream":true,"max_tokens":{},"messages":[)",
                                base::jsonQuote(model), max_tokens);
  for (size_t i = 0; i < messages.size(); ++i) {
    out += fmt::format(R"({}{{"role":"{}","content":{}}})", i ? "," : "", messages[i].first,
                       base::jsonQuote(messages[i].second));
  }
  out += "]}";
  return out;
}

// Draws 0..n-1 with probability proportional to 1 / (i + 1)^skew.
class Zipf {
 public:
  Zipf(int n, double skew) {
    double sum = 0;
    for (int i = 0; i < n; ++i) {
      sum += 1.0 / std::pow(i + 1, skew);
      cdf_.push_back(sum);
    }
    for (auto& c : cdf_) {
      c /= sum;
    }
  }
  int draw(base::Random& r) const {
    const double u = static_cast<double>(r.next() >> 11) * 0x1.0p-53;
    auto it = std::lower_bound(cdf_.begin(), cdf_.end(), u);
    return static_cast<int>(std::min<size_t>(cdf_.size() - 1, it - cdf_.begin()));
  }

 private:
  std::vector<double> cdf_;
};

Workload makeWorkload(const Options& o) {
  base::Xoshiro r(o.seed);
  Workload w;
  auto single = [&](std::string body) {
    w.jobs.push_back({{w.bodies.size()}, {}});
    w.bodies.push_back(std::move(body));
  };
  if (o.workload == "shared-prefix") {
    std::vector<std::string> systems;
    for (int g = 0; g < o.groups; ++g) {
      systems.push_back(fmt::format("group {} ", g) + words(r, o.system_tokens));
    }
    std::vector<std::string> bodies;
    for (int g = 0; g < o.groups; ++g) {
      for (int i = 0; i < o.per_group; ++i) {
        bodies.push_back(chatBody(
            o.model, o.output_tokens,
            {{"system", systems[static_cast<size_t>(g)]}, {"user", words(r, o.question_tokens)}}));
      }
    }
    // Interleave the groups, as arrivals from many users would.
    for (size_t i = bodies.size(); i > 1; --i) {
      std::swap(bodies[i - 1], bodies[r.uniform(i)]);
    }
    for (auto& b : bodies) {
      single(std::move(b));
    }
  } else if (o.workload == "random") {
    for (int i = 0; i < o.requests; ++i) {
      single(
          chatBody(o.model, o.output_tokens,
                   {{"system", words(r, o.system_tokens)}, {"user", words(r, o.question_tokens)}}));
    }
  } else if (o.workload == "lora") {
    Zipf zipf(std::max(1, o.adapters), o.skew);
    for (int i = 0; i < o.requests; ++i) {
      const std::string adapter = fmt::format("{}{}", o.adapter_prefix, zipf.draw(r));
      single(
          chatBody(adapter, o.output_tokens,
                   {{"system", words(r, o.system_tokens)}, {"user", words(r, o.question_tokens)}}));
    }
  } else if (o.workload == "large-prompt") {
    const int tokens = o.prompt_kb * 1024 / 4;
    for (int i = 0; i < o.requests; ++i) {
      // The request number first, so no two prompts share a prefix.
      single(chatBody(o.model, o.output_tokens,
                      {{"user", fmt::format("request {} ", i) + words(r, tokens)}}));
    }
  } else {  // multi-turn: every turn resends the conversation so far
    for (int c = 0; c < o.conversations; ++c) {
      Job job;
      job.session = fmt::format("conv-{}", c);
      std::vector<std::pair<const char*, std::string>> history = {
          {"system", fmt::format("conversation {} ", c) + words(r, o.system_tokens)}};
      for (int t = 0; t < o.turns; ++t) {
        history.push_back({"user", words(r, o.question_tokens)});
        job.requests.push_back(w.bodies.size());
        w.bodies.push_back(chatBody(o.model, o.output_tokens, history));
        // A stand-in for the answer, the same length as the requested output.
        history.push_back({"assistant", words(r, o.output_tokens)});
      }
      w.jobs.push_back(std::move(job));
    }
  }
  return w;
}

struct Run {
  Options opt;
  Workload work;
  std::vector<Result> results;
  size_t next_job = 0;
  size_t jobs_done = 0;
  size_t done = 0;    // requests finished
  size_t failed = 0;  // ...of which not 200 or broken
  Clock::time_point start, end;
  SteadyTimer* progress_timer = nullptr;  // woken when the last job ends
};

awaitable<void> oneRequest(Run& run, TcpStream& stream, bool& connected, size_t index,
                           const std::string& session) {
  Result& res = run.results[index];
  const auto t0 = Clock::now();
  error_code ec;
  if (!connected) {
    stream.expires_after(std::chrono::seconds(10));
    co_await stream.async_connect(tcp::endpoint(asio::ip::make_address(run.opt.host), run.opt.port),
                                  asio::redirect_error(use_awaitable, ec));
    if (ec) {
      res.error = "connect: " + ec.message();
      co_return;
    }
    stream.socket().set_option(tcp::no_delay(true), ec);
    connected = true;
  }
  const std::string& body = run.work.bodies[index];
  std::string head = fmt::format(
      "POST /v1/chat/completions HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n"
      "Content-Length: {}\r\n{}",
      run.opt.host, body.size(), run.opt.extra_headers);
  if (!run.opt.session_header.empty() && !session.empty()) {
    head += fmt::format("{}: {}\r\n", run.opt.session_header, session);
  }
  head += "\r\n";
  std::vector<asio::const_buffer> bufs{asio::buffer(head), asio::buffer(body)};
  stream.expires_after(std::chrono::minutes(10));
  co_await asio::async_write(stream, bufs, asio::redirect_error(use_awaitable, ec));
  beast::flat_buffer buffer;
  bhttp::response_parser<bhttp::buffer_body> parser;
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  if (!ec) {
    co_await bhttp::async_read_header(stream, buffer, parser,
                                      asio::redirect_error(use_awaitable, ec));
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
                                    asio::redirect_error(use_awaitable, ec));
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

awaitable<void> runJob(Run& run, TcpStream& stream, bool& connected, const Job& job) {
  for (size_t index : job.requests) {
    co_await oneRequest(run, stream, connected, index, job.session);
    ++run.done;
    const Result& r = run.results[index];
    if (r.status != 200 || !r.error.empty()) {
      ++run.failed;
    }
  }
  if (++run.jobs_done == run.work.jobs.size()) {
    run.end = Clock::now();
    if (run.progress_timer) {
      run.progress_timer->cancel();
    }
  }
}

awaitable<void> closedLoopWorker(Run& run) {
  TcpStream stream(co_await asio::this_coro::executor);
  bool connected = false;
  while (run.next_job < run.work.jobs.size()) {
    const Job& job = run.work.jobs[run.next_job++];
    co_await runJob(run, stream, connected, job);
  }
}

awaitable<void> openLoopJob(Run& run, size_t j) {
  TcpStream stream(co_await asio::this_coro::executor);
  bool connected = false;
  co_await runJob(run, stream, connected, run.work.jobs[j]);
}

// Redraws one status line on stderr until every job is done.
awaitable<void> progressBar(Run& run) {
  SteadyTimer timer(co_await asio::this_coro::executor);
  run.progress_timer = &timer;
  const size_t total = run.work.bodies.size();
  for (;;) {
    const double elapsed = std::chrono::duration<double>(Clock::now() - run.start).count();
    const size_t width = 30;
    const size_t filled = total ? run.done * width / total : width;
    std::fprintf(stderr, "\r[%s%s] %zu/%zu requests  %.1f req/s  %zu failed  %.1fs ",
                 std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(),
                 run.done, total, elapsed > 0 ? static_cast<double>(run.done) / elapsed : 0.0,
                 run.failed, elapsed);
    if (run.jobs_done == run.work.jobs.size()) {
      std::fputc('\n', stderr);
      run.progress_timer = nullptr;
      co_return;
    }
    timer.expires_after(std::chrono::milliseconds(200));
    error_code ec;
    co_await timer.async_wait(asio::redirect_error(use_awaitable, ec));
  }
}

awaitable<void> openLoop(Run& run) {
  auto ex = co_await asio::this_coro::executor;
  base::Xoshiro r(run.opt.seed * 7919);
  SteadyTimer timer(ex);
  auto at = Clock::now();
  for (size_t i = 0; i < run.work.jobs.size(); ++i) {
    asio::co_spawn(ex, openLoopJob(run, i), asio::detached);
    const double u = (static_cast<double>(r.next() >> 11) + 1) * 0x1.0p-53;
    at += std::chrono::duration_cast<Clock::duration>(
        std::chrono::duration<double>(-std::log(u) / run.opt.rate));
    timer.expires_at(at);
    error_code ec;
    co_await timer.async_wait(asio::redirect_error(use_awaitable, ec));
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
      if (o.workload != "shared-prefix" && o.workload != "random" && o.workload != "multi-turn" &&
          o.workload != "lora" && o.workload != "large-prompt") {
        std::fprintf(stderr,
                     "--workload: shared-prefix, random, multi-turn, lora or large-prompt\n");
        return 2;
      }
    } else if (a == "--groups") {
      num(o.groups);
    } else if (a == "--prompts-per-group") {
      num(o.per_group);
    } else if (a == "--requests") {
      num(o.requests);
    } else if (a == "--conversations") {
      num(o.conversations);
    } else if (a == "--turns") {
      num(o.turns);
    } else if (a == "--adapters") {
      num(o.adapters);
    } else if (a == "--adapter-prefix") {
      o.adapter_prefix = v;
    } else if (a == "--skew") {
      num(o.skew);
    } else if (a == "--prompt-kb") {
      num(o.prompt_kb);
    } else if (a == "--header") {
      if (v.find(':') == std::string_view::npos || v.find_first_of("\r\n") != v.npos) {
        std::fprintf(stderr, "--header: expected \"NAME: VALUE\"\n");
        return 2;
      }
      o.extra_headers += std::string(v) + "\r\n";
    } else if (a == "--session-header") {
      o.session_header = v;
    } else if (a == "--progress") {
      o.progress = v;
      if (o.progress != "on" && o.progress != "off" && o.progress != "auto") {
        std::fprintf(stderr, "--progress: on, off or auto\n");
        return 2;
      }
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
  run.work = makeWorkload(o);
  run.results.resize(run.work.bodies.size());
  asio::io_context ioc(1);
  run.start = Clock::now();
  if (o.rate > 0) {
    asio::co_spawn(ioc, openLoop(run), asio::detached);
  } else {
    for (int i = 0; i < std::max(1, o.concurrency); ++i) {
      asio::co_spawn(ioc, closedLoopWorker(run), asio::detached);
    }
  }
  if (o.progress == "on" || (o.progress == "auto" && isatty(STDERR_FILENO))) {
    asio::co_spawn(ioc, progressBar(run), asio::detached);
  }
  ioc.run();
  if (run.jobs_done != run.work.jobs.size() || run.work.jobs.empty()) {
    run.end = Clock::now();
  }
  const double wall = std::chrono::duration<double>(run.end - run.start).count();

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
  auto ms = [](double s) { return s < 0 ? std::string("-") : fmt::format("{:.1f}", s * 1e3); };
  std::fprintf(stderr, "%s",
               fmt::format("{:<14} {:>8} {:>6} {:>8} {:>10} {:>24} {:>16} {:>18}\n"
                           "{:<14} {:>8} {:>6} {:>8.1f} {:>10.0f} {:>24} {:>16} {:>18}\n",
                           "workload", "requests", "ok", "req/s", "out tok/s",
                           "TTFT p50/p90/p99 ms", "ITL p50/p99 ms", "e2e p50/p99 ms", o.workload,
                           run.results.size(), ok, ok / wall, static_cast<double>(tokens) / wall,
                           ms(percentile(ttft, 0.5)) + " / " + ms(percentile(ttft, 0.9)) + " / " +
                               ms(percentile(ttft, 0.99)),
                           ms(percentile(itl, 0.5)) + " / " + ms(percentile(itl, 0.99)),
                           ms(percentile(e2e, 0.5)) + " / " + ms(percentile(e2e, 0.99)))
                   .c_str());
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
