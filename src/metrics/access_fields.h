#pragma once

// The access log's fields, by the names records carry (docs/operations.md lists each). Header
// only: the configuration parser checks `access_log.fields` against it.

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

namespace sluice::metrics {

enum class AccessField : uint8_t {
  ts_ms,
  timestamp,
  request_id,
  method,
  path,
  status,
  model,
  endpoint,
  attempts,
  stream,
  input_tokens,
  output_tokens,
  ttft_ms,
  duration_ms,
  error_type,
  client,
  protocol,
  trace_id,
  span_id,
  gateway,
  listener,
  http_route,
  model_route,
  route_rule,
  backend_kind,
  backend,
  inference_pool,
  upstream_model,
  objective,
  upstream_protocol,
  queue_ms,
  identity,
  limit,
  decision,
  kCount
};

inline constexpr std::array<std::string_view, static_cast<size_t>(AccessField::kCount)>
    kAccessFieldNames = {
        "ts_ms",        "timestamp",      "request_id",     "method",      "path",
        "status",       "model",          "endpoint",       "attempts",    "stream",
        "input_tokens", "output_tokens",  "ttft_ms",        "duration_ms", "error_type",
        "client",       "protocol",       "trace_id",       "span_id",     "gateway",
        "listener",     "http_route",     "model_route",    "route_rule",  "backend_kind",
        "backend",      "inference_pool", "upstream_model", "objective",   "upstream_protocol",
        "queue_ms",     "identity",       "limit",          "decision",
};

inline std::optional<AccessField> accessFieldNamed(std::string_view name) {
  for (size_t i = 0; i < kAccessFieldNames.size(); ++i) {
    if (kAccessFieldNames[i] == name) {
      return static_cast<AccessField>(i);
    }
  }
  return std::nullopt;
}

}  // namespace sluice::metrics
