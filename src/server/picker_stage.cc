#include "server/picker_stage.h"

#include <array>
#include <cctype>

#include <fmt/format.h>

#include "base/log.h"
#include "base/strings.h"
#include "extproc/messages.h"
#include "http/headers.h"
#include "server/epp_stream.h"
#include "server/worker.h"

namespace sluice::server {

namespace pb = extproc::pb;
using BodyMode = envoy::extensions::filters::http::ext_proc::v3::ProcessingMode;
using HeaderOption = envoy::config::core::v3::HeaderValueOption;

namespace {

constexpr size_t kMaxMessage = 16 * 1024 * 1024;
constexpr size_t kBodyChunk = 64 * 1024;

void addHeader(envoy::config::core::v3::HeaderMap& map, std::string_view name,
               std::string_view value) {
  auto* h = map.add_headers();
  h->set_key(base::toLower(name));
  h->set_raw_value(std::string(value));
}

// The request phase as the Inference Extension's Envoy settings send it: the headers (with
// the protocol configuration: request body full duplex, no response body), then the body.
std::string requestPhase(const Exchange& x) {
  std::string out;
  pb::ProcessingRequest m;
  auto* headers = m.mutable_request_headers();
  auto& map = *headers->mutable_headers();
  addHeader(map, ":method", x.method);
  addHeader(map, ":path", x.target);
  addHeader(map, ":authority", x.authority);
  addHeader(map, ":scheme", x.session.tls ? "https" : "http");
  for (const auto& f : x.req) {
    addHeader(map, f.name_string(), f.value());
  }
  if (x.req.find("x-request-id") == x.req.end()) {
    addHeader(map, "x-request-id", x.request_id);  // the id the router made: one for all logs
  }
  const std::string_view body = x.req.body().view();
  headers->set_end_of_stream(body.empty());
  m.mutable_protocol_config()->set_request_body_mode(BodyMode::FULL_DUPLEX_STREAMED);
  m.mutable_protocol_config()->set_response_body_mode(BodyMode::NONE);
  extproc::appendFrame(out, m);
  for (size_t off = 0; off < body.size(); off += kBodyChunk) {
    pb::ProcessingRequest chunk;
    chunk.mutable_request_body()->set_body(std::string(body.substr(off, kBodyChunk)));
    chunk.mutable_request_body()->set_end_of_stream(off + kBodyChunk >= body.size());
    extproc::appendFrame(out, chunk);
  }
  return out;
}

// The next message from the picker, or false with the reason (a gRPC status, a broken
// stream, an undecodable message, the deadline).
awaitable<bool> readMessage(PickerCall& call, pb::ProcessingResponse& m, std::string& error) {
  std::array<char, 16384> buf;
  while (true) {
    std::string_view bytes;
    const auto next = call.deframer->next(bytes, error);
    if (next == extproc::Deframer::Next::kError) {
      co_return false;
    }
    if (next == extproc::Deframer::Next::kMessage) {
      if (!m.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
        error = "the picker sent a message that is not a ProcessingResponse";
        co_return false;
      }
      co_return true;
    }
    error_code ec;
    const size_t n = co_await call.stream->read(buf.data(), buf.size(), ec);
    if (ec) {
      error = ec == asio::error::timed_out
                  ? std::string("the picker did not answer in time")
                  : fmt::format("the picker's stream failed: {}", ec.message());
      co_return false;
    }
    if (n == 0) {
      const std::string_view status = call.stream->trailer("grpc-status");
      error = status.empty() || status == "0"
                  ? std::string("the picker ended the stream without an answer")
                  : fmt::format("the picker failed: grpc-status {} {}", status,
                                call.stream->trailer("grpc-message"));
      co_return false;
    }
    call.deframer->feed(std::string_view(buf.data(), n));
  }
}

// Applies a picker's request header mutation to the request; the destination is collected.
void applyRequestMutation(Exchange& x, const pb::HeaderMutation& m, PickerAnswer& out) {
  for (const auto& opt : m.set_headers()) {
    const std::string name = base::toLower(opt.header().key());
    const std::string_view value = extproc::headerValue(opt.header());
    if (name == extproc::kDestinationHeader) {
      out.destinations = base::splitList(value);
      continue;
    }
    if (name.empty() || name[0] == ':' || name == "host" || name == "content-length") {
      continue;  // what the router owns: the target, the authority, the framing
    }
    const auto action = opt.append_action();
    const bool exists = x.req.find(name) != x.req.end();
    if (action == HeaderOption::ADD_IF_ABSENT && exists) {
      continue;
    }
    if (action == HeaderOption::OVERWRITE_IF_EXISTS && !exists) {
      continue;
    }
    if (action == HeaderOption::APPEND_IF_EXISTS_OR_ADD) {
      x.req.insert(name, value);
    } else {
      x.req.set(name, value);
    }
  }
  for (const auto& name : m.remove_headers()) {
    if (!name.empty() && name[0] != ':' && !base::iequals(name, "host")) {
      x.req.erase(name);
    }
  }
}

// The body of the request as the picker gives it back: streamed chunks up to end_of_stream, or
// a whole body, or (no mutation) the client's.
awaitable<bool> readBody(PickerCall& call, const pb::CommonResponse* first, size_t chunks,
                         PickerAnswer& out, std::string& error) {
  std::string body;
  const pb::CommonResponse* common = first;
  pb::ProcessingResponse m;
  bool streamed = false;
  while (true) {
    if (common != nullptr && common->has_body_mutation()) {
      const auto& bm = common->body_mutation();
      if (bm.has_streamed_response()) {
        streamed = true;
        body += bm.streamed_response().body();
        if (bm.streamed_response().end_of_stream()) {
          out.body = std::move(body);
          co_return true;
        }
      } else {
        out.body = bm.has_body() ? bm.body() : std::string();  // replaced, or cleared
        co_return true;
      }
    } else if (common != nullptr && !streamed && (chunks <= 1)) {
      co_return true;  // CONTINUE without a body mutation: the body goes as it is
    } else if (common != nullptr && !streamed) {
      --chunks;  // one such answer per chunk sent
    }
    if (!co_await readMessage(call, m, error)) {
      co_return false;
    }
    if (!m.has_request_body()) {
      error = "the picker answered out of order while sending the body back";
      co_return false;
    }
    common = &m.request_body().response();
  }
}

}  // namespace

bool pickerMaySet(std::string_view name, std::string_view value) {
  static constexpr std::string_view kTokenChars = "!#$%&'*+-.^_`|~";
  if (name.empty() || name.size() > 256) {
    return false;
  }
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) &&
        kTokenChars.find(c) == std::string_view::npos) {
      return false;
    }
  }
  if (value.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos) {
    return false;
  }
  return !http::isHopByHop(name) && !base::iequals(name, "content-length") &&
         !base::iequals(name, "transfer-encoding") && !base::iequals(name, "x-request-id");
}

PickerCall::~PickerCall() {
  if (stream) {
    // The end of our side tells the picker the request is complete (its load is released);
    // a stream the picker failed is reset instead.
    if (healthy) {
      stream->endBody();
    } else {
      stream->cancel();
    }
  }
}

awaitable<void> askPicker(Exchange& x, const router::Backend& pool, PickerCall& call,
                          PickerAnswer& out) {
  Worker& w = x.session.worker;
  const auto& cfg = x.gen->snapshot->config;
  const router::Backend& picker = x.gen->snapshot->current(*pool.picker);
  if (picker.endpoints.empty()) {
    out.error = fmt::format("the endpoint picker Service {} has no ready endpoint", picker.name);
    co_return;
  }
  const router::Endpoint& ep = picker.endpoints[w.random().uniform(picker.endpoints.size())];
  call.picker = ep.address;
  bool reused = false;
  error_code ec;
  asio::ssl::context* tls = pool.picker_tls ? &w.pickerTls() : nullptr;
  auto conn =
      co_await w.h2Pool().acquire(ep, cfg.timeouts.upstream_connect, false, reused, ec, tls);
  if (!conn) {
    out.error = fmt::format("the endpoint picker {} cannot be reached: {}", ep.address,
                            ec ? ec.message() : "no connection");
    co_return;
  }
  call.frames = requestPhase(x);
  const std::vector<backends::H2Connection::Header> headers = {{"content-type", "application/grpc"},
                                                               {"te", "trailers"}};
  call.stream = conn->submit("POST", ep.address, kExtProcPath, headers, {call.frames},
                             call.frames.size(), true);
  if (!call.stream) {
    out.error = fmt::format("the endpoint picker {} refused the stream", ep.address);
    co_return;
  }
  call.healthy = false;  // until it answers
  call.deframer = std::make_unique<extproc::Deframer>(kMaxMessage);
  co_await call.stream->waitHead(cfg.timeouts.endpoint_picker, ec);
  if (ec || call.stream->head().result_int() != 200) {
    out.error = ec ? fmt::format("the endpoint picker {}: {}", ep.address, ec.message())
                   : fmt::format("the endpoint picker {} answered HTTP {}", ep.address,
                                 call.stream->head().result_int());
    co_return;
  }
  pb::ProcessingResponse m;
  if (!co_await readMessage(call, m, out.error)) {
    co_return;
  }
  if (m.has_immediate_response()) {
    const auto& imm = m.immediate_response();
    out.kind = PickerAnswer::Kind::kImmediate;
    call.healthy = true;  // the picker ended the exchange; our side just closes
    out.status =
        imm.status().code() >= 200 && imm.status().code() <= 599 ? imm.status().code() : 500;
    out.immediate_body = imm.body();
    for (const auto& opt : imm.headers().set_headers()) {
      const std::string_view value = extproc::headerValue(opt.header());
      if (pickerMaySet(opt.header().key(), value)) {
        out.immediate_headers.emplace_back(opt.header().key(), value);
      }
    }
    co_return;
  }
  const pb::CommonResponse* common = nullptr;
  if (m.has_request_headers()) {
    common = &m.request_headers().response();
  } else if (m.has_request_body()) {
    common = &m.request_body().response();
  } else {
    out.error = "the picker's first answer is neither for the headers nor the body";
    co_return;
  }
  applyRequestMutation(x, common->header_mutation(), out);
  if (out.destinations.empty()) {
    // The header is what the gateway routes by; the metadata carries the same list.
    const auto& f = m.dynamic_metadata().fields();
    if (auto lb = f.find(std::string(extproc::kLbNamespace)); lb != f.end()) {
      const auto& inner = lb->second.struct_value().fields();
      if (auto d = inner.find(std::string(extproc::kDestinationHeader)); d != inner.end()) {
        out.destinations = base::splitList(d->second.string_value());
      }
    }
  }
  if (!x.req.body().view().empty() && m.has_request_headers()) {
    const pb::CommonResponse* first = common->has_body_mutation() ? common : nullptr;
    const size_t chunks = (x.req.body().view().size() + kBodyChunk - 1) / kBodyChunk;
    if (!co_await readBody(call, first, chunks, out, out.error)) {
      co_return;
    }
  } else if (common->has_body_mutation() && common->body_mutation().has_body()) {
    out.body = common->body_mutation().body();
  }
  if (out.destinations.empty()) {
    out.error = "the picker named no destination";
    co_return;
  }
  call.healthy = true;
  out.kind = PickerAnswer::Kind::kFollow;
}

awaitable<void> reportServed(Exchange& x, PickerCall& call, const bhttp::response_header<>& head,
                             std::string_view served) {
  if (!call.stream || !call.healthy || call.response_reported) {
    co_return;
  }
  call.response_reported = true;
  pb::ProcessingRequest m;
  auto* headers = m.mutable_response_headers();
  auto& map = *headers->mutable_headers();
  addHeader(map, ":status", std::to_string(head.result_int()));
  for (const auto& f : head) {
    addHeader(map, f.name_string(), f.value());
  }
  auto& lb = (*m.mutable_metadata_context()
                   ->mutable_filter_metadata())[std::string(extproc::kLbNamespace)];
  (*lb.mutable_fields())[std::string(extproc::kServedKey)].set_string_value(std::string(served));
  std::string frame;
  extproc::appendFrame(frame, m);
  call.stream->write(std::move(frame));
  call.stream->expire(x.gen->snapshot->config.timeouts.endpoint_picker);
  pb::ProcessingResponse answer;
  std::string error;
  if (!co_await readMessage(call, answer, error) || !answer.has_response_headers()) {
    call.healthy = false;
    SLUICE_LOG(Debug, "picker", "{}: the response phase got no answer: {}", call.picker,
               error.empty() ? "an answer of another kind" : error);
    co_return;
  }
  const auto& mut = answer.response_headers().response().header_mutation();
  for (const auto& opt : mut.set_headers()) {
    const std::string& name = opt.header().key();
    const std::string_view value = extproc::headerValue(opt.header());
    if (!pickerMaySet(name, value)) {
      continue;
    }
    const bool exists = head.find(name) != head.end();
    switch (opt.append_action()) {
      case HeaderOption::ADD_IF_ABSENT:
        if (!exists) {
          call.response_mutation.add.emplace_back(name, value);
        }
        break;
      case HeaderOption::OVERWRITE_IF_EXISTS:
        if (exists) {
          call.response_mutation.set.emplace_back(name, value);
        }
        break;
      case HeaderOption::OVERWRITE_IF_EXISTS_OR_ADD:
        call.response_mutation.set.emplace_back(name, value);
        break;
      default:  // APPEND_IF_EXISTS_OR_ADD
        call.response_mutation.add.emplace_back(name, value);
        break;
    }
  }
  for (const auto& name : mut.remove_headers()) {
    if (pickerMaySet(name, "")) {
      call.response_mutation.remove.push_back(name);
    }
  }
}

}  // namespace sluice::server
