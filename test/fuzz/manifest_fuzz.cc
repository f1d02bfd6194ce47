// Manifest pipeline: any bytes give objects or field-path errors, and whatever validates
// translates into a route table and status without crashing.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "config/manifest.h"
#include "config/object_store.h"
#include "router/route_table.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = sluice::config::parseManifests(text, "fuzz.yaml");
  for (const auto& e : parsed.errors) {
    if (e.message.empty()) {
      std::abort();  // a rejection must say why
    }
  }
  sluice::config::ObjectStore store;
  store.applySource("fuzz.yaml", std::move(parsed));
  sluice::router::EndpointRegistry registry;
  sluice::router::RouteBuildOptions options;
  auto table = sluice::router::buildRouteTable(store, options, registry);
  (void)table->statusJson();
  return 0;
}
