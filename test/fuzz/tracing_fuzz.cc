// The tracing parsers: a traceparent header (any bytes: continued only when valid, and then
// formatted back identically) and the framing of the exporter's span records (torn or hostile
// bytes stop the reader, never send it outside the input).
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

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
  // Record framing, as the exporter reads its queues: every record lies within the input.
  forEachRecord(text, [&](std::string_view spans, uint32_t) {
    if (spans.data() < text.data() || spans.data() + spans.size() > text.data() + text.size()) {
      std::abort();
    }
  });
  return 0;
}
