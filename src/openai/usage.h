#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace sluice::openai {

struct Usage {
  uint64_t input_tokens = 0;
  uint64_t output_tokens = 0;
  // Takes what a later report says; a report that leaves a count out (zero) keeps the earlier
  // one. Anthropic streams report the input in message_start and the output in message_delta.
  void update(const Usage& later) {
    if (later.input_tokens > 0) {
      input_tokens = later.input_tokens;
    }
    if (later.output_tokens > 0) {
      output_tokens = later.output_tokens;
    }
  }
};

// What the router needs from one streamed chunk (the JSON after "data: ").
struct ChunkInfo {
  bool valid_json = false;
  std::optional<Usage> usage;  // a non-null usage object (chat/completions or responses API)
  bool choices_empty = false;  // "choices": [] - the shape of the usage-only final chunk
};

// Reads `usage` from a chunk or a whole response body. Handles the Chat/Completions names
// (prompt_tokens, completion_tokens), the Responses API names (input_tokens, output_tokens), and
// Responses events that nest it under "response", and Anthropic's Messages API (input_tokens,
// output_tokens; nested under "message" in message_start). The input is copied into a padded
// scratch buffer, so it may be any string_view.
ChunkInfo inspectJson(std::string_view json);

}  // namespace sluice::openai
