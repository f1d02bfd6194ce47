// The per-series families: one series per (model, gateway, route, backend), written by its
// worker and merged over the shards on scrape, under Sluice's names and Kthena's router names.
#include <map>

#include <fmt/format.h>

#include "metrics/merged_series.h"
#include "metrics/metrics.h"

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
const std::vector<double>& scheduleBounds() {
  static const std::vector<double> b = {1e-6, 2.5e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2.5e-4, 1e-3};
  return b;
}
const std::vector<double>& ratioBounds() {
  static const std::vector<double> b = {0, 0.1, 0.25, 0.5, 0.75, 0.9, 1};
  return b;
}

void appendLabel(std::string& out, std::string_view name, std::string_view value) {
  if (!out.empty()) {
    out += ',';
  }
  out += name;
  out += "=\"";
  out += escapeLabel(value);
  out += '"';
}

// Kthena's backend_type and backend_name for a backend label ("Kind/ns/name" or "").
std::pair<std::string_view, std::string_view> kthenaBackend(const SeriesKey& k) {
  static constexpr std::pair<std::string_view, std::string_view> kKinds[] = {
      {"InferencePool/", "inference_pool"},
      {"ModelServer/", "model_server"},
      {"ExternalModelProvider/", "external_provider"},
      {"Service/", "service"},
  };
  for (const auto& [prefix, type] : kKinds) {
    if (k.backend.substr(0, prefix.size()) == prefix) {
      return {type, k.backend.substr(prefix.size())};
    }
  }
  if (k.model == kNoModel || k.model == kUnknownModel) {
    return {"none", ""};
  }
  return {"model_server", k.model};  // a models: entry of the router file
}

void appendSluiceSeries(std::string& out, const std::map<std::string, MergedSeries>& series) {
  appendHeader(out, "sluice_requests_total", "counter",
               "Requests completed, by model, gateway, route, backend and HTTP status.");
  for (const auto& [_, m] : series) {
    for (const auto& [status, n] : m.by_status) {
      out +=
          fmt::format("sluice_requests_total{{{},code=\"{}\"}} {}\n", m.first->labels, status, n);
    }
  }
  struct Family {
    std::string_view name, help;
    HistogramSnapshot MergedSeries::*h;
  };
  static constexpr Family kHistograms[] = {
      {"sluice_request_duration_seconds",
       "Time from the end of the request headers to the last response byte.",
       &MergedSeries::duration},
      {"sluice_time_to_first_token_seconds",
       "Time from the end of the request headers to the first streamed event, as the router "
       "sees it.",
       &MergedSeries::ttft},
      {"sluice_flow_control_wait_seconds",
       "Time requests waited in a flow-control queue (only those that waited).",
       &MergedSeries::queue_wait},
      {"sluice_inter_token_latency_seconds", "Gap between two consecutive streamed events.",
       &MergedSeries::itl},
      {"sluice_scheduler_duration_seconds", "Time spent choosing the endpoints for a request.",
       &MergedSeries::schedule},
      {"sluice_prefix_match_ratio",
       "Share of the prompt's blocks the chosen endpoint was expected to hold (0 = miss).",
       &MergedSeries::prefix_ratio},
  };
  for (const auto& f : kHistograms) {
    appendHeader(out, f.name, "histogram", f.help);
    for (const auto& [_, m] : series) {
      appendHistogram(out, f.name, m.first->labels, m.*(f.h));
    }
  }
  appendHeader(out, "sluice_tokens_total", "counter",
               "Tokens reported by upstream usage, by type.");
  for (const auto& [_, m] : series) {
    out += fmt::format("sluice_tokens_total{{{},type=\"input\"}} {}\n", m.first->labels,
                       m.input_tokens);
    out += fmt::format("sluice_tokens_total{{{},type=\"output\"}} {}\n", m.first->labels,
                       m.output_tokens);
  }
  appendHeader(out, "sluice_upstream_errors_total", "counter",
               "Failed upstream attempts, by model and kind.");
  for (const auto& [_, m] : series) {
    for (size_t e = 0; e < m.errors.size(); ++e) {
      if (m.errors[e]) {
        out += fmt::format("sluice_upstream_errors_total{{{},kind=\"{}\"}} {}\n", m.first->labels,
                           upstreamErrorName(static_cast<UpstreamError>(e)), m.errors[e]);
      }
    }
  }
  appendHeader(out, "sluice_upstream_retries_total", "counter",
               "Attempts made on another endpoint after a failed one.");
  for (const auto& [_, m] : series) {
    out += fmt::format("sluice_upstream_retries_total{{{}}} {}\n", m.first->labels, m.retries);
  }
}

// The same numbers under the Kthena router's names and labels.
void appendKthenaSeries(std::string& out, const std::map<std::string, MergedSeries>& series,
                        int64_t active) {
  // Kthena labels several series of ours alike (it has no gateway label): merge them again.
  std::map<std::string, MergedSeries> by_label;
  for (const auto& [_, m] : series) {
    MergedSeries& k = by_label[m.first->kthena_labels];
    k.first = k.first ? k.first : m.first;
    for (const auto& [code, n] : m.by_status) {
      k.by_status[code] += n;
    }
    k.input_tokens += m.input_tokens;
    k.output_tokens += m.output_tokens;
    k.duration.merge(m.duration);
    for (size_t i = 0; i < k.rate_limited.size(); ++i) {
      k.rate_limited[i] += m.rate_limited[i];
    }
  }
  appendHeader(out, "kthena_router_requests_total", "counter",
               "Requests completed (Kthena router's name), by model, route, backend and status.");
  for (const auto& [labels, m] : by_label) {
    for (const auto& [status, n] : m.by_status) {
      out += fmt::format("kthena_router_requests_total{{{},status_code=\"{}\"}} {}\n", labels,
                         status, n);
    }
  }
  appendHeader(out, "kthena_router_request_duration_seconds", "histogram",
               "Request duration (Kthena router's name).");
  for (const auto& [labels, m] : by_label) {
    appendHistogram(out, "kthena_router_request_duration_seconds", labels, m.duration);
  }
  appendHeader(out, "kthena_router_tokens_total", "counter",
               "Tokens reported by upstream usage (Kthena router's name), by token_type.");
  for (const auto& [labels, m] : by_label) {
    out += fmt::format("kthena_router_tokens_total{{{},token_type=\"input\"}} {}\n", labels,
                       m.input_tokens);
    out += fmt::format("kthena_router_tokens_total{{{},token_type=\"output\"}} {}\n", labels,
                       m.output_tokens);
  }
  // Kthena's limit_type names; "total_tokens" is a limit Kthena does not have.
  static constexpr std::string_view kLimitTypes[] = {"requests", "input_tokens", "output_tokens",
                                                     "total_tokens"};
  appendHeader(out, "kthena_router_rate_limit_exceeded_total", "counter",
               "Requests refused by a rate limit (Kthena router's name), by limit_type.");
  for (const auto& [labels, m] : by_label) {
    for (size_t i = 0; i < m.rate_limited.size(); ++i) {
      if (m.rate_limited[i] > 0) {
        out += fmt::format("kthena_router_rate_limit_exceeded_total{{{},limit_type=\"{}\"}} {}\n",
                           labels, kLimitTypes[i], m.rate_limited[i]);
      }
    }
  }
  appendHeader(out, "kthena_router_active_requests", "gauge",
               "Requests being processed (Kthena router's name).");
  out += fmt::format("kthena_router_active_requests {}\n", active);
}

}  // namespace

ModelSeries::ModelSeries(const SeriesKey& key)
    : model(key.model),
      gateway(key.gateway),
      route(key.route),
      backend(key.backend),
      duration(durationBounds()),
      ttft(ttftBounds()),
      itl(itlBounds()),
      schedule(scheduleBounds()),
      prefix_ratio(ratioBounds()),
      queue_wait(durationBounds()) {
  appendLabel(labels, "model", key.model);
  if (!key.gateway.empty()) {
    appendLabel(labels, "gateway", key.gateway);
  }
  if (!key.route.empty()) {
    appendLabel(labels, "route", key.route);
  }
  if (!key.backend.empty()) {
    appendLabel(labels, "backend", key.backend);
  }
  constexpr std::string_view kModelRoute = "ModelRoute/";
  const auto [type, name] = kthenaBackend(key);
  appendLabel(kthena_labels, "model", key.model);
  appendLabel(kthena_labels, "model_route",
              key.route.substr(0, kModelRoute.size()) == kModelRoute
                  ? key.route.substr(kModelRoute.size())
                  : std::string_view());
  appendLabel(kthena_labels, "backend_type", type);
  appendLabel(kthena_labels, "backend_name", name);
}

ModelSeries& Shard::series(const SeriesKey& key, bool client_named) {
  if (last_ != nullptr && last_client_ == client_named && key.model == last_model_ &&
      key.gateway == last_gateway_ && key.route == last_route_ && key.backend == last_backend_) {
    return *last_;
  }
  SeriesKey k = key;
  if (client_named) {
    // Only this worker touches client_models_.
    joined_.assign(key.model);
    if (client_models_.find(joined_) == client_models_.end()) {
      if (client_models_.size() < kMaxClientModels) {
        client_models_.emplace(joined_, true);
      } else {
        k.model = kOtherModel;
      }
    }
  }
  joined_.clear();
  for (std::string_view part : {k.model, k.gateway, k.route, k.backend}) {
    joined_.append(part);
    joined_ += '\x1f';
  }
  auto it = models_.find(joined_);  // only this worker inserts, so reading without the lock is safe
  if (it == models_.end()) {
    std::lock_guard<std::mutex> lock(mu_);
    it = models_.emplace(joined_, std::make_unique<ModelSeries>(k)).first;
  }
  last_model_.assign(key.model);
  last_gateway_.assign(key.gateway);
  last_route_.assign(key.route);
  last_backend_.assign(key.backend);
  last_client_ = client_named;
  last_ = it->second.get();
  return *last_;
}

void Registry::mergeSeries(std::map<std::string, MergedSeries>& series,
                           std::map<std::string, uint64_t>& picks) const {
  for (const auto& shard : shards_) {
    std::lock_guard<std::mutex> lock(shard->mu_);
    for (const auto& [address, n] : shard->picks_) {
      picks[address] += n->load(std::memory_order_relaxed);
    }
    for (const auto& [key, s] : shard->models_) {
      series[key].add(*s);
    }
  }
}

void Registry::appendSeries(std::string& out) const {
  std::map<std::string, MergedSeries> series;
  std::map<std::string, uint64_t> picks;
  mergeSeries(series, picks);
  if (names & kSluiceNames) {
    appendSluiceSeries(out, series);
    appendHeader(out, "sluice_endpoint_picks_total", "counter",
                 "Requests dispatched to each endpoint as the scheduler's first choice.");
    for (const auto& [address, n] : picks) {
      out += fmt::format("sluice_endpoint_picks_total{{endpoint=\"{}\"}} {}\n",
                         escapeLabel(address), n);
    }
  }
  if (names & kKthenaNames) {
    appendKthenaSeries(out, series, activeRequests());
  }
}

}  // namespace sluice::metrics
