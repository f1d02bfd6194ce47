#include "metrics/metrics.h"

#include <algorithm>
#include <cmath>
#include <map>

#include <fmt/core.h>

namespace sluice::metrics {
namespace {

const std::vector<double>& durationBounds() {
  static const std::vector<double> b = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                        2.5,   5,    10,    30,   60,  120,  300};
  return b;
}
const std::vector<double>& ttftBounds() {
  static const std::vector<double> b = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                        0.5,   1,     2.5,  5,     10,   30,  60};
  return b;
}
const std::vector<double>& itlBounds() {
  static const std::vector<double> b = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.04,
                                        0.08,   0.16,  0.32,   0.64,  1.28, 2.5};
  return b;
}

}  // namespace

std::string escapeLabel(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

namespace {

std::string fmtDouble(double v) {
  if (std::isinf(v)) {
    return v > 0 ? "+Inf" : "-Inf";
  }
  return fmt::format("{:.9g}", v);
}

}  // namespace

void appendHeader(std::string& out, std::string_view name, std::string_view type,
                  std::string_view help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

void HistogramSnapshot::add(const Histogram& h) {
  if (!bounds) {
    bounds = &h.bounds();
    counts.assign(bounds->size() + 1, 0);
  }
  for (size_t i = 0; i <= bounds->size(); ++i) {
    counts[i] += h.bucket(i);
  }
  count += h.count();
  sum += h.sum();
}

void appendHistogram(std::string& out, std::string_view name, std::string_view labels,
                     const HistogramSnapshot& h) {
  if (!h.bounds) {
    return;
  }
  const std::string_view sep = labels.empty() ? "" : ",";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < h.bounds->size(); ++i) {
    cumulative += h.counts[i];
    out += fmt::format("{}_bucket{{{}{}le=\"{}\"}} {}\n", name, labels, sep,
                       fmtDouble((*h.bounds)[i]), cumulative);
  }
  cumulative += h.counts[h.bounds->size()];
  out += fmt::format("{}_bucket{{{}{}le=\"+Inf\"}} {}\n", name, labels, sep, cumulative);
  out += fmt::format("{}_sum{{{}}} {}\n", name, labels, fmtDouble(h.sum));
  out += fmt::format("{}_count{{{}}} {}\n", name, labels, h.count);
}

void Histogram::observe(double v) {
  const auto& b = *bounds_;
  size_t i = std::lower_bound(b.begin(), b.end(), v) - b.begin();
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  double ns = v * 1e9;
  if (ns > 0 && ns < 1.8e19) {
    sum_ns_.fetch_add(static_cast<uint64_t>(ns), std::memory_order_relaxed);
  }
}

std::string_view upstreamErrorName(UpstreamError e) {
  switch (e) {
    case UpstreamError::ConnectFailed:
      return "connect_failed";
    case UpstreamError::ConnectTimeout:
      return "connect_timeout";
    case UpstreamError::Reset:
      return "reset";
    case UpstreamError::ResponseTimeout:
      return "response_timeout";
    case UpstreamError::BadResponse:
      return "bad_response";
    case UpstreamError::StreamBroken:
      return "stream_broken";
    case UpstreamError::Status5xx:
      return "status_5xx";
    case UpstreamError::kCount:
      break;
  }
  return "unknown";
}

const std::vector<double>& scheduleBounds() {
  static const std::vector<double> b = {1e-6, 2.5e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2.5e-4, 1e-3};
  return b;
}
const std::vector<double>& ratioBounds() {
  static const std::vector<double> b = {0, 0.1, 0.25, 0.5, 0.75, 0.9, 1};
  return b;
}

ModelSeries::ModelSeries()
    : duration(durationBounds()),
      ttft(ttftBounds()),
      itl(itlBounds()),
      schedule(scheduleBounds()),
      prefix_ratio(ratioBounds()),
      queue_wait(durationBounds()) {}

std::atomic<uint64_t>& Shard::picks(const std::string& address) {
  auto it = picks_.find(address);  // only this worker inserts
  if (it == picks_.end()) {
    std::lock_guard<std::mutex> lock(mu_);
    it = picks_.emplace(address, std::make_unique<std::atomic<uint64_t>>(0)).first;
  }
  return *it->second;
}

void ModelSeries::countRequest(int status, double seconds) {
  if (status >= 100 && status < 600) {
    by_status[static_cast<size_t>(status)].fetch_add(1, std::memory_order_relaxed);
  }
  duration.observe(seconds);
}

ModelSeries& Shard::model(std::string_view name) {
  if (last_ != nullptr && name == last_name_) {
    return *last_;
  }
  std::string key(name);
  auto it = models_.find(key);  // only this worker inserts, so reading without the lock is safe
  if (it == models_.end()) {
    std::lock_guard<std::mutex> lock(mu_);
    it = models_.emplace(key, std::make_unique<ModelSeries>()).first;
  }
  last_name_ = std::move(key);
  last_ = it->second.get();
  return *last_;
}

Registry::Registry(size_t shards) {
  for (size_t i = 0; i < shards; ++i) {
    shards_.push_back(std::make_unique<Shard>());
  }
}

std::string Registry::renderPrometheus() const {
  struct Merged {
    std::map<int, uint64_t> by_status;
    HistogramSnapshot duration, ttft, itl, schedule, prefix_ratio, queue_wait;
    uint64_t input_tokens = 0, output_tokens = 0, retries = 0;
    std::array<uint64_t, static_cast<size_t>(UpstreamError::kCount)> errors{};
  };
  std::map<std::string, Merged> models;
  std::map<std::string, uint64_t> picks;
  int64_t active_connections = 0, active_requests = 0;
  uint64_t connections_total = 0, connections_rejected = 0, up_opened = 0, up_reused = 0,
           ejections = 0, mirrors_sent = 0, mirrors_dropped = 0, rej_401 = 0, rej_403 = 0,
           rej_429 = 0, flow_queued = 0, flow_shed = 0, flow_expired = 0;
  for (const auto& shard : shards_) {
    active_connections += shard->active_connections.load(std::memory_order_relaxed);
    active_requests += shard->active_requests.load(std::memory_order_relaxed);
    connections_total += shard->connections_total.load(std::memory_order_relaxed);
    connections_rejected += shard->connections_rejected.load(std::memory_order_relaxed);
    up_opened += shard->upstream_connections_opened.load(std::memory_order_relaxed);
    up_reused += shard->upstream_connections_reused.load(std::memory_order_relaxed);
    ejections += shard->ejections.load(std::memory_order_relaxed);
    mirrors_sent += shard->mirrors_sent.load(std::memory_order_relaxed);
    mirrors_dropped += shard->mirrors_dropped.load(std::memory_order_relaxed);
    rej_401 += shard->rejected_unauthorized.load(std::memory_order_relaxed);
    rej_403 += shard->rejected_forbidden.load(std::memory_order_relaxed);
    rej_429 += shard->rejected_rate_limited.load(std::memory_order_relaxed);
    flow_queued += shard->flow_queued.load(std::memory_order_relaxed);
    flow_shed += shard->flow_shed.load(std::memory_order_relaxed);
    flow_expired += shard->flow_expired.load(std::memory_order_relaxed);
    std::lock_guard<std::mutex> lock(shard->mu_);
    for (const auto& [address, n] : shard->picks_) {
      picks[address] += n->load(std::memory_order_relaxed);
    }
    for (const auto& [name, series] : shard->models_) {
      Merged& m = models[name];
      for (int s = 100; s < 600; ++s) {
        uint64_t v = series->by_status[static_cast<size_t>(s)].load(std::memory_order_relaxed);
        if (v) {
          m.by_status[s] += v;
        }
      }
      m.duration.add(series->duration);
      m.ttft.add(series->ttft);
      m.itl.add(series->itl);
      m.schedule.add(series->schedule);
      m.prefix_ratio.add(series->prefix_ratio);
      m.queue_wait.add(series->queue_wait);
      m.input_tokens += series->input_tokens.load(std::memory_order_relaxed);
      m.output_tokens += series->output_tokens.load(std::memory_order_relaxed);
      m.retries += series->retries.load(std::memory_order_relaxed);
      for (size_t e = 0; e < m.errors.size(); ++e) {
        m.errors[e] += series->upstream_errors[e].load(std::memory_order_relaxed);
      }
    }
  }

  std::string out;
  out.reserve(4096 + models.size() * 4096);
  appendHeader(out, "sluice_requests_total", "counter",
               "Requests completed, by model and HTTP status.");
  for (const auto& [name, m] : models) {
    for (const auto& [status, n] : m.by_status) {
      out += fmt::format("sluice_requests_total{{model=\"{}\",code=\"{}\"}} {}\n",
                         escapeLabel(name), status, n);
    }
  }
  appendHeader(out, "sluice_request_duration_seconds", "histogram",
               "Time from the end of the request headers to the last response byte.");
  for (const auto& [name, m] : models) {
    appendHistogram(out, "sluice_request_duration_seconds",
                    fmt::format("model=\"{}\"", escapeLabel(name)), m.duration);
  }
  appendHeader(
      out, "sluice_time_to_first_token_seconds", "histogram",
      "Time from the end of the request headers to the first streamed event, as the router "
      "sees it.");
  for (const auto& [name, m] : models) {
    appendHistogram(out, "sluice_time_to_first_token_seconds",
                    fmt::format("model=\"{}\"", escapeLabel(name)), m.ttft);
  }
  appendHeader(out, "sluice_flow_control_wait_seconds", "histogram",
               "Time requests waited in a flow-control queue (only those that waited).");
  for (const auto& [name, m] : models) {
    appendHistogram(out, "sluice_flow_control_wait_seconds",
                    fmt::format("model=\"{}\"", escapeLabel(name)), m.queue_wait);
  }
  appendHeader(out, "sluice_inter_token_latency_seconds", "histogram",
               "Gap between two consecutive streamed events.");
  for (const auto& [name, m] : models) {
    appendHistogram(out, "sluice_inter_token_latency_seconds",
                    fmt::format("model=\"{}\"", escapeLabel(name)), m.itl);
  }
  appendHeader(out, "sluice_scheduler_duration_seconds", "histogram",
               "Time spent choosing the endpoints for a request.");
  for (const auto& [name, m] : models) {
    appendHistogram(out, "sluice_scheduler_duration_seconds",
                    fmt::format("model=\"{}\"", escapeLabel(name)), m.schedule);
  }
  appendHeader(out, "sluice_prefix_match_ratio", "histogram",
               "Share of the prompt's blocks the chosen endpoint was expected to hold (0 = miss).");
  for (const auto& [name, m] : models) {
    appendHistogram(out, "sluice_prefix_match_ratio",
                    fmt::format("model=\"{}\"", escapeLabel(name)), m.prefix_ratio);
  }
  appendHeader(out, "sluice_endpoint_picks_total", "counter",
               "Requests dispatched to each endpoint as the scheduler's first choice.");
  for (const auto& [address, n] : picks) {
    out +=
        fmt::format("sluice_endpoint_picks_total{{endpoint=\"{}\"}} {}\n", escapeLabel(address), n);
  }
  appendHeader(out, "sluice_tokens_total", "counter",
               "Tokens reported by upstream usage, by type.");
  for (const auto& [name, m] : models) {
    out += fmt::format("sluice_tokens_total{{model=\"{}\",type=\"input\"}} {}\n", escapeLabel(name),
                       m.input_tokens);
    out += fmt::format("sluice_tokens_total{{model=\"{}\",type=\"output\"}} {}\n",
                       escapeLabel(name), m.output_tokens);
  }
  appendHeader(out, "sluice_upstream_errors_total", "counter",
               "Failed upstream attempts, by model and kind.");
  for (const auto& [name, m] : models) {
    for (size_t e = 0; e < m.errors.size(); ++e) {
      if (m.errors[e]) {
        out += fmt::format("sluice_upstream_errors_total{{model=\"{}\",kind=\"{}\"}} {}\n",
                           escapeLabel(name), upstreamErrorName(static_cast<UpstreamError>(e)),
                           m.errors[e]);
      }
    }
  }
  appendHeader(out, "sluice_upstream_retries_total", "counter",
               "Attempts made on another endpoint after a failed one.");
  for (const auto& [name, m] : models) {
    out += fmt::format("sluice_upstream_retries_total{{model=\"{}\"}} {}\n", escapeLabel(name),
                       m.retries);
  }
  appendHeader(out, "sluice_active_connections", "gauge", "Open client connections.");
  out += fmt::format("sluice_active_connections {}\n", active_connections);
  appendHeader(out, "sluice_active_requests", "gauge", "Requests being processed.");
  out += fmt::format("sluice_active_requests {}\n", active_requests);
  appendHeader(out, "sluice_connections_total", "counter", "Client connections accepted.");
  out += fmt::format("sluice_connections_total {}\n", connections_total);
  appendHeader(out, "sluice_connections_rejected_total", "counter",
               "Client connections refused because limits.max_connections was reached.");
  out += fmt::format("sluice_connections_rejected_total {}\n", connections_rejected);
  appendHeader(out, "sluice_upstream_connections_opened_total", "counter",
               "New TCP connections to endpoints.");
  out += fmt::format("sluice_upstream_connections_opened_total {}\n", up_opened);
  appendHeader(out, "sluice_upstream_connections_reused_total", "counter",
               "Requests sent on a pooled keep-alive connection.");
  out += fmt::format("sluice_upstream_connections_reused_total {}\n", up_reused);
  appendHeader(out, "sluice_endpoint_ejections_total", "counter",
               "Endpoints ejected by outlier detection after consecutive failures.");
  out += fmt::format("sluice_endpoint_ejections_total {}\n", ejections);
  appendHeader(out, "sluice_mirror_requests_total", "counter",
               "Copies of requests sent by HTTPRoute RequestMirror filters, by outcome.");
  out += fmt::format("sluice_mirror_requests_total{{outcome=\"sent\"}} {}\n", mirrors_sent);
  out += fmt::format("sluice_mirror_requests_total{{outcome=\"dropped\"}} {}\n", mirrors_dropped);
  appendHeader(out, "sluice_filter_rejections_total", "counter",
               "Requests refused by the filters: authentication, model access, rate limits.");
  out += fmt::format("sluice_filter_rejections_total{{reason=\"unauthorized\"}} {}\n", rej_401);
  out += fmt::format("sluice_filter_rejections_total{{reason=\"forbidden\"}} {}\n", rej_403);
  out += fmt::format("sluice_filter_rejections_total{{reason=\"rate_limited\"}} {}\n", rej_429);
  appendHeader(out, "sluice_flow_control_total", "counter",
               "Flow control under saturation: requests queued, shed (429), expired in the queue "
               "(503).");
  out += fmt::format("sluice_flow_control_total{{outcome=\"queued\"}} {}\n", flow_queued);
  out += fmt::format("sluice_flow_control_total{{outcome=\"shed\"}} {}\n", flow_shed);
  out += fmt::format("sluice_flow_control_total{{outcome=\"expired\"}} {}\n", flow_expired);
  appendHeader(out, "sluice_config_reloads_total", "counter", "Configuration snapshots published.");
  out += fmt::format("sluice_config_reloads_total {}\n", config_reloads.load());
  appendHeader(out, "sluice_listener_failures_total", "counter",
               "Listeners a configuration change asked for that could not be opened.");
  out += fmt::format("sluice_listener_failures_total {}\n", listener_failures.load());
  appendHeader(out, "sluice_drain_cut_total", "counter",
               "Requests and streams still open at the drain deadline, ended with an error.");
  out += fmt::format("sluice_drain_cut_total {}\n", drain_cut.load());
  appendHeader(out, "sluice_endpoint_updates_total", "counter",
               "Endpoint-only snapshots published (Pod readiness, EndpointSlices), without a "
               "full rebuild.");
  out += fmt::format("sluice_endpoint_updates_total {}\n", endpoint_updates.load());
  appendHeader(out, "sluice_config_reload_errors_total", "counter",
               "Configuration updates rejected.");
  out += fmt::format("sluice_config_reload_errors_total {}\n", config_reload_errors.load());
  appendHeader(out, "sluice_config_snapshot_version", "gauge", "Version of the active snapshot.");
  out += fmt::format("sluice_config_snapshot_version {}\n", snapshot_version.load());
  appendHeader(out, "sluice_access_log_dropped_total", "counter",
               "Access-log records dropped because the writer fell behind.");
  out += fmt::format("sluice_access_log_dropped_total {}\n", access_log_dropped.load());
  appendObjectives(out);
  if (extra) {
    extra(out);
  }
  return out;
}

}  // namespace sluice::metrics
