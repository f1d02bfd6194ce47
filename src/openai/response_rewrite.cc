#include "openai/response_rewrite.h"

namespace sluice::openai {

bool rewriteModelField(std::string_view in, std::string_view from_quoted,
                       std::string_view to_quoted, std::string& out) {
  static constexpr std::string_view kKey = "\"model\"";
  size_t pos = 0;
  while ((pos = in.find(kKey, pos)) != std::string_view::npos) {
    size_t i = pos + kKey.size();
    while (i < in.size() && (in[i] == ' ' || in[i] == '\t' || in[i] == '\n' || in[i] == '\r')) {
      ++i;
    }
    if (i < in.size() && in[i] == ':') {
      ++i;
      while (i < in.size() && (in[i] == ' ' || in[i] == '\t' || in[i] == '\n' || in[i] == '\r')) {
        ++i;
      }
      if (in.substr(i, from_quoted.size()) == from_quoted) {
        out.append(in.substr(0, i));
        out.append(to_quoted);
        out.append(in.substr(i + from_quoted.size()));
        return true;
      }
    }
    pos += kKey.size();
  }
  return false;
}

}  // namespace sluice::openai
