#include "metrics/access_log.h"

#include <chrono>

#include "base/strings.h"

namespace sluice::metrics {

namespace {

void appendQuoted(std::string& out, std::string_view v) {
  out += '"';
  base::appendJsonEscaped(out, v);
  out += '"';
}

}  // namespace

void formatAccessRecord(const AccessRecord& r, std::string& out) {
  out.clear();
  out += "{\"ts_ms\":";
  base::appendInt(out, r.unix_ms);
  out += ",\"request_id\":";
  appendQuoted(out, r.request_id);
  out += ",\"method\":";
  appendQuoted(out, r.method);
  out += ",\"path\":";
  appendQuoted(out, r.path);
  out += ",\"status\":";
  base::appendInt(out, r.status);
  out += ",\"model\":";
  appendQuoted(out, r.model);
  out += ",\"endpoint\":";
  appendQuoted(out, r.endpoint);
  out += ",\"attempts\":";
  base::appendInt(out, r.attempts);
  out += r.stream ? ",\"stream\":true" : ",\"stream\":false";
  out += ",\"input_tokens\":";
  base::appendInt(out, static_cast<int64_t>(r.input_tokens));
  out += ",\"output_tokens\":";
  base::appendInt(out, static_cast<int64_t>(r.output_tokens));
  out += ",\"ttft_ms\":";
  if (r.ttft_ms >= 0) {
    base::appendFixed3(out, r.ttft_ms);
  } else {
    out += "null";
  }
  out += ",\"duration_ms\":";
  base::appendFixed3(out, r.duration_ms);
  out += ",\"error_type\":";
  if (r.error_type.empty()) {
    out += "null";
  } else {
    appendQuoted(out, r.error_type);
  }
  out += ",\"client\":";
  appendQuoted(out, r.client);
  if (r.queue_ms >= 0) {
    out += ",\"queue_ms\":";
    base::appendFixed3(out, r.queue_ms);
  }
  if (!r.identity.empty()) {
    out += ",\"identity\":";
    appendQuoted(out, r.identity);
  }
  if (!r.limit.empty()) {
    out += ",\"limit\":";
    appendQuoted(out, r.limit);
  }
  if (!r.decision.empty()) {
    out += ",\"decision\":";
    appendQuoted(out, r.decision);
  }
  out += "}\n";
}

AccessLog::AccessLog(const std::string& path, size_t workers, std::atomic<uint64_t>& dropped)
    : dropped_(dropped) {
  if (path == "off") {
    return;
  }
  if (path == "stdout") {
    sink_ = stdout;
  } else if (path == "stderr") {
    sink_ = stderr;
  } else {
    sink_ = std::fopen(path.c_str(), "ae");
    owns_sink_ = sink_ != nullptr;
    if (!sink_) {
      std::fprintf(stderr, "access log: cannot open %s; access log disabled\n", path.c_str());
      return;
    }
  }
  for (size_t i = 0; i < workers; ++i) {
    rings_.push_back(std::make_unique<base::SpscByteRing>(size_t{1} << 20));
    scratch_.emplace_back();
  }
  thread_ = std::thread([this] { run(); });
}

AccessLog::~AccessLog() {
  if (thread_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }
  flush();
  if (owns_sink_) {
    std::fclose(sink_);
  }
}

void AccessLog::write(size_t worker, const AccessRecord& record) {
  if (!sink_ || worker >= rings_.size()) {
    return;
  }
  std::string& line = scratch_[worker];
  formatAccessRecord(record, line);
  if (!rings_[worker]->tryPush(line)) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
  }
}

void AccessLog::flush() {
  if (!sink_) {
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  size_t n = 0;
  for (auto& ring : rings_) {
    n += ring->drain([this](std::string_view s) { std::fwrite(s.data(), 1, s.size(), sink_); });
  }
  if (n) {
    std::fflush(sink_);
  }
}

void AccessLog::run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, std::chrono::milliseconds(50));
    lock.unlock();
    flush();
    lock.lock();
  }
}

}  // namespace sluice::metrics
