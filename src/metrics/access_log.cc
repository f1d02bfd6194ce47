#include "metrics/access_log.h"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>

#include <fmt/format.h>

#include "base/strings.h"

namespace sluice::metrics {

namespace {

void appendQuoted(std::string& out, std::string_view v) {
  out += '"';
  base::appendJsonEscaped(out, v);
  out += '"';
}

// An optional string: left out when empty.
bool appendOptional(std::string& out, std::string_view v) {
  if (v.empty()) {
    return false;
  }
  appendQuoted(out, v);
  return true;
}

void appendTimestamp(std::string& out, int64_t unix_ms) {
  const time_t secs = static_cast<time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  const size_t n = std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  out.append(buf, n);
  out += '.';
  const int ms = static_cast<int>(unix_ms % 1000);
  out += static_cast<char>('0' + ms / 100);
  out += static_cast<char>('0' + ms / 10 % 10);
  out += static_cast<char>('0' + ms % 10);
  out += 'Z';
}

// Appends the field's value in JSON form; false when it has none (the field is left out).
bool appendValue(AccessField f, const AccessRecord& r, std::string& out) {
  using F = AccessField;
  switch (f) {
    case F::ts_ms:
      base::appendInt(out, r.unix_ms);
      return true;
    case F::timestamp:
      out += '"';
      appendTimestamp(out, r.unix_ms);
      out += '"';
      return true;
    case F::request_id:
      appendQuoted(out, r.request_id);
      return true;
    case F::method:
      appendQuoted(out, r.method);
      return true;
    case F::path:
      appendQuoted(out, r.path);
      return true;
    case F::status:
      base::appendInt(out, r.status);
      return true;
    case F::model:
      appendQuoted(out, r.model);
      return true;
    case F::endpoint:
      appendQuoted(out, r.endpoint);
      return true;
    case F::attempts:
      base::appendInt(out, r.attempts);
      return true;
    case F::stream:
      out += r.stream ? "true" : "false";
      return true;
    case F::input_tokens:
      base::appendInt(out, static_cast<int64_t>(r.input_tokens));
      return true;
    case F::output_tokens:
      base::appendInt(out, static_cast<int64_t>(r.output_tokens));
      return true;
    case F::ttft_ms:
      if (r.ttft_ms >= 0) {
        base::appendFixed3(out, r.ttft_ms);
      } else {
        out += "null";
      }
      return true;
    case F::duration_ms:
      base::appendFixed3(out, r.duration_ms);
      return true;
    case F::error_type:
      if (!appendOptional(out, r.error_type)) {
        out += "null";
      }
      return true;
    case F::client:
      appendQuoted(out, r.client);
      return true;
    case F::route_rule:
      if (r.route_rule < 0) {
        return false;
      }
      base::appendInt(out, r.route_rule);
      return true;
    case F::queue_ms:
      if (r.queue_ms < 0) {
        return false;
      }
      base::appendFixed3(out, r.queue_ms);
      return true;
    default:
      break;
  }
  const std::string_view optional[] = {
      r.protocol,       r.trace_id,       r.span_id,   r.gateway,           r.listener,
      r.http_route,     r.model_route,    {},          r.backend_kind,      r.backend,
      r.inference_pool, r.upstream_model, r.objective, r.upstream_protocol, {},
      r.identity,       r.limit,          r.decision,
  };
  const size_t i = static_cast<size_t>(f) - static_cast<size_t>(F::protocol);
  return i < std::size(optional) && appendOptional(out, optional[i]);
}

// A text value needs no quotes when it is a plain token.
bool plainToken(std::string_view quoted) {
  if (quoted.size() < 3 || quoted.front() != '"') {
    return quoted.front() != '"';
  }
  for (char c : quoted.substr(1, quoted.size() - 2)) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == ':' || c == '/' || c == '@' || c == '+' ||
                    c == '-';
    if (!ok) {
      return false;
    }
  }
  return true;
}

void formatText(const AccessRecord& r, const AccessFormat& format, std::string& out) {
  appendTimestamp(out, r.unix_ms);
  out += " \"";
  base::appendJsonEscaped(out, r.method);
  out += ' ';
  base::appendJsonEscaped(out, r.path);
  out += ' ';
  base::appendJsonEscaped(out, r.protocol.empty() ? std::string_view("HTTP/1.1") : r.protocol);
  out += "\" ";
  base::appendInt(out, r.status);
  using F = AccessField;
  for (AccessField f : format.fields) {
    if (f == F::timestamp || f == F::ts_ms || f == F::method || f == F::path || f == F::protocol ||
        f == F::status) {
      continue;  // in the line's head
    }
    const size_t mark = out.size();
    out += ' ';
    out += kAccessFieldNames[static_cast<size_t>(f)];
    out += '=';
    const size_t value = out.size();
    if (!appendValue(f, r, out) || std::string_view(out).substr(value) == "null") {
      out.resize(mark);
    } else if (out[value] == '"' && plainToken(std::string_view(out).substr(value))) {
      out.erase(value, 1);
      out.pop_back();
    }
  }
  out += '\n';
}

}  // namespace

AccessFormat AccessFormat::defaults() {
  AccessFormat f;
  for (size_t i = 0; i < static_cast<size_t>(AccessField::kCount); ++i) {
    if (static_cast<AccessField>(i) != AccessField::timestamp) {
      f.fields.push_back(static_cast<AccessField>(i));
    }
  }
  return f;
}

void formatAccessRecord(const AccessRecord& r, const AccessFormat& format, std::string& out) {
  out.clear();
  if (format.text) {
    formatText(r, format, out);
    return;
  }
  char sep = '{';
  for (AccessField f : format.fields) {
    const size_t mark = out.size();
    out += sep;
    out += '"';
    out += kAccessFieldNames[static_cast<size_t>(f)];
    out += "\":";
    if (appendValue(f, r, out)) {
      sep = ',';
    } else {
      out.resize(mark);
    }
  }
  if (sep == '{') {
    out += '{';
  }
  out += "}\n";
}

AccessLog::AccessLog(const std::string& path, size_t workers, std::atomic<uint64_t>& dropped,
                     AccessFormat format)
    : format_(std::move(format)), dropped_(dropped) {
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
      open_error_ = fmt::format("cannot open {}: {}", path, std::strerror(errno));
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
  formatAccessRecord(record, format_, line);
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
