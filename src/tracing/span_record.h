#pragma once

// The hand-off format of finished traces from a worker to the exporter thread: a compact,
// length-prefixed binary record per request, written into the worker's lock-free ring with
// no allocation beyond the reused buffer. The exporter turns records into OTLP messages.

#include <cstddef>
#include <string>
#include <string_view>

namespace opentelemetry::proto::trace::v1 {
class ScopeSpans;
}

namespace sluice::tracing {

class RequestTrace;

// Appends one record (every span of `trace`, Unix times) to `out`.
void encodeTrace(const RequestTrace& trace, std::string& out);

// Decodes the records in `bytes` (whole records, as encodeTrace wrote them) into spans of
// `scope`; returns how many spans were added, or stops at the first malformed record.
size_t decodeTraces(std::string_view bytes, opentelemetry::proto::trace::v1::ScopeSpans& scope);

}  // namespace sluice::tracing
