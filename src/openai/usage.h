#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace sluice::openai {

struct Usage {
  uint64_t input_tokens = 0;
  uint64_t output_tokens = 0;
};

// What the router needs from one streamed chunk (the JSON after "data: ").
struct ChunkInfo {
  bool valid_json = false;
  std::optional<Usage> usage;  // a non-null usage object (chat/completions or responses API)
  bool choices_empty = false;  // "choices": [] - the shape of the usage-only final chunk
};

// Reads `usage` from a chunk or a whole response body. Handles the Chat/Completions names
// (prompt_tokens, completion_tokens), the Responses API names (input_tokens, output_tokens), and
// Responses events that nest it under "response". The input is copied into a padded scratch
// buffer, so it may be any string_view.
ChunkInfo inspectJson(std::string_view json);

}  // namespace sluice::openai
