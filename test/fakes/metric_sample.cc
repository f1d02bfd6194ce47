#include "fakes/metric_sample.h"

namespace sluice::testing {

namespace {

bool matches(std::string_view line, std::string_view family,
             std::initializer_list<std::string_view> labels, std::string_view value) {
  if (line.size() <= family.size() || line.substr(0, family.size()) != family ||
      line[family.size()] != '{') {
    return false;
  }
  auto close = line.rfind('}');
  if (close == std::string_view::npos) {
    return false;
  }
  auto set = line.substr(family.size(), close + 1 - family.size());
  for (auto label : labels) {
    if (set.find(label) == std::string_view::npos) {
      return false;
    }
  }
  auto rest = line.substr(close + 1);
  return rest.size() == value.size() + 1 && rest[0] == ' ' && rest.substr(1) == value;
}

}  // namespace

bool hasSample(std::string_view body, std::string_view family,
               std::initializer_list<std::string_view> labels, std::string_view value) {
  while (!body.empty()) {
    auto end = body.find('\n');
    auto line = body.substr(0, end);
    if (matches(line, family, labels, value)) {
      return true;
    }
    body = end == std::string_view::npos ? std::string_view() : body.substr(end + 1);
  }
  return false;
}

}  // namespace sluice::testing
