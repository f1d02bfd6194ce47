// The router file's observability sections: access_log, metric_names and tracing.
#include <cstdlib>
#include <string>

#include "base/strings.h"
#include "config/yaml_parser.h"
#include "metrics/access_fields.h"

namespace sluice::config {

namespace {

void parseAccessLog(Parser& p, const YAML::Node& n, RouterConfig::AccessLog& log) {
  if (!p.mapWithKeys(n, "access_log", {"path", "decisions", "format", "fields"})) {
    return;
  }
  p.string(n, "path", "access_log", log.path);
  p.boolean(n, "decisions", "access_log", log.decisions);
  p.string(n, "format", "access_log", log.format);
  if (log.path.empty()) {
    p.error("access_log.path", "must be stdout, stderr, off or a file path");
  }
  if (log.format != "json" && log.format != "text") {
    p.error("access_log.format", fmt::format("must be json or text, got \"{}\"", log.format));
  }
  auto fields = n["fields"];
  if (!fields) {
    return;
  }
  if (!fields.IsSequence() || fields.size() == 0) {
    p.error("access_log.fields", "must be a non-empty list of field names");
    return;
  }
  for (size_t i = 0; i < fields.size(); ++i) {
    const std::string path = fmt::format("access_log.fields[{}]", i);
    auto name = p.scalar(fields[i], path);
    if (!name) {
      continue;
    }
    if (!metrics::accessFieldNamed(*name)) {
      p.error(path, fmt::format("unknown field \"{}\" (docs/operations.md lists them)", *name));
      continue;
    }
    log.fields.push_back(*name);
  }
}

void parseMetricNames(Parser& p, const YAML::Node& n, uint32_t& out) {
  if (!n.IsSequence() || n.size() == 0) {
    p.error("metric_names", "must be a non-empty list of sluice, inference_extension, kthena");
    return;
  }
  static constexpr std::pair<std::string_view, uint32_t> kSets[] = {
      {"sluice", 1}, {"inference_extension", 2}, {"kthena", 4}};
  out = 0;
  for (size_t i = 0; i < n.size(); ++i) {
    const std::string path = fmt::format("metric_names[{}]", i);
    auto name = p.scalar(n[i], path);
    if (!name) {
      continue;
    }
    bool known = false;
    for (const auto& [set, bit] : kSets) {
      if (*name == set) {
        out |= bit;
        known = true;
      }
    }
    if (!known) {
      p.error(path,
              fmt::format("must be sluice, inference_extension or kthena, got \"{}\"", *name));
    }
  }
}

// An OTLP/HTTP URL: http://host:port[/path]; the path defaults to the OTLP one.
bool otlpUrl(std::string& url) {
  constexpr std::string_view kScheme = "http://";
  if (url.rfind(kScheme, 0) != 0) {
    return false;
  }
  const auto slash = url.find('/', kScheme.size());
  const std::string authority = url.substr(
      kScheme.size(), slash == std::string::npos ? std::string::npos : slash - kScheme.size());
  if (!base::parseHostPort(authority)) {
    return false;
  }
  if (slash == std::string::npos || slash + 1 == url.size()) {
    url = std::string(kScheme) + authority + "/v1/traces";
  }
  return true;
}

void parseTracing(Parser& p, const YAML::Node& n, RouterConfig::Tracing& t) {
  if (!p.mapWithKeys(n, "tracing",
                     {"endpoint", "sampling", "service_name", "flush_interval", "export_timeout",
                      "queue_bytes", "max_batch"})) {
    return;
  }
  p.string(n, "endpoint", "tracing", t.endpoint);
  if (!t.endpoint.empty() && !otlpUrl(t.endpoint)) {
    p.error("tracing.endpoint",
            fmt::format("must be an OTLP/HTTP URL such as http://otel-collector:4318, got \"{}\"",
                        t.endpoint));
  }
  if (auto s = n["sampling"]) {
    auto v = p.scalar(s, "tracing.sampling");
    char* end = nullptr;
    const double d = v ? std::strtod(v->c_str(), &end) : -1;
    if (v && (end == v->c_str() || *end != '\0' || !(d >= 0 && d <= 1))) {
      p.error("tracing.sampling", fmt::format("must be a ratio in 0..1, got \"{}\"", *v));
    } else if (v) {
      t.sampling = d;
    }
  }
  p.string(n, "service_name", "tracing", t.service_name);
  if (t.service_name.empty()) {
    p.error("tracing.service_name", "must not be empty");
  }
  p.duration(n, "flush_interval", "tracing", t.flush_interval);
  p.duration(n, "export_timeout", "tracing", t.export_timeout);
  p.bytes(n, "queue_bytes", "tracing", t.queue_bytes, 4096);
  p.uint(n, "max_batch", "tracing", t.max_batch, 1, 100000);
}

}  // namespace

void parseObservability(Parser& p, const YAML::Node& root, RouterConfig& config) {
  if (auto n = root["access_log"]) {
    parseAccessLog(p, n, config.access_log);
  }
  if (auto n = root["metric_names"]) {
    parseMetricNames(p, n, config.metric_names);
  }
  if (auto n = root["tracing"]) {
    parseTracing(p, n, config.tracing);
  }
}

}  // namespace sluice::config
