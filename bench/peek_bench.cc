// Body peek and splice cost per request, for a typical 1 KB chat body and a 200 KB one.
#include <string>

#include <benchmark/benchmark.h>

#include "base/padded_buffer.h"
#include "openai/peek.h"
#include "openai/prompt_render.h"
#include "openai/splice.h"

namespace {

using namespace sluice;

std::string chatBody(size_t target_bytes) {
  std::string content;
  const std::string sentence = "The quick brown fox jumps over the lazy dog, again and again. ";
  while (content.size() + 200 < target_bytes) {
    content += sentence;
  }
  return R"({"model":"llama-3.1-8b-instruct","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":")" +
         content + R"("}],"temperature":0.7,"max_tokens":256,"stream":true,"user":"bench"})";
}

base::PaddedBuffer padded(const std::string& s) {
  base::PaddedBuffer b;
  b.append(s);
  return b;
}

void BM_Peek(benchmark::State& state) {
  auto body = padded(chatBody(static_cast<size_t>(state.range(0))));
  for (auto _ : state) {
    auto peek = openai::peekRequest(body.view(), body.capacity() + base::PaddedBuffer::kPadding);
    benchmark::DoNotOptimize(peek);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * body.size()));
}

// What the proxy does per request: peek, model rewrite, usage injection, zero-copy pieces.
void BM_PeekAndSplice(benchmark::State& state) {
  auto body = padded(chatBody(static_cast<size_t>(state.range(0))));
  std::vector<std::string_view> pieces;
  for (auto _ : state) {
    auto peek = openai::peekRequest(body.view(), body.capacity() + base::PaddedBuffer::kPadding);
    openai::BodyEdits edits;
    edits.rewriteModel(*peek, "meta-llama/Llama-3.1-8B-Instruct");
    edits.requestUsage(*peek);
    pieces.clear();
    edits.pieces(body.view(), pieces);
    benchmark::DoNotOptimize(pieces.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * body.size()));
}

// For comparison: materialising the edited body (one copy), which the proxy avoids.
void BM_PeekAndSpliceCopy(benchmark::State& state) {
  auto body = padded(chatBody(static_cast<size_t>(state.range(0))));
  for (auto _ : state) {
    auto peek = openai::peekRequest(body.view(), body.capacity() + base::PaddedBuffer::kPadding);
    openai::BodyEdits edits;
    edits.rewriteModel(*peek, "meta-llama/Llama-3.1-8B-Instruct");
    edits.requestUsage(*peek);
    std::string out = edits.apply(body.view());
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * body.size()));
}

// The canonical rendering the prefix keys are built from (scheduling with a prefix scorer).
void BM_RenderPrompt(benchmark::State& state) {
  auto body = padded(chatBody(static_cast<size_t>(state.range(0))));
  auto peek = openai::peekRequest(body.view(), body.capacity() + base::PaddedBuffer::kPadding);
  std::string out;
  for (auto _ : state) {
    openai::renderPrompt(*peek, body.view(), body.capacity() + base::PaddedBuffer::kPadding, out);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * body.size()));
}

BENCHMARK(BM_Peek)->Arg(1024)->Arg(200 * 1024);
BENCHMARK(BM_RenderPrompt)->Arg(1024)->Arg(8 * 1024)->Arg(200 * 1024);
BENCHMARK(BM_PeekAndSplice)->Arg(1024)->Arg(200 * 1024);
BENCHMARK(BM_PeekAndSpliceCopy)->Arg(1024)->Arg(200 * 1024);

}  // namespace

BENCHMARK_MAIN();
