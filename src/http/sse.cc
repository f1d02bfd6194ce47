#include "http/sse.h"

namespace sluice::http {

std::string_view SseSplitter::dataOf(std::string_view event, std::string& scratch) {
  std::string_view first;
  int lines = 0;
  scratch.clear();
  while (!event.empty()) {
    size_t nl = event.find('\n');
    std::string_view line = event.substr(0, nl);
    if (!line.empty() && line.back() == '\r') {
      line.remove_suffix(1);
    }
    if (line.substr(0, 5) == "data:") {
      std::string_view value = line.substr(5);
      if (!value.empty() && value.front() == ' ') {
        value.remove_prefix(1);
      }
      if (lines == 0) {
        first = value;
      } else {
        if (lines == 1) {
          scratch.assign(first);
        }
        scratch += '\n';
        scratch.append(value);
      }
      ++lines;
    }
    if (nl == std::string_view::npos) {
      break;
    }
    event.remove_prefix(nl + 1);
  }
  return lines > 1 ? std::string_view(scratch) : first;
}

}  // namespace sluice::http
