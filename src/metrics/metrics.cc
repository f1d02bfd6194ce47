#include "metrics/metrics.h"

#include <algorithm>
#include <cmath>
#include <map>

#include <fmt/core.h>

namespace sluice::metrics {

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

void HistogramSnapshot::merge(const HistogramSnapshot& other) {
  if (!other.bounds) {
    return;
  }
  if (!bounds) {
    *this = other;
    return;
  }
  for (size_t i = 0; i < counts.size() && i < other.counts.size(); ++i) {
    counts[i] += other.counts[i];
  }
  count += other.count;
  sum += other.sum;
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
  // No labels: the bare name (empty braces are valid, but not what exporters write).
  const std::string set = labels.empty() ? std::string() : fmt::format("{{{}}}", labels);
  out += fmt::format("{}_sum{} {}\n", name, set, fmtDouble(h.sum));
  out += fmt::format("{}_count{} {}\n", name, set, h.count);
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

Registry::Registry(size_t shards) {
  for (size_t i = 0; i < shards; ++i) {
    shards_.push_back(std::make_unique<Shard>());
  }
}

std::string Registry::renderPrometheus() const {
  std::string out;
  out.reserve(16384);
  appendSeries(out);
  if (names & kSluiceNames) {
    appendCounters(out);
  }
  if (names & kInferenceExtensionNames) {
    appendObjectives(out);
  }
  if (extra) {
    extra(out);
  }
  appendBuildInfo(out);
  appendProcessMetrics(out);
  return out;
}

void Registry::appendCounters(std::string& out) const {
  struct Counter {
    std::string_view name, type, help, labels;
    std::atomic<uint64_t> Shard::*field;
  };
  static constexpr Counter kShardCounters[] = {
      {"sluice_connections_total", "counter", "Client connections accepted.", "",
       &Shard::connections_total},
      {"sluice_connections_rejected_total", "counter",
       "Client connections refused because limits.max_connections was reached.", "",
       &Shard::connections_rejected},
      {"sluice_upstream_connections_opened_total", "counter", "New TCP connections to endpoints.",
       "", &Shard::upstream_connections_opened},
      {"sluice_upstream_connections_reused_total", "counter",
       "Requests sent on a pooled keep-alive connection.", "", &Shard::upstream_connections_reused},
      {"sluice_endpoint_ejections_total", "counter",
       "Endpoints ejected by outlier detection after consecutive failures.", "", &Shard::ejections},
      {"sluice_mirror_requests_total", "counter",
       "Copies of requests sent by HTTPRoute RequestMirror filters, by outcome.",
       "outcome=\"sent\"", &Shard::mirrors_sent},
      {"sluice_mirror_requests_total", "", "", "outcome=\"dropped\"", &Shard::mirrors_dropped},
      {"sluice_filter_rejections_total", "counter",
       "Requests refused by the filters: authentication, model access, rate limits.",
       "reason=\"unauthorized\"", &Shard::rejected_unauthorized},
      {"sluice_filter_rejections_total", "", "", "reason=\"forbidden\"",
       &Shard::rejected_forbidden},
      {"sluice_filter_rejections_total", "", "", "reason=\"rate_limited\"",
       &Shard::rejected_rate_limited},
      {"sluice_flow_control_total", "counter",
       "Flow control under saturation: requests queued, shed (429), expired in the queue (503).",
       "outcome=\"queued\"", &Shard::flow_queued},
      {"sluice_flow_control_total", "", "", "outcome=\"shed\"", &Shard::flow_shed},
      {"sluice_flow_control_total", "", "", "outcome=\"expired\"", &Shard::flow_expired},
  };
  int64_t active_connections = 0;
  for (const auto& shard : shards_) {
    active_connections += shard->active_connections.load(std::memory_order_relaxed);
  }
  appendHeader(out, "sluice_active_connections", "gauge", "Open client connections.");
  out += fmt::format("sluice_active_connections {}\n", active_connections);
  appendHeader(out, "sluice_active_requests", "gauge", "Requests being processed.");
  out += fmt::format("sluice_active_requests {}\n", activeRequests());
  for (const auto& c : kShardCounters) {
    uint64_t n = 0;
    for (const auto& shard : shards_) {
      n += ((*shard).*(c.field)).load(std::memory_order_relaxed);
    }
    if (!c.type.empty()) {
      appendHeader(out, c.name, c.type, c.help);
    }
    out += c.labels.empty() ? fmt::format("{} {}\n", c.name, n)
                            : fmt::format("{}{{{}}} {}\n", c.name, c.labels, n);
  }
  struct Global {
    std::string_view name, type, help;
    const std::atomic<uint64_t>& value;
  };
  const Global globals[] = {
      {"sluice_config_reloads_total", "counter", "Configuration snapshots published.",
       config_reloads},
      {"sluice_listener_failures_total", "counter",
       "Listeners a configuration change asked for that could not be opened.", listener_failures},
      {"sluice_drain_cut_total", "counter",
       "Requests and streams still open at the drain deadline, ended with an error.", drain_cut},
      {"sluice_endpoint_updates_total", "counter",
       "Endpoint-only snapshots published (Pod readiness, EndpointSlices), without a full "
       "rebuild.",
       endpoint_updates},
      {"sluice_config_reload_errors_total", "counter", "Configuration updates rejected.",
       config_reload_errors},
      {"sluice_access_log_dropped_total", "counter",
       "Access-log records dropped because the writer fell behind.", access_log_dropped},
      {"sluice_trace_spans_exported_total", "counter", "Spans the OTLP collector accepted.",
       traces.exported},
      {"sluice_trace_spans_dropped_total", "counter",
       "Spans dropped: the exporter's queue was full, or their export failed.", traces.dropped},
      {"sluice_trace_export_failures_total", "counter",
       "OTLP export requests that failed (unreachable collector or a non-2xx answer).",
       traces.failures},
  };
  for (const auto& g : globals) {
    appendHeader(out, g.name, g.type, g.help);
    out += fmt::format("{} {}\n", g.name, g.value.load(std::memory_order_relaxed));
  }
  appendHeader(out, "sluice_config_snapshot_version", "gauge", "Version of the active snapshot.");
  out += fmt::format("sluice_config_snapshot_version {}\n", snapshot_version.load());
}

int64_t Registry::activeRequests() const {
  int64_t n = 0;
  for (const auto& shard : shards_) {
    n += shard->active_requests.load(std::memory_order_relaxed);
  }
  return n;
}

}  // namespace sluice::metrics
