#include "backends/metrics_fetcher.h"

#include <algorithm>
#include <array>
#include <iterator>
#include <time.h>

#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <fmt/format.h>

#include "base/log.h"
#include "base/strings.h"

namespace sluice::backends {

namespace bhttp = boost::beast::http;

MetricsFetcher::MetricsFetcher(FetcherConfig config, const base::TimeSource& time,
                               std::function<void(MetricsViewPtr)> publish)
    : config_(config), time_(time), publish_(std::move(publish)) {
  latest_ = std::make_shared<MetricsView>();
}

MetricsFetcher::~MetricsFetcher() {
  stop();
  // Connections and suspended scrapes go with the io_context, while targets_ still exists.
  for (auto& [_, t] : targets_) {
    t->conn.reset();
  }
}

void MetricsFetcher::setTargets(std::vector<FetchTarget> targets) {
  asio::post(ioc_, [this, targets = std::move(targets)]() mutable {
    std::unordered_map<std::string, std::shared_ptr<Target>> next;
    for (auto& spec : targets) {
      const std::string address = spec.endpoint.address;
      auto it = targets_.find(address);
      std::shared_ptr<Target> t;
      if (it != targets_.end()) {
        t = it->second;
        t->spec = std::move(spec);
      } else {
        t = std::make_shared<Target>();
        t->spec = std::move(spec);
      }
      next[address] = std::move(t);
    }
    for (auto& [address, t] : targets_) {
      if (next.count(address) == 0) {
        t->removed = true;  // a scrape in flight finishes and drops it
      }
    }
    targets_ = std::move(next);
    publishNow();
  });
}

void MetricsFetcher::start() {
  asio::co_spawn(ioc_, tickLoop(), asio::detached);
  thread_ = std::thread([this] {
    auto guard = asio::make_work_guard(ioc_);
    ioc_.run();
  });
}

void MetricsFetcher::stop() {
  stopping_ = true;
  if (thread_.joinable()) {
    ioc_.stop();
    thread_.join();
  }
}

MetricsViewPtr MetricsFetcher::latest() const {
  std::lock_guard<std::mutex> lock(latest_mu_);
  return latest_;
}

void MetricsFetcher::publishNow() {
  if (!first_round_done_.load(std::memory_order_relaxed) && started_ticks_ > 0) {
    bool all = true;
    for (const auto& [_, t] : targets_) {
      all = all && t->attempted;
    }
    first_round_done_.store(all, std::memory_order_relaxed);
  }
  auto view = std::make_shared<MetricsView>();
  view->published = time_.monotonicNow();
  view->endpoints.reserve(targets_.size());
  for (const auto& [address, t] : targets_) {
    const auto& m = view->endpoints.emplace(address, t->tracker.metrics()).first->second;
    view->lora_adapters.insert(m.lora_adapters.begin(), m.lora_adapters.end());
    view->lora_adapters.insert(m.running_loras.begin(), m.running_loras.end());
    view->lora_adapters.insert(m.waiting_loras.begin(), m.waiting_loras.end());
  }
  MetricsViewPtr ptr = std::move(view);
  {
    std::lock_guard<std::mutex> lock(latest_mu_);
    latest_ = ptr;
  }
  if (publish_) {
    publish_(std::move(ptr));
  }
}

awaitable<void> MetricsFetcher::tickLoop() {
  SteadyTimer timer(ioc_);
  auto next = std::chrono::steady_clock::now();
  while (!stopping_) {
    for (auto& [_, t] : targets_) {
      if (t->in_flight) {
        skipped_busy_.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      if (in_flight_ >= config_.max_concurrency) {
        skipped_busy_.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      t->in_flight = true;
      ++in_flight_;
      asio::co_spawn(ioc_, scrape(t), asio::detached);
    }
    ++started_ticks_;
    publishNow();
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    cpu_seconds_.store(static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9,
                       std::memory_order_relaxed);
    next += config_.interval;
    const auto now = std::chrono::steady_clock::now();
    if (next < now) {
      next = now;  // fell behind: do not try to catch up with a burst
    }
    timer.expires_at(next);
    error_code ec;
    co_await timer.async_wait(asio::redirect_error(use_awaitable, ec));
  }
}

awaitable<std::string> MetricsFetcher::getH2(Target& t, std::string_view path, error_code& ec,
                                             int& status) {
  if (!t.h2 || t.h2->dead()) {
    t.h2 = co_await H2Connection::connect(t.spec.endpoint, config_.timeout, ec);
    if (ec) {
      t.h2.reset();
      co_return std::string();
    }
  }
  static const std::vector<H2Connection::Header> kHeaders = {{"accept", "text/plain"}};
  auto stream = t.h2->submit("GET", t.spec.endpoint.address, path, kHeaders, {}, 0);
  if (!stream) {
    t.h2.reset();
    ec = asio::error::connection_reset;
    co_return std::string();
  }
  co_await stream->waitHead(config_.timeout, ec);
  std::string body;
  std::array<char, 16384> buf;
  stream->expire(config_.timeout);
  char* const data = buf.data();  // arguments hoisted out of co_await (g++ 12)
  const size_t cap = buf.size();
  while (!ec && !stream->done()) {
    const size_t n = co_await stream->read(data, cap, ec);
    body.append(data, n);
    if (body.size() > 16 * 1024 * 1024) {
      ec = asio::error::message_size;
    }
  }
  stream->cancel();
  if (ec) {
    if (t.h2->dead()) {
      t.h2.reset();
    }
    co_return std::string();
  }
  status = static_cast<int>(stream->head().result_int());
  co_return body;
}

template <class Conn>
awaitable<std::string> MetricsFetcher::getOver(Conn& conn, const Target& t, std::string_view path,
                                               error_code& ec, int& status, bool& keep) {
  keep = false;
  std::string request = fmt::format("GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/plain\r\n\r\n",
                                    path, t.spec.endpoint.address);
  beast::get_lowest_layer(conn.stream).expires_after(config_.timeout);
  co_await asio::async_write(conn.stream, asio::buffer(request),
                             asio::redirect_error(use_awaitable, ec));
  if (ec) {
    co_return std::string();
  }
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(16 * 1024 * 1024);
  co_await bhttp::async_read(conn.stream, conn.buffer, parser,
                             asio::redirect_error(use_awaitable, ec));
  if (ec) {
    co_return std::string();
  }
  status = static_cast<int>(parser.get().result_int());
  keep = parser.get().keep_alive();
  if (keep) {
    beast::get_lowest_layer(conn.stream).expires_never();
  }
  co_return std::move(parser.get().body());
}

awaitable<std::string> MetricsFetcher::get(Target& t, std::string_view path, error_code& ec,
                                           int& status) {
  if (t.spec.h2c) {
    std::string body = co_await getH2(t, path, ec, status);
    co_return body;
  }
  // A kept-alive connection, TLS or not, opened when there is none.
  if (t.spec.tls && !t.tls_conn) {
    if (!tls_) {
      tls_ = std::make_unique<ProviderPool>(0, config_.timeout);
      tls_->configure(0, config_.timeout, config_.ca_file);
    }
    std::string why;
    t.tls_conn = co_await tls_->connectEndpoint(t.spec.endpoint, config_.verify_tls,
                                                config_.timeout, ec, why);
  } else if (!t.spec.tls && !t.conn) {
    t.conn = co_await UpstreamPool::connect(t.spec.endpoint, config_.timeout, ec);
  }
  if (ec) {
    co_return std::string();
  }
  bool keep = false;
  std::string body;
  if (t.spec.tls) {
    body = co_await getOver(*t.tls_conn, t, path, ec, status, keep);
  } else {
    body = co_await getOver(*t.conn, t, path, ec, status, keep);
  }
  if (ec || !keep) {
    t.conn.reset();
    t.tls_conn.reset();
  }
  co_return body;
}

// Once when an endpoint goes unhealthy, once when it comes back: not at every scrape.
void MetricsFetcher::logHealthChange(Target& t) {
  const auto& m = t.tracker.metrics();
  if (!m.healthy && !t.reported_down) {
    t.reported_down = true;
    SLUICE_LOG(Warn, "fetcher", "endpoint {} is unhealthy after {} failed scrape(s): {}",
               t.spec.endpoint.address, m.consecutive_failures, m.last_error);
  } else if (m.healthy && t.reported_down) {
    t.reported_down = false;
    SLUICE_LOG(Info, "fetcher", "endpoint {} is healthy again", t.spec.endpoint.address);
  }
}

awaitable<void> MetricsFetcher::scrape(std::shared_ptr<Target> target) {
  Target& t = *target;
  error_code ec;
  int status = 0;
  std::string body = co_await get(t, "/metrics", ec, status);
  if (!ec && status == 200) {
    auto signals = extractSignals(body, config_.mapping(t.spec.engine));
    if (signals) {
      t.tracker.onScrape(*signals, time_.monotonicNow());
    } else {
      t.tracker.onFailure("unparsable /metrics: " + signals.error().message,
                          config_.unhealthy_after);
      failures_.fetch_add(1, std::memory_order_relaxed);
    }
  } else {
    t.tracker.onFailure(ec ? (ec == beast::error::timeout ? std::string("timed out") : ec.message())
                           : fmt::format("/metrics answered {}", status),
                        config_.unhealthy_after);
    failures_.fetch_add(1, std::memory_order_relaxed);
  }
  scrapes_.fetch_add(1, std::memory_order_relaxed);
  t.attempted = true;
  logHealthChange(t);
  // Adapters change rarely: /v1/models is read on a slower clock.
  const auto now = time_.monotonicNow();
  if (!t.removed && t.tracker.metrics().healthy && now - t.last_models >= config_.models_interval) {
    t.last_models = now;
    int models_status = 0;
    error_code models_ec;
    std::string models = co_await get(t, "/v1/models", models_ec, models_status);
    if (!models_ec && models_status == 200) {
      std::vector<std::string> loras;
      auto ids = parseModelIds(models, &loras);
      t.tracker.setAdapters(std::move(ids), std::move(loras));
    }
  }
  t.in_flight = false;
  --in_flight_;
  if (t.removed) {
    t.conn.reset();
  }
}

std::string metricsViewJson(const MetricsView& view, base::MonoTime now) {
  std::vector<const std::pair<const std::string, EndpointMetrics>*> sorted;
  for (const auto& kv : view.endpoints) {
    sorted.push_back(&kv);
  }
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->first < b->first; });
  auto list = [](const std::vector<std::string>& v) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) {
      s += (i ? "," : "") + base::jsonQuote(v[i]);
    }
    return s + "]";
  };
  auto num = [](double v) { return v < 0 ? std::string("null") : fmt::format("{:.6g}", v); };
  std::string out = "{\"endpoints\":[";
  for (size_t i = 0; i < sorted.size(); ++i) {
    const auto& [address, m] = *sorted[i];
    const double age = m.scraped ? std::chrono::duration<double>(now - m.updated).count() : -1;
    fmt::format_to(
        std::back_inserter(out),
        "{}{{\"address\":{},\"healthy\":{},\"scraped\":{},\"age_seconds\":{},\"waiting\":{},"
        "\"running\":{},\"kv_usage\":{},\"ttft_seconds\":{},\"itl_seconds\":{},"
        "\"block_size\":{},\"num_blocks\":{},\"max_loras\":{},\"running_loras\":{},"
        "\"waiting_loras\":{},\"adapters\":{},\"consecutive_failures\":{},\"last_error\":{}}}",
        i ? "," : "", base::jsonQuote(address), m.healthy, m.scraped, num(age), num(m.waiting),
        num(m.running), num(m.kv_usage), num(m.ttft_s), num(m.itl_s), m.block_size, m.num_blocks,
        m.max_loras, list(m.running_loras), list(m.waiting_loras), list(m.adapters),
        m.consecutive_failures, base::jsonQuote(m.last_error));
  }
  out += "]}";
  return out;
}

}  // namespace sluice::backends
