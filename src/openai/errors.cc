#include "openai/errors.h"

#include "base/strings.h"

namespace sluice::openai {

const ErrorInfo& errorInfo(ErrorKind kind) {
  static const ErrorInfo kInvalid{400, "invalid_request_error", "invalid_request"};
  static const ErrorInfo kUnauthorized{401, "invalid_request_error", "invalid_api_key"};
  static const ErrorInfo kForbidden{403, "permission_error", "model_not_allowed"};
  static const ErrorInfo kNotFound{404, "invalid_request_error", "not_found"};
  static const ErrorInfo kModelNotFound{404, "invalid_request_error", "model_not_found"};
  static const ErrorInfo kMethod{405, "invalid_request_error", "method_not_allowed"};
  static const ErrorInfo kTimeout{408, "invalid_request_error", "request_timeout"};
  static const ErrorInfo kTooLarge{413, "invalid_request_error", "payload_too_large"};
  static const ErrorInfo kRateLimited{429, "rate_limit_error", "rate_limit_exceeded"};
  static const ErrorInfo kHeaders{431, "invalid_request_error", "headers_too_large"};
  static const ErrorInfo kInternal{500, "server_error", "internal_error"};
  static const ErrorInfo kUpstream{502, "server_error", "upstream_unavailable"};
  static const ErrorInfo kNoEndpoints{503, "server_error", "no_healthy_endpoints"};
  static const ErrorInfo kUnavailable{503, "server_error", "service_unavailable"};
  static const ErrorInfo kUpstreamTimeout{504, "server_error", "upstream_timeout"};
  switch (kind) {
    case ErrorKind::InvalidRequest:
      return kInvalid;
    case ErrorKind::Unauthorized:
      return kUnauthorized;
    case ErrorKind::Forbidden:
      return kForbidden;
    case ErrorKind::NotFound:
      return kNotFound;
    case ErrorKind::ModelNotFound:
      return kModelNotFound;
    case ErrorKind::MethodNotAllowed:
      return kMethod;
    case ErrorKind::RequestTimeout:
      return kTimeout;
    case ErrorKind::PayloadTooLarge:
      return kTooLarge;
    case ErrorKind::RateLimited:
      return kRateLimited;
    case ErrorKind::HeadersTooLarge:
      return kHeaders;
    case ErrorKind::Internal:
      return kInternal;
    case ErrorKind::UpstreamUnavailable:
      return kUpstream;
    case ErrorKind::NoEndpoints:
      return kNoEndpoints;
    case ErrorKind::Unavailable:
      return kUnavailable;
    case ErrorKind::UpstreamTimeout:
      return kUpstreamTimeout;
  }
  return kInternal;
}

std::string errorBody(ErrorKind kind, std::string_view message) {
  const ErrorInfo& info = errorInfo(kind);
  std::string out;
  out.reserve(96 + message.size());
  out += "{\"error\":{\"message\":";
  out += base::jsonQuote(message);
  out += ",\"type\":\"";
  out += info.type;
  out += "\",\"param\":null,\"code\":\"";
  out += info.code;
  out += "\"}}";
  return out;
}

}  // namespace sluice::openai
