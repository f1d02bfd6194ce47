// The Inference Extension's per-objective families for `sluice epp`, by the names its EPP
// exports (inference_objective_*), merged over the workers' shards.
#include <fmt/format.h>

#include "metrics/metrics.h"

namespace sluice::metrics {

namespace {

const std::vector<double>& objectiveDurationBounds() {
  static const std::vector<double> b = {0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8,
                                        1,     1.25,  1.5,  2,   3,   4,   5,   6,
                                        8,     10,    15,   20,  30,  60,  120};
  return b;
}

const std::vector<double>& tokenBounds() {
  static const std::vector<double> b = {1,    8,    16,   32,   64,    128,   256,   512,
                                        1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072};
  return b;
}

struct MergedObjective {
  uint64_t requests = 0;
  std::map<int, uint64_t> errors;
  int64_t running = 0;
  HistogramSnapshot duration, input_tokens, output_tokens;
};

}  // namespace

ObjectiveSeries::ObjectiveSeries()
    : duration(objectiveDurationBounds()),
      input_tokens(tokenBounds()),
      output_tokens(tokenBounds()) {}

ObjectiveSeries& Shard::objective(std::string_view model, std::string_view target) {
  // Model names come from clients: past the bound, new pairs share one series.
  constexpr size_t kMaxObjectiveSeries = 1000;
  auto key = std::make_pair(std::string(model), std::string(target));
  auto it = objectives_.find(key);  // only this worker inserts
  if (it == objectives_.end() && objectives_.size() >= kMaxObjectiveSeries) {
    key = {std::string(kUnknownModel), std::string(kUnknownModel)};
    it = objectives_.find(key);
  }
  if (it == objectives_.end()) {
    std::lock_guard<std::mutex> lock(mu_);
    it = objectives_.emplace(std::move(key), std::make_unique<ObjectiveSeries>()).first;
  }
  return *it->second;
}

void Registry::appendObjectives(std::string& out) const {
  std::map<std::pair<std::string, std::string>, MergedObjective> merged;
  for (const auto& shard : shards_) {
    std::lock_guard<std::mutex> lock(shard->mu_);
    for (const auto& [key, s] : shard->objectives_) {
      MergedObjective& m = merged[key];
      m.requests += s->requests.load(std::memory_order_relaxed);
      m.running += s->running.load(std::memory_order_relaxed);
      for (int code = 400; code < 600; ++code) {
        if (uint64_t n = s->errors_by_status[static_cast<size_t>(code)].load()) {
          m.errors[code] += n;
        }
      }
      m.duration.add(s->duration);
      m.input_tokens.add(s->input_tokens);
      m.output_tokens.add(s->output_tokens);
    }
  }
  if (merged.empty()) {
    return;
  }
  auto labels = [](const std::pair<std::string, std::string>& k) {
    return fmt::format("model_name=\"{}\",target_model_name=\"{}\"", escapeLabel(k.first),
                       escapeLabel(k.second));
  };
  appendHeader(out, "inference_objective_request_total", "counter",
               "Requests by model name and the target model they were sent as.");
  for (const auto& [k, m] : merged) {
    out += fmt::format("inference_objective_request_total{{{}}} {}\n", labels(k), m.requests);
  }
  appendHeader(out, "inference_objective_request_error_total", "counter",
               "Requests that ended in an error, by HTTP status.");
  for (const auto& [k, m] : merged) {
    for (const auto& [code, n] : m.errors) {
      out += fmt::format("inference_objective_request_error_total{{{},error_code=\"{}\"}} {}\n",
                         labels(k), code, n);
    }
  }
  appendHeader(out, "inference_objective_running_requests", "gauge",
               "Requests picked for and not yet completed.");
  std::map<std::string, int64_t> running;
  for (const auto& [k, m] : merged) {
    running[k.first] += m.running;
  }
  for (const auto& [model, n] : running) {
    out += fmt::format("inference_objective_running_requests{{model_name=\"{}\"}} {}\n",
                       escapeLabel(model), n);
  }
  struct Family {
    std::string_view name, help;
    HistogramSnapshot MergedObjective::*h;
  };
  const Family families[] = {
      {"inference_objective_request_duration_seconds",
       "Request duration from the request headers to the end of the response.",
       &MergedObjective::duration},
      {"inference_objective_input_tokens", "Input tokens per request (from the usage).",
       &MergedObjective::input_tokens},
      {"inference_objective_output_tokens", "Output tokens per request (from the usage).",
       &MergedObjective::output_tokens},
  };
  for (const auto& f : families) {
    appendHeader(out, f.name, "histogram", f.help);
    for (const auto& [k, m] : merged) {
      appendHistogram(out, f.name, labels(k), m.*(f.h));
    }
  }
  // Extension-wide: the time the scheduler took per request, over every model.
  HistogramSnapshot scheduling;
  for (const auto& shard : shards_) {
    std::lock_guard<std::mutex> lock(shard->mu_);
    for (const auto& [_, series] : shard->models_) {
      scheduling.add(series->schedule);
    }
  }
  if (scheduling.bounds != nullptr) {
    appendHeader(out, "inference_extension_scheduler_e2e_duration_seconds", "histogram",
                 "Time the scheduler took to order a request's endpoints.");
    appendHistogram(out, "inference_extension_scheduler_e2e_duration_seconds", "", scheduling);
  }
}

}  // namespace sluice::metrics
