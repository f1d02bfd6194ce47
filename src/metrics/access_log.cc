#include "metrics/access_log.h"

#include <chrono>
#include <iterator>

#include <fmt/format.h>

#include "base/strings.h"

namespace sluice::metrics {

void formatAccessRecord(const AccessRecord& r, std::string& out) {
  // format_to and in-place escaping: no temporary strings per record.
  out.clear();
  auto it = std::back_inserter(out);
  auto quoted = [&](std::string_view v) {
    out += '"';
    base::appendJsonEscaped(out, v);
    out += '"';
  };
  fmt::format_to(it, "{{\"ts_ms\":{},\"request_id\":", r.unix_ms);
  quoted(r.request_id);
  out += ",\"method\":";
  quoted(r.method);
  out += ",\"path\":";
  quoted(r.path);
  fmt::format_to(it, ",\"status\":{},\"model\":", r.status);
  quoted(r.model);
  out += ",\"endpoint\":";
  quoted(r.endpoint);
  fmt::format_to(it, ",\"attempts\":{},\"stream\":{},\"input_tokens\":{},\"output_tokens\":{}",
                 r.attempts, r.stream, r.input_tokens, r.output_tokens);
  if (r.ttft_ms >= 0) {
    fmt::format_to(it, ",\"ttft_ms\":{:.3f}", r.ttft_ms);
  } else {
    out += ",\"ttft_ms\":null";
  }
  fmt::format_to(it, ",\"duration_ms\":{:.3f},\"error_type\":", r.duration_ms);
  if (r.error_type.empty()) {
    out += "null";
  } else {
    quoted(r.error_type);
  }
  out += ",\"client\":";
  quoted(r.client);
  if (r.queue_ms >= 0) {
    fmt::format_to(std::back_inserter(out), ",\"queue_ms\":{:.3f}", r.queue_ms);
  }
  if (!r.identity.empty()) {
    out += ",\"identity\":";
    quoted(r.identity);
  }
  if (!r.limit.empty()) {
    out += ",\"limit\":";
    quoted(r.limit);
  }
  if (!r.decision.empty()) {
    out += ",\"decision\":";
    quoted(r.decision);
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
