#pragma once

// One OTLP/HTTP export: POST of a protobuf body to the collector, on the exporter thread
// (blocking, bounded by a deadline; never on a worker).

#include <chrono>
#include <string>

#include "base/result.h"

namespace sluice::tracing {

struct OtlpUrl {
  std::string host;
  std::string port;
  std::string path;
};

// http://host:port/path (the config parser has already checked the shape).
base::Result<OtlpUrl> parseOtlpUrl(const std::string& url);

// POSTs `body` (Content-Type application/x-protobuf) and returns the HTTP status, or an error
// when the collector could not be reached or did not answer within `timeout`.
base::Result<int> postProtobuf(const OtlpUrl& url, const std::string& body,
                               std::chrono::milliseconds timeout);

}  // namespace sluice::tracing
