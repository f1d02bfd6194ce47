// Router configuration parser: any bytes give a config or field-path errors, never a crash.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "config/router_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  sluice::config::ConfigErrors errors;
  auto cfg = sluice::config::parseRouterConfig(
      std::string_view(reinterpret_cast<const char*>(data), size), errors);
  if (!cfg && errors.errors.empty()) {
    std::abort();  // a rejection must say why
  }
  if (cfg) {
    (void)sluice::config::toJson(*cfg);
  }
  return 0;
}
