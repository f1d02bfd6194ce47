#include "openai/response_rewrite.h"

#include <vector>

namespace sluice::openai {

namespace {

bool isSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

// The end of the JSON string starting at `i` (its opening quote), past the closing quote.
size_t stringEnd(std::string_view in, size_t i) {
  for (++i; i < in.size(); ++i) {
    if (in[i] == '\\') {
      ++i;
    } else if (in[i] == '"') {
      return i + 1;
    }
  }
  return in.size();
}

}  // namespace

bool rewriteModelField(std::string_view in, std::string_view from_quoted,
                       std::string_view to_quoted, std::string& out) {
  // A scan of the JSON's structure, not a text search: only the response's own "model" (the
  // top-level object's, or that of the object a Responses API event nests under "response" or
  // an Anthropic message_start under "message") is the model the router rewrote; a "model"
  // inside a string, an array or any other nested object is the model's output.
  std::vector<std::string_view> parents;  // the key each open object or array is the value of
  std::string_view key;                   // the last key seen at this level
  for (size_t i = 0; i < in.size();) {
    const char c = in[i];
    if (c == '"') {
      const size_t end = stringEnd(in, i);
      size_t j = end;
      while (j < in.size() && isSpace(in[j])) {
        ++j;
      }
      if (j < in.size() && in[j] == ':') {
        key = in.substr(i + 1, end >= i + 2 ? end - i - 2 : 0);
        ++j;
        while (j < in.size() && isSpace(in[j])) {
          ++j;
        }
        const size_t depth = parents.size();
        const bool ours =
            depth == 1 || (depth == 2 && (parents[1] == "response" || parents[1] == "message"));
        if (key == "model" && ours && in.substr(j, from_quoted.size()) == from_quoted) {
          out.append(in.substr(0, j));
          out.append(to_quoted);
          out.append(in.substr(j + from_quoted.size()));
          return true;
        }
        i = j;
        continue;
      }
      i = end;
      continue;
    }
    if (c == '{' || c == '[') {
      parents.push_back(c == '{' ? key : std::string_view("[]"));
      key = {};
    } else if (c == '}' || c == ']') {
      if (!parents.empty()) {
        parents.pop_back();
      }
      key = {};
    }
    ++i;
  }
  return false;
}

}  // namespace sluice::openai
