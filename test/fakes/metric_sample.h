#pragma once

#include <initializer_list>
#include <string_view>

namespace sluice::testing {

// True if the Prometheus text `body` has a sample of `family` whose label set contains every
// entry of `labels` (each a fragment such as `model="gpt"` or `route="HTTPRoute/`) and whose
// value is `value`. A plain scan: std::regex trips GCC 12's -Wmaybe-uninitialized under ASan.
bool hasSample(std::string_view body, std::string_view family,
               std::initializer_list<std::string_view> labels, std::string_view value);

}  // namespace sluice::testing
