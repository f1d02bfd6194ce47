#include "server/epp_stream.h"

#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "base/log.h"
#include "base/random.h"
#include "base/strings.h"
#include "extproc/messages.h"
#include "http/sse.h"
#include "openai/errors.h"
#include "openai/response_rewrite.h"
#include "openai/usage.h"
#include "server/completion.h"
#include "server/epp_pick.h"
#include "server/exchange.h"
#include "server/worker.h"

namespace sluice::server {

namespace pb = extproc::pb;
using BodyMode = envoy::extensions::filters::http::ext_proc::v3::ProcessingMode;
using extproc::GrpcStatus;

namespace {

class ExtProcStream final : public extproc::CallHandler {
 public:
  ExtProcStream(Session& s, extproc::GrpcCall& call, LiveHandlers& live)
      : s_(s), call_(call), live_(live) {
    ++live_.count;
  }
  ~ExtProcStream() override {
    complete();
    if (--live_.count == 0 && live_.zero) {
      live_.zero->cancel();
    }
  }

  void onMessage(std::string_view bytes) override;
  void onHalfClose() override {
    complete();
    call_.finish(GrpcStatus::kOk);
  }
  void onCancel() override { complete(); }

 private:
  enum class Phase { kHeaders, kBody, kPicking, kForwarded, kDone };

  void onRequestHeaders(const pb::ProcessingRequest& m);
  void onRequestBody(const pb::HttpBody& b);
  void onResponseHeaders(const pb::ProcessingRequest& m);
  void onResponseBody(const pb::HttpBody& b);
  void startPick();
  static awaitable<void> runPick(std::shared_ptr<extproc::GrpcCall> keep, ExtProcStream* self);
  void answer(PickResult& r);
  void answerBody(std::string_view body);
  void answerChunkUnchanged() {
    pb::ProcessingResponse r;
    r.mutable_request_body();
    send(r);
  }
  void refuse(openai::ErrorKind kind, std::string_view message);
  std::string responseBytes(std::string_view chunk, bool end);
  void readUsage(std::string_view event_or_body);
  void send(const pb::ProcessingResponse& r) {
    if (!observability_) {
      call_.send(r);
    }
  }
  void fail(GrpcStatus status, std::string message) {
    complete();
    call_.finish(status, message);
  }
  void complete();

  Session& s_;
  extproc::GrpcCall& call_;
  LiveHandlers& live_;
  pb::ProcessingRequest msg_;
  Phase phase_ = Phase::kHeaders;
  int request_mode_ = BodyMode::FULL_DUPLEX_STREAMED;
  int response_mode_ = BodyMode::NONE;
  bool observability_ = false;
  bool has_body_ = false;
  bool request_trailers_ = false;
  std::string method_, path_;
  Request req_;
  std::optional<Exchange> x_;
  std::vector<std::string> subset_;
  bool subset_present_ = false;
  PickResult pick_;
  // The response.
  bool sse_ = false;
  http::SseSplitter splitter_;
  std::string held_;           // a JSON body, held for its usage and the model write-back (bounded)
  bool pass_through_ = false;  // the body outgrew the bound
  size_t unanswered_chunks_ = 0;  // streamed mode: chunks that came while we were picking
  bool completed_ = false;
};

void ExtProcStream::onMessage(std::string_view bytes) {
  msg_.Clear();
  if (!msg_.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    fail(GrpcStatus::kInvalidArgument, "a ProcessingRequest that is not valid protobuf");
    return;
  }
  if (msg_.has_protocol_config()) {
    request_mode_ = msg_.protocol_config().request_body_mode();
    response_mode_ = msg_.protocol_config().response_body_mode();
  }
  observability_ = msg_.observability_mode();
  switch (msg_.request_case()) {
    case pb::ProcessingRequest::kRequestHeaders:
      onRequestHeaders(msg_);
      return;
    case pb::ProcessingRequest::kRequestBody:
      onRequestBody(msg_.request_body());
      return;
    case pb::ProcessingRequest::kRequestTrailers:
      if (phase_ != Phase::kBody) {
        fail(GrpcStatus::kFailedPrecondition, "request trailers out of order");
        return;
      }
      request_trailers_ = true;  // the body is complete; answered after it
      startPick();
      return;
    case pb::ProcessingRequest::kResponseHeaders:
      onResponseHeaders(msg_);
      return;
    case pb::ProcessingRequest::kResponseBody:
      onResponseBody(msg_.response_body());
      return;
    case pb::ProcessingRequest::kResponseTrailers: {
      pb::ProcessingResponse r;
      r.mutable_response_trailers();
      send(r);
      complete();
      return;
    }
    default:
      fail(GrpcStatus::kInvalidArgument, "a ProcessingRequest with no request set");
      return;
  }
}

void ExtProcStream::onRequestHeaders(const pb::ProcessingRequest& m) {
  if (phase_ != Phase::kHeaders) {
    fail(GrpcStatus::kFailedPrecondition, "request headers out of order");
    return;
  }
  Worker& w = s_.worker;
  x_.emplace(s_, req_, w.generation());
  Exchange& x = *x_;
  x.start = w.context().time.monotonicNow();
  w.shard().active_requests.fetch_add(1, std::memory_order_relaxed);
  for (const auto& h : m.request_headers().headers().headers()) {
    const std::string_view name = h.key();
    const std::string_view value = extproc::headerValue(h);
    if (name == ":method") {
      method_ = value;
    } else if (name == ":path") {
      path_ = value;
    } else if (!name.empty() && name[0] != ':') {
      req_.insert(beast::string_view(name.data(), name.size()),
                  beast::string_view(value.data(), value.size()));
    }
  }
  x.method = method_;
  x.target = path_;
  x.path = std::string_view(path_).substr(0, std::string_view(path_).find('?'));
  if (auto it = req_.find("x-request-id"); it != req_.end()) {
    x.request_id = it->value();
  } else {
    x.request_id = base::randomHexId(w.random());
  }
  subset_ = extproc::metadataAddresses(m, extproc::kSubsetNamespace, extproc::kSubsetKey,
                                       subset_present_);
  const bool end = m.request_headers().end_of_stream();
  const bool body_sent = request_mode_ == BodyMode::FULL_DUPLEX_STREAMED ||
                         request_mode_ == BodyMode::BUFFERED ||
                         request_mode_ == BodyMode::BUFFERED_PARTIAL;
  if (end || !body_sent) {
    // No body is coming (a GET), or it will not be shown to us: pick from the headers alone.
    has_body_ = false;
    startPick();
    return;
  }
  phase_ = Phase::kBody;
  has_body_ = true;
  if (request_mode_ != BodyMode::FULL_DUPLEX_STREAMED) {
    // Buffered: the headers are answered now; the destination goes with the body's answer.
    pb::ProcessingResponse r;
    r.mutable_request_headers();
    send(r);
  }
}

void ExtProcStream::onRequestBody(const pb::HttpBody& b) {
  if (!has_body_ && (phase_ == Phase::kPicking || phase_ == Phase::kForwarded)) {
    // Streamed (not duplex): every chunk is answered, unchanged, after the headers' answer.
    if (phase_ == Phase::kPicking) {
      ++unanswered_chunks_;
    } else {
      answerChunkUnchanged();
    }
    return;
  }
  if (phase_ != Phase::kBody || !x_) {
    fail(GrpcStatus::kFailedPrecondition, "a request body chunk out of order");
    return;
  }
  const uint64_t limit = x_->gen->snapshot->config.limits.max_body_bytes;
  if (req_.body().view().size() + b.body().size() > limit) {
    refuse(openai::ErrorKind::PayloadTooLarge,
           fmt::format("the request body is over the limit of {} bytes", limit));
    return;
  }
  req_.body().append(b.body());
  if (b.end_of_stream()) {
    startPick();
  }
}

void ExtProcStream::startPick() {
  phase_ = Phase::kPicking;
  asio::co_spawn(s_.worker.ioContext(), runPick(call_.shared_from_this(), this), asio::detached);
}

awaitable<void> ExtProcStream::runPick(std::shared_ptr<extproc::GrpcCall> keep,
                                       ExtProcStream* self) {
  // `keep` owns the call, which owns this handler: it lives until the pick is done.
  std::weak_ptr<extproc::GrpcCall> weak = keep;
  PickInput in{self->subset_, self->subset_present_, [weak] {
                 auto c = weak.lock();
                 return !c || c->cancelled();
               }};
  co_await pickEndpoints(*self->x_, in, self->pick_);
  if (keep->open()) {
    self->answer(self->pick_);
  }
}

void ExtProcStream::answer(PickResult& r) {
  if (r.refusal) {
    refuse(r.refusal->kind, r.refusal->message);
    return;
  }
  phase_ = Phase::kForwarded;
  Exchange& x = *x_;
  x.endpoint = r.destinations.front();
  std::string dest;
  for (const auto& d : r.destinations) {
    if (!dest.empty()) {
      dest.push_back(',');
    }
    dest.append(d);
  }
  const std::string_view original = req_.body().view();
  const std::string_view body = r.body ? std::string_view(*r.body) : original;
  pb::ProcessingResponse resp;
  extproc::setDestinationMetadata(resp, dest);
  const bool in_body_answer = has_body_ && request_mode_ != BodyMode::FULL_DUPLEX_STREAMED;
  pb::CommonResponse* common = in_body_answer ? resp.mutable_request_body()->mutable_response()
                                              : resp.mutable_request_headers()->mutable_response();
  common->set_clear_route_cache(true);
  auto* mut = common->mutable_header_mutation();
  extproc::setHeader(*mut, extproc::kDestinationHeader, dest);
  if (has_body_) {
    extproc::setHeader(*mut, "content-length", std::to_string(body.size()));
  }
  for (std::string_view h : kControlHeaders) {
    mut->add_remove_headers(std::string(h));
  }
  if (in_body_answer && r.body) {
    common->mutable_body_mutation()->set_body(*r.body);
  }
  send(resp);
  if (has_body_ && request_mode_ == BodyMode::FULL_DUPLEX_STREAMED) {
    answerBody(body);
  }
  for (; unanswered_chunks_ > 0; --unanswered_chunks_) {
    answerChunkUnchanged();
  }
  if (request_trailers_) {
    pb::ProcessingResponse t;
    t.mutable_request_trailers();
    send(t);
  }
}

void ExtProcStream::answerBody(std::string_view body) {
  // The body goes back in chunks the gateway forwards as they come.
  size_t off = 0;
  do {
    const size_t n = std::min(extproc::kMaxBodyChunk, body.size() - off);
    pb::ProcessingResponse r;
    auto* sr = r.mutable_request_body()
                   ->mutable_response()
                   ->mutable_body_mutation()
                   ->mutable_streamed_response();
    sr->set_body(std::string(body.substr(off, n)));
    off += n;
    sr->set_end_of_stream(off == body.size() && !request_trailers_);
    send(r);
  } while (off < body.size());
}

void ExtProcStream::refuse(openai::ErrorKind kind, std::string_view message) {
  const auto& info = openai::errorInfo(kind);
  if (x_) {
    x_->status = info.status;
    x_->error_type = info.code;
  }
  pb::ProcessingResponse r;
  extproc::setImmediate(r, info.status, openai::errorBody(kind, message), info.code);
  send(r);
  phase_ = Phase::kDone;
  fail(GrpcStatus::kOk, {});
}

void ExtProcStream::onResponseHeaders(const pb::ProcessingRequest& m) {
  if (phase_ != Phase::kForwarded || !x_) {
    fail(GrpcStatus::kFailedPrecondition, "response headers before the request was answered");
    return;
  }
  Exchange& x = *x_;
  bool present = false;
  auto served = extproc::metadataAddresses(m, extproc::kLbNamespace, extproc::kServedKey, present);
  if (!served.empty()) {
    moveToServed(x, pick_, served.front());
  }
  const auto& headers = m.response_headers().headers();
  if (const auto* st = extproc::findHeader(headers, ":status")) {
    x.status = static_cast<int>(base::parseUint(extproc::headerValue(*st)).value_or(0));
  }
  if (const auto* ct = extproc::findHeader(headers, "content-type")) {
    sse_ = extproc::headerValue(*ct).starts_with("text/event-stream");
  }
  x.stream = x.stream || sse_;
  x.served = true;
  pb::ProcessingResponse r;
  r.mutable_response_headers();
  send(r);
  if (m.response_headers().end_of_stream()) {
    complete();
  }
}

void ExtProcStream::onResponseBody(const pb::HttpBody& b) {
  if (phase_ != Phase::kForwarded || !x_) {
    fail(GrpcStatus::kFailedPrecondition, "a response body chunk before the response headers");
    return;
  }
  if (x_->ttft_ms < 0 && !b.body().empty()) {
    x_->ttft_ms = base::secondsBetween(x_->start, s_.worker.context().time.monotonicNow()) * 1e3;
  }
  const bool end = b.end_of_stream();
  if (response_mode_ == BodyMode::FULL_DUPLEX_STREAMED) {
    // Every byte goes back, in chunks of at most 62,000 bytes (held ones when they complete).
    std::string out = responseBytes(b.body(), end);
    size_t off = 0;
    while (off < out.size() || (end && off == 0)) {
      const size_t n = std::min(extproc::kMaxBodyChunk, out.size() - off);
      pb::ProcessingResponse r;
      auto* sr = r.mutable_response_body()
                     ->mutable_response()
                     ->mutable_body_mutation()
                     ->mutable_streamed_response();
      sr->set_body(out.substr(off, n));
      off += n;
      sr->set_end_of_stream(end && off == out.size());
      send(r);
      if (n == 0) {
        break;
      }
    }
  } else if (response_mode_ == BodyMode::STREAMED) {
    // Each chunk is answered as it comes and passes unchanged: only the usage is read.
    if (sse_) {
      splitter_.feed(b.body(), [&](std::string_view ev, bool) { readUsage(ev); });
    }
    pb::ProcessingResponse r;
    r.mutable_response_body();
    send(r);
  } else {
    // Buffered: the whole body in one message; a changed body goes back as a mutation.
    std::string out = responseBytes(b.body(), true);
    pb::ProcessingResponse r;
    auto* common = r.mutable_response_body()->mutable_response();
    if (out != b.body()) {
      common->mutable_body_mutation()->set_body(std::move(out));
    }
    send(r);
  }
  if (end) {
    complete();
  }
}

std::string ExtProcStream::responseBytes(std::string_view chunk, bool end) {
  // SSE events are read for usage as they pass and get the client's model name back where the
  // request's was rewritten. A JSON body is copied (bounded) to read its usage at the end; with
  // a rewritten model it is held whole for the write-back, and passed on unchanged from the
  // moment it outgrows the bound.
  const ModelNames& names = pick_.names;
  std::string out;
  auto pass = [&](std::string_view ev) {
    readUsage(ev);
    if (!names.rewritten() || !openai::rewriteModelField(ev, names.upstream, names.client, out)) {
      out.append(ev);
    }
  };
  if (sse_) {
    splitter_.feed(chunk, [&](std::string_view ev, bool) { pass(ev); });
    if (end && !splitter_.pending().empty()) {
      const std::string last(splitter_.pending());  // an event without its blank line
      splitter_.clear();
      pass(last);
    }
    return out;
  }
  if (!pass_through_ && held_.size() + chunk.size() <= kMaxUsageCopyBytes) {
    held_.append(chunk);
  } else if (!pass_through_) {
    pass_through_ = true;
    if (names.rewritten()) {
      out = std::move(held_);  // outgrew the bound: what was held goes first, unchanged
    }
    held_.clear();
  }
  if (!names.rewritten() || pass_through_) {
    out.append(chunk);
  }
  if (end && !pass_through_) {
    readUsage(held_);
    if (names.rewritten() && !openai::rewriteModelField(held_, names.upstream, names.client, out)) {
      out = held_;
    }
  }
  return out;
}

void ExtProcStream::readUsage(std::string_view text) {
  if (!x_ || text.empty()) {
    return;
  }
  std::string_view json = text;
  std::string scratch;
  if (sse_) {
    json = http::SseSplitter::dataOf(text, scratch);
    if (json.empty() || json == "[DONE]") {
      return;
    }
  }
  auto info = openai::inspectJson(json);
  if (info.usage) {
    x_->usage.update(*info.usage);
  }
}

void ExtProcStream::complete() {
  if (completed_ || !x_) {
    return;
  }
  completed_ = true;
  phase_ = Phase::kDone;
  pick_.reservation.release();
  Exchange& x = *x_;
  s_.worker.shard().active_requests.fetch_sub(1, std::memory_order_relaxed);
  if (x.status == 0 && x.error_type.empty()) {
    x.error_type = "no_response";  // the stream ended before the gateway reported a response
  }
  finishExchange(x);
}

}  // namespace

std::unique_ptr<extproc::CallHandler> makeExtProcHandler(Session& s, extproc::GrpcCall& call,
                                                         LiveHandlers& live) {
  return std::make_unique<ExtProcStream>(s, call, live);
}

}  // namespace sluice::server
