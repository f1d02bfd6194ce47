#include "tracing/exporter.h"

#include <unistd.h>

#include "base/log.h"
#include "opentelemetry/proto/common/v1/common.pb.h"
#include "opentelemetry/proto/resource/v1/resource.pb.h"
#include "tracing/otlp_wire.h"
#include "tracing/request_trace.h"
#include "tracing/span_record.h"

namespace sluice::tracing {

namespace {

namespace otlp = opentelemetry::proto;
namespace f = otlp_field;

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
    scratch_.emplace_back(4096, '\0');  // an arena: its size is room, kept across requests
  }
  // The resource and scope are the same in every request: serialized once, with libprotobuf.
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
  otlp::common::v1::InstrumentationScope scope;
  scope.set_name("sluice");
  scope.set_version(std::string(kVersion));
  scope_ = scope.SerializeAsString();
  if (url_) {
    client_ = std::make_unique<OtlpClient>(*url_);
  }
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

bool Exporter::submit(size_t worker, const RequestTrace& trace,
                      const std::function<void(WireWriter&)>& server_attributes) {
  const std::string_view record = encodeTraceInto(trace, scratch_[worker], server_attributes);
  if (rings_[worker]->tryPush(record)) {
    return true;
  }
  counters_.dropped.fetch_add(trace.spans().size(), std::memory_order_relaxed);
  return false;
}

void Exporter::run() {
  // A worker's queue holds about a thousand requests' spans: drained well before it fills.
  constexpr auto kDrainEvery = std::chrono::milliseconds(10);
  auto last_send = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    wake_.wait_for(lock, kDrainEvery, [this] { return stopping_; });
    lock.unlock();
    drain();
    const auto now = std::chrono::steady_clock::now();
    const bool due = now - last_send >= config_.flush_interval;
    if (due || !full_.empty()) {
      send(due);
      last_send = due ? now : last_send;
    }
    lock.lock();
  }
  lock.unlock();
  drain();  // the spans of the last requests
  send(true);
}

void Exporter::drain() {
  const uint64_t bound = 4ULL * config_.max_batch;
  for (auto& ring : rings_) {
    if ((full_.size() + 1) * config_.max_batch >= bound) {
      return;  // the collector is behind: the queues fill up and drop
    }
    records_.clear();
    ring->drain([&](std::string_view part) { records_.append(part); });
    forEachRecord(records_, [&](std::string_view spans, uint32_t count) {
      current_.spans.append(spans);
      current_.count += count;
      if (current_.count >= config_.max_batch) {
        closeBatch();
      }
    });
  }
}

void Exporter::closeBatch() {
  full_.push_back(std::move(current_));
  current_ = Batch{};
  if (!spare_.empty()) {
    current_.spans = std::move(spare_.back());
    spare_.pop_back();
  }
}

void Exporter::send(bool all) {
  if (all && current_.count > 0) {
    closeBatch();
  }
  for (Batch& b : full_) {
    post(b);
    b.spans.clear();
    spare_.push_back(std::move(b.spans));
  }
  full_.clear();
}

void Exporter::post(const Batch& batch) {
  if (!url_) {
    counters_.dropped.fetch_add(batch.count, std::memory_order_relaxed);
    return;
  }
  // ExportTraceServiceRequest { resource_spans { resource, scope_spans { scope, spans... } } }:
  // the envelope's lengths follow from the spans' size, so the spans go out as they were
  // batched, after a prefix, never copied into a message.
  auto field = [](size_t len) { return 1 + WireWriter::varintSize(len) + len; };
  const size_t scope_spans = field(scope_.size()) + batch.spans.size();
  const size_t resource_spans = field(resource_.size()) + field(scope_spans);
  std::string prefix;
  {
    WireWriter w(prefix);
    w.lengthPrefix(f::kResourceSpans, resource_spans);
    w.bytesField(f::kResource, resource_);
    w.lengthPrefix(f::kScopeSpans, scope_spans);
    w.bytesField(f::kScope, scope_);
  }
  auto status = client_->post({prefix, batch.spans}, config_.export_timeout);
  if (status && *status >= 200 && *status < 300) {
    counters_.exported.fetch_add(batch.count, std::memory_order_relaxed);
    return;
  }
  counters_.failures.fetch_add(1, std::memory_order_relaxed);
  counters_.dropped.fetch_add(batch.count, std::memory_order_relaxed);
  SLUICE_LOG(Warn, "tracing", "export of {} span(s) to {} failed: {}", batch.count,
             config_.endpoint, status ? fmt::format("HTTP {}", *status) : status.error().message);
}

}  // namespace sluice::tracing
