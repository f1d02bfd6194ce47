#include "tracing/exporter.h"

#include <unistd.h>

#include "base/log.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.pb.h"
#include "tracing/request_trace.h"
#include "tracing/span_record.h"

namespace sluice::tracing {

namespace {

namespace otlp = opentelemetry::proto;

constexpr std::string_view kVersion = "0.1.0";

size_t powerOfTwoAtLeast(uint64_t n) {
  size_t p = 4096;
  while (p < n) {
    p <<= 1;
  }
  return p;
}

void addAttribute(otlp::resource::v1::Resource& r, const std::string& key,
                  const std::string& value) {
  auto* kv = r.add_attributes();
  kv->set_key(key);
  kv->mutable_value()->set_string_value(value);
}

}  // namespace

Exporter::Exporter(const config::RouterConfig::Tracing& config, size_t workers, Counters& counters)
    : config_(config), counters_(counters), url_(parseOtlpUrl(config.endpoint)) {
  for (size_t i = 0; i < workers; ++i) {
    rings_.push_back(std::make_unique<base::SpscByteRing>(powerOfTwoAtLeast(config.queue_bytes)));
    scratch_.emplace_back().reserve(4096);
  }
  otlp::resource::v1::Resource resource;
  addAttribute(resource, "service.name", config.service_name);
  addAttribute(resource, "service.version", std::string(kVersion));
  char host[256] = {};
  if (::gethostname(host, sizeof(host) - 1) == 0) {
    addAttribute(resource, "host.name", host);
  }
  addAttribute(resource, "service.instance.id",
               std::string(host) + "/" + std::to_string(::getpid()));
  resource_ = resource.SerializeAsString();
}

Exporter::~Exporter() {
  stop();
}

void Exporter::start() {
  if (!url_) {
    SLUICE_LOG(Error, "tracing", "tracing.endpoint {}: {}; spans are dropped", config_.endpoint,
               url_.error().message);
  }
  thread_ = std::thread([this] { run(); });
}

void Exporter::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      return;
    }
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) {
    thread_.join();
  }
}

bool Exporter::submit(size_t worker, const RequestTrace& trace) {
  std::string& record = scratch_[worker];
  record.clear();
  encodeTrace(trace, record);
  if (rings_[worker]->tryPush(record)) {
    return true;
  }
  counters_.dropped.fetch_add(trace.spans().size(), std::memory_order_relaxed);
  return false;
}

void Exporter::run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    wake_.wait_for(lock, config_.flush_interval, [this] { return stopping_; });
    lock.unlock();
    flush();
    lock.lock();
  }
}

void Exporter::flush() {
  // Whole records only: each ring is drained into one buffer (its two spans joined).
  std::string records;
  for (auto& ring : rings_) {
    ring->drain([&](std::string_view part) { records.append(part); });
  }
  if (!records.empty()) {
    exportBatch(records);
  }
}

void Exporter::exportBatch(std::string_view records) {
  otlp::collector::trace::v1::ExportTraceServiceRequest request;
  auto* rs = request.add_resource_spans();
  rs->mutable_resource()->ParseFromString(resource_);
  auto* scope = rs->add_scope_spans();
  scope->mutable_scope()->set_name("sluice");
  scope->mutable_scope()->set_version(std::string(kVersion));
  const size_t spans = decodeTraces(records, *scope);
  if (spans == 0) {
    return;
  }
  if (!url_) {
    counters_.dropped.fetch_add(spans, std::memory_order_relaxed);
    return;
  }
  // Batches of at most max_batch spans, one request each.
  otlp::collector::trace::v1::ExportTraceServiceRequest part;
  auto* prs = part.add_resource_spans();
  *prs->mutable_resource() = rs->resource();
  auto* pscope = prs->add_scope_spans();
  *pscope->mutable_scope() = scope->scope();
  for (int from = 0; from < scope->spans_size(); from += static_cast<int>(config_.max_batch)) {
    pscope->clear_spans();
    const int to = std::min(scope->spans_size(), from + static_cast<int>(config_.max_batch));
    for (int i = from; i < to; ++i) {
      *pscope->add_spans() = scope->spans(i);
    }
    const auto n = static_cast<uint64_t>(to - from);
    auto status = postProtobuf(*url_, part.SerializeAsString(), config_.export_timeout);
    if (status && *status >= 200 && *status < 300) {
      counters_.exported.fetch_add(n, std::memory_order_relaxed);
      continue;
    }
    counters_.failures.fetch_add(1, std::memory_order_relaxed);
    counters_.dropped.fetch_add(n, std::memory_order_relaxed);
    SLUICE_LOG(Warn, "tracing", "export of {} span(s) to {} failed: {}", n, config_.endpoint,
               status ? fmt::format("HTTP {}", *status) : status.error().message);
  }
}

}  // namespace sluice::tracing
