#include "openai/peek.h"

#include <gtest/gtest.h>

#include "base/padded_buffer.h"
#include "openai/errors.h"
#include "openai/prompt_render.h"
#include "openai/response_rewrite.h"
#include "openai/splice.h"
#include "openai/usage.h"

namespace sluice::openai {
namespace {

// Peeks a copy held in a padded buffer, as the server does.
struct Peeked {
  explicit Peeked(std::string_view json) {
    buf.append(json);
    result.emplace(peekRequest(buf.view(), buf.capacity() + base::PaddedBuffer::kPadding));
  }
  base::PaddedBuffer buf;
  std::optional<base::Result<RequestPeek>> result;
  const RequestPeek& operator*() const { return result->value(); }
  const RequestPeek* operator->() const { return &result->value(); }
  bool ok() const { return result->has_value(); }
  std::string error() const { return ok() ? "" : result->error().message; }
};

TEST(Peek, ReadsEveryField) {
  Peeked p(R"({"model":"llama","messages":[{"role":"user","content":"hi"}],"stream":true,
    "stream_options":{"include_usage":false},"max_tokens":12,"user":"u1"})");
  ASSERT_TRUE(p.ok()) << p.error();
  EXPECT_EQ(p->model, "llama");
  EXPECT_TRUE(p->stream);
  EXPECT_TRUE(p->has_stream_options);
  ASSERT_TRUE(p->include_usage.has_value());
  EXPECT_FALSE(*p->include_usage);
  EXPECT_EQ(*p->max_tokens, 12u);
  EXPECT_EQ(p->user, "u1");
  EXPECT_EQ(p->prompt_field, PromptField::Messages);
  EXPECT_EQ(p.buf.view().substr(p->prompt.offset, p->prompt.length),
            R"([{"role":"user","content":"hi"}])");
  EXPECT_EQ(p.buf.view().substr(p->model_token.offset, p->model_token.length), "\"llama\"");
}

TEST(Peek, MaxCompletionTokensWinsInAnyOrder) {
  Peeked a(R"({"model":"m","max_completion_tokens":5,"max_tokens":9})");
  Peeked b(R"({"model":"m","max_tokens":9,"max_completion_tokens":5})");
  EXPECT_EQ(*a->max_tokens, 5u);
  EXPECT_EQ(*b->max_tokens, 5u);
}

TEST(Peek, PromptAndInput) {
  Peeked p(R"({"model":"m","prompt":"once upon"})");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->prompt_field, PromptField::Prompt);
  EXPECT_EQ(p.buf.view().substr(p->prompt.offset, p->prompt.length), "\"once upon\"");
  Peeked e(R"({"model":"m","input":["a","b"]})");
  EXPECT_EQ(e->prompt_field, PromptField::Input);
  EXPECT_FALSE(e->stream);
}

TEST(Peek, UnescapesModel) {
  Peeked p(R"({"model":"a\/b\u0041"})");
  ASSERT_TRUE(p.ok()) << p.error();
  EXPECT_EQ(p->model, "a/bA");
}

TEST(Peek, RejectsBadBodies) {
  EXPECT_EQ(Peeked("").error(), "request body is empty; expected a JSON object");
  EXPECT_EQ(Peeked("[1,2]").error(), "request body is not a JSON object");
  EXPECT_EQ(Peeked(R"({"model":)").error(), "request body is not a JSON object");
  EXPECT_EQ(Peeked(R"({"messages":[]})").error(), "you must provide a model parameter");
  EXPECT_EQ(Peeked(R"({"model":5})").error(), "'model' must be a string");
  EXPECT_EQ(Peeked(R"({"model":""})").error(), "'model' must not be empty");
  EXPECT_EQ(Peeked(R"({"model":"m","stream":"yes"})").error(), "'stream' must be a boolean");
  EXPECT_EQ(Peeked(R"({"model":"m","max_tokens":-1})").error(),
            "'max_tokens' must be a non-negative integer");
  EXPECT_FALSE(Peeked(R"({"model":"m"} {"model":"n"})").ok());
  EXPECT_FALSE(Peeked(R"({"model":"m",})").ok());
  EXPECT_FALSE(Peeked(R"({"model":"m" "x":1})").ok());
  // Found by the fuzzer: a malformed literal where null is tested used to throw.
  EXPECT_FALSE(Peeked(R"({"model":"m","stream_options":n{"include_usage":false}})").ok());
  EXPECT_FALSE(Peeked(R"({"model":"m","stream":nul,"max_tokens":nulll})").ok());
}

TEST(Peek, NullOptionalsAreAbsent) {
  Peeked p(R"({"model":"m","stream":null,"stream_options":null,"max_tokens":null})");
  ASSERT_TRUE(p.ok()) << p.error();
  EXPECT_FALSE(p->stream);
  EXPECT_FALSE(p->has_stream_options);
  EXPECT_FALSE(p->max_tokens);
}

std::string edited(std::string_view json,
                   const std::function<void(const RequestPeek&, BodyEdits&)>& f) {
  Peeked p(json);
  EXPECT_TRUE(p.ok()) << p.error();
  BodyEdits edits;
  f(*p, edits);
  std::string out = edits.apply(p.buf.view());
  EXPECT_EQ(out.size(), edits.editedSize(p.buf.size()));
  // The edited body must itself peek cleanly.
  Peeked again(out);
  EXPECT_TRUE(again.ok()) << again.error() << " in " << out;
  return out;
}

TEST(Splice, RewritesModel) {
  EXPECT_EQ(edited(R"({"model": "alias" ,"prompt":"x"})",
                   [](const RequestPeek& p, BodyEdits& e) { e.rewriteModel(p, "real/\"m\""); }),
            R"({"model": "real/\"m\"" ,"prompt":"x"})");
}

TEST(Splice, AddsStreamOptionsWhenAbsent) {
  bool changed = false;
  EXPECT_EQ(edited(R"({"model":"m","stream":true} )",
                   [&](const RequestPeek& p, BodyEdits& e) { changed = e.requestUsage(p); }),
            R"({"model":"m","stream":true,"stream_options":{"include_usage":true}} )");
  EXPECT_TRUE(changed);
}

TEST(Splice, AddsIncludeUsageToExistingOptions) {
  EXPECT_EQ(edited(R"({"model":"m","stream_options":{},"stream":true})",
                   [](const RequestPeek& p, BodyEdits& e) { EXPECT_TRUE(e.requestUsage(p)); }),
            R"({"model":"m","stream_options":{"include_usage":true},"stream":true})");
  EXPECT_EQ(
      edited(R"({"model":"m","stream_options":{"continuous_usage_stats":false},"stream":true})",
             [](const RequestPeek& p, BodyEdits& e) { EXPECT_TRUE(e.requestUsage(p)); }),
      R"({"model":"m","stream_options":{"include_usage":true,"continuous_usage_stats":false},"stream":true})");
}

TEST(Splice, FlipsFalseAndLeavesTrueAlone) {
  EXPECT_EQ(edited(R"({"model":"m","stream_options":{"include_usage":false}})",
                   [](const RequestPeek& p, BodyEdits& e) { EXPECT_TRUE(e.requestUsage(p)); }),
            R"({"model":"m","stream_options":{"include_usage":true}})");
  EXPECT_EQ(edited(R"({"model":"m","stream_options":{"include_usage":true}})",
                   [](const RequestPeek& p, BodyEdits& e) { EXPECT_FALSE(e.requestUsage(p)); }),
            R"({"model":"m","stream_options":{"include_usage":true}})");
}

TEST(Splice, RepeatedStreamOptionsUseTheLastOne) {
  // Found by the fuzzer: a later empty stream_options after a non-empty one.
  EXPECT_EQ(edited(R"({"model":"m","stream_options":{"a":1},"stream_options":{ }})",
                   [](const RequestPeek& p, BodyEdits& e) { EXPECT_TRUE(e.requestUsage(p)); }),
            R"({"model":"m","stream_options":{"a":1},"stream_options":{"include_usage":true }})");
}

TEST(Splice, CombinesEditsInOrder) {
  EXPECT_EQ(edited(R"({"stream":true,"model":"a"})",
                   [](const RequestPeek& p, BodyEdits& e) {
                     e.requestUsage(p);
                     e.rewriteModel(p, "bb");
                   }),
            R"({"stream":true,"model":"bb","stream_options":{"include_usage":true}})");
}

TEST(Splice, PiecesAreZeroCopyViews) {
  Peeked p(R"({"model":"a","prompt":"long prompt"})");
  BodyEdits e;
  e.rewriteModel(*p, "b");
  std::vector<std::string_view> pieces;
  e.pieces(p.buf.view(), pieces);
  ASSERT_EQ(pieces.size(), 3u);
  EXPECT_EQ(pieces[0].data(), p.buf.data());  // points into the original body
  EXPECT_EQ(pieces[1], "\"b\"");
}

TEST(Usage, ReadsChatAndResponsesShapes) {
  auto a = inspectJson(
      R"({"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}})");
  ASSERT_TRUE(a.usage);
  EXPECT_EQ(a.usage->input_tokens, 7u);
  EXPECT_EQ(a.usage->output_tokens, 3u);
  EXPECT_TRUE(a.choices_empty);
  auto b = inspectJson(R"({"choices":[{"delta":{}}],"usage":null})");
  EXPECT_TRUE(b.valid_json);
  EXPECT_FALSE(b.usage);
  EXPECT_FALSE(b.choices_empty);
  auto c = inspectJson(
      R"({"type":"response.completed","response":{"id":"r","usage":{"input_tokens":4,"output_tokens":2}}})");
  ASSERT_TRUE(c.usage);
  EXPECT_EQ(c.usage->input_tokens, 4u);
  EXPECT_FALSE(inspectJson("not json").valid_json);
}

TEST(Usage, ReadsAnthropicStreamsAcrossEvents) {
  // message_start names the input (cached tokens counted in), message_delta the output.
  auto start = inspectJson(
      R"({"type":"message_start","message":{"id":"m","usage":{"input_tokens":5,"cache_read_input_tokens":20,"output_tokens":1}}})");
  ASSERT_TRUE(start.usage);
  auto delta = inspectJson(
      R"({"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":9}})");
  ASSERT_TRUE(delta.usage);
  Usage total;
  total.update(*start.usage);
  total.update(*delta.usage);
  EXPECT_EQ(total.input_tokens, 25u);
  EXPECT_EQ(total.output_tokens, 9u);
}

std::string rendered(std::string_view json) {
  Peeked p(json);
  EXPECT_TRUE(p.ok()) << p.error();
  std::string out;
  renderPrompt(*p, p.buf.view(), p.buf.capacity() + base::PaddedBuffer::kPadding, out);
  return out;
}

TEST(RenderPrompt, IgnoresFormattingAndKeyOrder) {
  const std::string a = rendered(
      R"({"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi \u0041"}]})");
  const std::string b = rendered(R"({ "messages" : [ { "content" : "Be brief.", "role" : "system" },
      {"content":[{"type":"text","text":"Hi A"}],"role":"user"} ], "model" : "m" })");
  EXPECT_EQ(a, b);
  EXPECT_EQ(a,
            "\x1esystem\x1f\x1f\x1f"
            "Be brief.\x1f\x1euser\x1f\x1f\x1fHi A\x1f");
}

TEST(RenderPrompt, NextTurnExtendsThePreviousOne) {
  const std::string turn1 = rendered(
      R"({"model":"m","tools":[{"type":"function","function":{"name":"f"}}],"messages":[{"role":"user","content":"q1"}]})");
  const std::string turn2 = rendered(
      R"({"model":"m","tools":[{"type":"function","function":{"name":"f"}}],"messages":[{"role":"user","content":"q1"},{"role":"assistant","content":"a1"},{"role":"user","content":"q2"}]})");
  EXPECT_EQ(turn2.substr(0, turn1.size()), turn1);
  EXPECT_EQ(turn1.rfind("[{\"type\":\"function\"", 0), 0u);  // tools come first
}

TEST(RenderPrompt, CompletionsPromptsAndOddShapes) {
  EXPECT_EQ(rendered(R"({"model":"m","prompt":"once \"upon\""})"), "once \"upon\"");
  EXPECT_EQ(rendered(R"({"model":"m","prompt":[1,2,3]})"), "[1,2,3]");
  EXPECT_EQ(rendered(R"({"model":"m","messages":[1,2]})"), "[1,2]");  // raw when not messages
  EXPECT_EQ(rendered(R"({"model":"m"})"), "");
}

TEST(ResponseRewrite, WritesTheClientsModelBack) {
  std::string out;
  EXPECT_TRUE(rewriteModelField(R"({"id":"x","model":"meta/llama-3","choices":[]})",
                                "\"meta/llama-3\"", "\"llama\"", out));
  EXPECT_EQ(out, R"({"id":"x","model":"llama","choices":[]})");
  out.clear();
  EXPECT_TRUE(rewriteModelField("data: {\"model\" :  \"a\", \"b\":1}\n\n", "\"a\"", "\"bb\"", out));
  EXPECT_EQ(out, "data: {\"model\" :  \"bb\", \"b\":1}\n\n");
  out.clear();
  // Another "model" whose value differs (inside content, say) is left alone; the real one found.
  EXPECT_TRUE(
      rewriteModelField(R"({"content":"the \"model\":\"x\"","model":"a"})", "\"a\"", "\"b\"", out));
  EXPECT_EQ(out, R"({"content":"the \"model\":\"x\"","model":"b"})");
  out.clear();
  EXPECT_FALSE(rewriteModelField(R"({"model":"other"})", "\"a\"", "\"b\"", out));
  EXPECT_TRUE(out.empty());
}

TEST(ResponseRewrite, OnlyTheResponsesOwnModelIsWrittenBack) {
  std::string out;
  // A nested object's "model" (the model's output, a tool argument) comes first and stays.
  EXPECT_TRUE(
      rewriteModelField(R"({"id":"x","meta":{"model":"a"},"model":"a"})", "\"a\"", "\"b\"", out));
  EXPECT_EQ(out, R"({"id":"x","meta":{"model":"a"},"model":"b"})");
  out.clear();
  EXPECT_FALSE(rewriteModelField(R"({"choices":[{"model":"a"}],"x":{"y":{"model":"a"}}})", "\"a\"",
                                 "\"b\"", out));
  // Responses API events nest the response, Anthropic's message_start the message.
  EXPECT_TRUE(rewriteModelField(R"({"type":"response.created","response":{"model":"a"}})", "\"a\"",
                                "\"b\"", out));
  EXPECT_EQ(out, R"({"type":"response.created","response":{"model":"b"}})");
  out.clear();
  EXPECT_TRUE(rewriteModelField("event: message_start\ndata: {\"message\": {\"model\": \"a\"}}\n\n",
                                "\"a\"", "\"b\"", out));
  EXPECT_EQ(out, "event: message_start\ndata: {\"message\": {\"model\": \"b\"}}\n\n");
}

TEST(Errors, HaveTheOpenAIShape) {
  EXPECT_EQ(
      errorBody(ErrorKind::ModelNotFound, "The model 'x' does not exist"),
      R"({"error":{"message":"The model 'x' does not exist","type":"invalid_request_error","param":null,"code":"model_not_found"}})");
  EXPECT_EQ(errorInfo(ErrorKind::PayloadTooLarge).status, 413);
  EXPECT_EQ(errorInfo(ErrorKind::HeadersTooLarge).status, 431);
  EXPECT_EQ(errorInfo(ErrorKind::UpstreamTimeout).status, 504);
  EXPECT_EQ(errorInfo(ErrorKind::UpstreamUnavailable).status, 502);
}

}  // namespace
}  // namespace sluice::openai
