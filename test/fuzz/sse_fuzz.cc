// SSE splitter and chunk inspection: the events must concatenate back to the input exactly,
// whatever the read boundaries.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "http/sse.h"
#include "openai/usage.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  sluice::http::SseSplitter splitter(256);
  std::string out;
  std::string scratch;
  size_t step = size ? (data[0] % 17) + 1 : 1;
  for (size_t pos = 0; pos < size; pos += step) {
    splitter.feed(in.substr(pos, step), [&](std::string_view event, bool) {
      out.append(event);
      std::string_view payload = sluice::http::SseSplitter::dataOf(event, scratch);
      (void)sluice::openai::inspectJson(payload);
    });
  }
  out.append(splitter.pending());
  if (out != in) {
    std::abort();
  }
  return 0;
}
