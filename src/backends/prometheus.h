#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "base/result.h"

namespace sluice::backends {

// One sample of the Prometheus text exposition format (0.0.4, and the OpenMetrics lines engines
// emit). Views point into the parsed text.
struct PromSample {
  std::string_view name;
  std::string_view labels;  // the raw text between the braces, escapes intact ("" if none)
  double value = 0;
  std::optional<int64_t> timestamp_ms;
};

// Parses `text`, calling `on_sample` for every sample line (HELP/TYPE and comments are checked
// and skipped; exemplars are ignored). Stops at the first malformed line and returns an error
// naming its line number. Allocates nothing per line.
base::Result<void> parsePrometheusText(std::string_view text,
                                       const std::function<void(const PromSample&)>& on_sample);

// The unescaped value of label `name` in a sample's raw label text, if present.
std::optional<std::string> promLabel(std::string_view labels, std::string_view name);

}  // namespace sluice::backends
