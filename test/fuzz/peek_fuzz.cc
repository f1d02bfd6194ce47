// Request body peek and splice: any bytes must give a clean result or error, and a successful
// peek must yield spans inside the body and edits that still parse.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "base/padded_buffer.h"
#include "openai/peek.h"
#include "openai/prompt_render.h"
#include "openai/splice.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sluice;
  base::PaddedBuffer body;
  body.append(data, size);
  auto peek = openai::peekRequest(body.view(), body.capacity() + base::PaddedBuffer::kPadding);
  if (!peek) {
    return 0;
  }
  auto inside = [&](const openai::Span& s) { return s.offset + s.length <= size; };
  if (!inside(peek->model_token) || !inside(peek->prompt) || !inside(peek->stream_options) ||
      peek->object_close >= size) {
    std::abort();
  }
  std::string rendered;
  openai::renderPrompt(*peek, body.view(), body.capacity() + base::PaddedBuffer::kPadding,
                       rendered);
  openai::BodyEdits edits;
  edits.rewriteModel(*peek, "fuzz-model");
  edits.requestUsage(*peek);
  std::string out = edits.apply(body.view());
  if (out.size() != edits.editedSize(size)) {
    std::abort();
  }
  base::PaddedBuffer again;
  again.append(out);
  auto second = openai::peekRequest(again.view(), again.capacity() + base::PaddedBuffer::kPadding);
  if (!second || second->model != "fuzz-model") {
    std::abort();  // a splice must never break a body that parsed
  }
  return 0;
}
