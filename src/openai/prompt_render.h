#pragma once

#include <string>
#include <string_view>

#include "openai/peek.h"

namespace sluice::openai {

// The prompt in one stable, canonical form: tools first, then every message's role, name,
// content text and tool calls, separated by control characters. Two clients that format the
// same conversation differently (spacing, key order, escapes) render the same text, and the
// next turn of a conversation renders to an extension of the previous one, so prefix-cache
// keys built on it are shared. `body` is the padded request body the peek ran on; `capacity`
// as for peekRequest.
void renderPrompt(const RequestPeek& peek, std::string_view body, size_t capacity,
                  std::string& out);

}  // namespace sluice::openai
