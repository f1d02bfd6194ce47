#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace sluice::metrics {

struct MergedSeries;

// A fixed-bucket histogram written by one thread (its worker) and read by the scraper.
class Histogram {
 public:
  static constexpr size_t kMaxBuckets = 24;
  explicit Histogram(const std::vector<double>& bounds) : bounds_(&bounds) {}
  void observe(double v);

  const std::vector<double>& bounds() const { return *bounds_; }
  uint64_t bucket(size_t i) const { return counts_[i].load(std::memory_order_relaxed); }
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }
  double sum() const { return static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) * 1e-9; }

 private:
  const std::vector<double>* bounds_;
  std::array<std::atomic<uint64_t>, kMaxBuckets> counts_{};  // non-cumulative; last = +Inf
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_ns_{0};  // values are seconds; stored as integer nanoseconds
};

// A point-in-time sum of one or more Histograms, and its Prometheus rendering.
struct HistogramSnapshot {
  const std::vector<double>* bounds = nullptr;
  std::vector<uint64_t> counts;  // non-cumulative, last = +Inf
  uint64_t count = 0;
  double sum = 0;
  void add(const Histogram& h);
  void merge(const HistogramSnapshot& other);  // same bounds
};

// Prometheus text-format helpers shared by the router and the simulator.
std::string escapeLabel(std::string_view v);
void appendHeader(std::string& out, std::string_view name, std::string_view type,
                  std::string_view help);
// `labels` is the inner label text without braces, e.g. model="x" (may be empty).
void appendHistogram(std::string& out, std::string_view name, std::string_view labels,
                     const HistogramSnapshot& h);

enum class UpstreamError : uint8_t {
  ConnectFailed,
  ConnectTimeout,
  Reset,
  ResponseTimeout,
  BadResponse,
  StreamBroken,
  Status5xx,
  kCount
};
std::string_view upstreamErrorName(UpstreamError e);

// The configured objects a request's series belongs to. Every value is bounded by
// configuration: the model is a configured name or one a client sent that the worker admitted
// under its bound (Shard::series); the others name Kubernetes objects.
struct SeriesKey {
  std::string_view model;
  std::string_view gateway;  // "ns/name"; "" = the router file's listener
  std::string_view route;    // "HTTPRoute/ns/name" | "ModelRoute/ns/name" | ""
  std::string_view backend;  // "InferencePool/ns/name", "ModelServer/...", ... | "" (models:)
  bool operator==(const SeriesKey&) const = default;
};

// The metric-name sets a registry renders (configuration `metric_names`).
enum MetricNames : uint32_t {
  kSluiceNames = 1,              // sluice_*
  kInferenceExtensionNames = 2,  // inference_objective_*, inference_pool_*, inference_extension_*
  kKthenaNames = 4,              // kthena_router_*
  kAllNames = 7,
};

// Everything recorded per series (model, gateway, route, backend) on one shard.
struct ModelSeries {
  explicit ModelSeries(const SeriesKey& key = {});
  std::string labels;         // model="..."[,gateway=...][,route=...][,backend=...]
  std::string kthena_labels;  // model,model_route,backend_type,backend_name (Kthena's names)
  std::string model;          // the model label's value
  std::string gateway, route, backend;  // the other parts of its key, as in SeriesKey
  std::array<std::atomic<uint64_t>, 600> by_status{};
  Histogram duration;
  Histogram ttft;
  Histogram itl;
  Histogram schedule;      // seconds spent choosing endpoints
  Histogram prefix_ratio;  // share of the prompt the chosen endpoint was expected to hold
  Histogram queue_wait;    // seconds waited in a flow-control queue (requests that waited)
  std::atomic<uint64_t> input_tokens{0};
  std::atomic<uint64_t> output_tokens{0};
  std::atomic<uint64_t> retries{0};
  std::array<std::atomic<uint64_t>, static_cast<size_t>(UpstreamError::kCount)> upstream_errors{};
  // Requests a rate limit refused, by what it counts: requests, input, output, total tokens.
  std::array<std::atomic<uint64_t>, 4> rate_limited{};

  void countRequest(int status, double seconds);
  void countUpstreamError(UpstreamError e) {
    upstream_errors[static_cast<size_t>(e)].fetch_add(1, std::memory_order_relaxed);
  }
};

// The Gateway API Inference Extension's inference_objective_* series (`sluice epp`), by the
// request's model and the model it was sent upstream as.
struct ObjectiveSeries {
  ObjectiveSeries();
  std::atomic<uint64_t> requests{0};
  std::array<std::atomic<uint64_t>, 600> errors_by_status{};
  std::atomic<int64_t> running{0};
  Histogram duration;
  Histogram input_tokens;
  Histogram output_tokens;
};

// One worker's metrics. Only that worker writes; the scraper reads. The mutex guards the maps'
// structure only: taken when a model or endpoint is seen for the first time and while scraping.
class Shard {
 public:
  // Model names a client chose that one worker turns into label values; past it, "_other".
  static constexpr size_t kMaxClientModels = 100;
  // `client_named`: key.model is the client's string (a pool or Service serves it), admitted
  // as a label value while the worker has seen fewer than kMaxClientModels such names.
  ModelSeries& series(const SeriesKey& key, bool client_named = false);
  ModelSeries& model(std::string_view name) { return series(SeriesKey{name, {}, {}, {}}); }
  // Requests dispatched to an endpoint (first choice of the scheduler).
  std::atomic<uint64_t>& picks(const std::string& address);
  ObjectiveSeries& objective(std::string_view model, std::string_view target);

  std::atomic<int64_t> active_connections{0};
  std::atomic<int64_t> active_requests{0};
  std::atomic<uint64_t> connections_total{0};
  std::atomic<uint64_t> connections_rejected{0};
  std::atomic<uint64_t> upstream_connections_opened{0};
  std::atomic<uint64_t> upstream_connections_reused{0};
  std::atomic<uint64_t> ejections{0};
  std::atomic<uint64_t> mirrors_sent{0};           // HTTPRoute RequestMirror copies sent
  std::atomic<uint64_t> mirrors_dropped{0};        // skipped: too many in flight, or no endpoint
  std::atomic<uint64_t> rejected_unauthorized{0};  // filters: 401
  std::atomic<uint64_t> rejected_forbidden{0};     // filters: 403
  std::atomic<uint64_t> rejected_rate_limited{0};  // filters: 429
  std::atomic<uint64_t> flow_queued{0};            // requests that waited in a flow queue
  std::atomic<uint64_t> flow_shed{0};              // refused under saturation (429)
  std::atomic<uint64_t> flow_expired{0};           // waited past the queue TTL (503)

 private:
  friend class Registry;
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::unique_ptr<ModelSeries>> models_;  // by joined key
  std::unordered_map<std::string, std::unique_ptr<std::atomic<uint64_t>>> picks_;
  std::map<std::pair<std::string, std::string>, std::unique_ptr<ObjectiveSeries>> objectives_;
  std::unordered_map<std::string, bool> client_models_;  // admitted client-chosen names
  // Last lookup, to skip hashing in the common case of one hot series: its key's strings.
  std::string last_model_, last_gateway_, last_route_, last_backend_;
  bool last_client_ = false;
  ModelSeries* last_ = nullptr;
  std::string joined_;  // lookup scratch
};

// Owns the shards and renders them merged in the Prometheus text format.
class Registry {
 public:
  explicit Registry(size_t shards);
  Shard& shard(size_t i) { return *shards_[i]; }
  size_t shardCount() const { return shards_.size(); }

  // Process-wide values set by the control thread.
  std::atomic<uint64_t> config_reloads{0};
  std::atomic<uint64_t> listener_failures{0};  // listeners a reload could not open
  std::atomic<uint64_t> drain_cut{0};          // exchanges cut at the drain deadline
  std::atomic<uint64_t> endpoint_updates{0};
  std::atomic<uint64_t> config_reload_errors{0};
  std::atomic<uint64_t> access_log_dropped{0};
  std::atomic<int64_t> snapshot_version{0};
  // OTLP spans exported, dropped (full queue or failed export) and failed export requests.
  struct TraceCounters {
    std::atomic<uint64_t> exported{0};
    std::atomic<uint64_t> dropped{0};
    std::atomic<uint64_t> failures{0};
  } traces;

  uint32_t names = kAllNames;  // MetricNames to render; set before start

  std::string renderPrometheus() const;
  // sluice_requests_total and the other per-series families, merged over the shards.
  void appendSeries(std::string& out) const;
  // Every series summed over the shards (by joined key), and the picks per endpoint.
  void mergeSeries(std::map<std::string, MergedSeries>& series,
                   std::map<std::string, uint64_t>& picks) const;
  // Requests by series and status class, latency sums, tokens and picks, as JSON, for the
  // admin status page (/debug/traffic); rates are the reader's deltas (traffic.cc).
  std::string trafficJson() const;
  // The process-wide counters (connections, filters, reloads, ...).
  void appendCounters(std::string& out) const;
  int64_t activeRequests() const;
  // The inference_objective_* families merged over the shards (objective_metrics.cc).
  void appendObjectives(std::string& out) const;
  // Appends process-wide series owned elsewhere (the scheduler's index); set before start.
  std::function<void(std::string&)> extra;

 private:
  std::vector<std::unique_ptr<Shard>> shards_;
};

// The label value the router uses for requests that matched no configured model, so client
// input never creates new series.
inline constexpr std::string_view kUnknownModel = "_unknown";
// The label for requests that name no model at all (GET /v1/models, bad JSON, unknown paths).
inline constexpr std::string_view kNoModel = "_none";
// The label for models clients named past Shard::kMaxClientModels.
inline constexpr std::string_view kOtherModel = "_other";

// sluice_build_info, and process_* (CPU seconds, resident and virtual memory, open and maximum
// file descriptors, start time) read from /proc (process_metrics.cc).
void appendBuildInfo(std::string& out);
void appendProcessMetrics(std::string& out);
std::string_view buildVersion();
std::string_view buildCommit();

}  // namespace sluice::metrics
