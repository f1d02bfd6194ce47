#pragma once

#include <string>
#include <string_view>

namespace sluice::openai {

// Writes the client's model name back into a response (or one streamed chunk) when the router
// rewrote it on the way in: finds the first `"model"` key whose value is `from_quoted` (a JSON
// string with its quotes), appends `in` to `out` with that value replaced by `to_quoted`, and
// returns true. Returns false, leaving `out` untouched, when there is no such field.
bool rewriteModelField(std::string_view in, std::string_view from_quoted,
                       std::string_view to_quoted, std::string& out);

}  // namespace sluice::openai
