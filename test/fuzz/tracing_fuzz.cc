// The tracing parsers: a traceparent header (any bytes: continued only when valid, and then
// formatted back identically) and the exporter's span records (torn or hostile bytes stop the
// decoder, never crash it).
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "opentelemetry/proto/trace/v1/trace.pb.h"
#include "tracing/span_record.h"
#include "tracing/trace_context.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sluice::tracing;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto p = parseTraceparent(text)) {
    auto again = parseTraceparent(formatTraceparent(p->trace_id, p->span_id, p->flags));
    if (!again || again->trace_id != p->trace_id || again->span_id != p->span_id ||
        again->flags != p->flags) {
      std::abort();
    }
  }
  opentelemetry::proto::trace::v1::ScopeSpans scope;
  if (decodeTraces(text, scope) != static_cast<size_t>(scope.spans_size())) {
    std::abort();
  }
  return 0;
}
