#pragma once

// The hand-off of finished traces from a worker to the exporter thread: one record per
// request, [u32 length][u32 span count][the spans as OTLP ScopeSpans.spans entries], written
// into the worker's lock-free ring. The spans are final OTLP protobuf bytes: the exporter only
// frames them into export requests.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace sluice::tracing {

class RequestTrace;
class WireWriter;

// Appends one record of every span of `trace` (Unix times) to `out`; `server_attributes`
// writes the server span's attributes (read from the request at its end, never copied).
void encodeTrace(const RequestTrace& trace, std::string& out,
                 const std::function<void(WireWriter&)>& server_attributes = {});

// The same record written at the start of `arena` (a buffer kept across requests, never
// shrunk): the record, valid until the arena's next use.
std::string_view encodeTraceInto(const RequestTrace& trace, std::string& arena,
                                 const std::function<void(WireWriter&)>& server_attributes = {});

// Calls `record(spans, count)` for each whole record in `bytes`; false when `bytes` ends in a
// torn or malformed record (the rest is skipped).
bool forEachRecord(std::string_view bytes,
                   const std::function<void(std::string_view spans, uint32_t count)>& record);

}  // namespace sluice::tracing
