#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "base/result.h"

namespace sluice::openai {

// A span of the raw request body, [offset, offset + length).
struct Span {
  size_t offset = 0;
  size_t length = 0;
  bool valid() const { return length != 0; }
};

enum class PromptField { None, Messages, Prompt, Input };

// What the router needs from an OpenAI request body, read without building a DOM.
// Spans point into the body the peek ran on and stay valid while that body lives.
struct RequestPeek {
  std::string model;
  Span model_token;  // the JSON string token including its quotes
  bool stream = false;
  bool has_stream_options = false;
  Span stream_options;  // the whole object, '{' to '}'
  bool stream_options_empty = true;
  std::optional<bool> include_usage;
  Span include_usage_token;            // the true/false literal
  size_t object_close = 0;             // offset of the top-level closing '}'
  std::optional<uint64_t> max_tokens;  // max_completion_tokens wins over max_tokens
  std::string user;
  PromptField prompt_field = PromptField::None;
  Span prompt;  // raw JSON of messages / prompt / input
  Span tools;   // raw JSON of tools (part of the prompt the engine sees)
};

// Parses `body` in place. `capacity` is the readable size of the allocation behind body.data()
// and must be at least body.size() + 64 (simdjson padding). Errors are client errors and carry a
// message fit for an OpenAI invalid_request_error.
base::Result<RequestPeek> peekRequest(std::string_view body, size_t capacity);

}  // namespace sluice::openai
