// The router file's observability sections: access_log and metric_names.
#include <string>

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

}  // namespace

void parseObservability(Parser& p, const YAML::Node& root, RouterConfig& config) {
  if (auto n = root["access_log"]) {
    parseAccessLog(p, n, config.access_log);
  }
  if (auto n = root["metric_names"]) {
    parseMetricNames(p, n, config.metric_names);
  }
}

}  // namespace sluice::config
