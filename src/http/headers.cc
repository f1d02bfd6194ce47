#include "http/headers.h"

#include "base/strings.h"

namespace sluice::http {

bool isHopByHop(std::string_view name) {
  static constexpr std::string_view kNames[] = {"connection",
                                                "keep-alive",
                                                "proxy-connection",
                                                "proxy-authenticate",
                                                "proxy-authorization",
                                                "te",
                                                "trailer",
                                                "transfer-encoding",
                                                "upgrade"};
  for (auto n : kNames) {
    if (base::iequals(n, name)) {
      return true;
    }
  }
  return false;
}

bool connectionListsToken(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    size_t comma = value.find(',');
    std::string_view item = base::trim(value.substr(0, comma));
    if (base::iequals(item, token)) {
      return true;
    }
    if (comma == std::string_view::npos) {
      break;
    }
    value.remove_prefix(comma + 1);
  }
  return false;
}

bool isEventStream(std::string_view content_type) {
  std::string_view media = base::trim(content_type.substr(0, content_type.find(';')));
  return base::iequals(media, "text/event-stream");
}

}  // namespace sluice::http
