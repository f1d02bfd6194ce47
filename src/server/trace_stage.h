#pragma once

// Tracing on the request path: the W3C traceparent continued or started, the sampling
// decision, child spans around the stages, the traceparent sent upstream, and the finished
// trace handed to the exporter. With tracing off (no tracing.endpoint) each call is one
// pointer test.

#include <cstddef>
#include <string>
#include <string_view>

#include "tracing/request_trace.h"

namespace sluice::server {

struct Exchange;

constexpr size_t kNoSpan = SIZE_MAX;

// At the request's start: continues a valid traceparent (its sampled flag decides) or starts
// a trace sampled at tracing.sampling; sets x.trace when the request is recorded.
void startTrace(Exchange& x);

// A child span of the request from now, or kNoSpan when the request is not recorded.
size_t traceOpen(Exchange& x, std::string_view name,
                 tracing::SpanKind kind = tracing::SpanKind::Internal);
void traceClose(Exchange& x, size_t span, bool error = false);
tracing::SpanData* traceSpan(Exchange& x, size_t span);

// The traceparent and tracestate lines for the upstream head ("" when not recorded); the
// span id is the first attempt's, rewritten in place for later ones (traceAttempt).
void appendUpstreamTrace(const Exchange& x, std::string& head);
// Opens the span of upstream attempt `i` and points the head's traceparent at it.
size_t traceAttempt(Exchange& x, size_t i, std::string_view address, std::string* head);

// At the request's end: the server span's attributes and status, the time-to-first-token
// span, and the hand-off to the exporter (dropped, and counted, when its queue is full).
void finishTrace(Exchange& x);

// The trace and span ids for the access log ("" when the request is not traced).
std::string traceIdHex(const Exchange& x);
std::string spanIdHex(const Exchange& x);

}  // namespace sluice::server
