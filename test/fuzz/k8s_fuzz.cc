// What the API server (or a kubeconfig) can hand the router: any bytes as a kubeconfig, and as
// a JSON object converted for every watched resource and taken as the status the server
// holds. Errors are values; nothing may throw or crash.
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string_view>

#include "k8s/convert.h"
#include "k8s/kubeconfig.h"
#include "k8s/status_writer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sluice;
  std::string text(reinterpret_cast<const char*>(data), size);
  auto kc = k8s::parseKubeconfig(text, "/nonexistent", "");
  if (!kc && kc.error().message.empty()) {
    std::abort();
  }
  auto item = nlohmann::json::parse(text, nullptr, false);
  if (item.is_discarded()) {
    return 0;
  }
  router::ObjectStatus st;
  st.conditions.push_back({"Accepted", true, "Accepted", ""});
  st.parents.push_back({"Gateway/default/g", {{"Accepted", false, "NoMatchingParent", "x"}}});
  st.listeners.push_back({"http", 1, {{"Programmed", true, "Programmed", ""}}});
  k8s::StatusContext ctx;
  ctx.controller_name = "sluice.dev/gateway-controller";
  ctx.now = "2026-01-01T00:00:00Z";
  ctx.our_gateway = [](std::string_view, std::string_view) { return true; };
  for (const auto& type : k8s::watchedResources()) {
    auto c = k8s::convertObject(type, item);
    (void)k8s::storeKey(type, item);
    k8s::Observed obs;
    obs.type = &type;
    obs.status = item.is_object() ? item.value("status", nlohmann::json()) : nlohmann::json();
    obs.parent_refs = item;
    obs.listeners = item;
    if (auto desired = k8s::desiredStatus(st, obs, ctx)) {
      (void)k8s::statusDiffers(*desired, obs.status);
      (void)k8s::statusPatch(*desired, c.resource_version);
    }
  }
  return 0;
}
