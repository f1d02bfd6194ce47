// Prometheus text parser and the engine mappings: any bytes give samples or a line-numbered
// error, never a crash; label look-ups on every sample stay inside the text.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "backends/engine_metrics.h"
#include "backends/prometheus.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sluice::backends;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto r = parsePrometheusText(text, [&](const PromSample& s) {
    if (s.name.data() < text.data() || s.name.data() + s.name.size() > text.data() + size) {
      std::abort();
    }
    (void)promLabel(s.labels, "le");
    (void)promLabel(s.labels, "model_name");
  });
  (void)r;
  for (auto type : {EngineType::Vllm, EngineType::Sglang, EngineType::Trtllm, EngineType::Triton}) {
    (void)extractSignals(text, defaultMapping(type));
  }
  return 0;
}
