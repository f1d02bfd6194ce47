#pragma once

#include <string>
#include <string_view>

namespace sluice::openai {

// Every error a client can see, mapped to a status and an OpenAI error body in one place.
enum class ErrorKind {
  InvalidRequest,       // 400 malformed JSON, missing model, bad field types
  Unauthorized,         // 401
  Forbidden,            // 403 the identity may not use this model
  NotFound,             // 404 unknown path
  ModelNotFound,        // 404 unknown model
  MethodNotAllowed,     // 405
  RequestTimeout,       // 408 slow client
  PayloadTooLarge,      // 413
  RateLimited,          // 429
  HeadersTooLarge,      // 431
  Internal,             // 500
  UpstreamUnavailable,  // 502 connect refused / reset / bad response before headers
  NoEndpoints,          // 503 backend has no ready endpoint
  Unavailable,          // 503 draining or over capacity
  UpstreamTimeout,      // 504
};

struct ErrorInfo {
  int status;
  std::string_view type;  // OpenAI "type"
  std::string_view code;  // OpenAI "code"; also the access-log error_type
};

const ErrorInfo& errorInfo(ErrorKind kind);

// {"error":{"message":...,"type":...,"param":null,"code":...}}
std::string errorBody(ErrorKind kind, std::string_view message);

}  // namespace sluice::openai
