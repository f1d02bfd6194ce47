#include "backends/prometheus.h"

#include <charconv>
#include <cmath>

#include <fmt/core.h>

namespace sluice::backends {
namespace {

bool nameStart(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
}
bool nameChar(char c) {
  return nameStart(c) || (c >= '0' && c <= '9');
}
bool labelStart(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool labelChar(char c) {
  return labelStart(c) || (c >= '0' && c <= '9');
}
bool blank(char c) {
  return c == ' ' || c == '\t';
}

void skipBlanks(std::string_view s, size_t& i) {
  while (i < s.size() && blank(s[i])) {
    ++i;
  }
}

// A metric value: a float, NaN, +Inf/-Inf/Inf (any case), with an optional sign.
bool parseValue(std::string_view t, double& out) {
  if (t.empty()) {
    return false;
  }
  bool negative = false;
  std::string_view body = t;
  if (body.front() == '+' || body.front() == '-') {
    negative = body.front() == '-';
    body.remove_prefix(1);
  }
  auto lower = [](std::string_view s, std::string_view want) {
    if (s.size() != want.size()) {
      return false;
    }
    for (size_t i = 0; i < s.size(); ++i) {
      char c = s[i];
      if (c >= 'A' && c <= 'Z') {
        c = static_cast<char>(c + 32);
      }
      if (c != want[i]) {
        return false;
      }
    }
    return true;
  };
  if (lower(body, "inf") || lower(body, "infinity")) {
    out = negative ? -HUGE_VAL : HUGE_VAL;
    return true;
  }
  if (lower(body, "nan")) {
    out = std::nan("");
    return true;
  }
  if (body.empty() || !((body.front() >= '0' && body.front() <= '9') || body.front() == '.')) {
    return false;
  }
  auto [ptr, ec] = std::from_chars(body.data(), body.data() + body.size(), out);
  if (ec != std::errc() || ptr != body.data() + body.size()) {
    return false;
  }
  if (negative) {
    out = -out;
  }
  return true;
}

// Validates the label block starting after '{'; sets `end` to the index of the closing '}'.
bool scanLabels(std::string_view line, size_t start, size_t& end) {
  size_t i = start;
  while (true) {
    skipBlanks(line, i);
    if (i >= line.size()) {
      return false;
    }
    if (line[i] == '}') {
      end = i;
      return true;
    }
    if (!labelStart(line[i])) {
      return false;
    }
    while (i < line.size() && labelChar(line[i])) {
      ++i;
    }
    skipBlanks(line, i);
    if (i >= line.size() || line[i] != '=') {
      return false;
    }
    ++i;
    skipBlanks(line, i);
    if (i >= line.size() || line[i] != '"') {
      return false;
    }
    ++i;
    while (i < line.size() && line[i] != '"') {
      if (line[i] == '\\') {
        if (i + 1 >= line.size()) {
          return false;
        }
        char e = line[i + 1];
        if (e != '\\' && e != '"' && e != 'n') {
          return false;
        }
        ++i;
      }
      ++i;
    }
    if (i >= line.size()) {
      return false;  // unterminated value
    }
    ++i;  // closing quote
    skipBlanks(line, i);
    if (i < line.size() && line[i] == ',') {
      ++i;
      continue;
    }
    if (i < line.size() && line[i] == '}') {
      end = i;
      return true;
    }
    return false;
  }
}

std::string_view nextToken(std::string_view line, size_t& i) {
  skipBlanks(line, i);
  size_t start = i;
  while (i < line.size() && !blank(line[i])) {
    ++i;
  }
  return line.substr(start, i - start);
}

bool parseSample(std::string_view line, PromSample& s) {
  size_t i = 0;
  if (!nameStart(line[0])) {
    return false;
  }
  while (i < line.size() && nameChar(line[i])) {
    ++i;
  }
  s.name = line.substr(0, i);
  s.labels = {};
  s.timestamp_ms.reset();
  skipBlanks(line, i);
  if (i < line.size() && line[i] == '{') {
    size_t end = 0;
    if (!scanLabels(line, i + 1, end)) {
      return false;
    }
    s.labels = line.substr(i + 1, end - i - 1);
    i = end + 1;
  }
  std::string_view value = nextToken(line, i);
  if (!parseValue(value, s.value)) {
    return false;
  }
  std::string_view ts = nextToken(line, i);
  if (!ts.empty() && ts != "#") {
    int64_t t = 0;
    auto [ptr, ec] = std::from_chars(ts.data(), ts.data() + ts.size(), t);
    if (ec != std::errc() || ptr != ts.data() + ts.size()) {
      // OpenMetrics allows fractional-second timestamps.
      double d = 0;
      if (!parseValue(ts, d) || !std::isfinite(d)) {
        return false;
      }
      t = static_cast<int64_t>(d * 1000);
    }
    s.timestamp_ms = t;
    ts = nextToken(line, i);
  }
  // Only an exemplar ("# {...} value") may follow; it is ignored.
  return ts.empty() || ts == "#";
}

bool validComment(std::string_view line) {
  // "# HELP name text" and "# TYPE name type" must name a metric; other comments are free.
  size_t i = 1;
  std::string_view keyword = nextToken(line, i);
  if (keyword != "HELP" && keyword != "TYPE") {
    return true;
  }
  std::string_view name = nextToken(line, i);
  if (name.empty() || !nameStart(name[0])) {
    return false;
  }
  for (char c : name) {
    if (!nameChar(c)) {
      return false;
    }
  }
  if (keyword == "TYPE") {
    std::string_view type = nextToken(line, i);
    static constexpr std::string_view kTypes[] = {"counter", "gauge",    "histogram",
                                                  "summary", "untyped",  "unknown",
                                                  "info",    "stateset", "gaugehistogram"};
    for (auto t : kTypes) {
      if (t == type) {
        return true;
      }
    }
    return false;
  }
  return true;
}

}  // namespace

base::Result<void> parsePrometheusText(std::string_view text,
                                       const std::function<void(const PromSample&)>& on_sample) {
  size_t line_no = 0;
  PromSample sample;
  while (!text.empty()) {
    ++line_no;
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    if (!line.empty() && line.back() == '\r') {
      line.remove_suffix(1);
    }
    size_t lead = 0;
    skipBlanks(line, lead);
    line.remove_prefix(lead);
    if (line.empty() || line == "# EOF") {
      continue;
    }
    if (line[0] == '#') {
      if (!validComment(line)) {
        return base::Error{fmt::format("line {}: malformed HELP or TYPE comment", line_no)};
      }
      continue;
    }
    if (!parseSample(line, sample)) {
      return base::Error{fmt::format("line {}: malformed sample", line_no)};
    }
    on_sample(sample);
  }
  return {};
}

std::optional<std::string> promLabel(std::string_view labels, std::string_view name) {
  size_t i = 0;
  while (i < labels.size()) {
    skipBlanks(labels, i);
    size_t start = i;
    while (i < labels.size() && labelChar(labels[i])) {
      ++i;
    }
    std::string_view key = labels.substr(start, i - start);
    skipBlanks(labels, i);
    if (i >= labels.size() || labels[i] != '=') {
      return std::nullopt;
    }
    ++i;
    skipBlanks(labels, i);
    if (i >= labels.size() || labels[i] != '"') {
      return std::nullopt;
    }
    ++i;
    std::string value;
    while (i < labels.size() && labels[i] != '"') {
      if (labels[i] == '\\' && i + 1 < labels.size()) {
        ++i;
        value += labels[i] == 'n' ? '\n' : labels[i];
      } else {
        value += labels[i];
      }
      ++i;
    }
    ++i;
    if (key == name) {
      return value;
    }
    skipBlanks(labels, i);
    if (i < labels.size() && labels[i] == ',') {
      ++i;
    }
  }
  return std::nullopt;
}

}  // namespace sluice::backends
