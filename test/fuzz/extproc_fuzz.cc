// The endpoint picker's input path: any bytes from a gateway, as HTTP/2 frames carrying gRPC
// messages, through the server connection (nghttp2, framing, call dispatch) into a handler that
// parses each ProcessingRequest as the picker does (headers, metadata keys, body chunks) and
// answers. Nothing may crash, hang or leak, whatever the frames, phases or protobuf bytes.
#include <cstdint>
#include <string>

#include "extproc/grpc_server.h"
#include "extproc/messages.h"

namespace {

using namespace sluice;

class ParsingHandler final : public extproc::CallHandler {
 public:
  explicit ParsingHandler(extproc::GrpcCall& call) : call_(call) {}
  void onMessage(std::string_view bytes) override {
    extproc::pb::ProcessingRequest m;
    if (!m.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
      call_.finish(extproc::GrpcStatus::kInvalidArgument, "not protobuf");
      return;
    }
    bool present = false;
    auto subset =
        extproc::metadataAddresses(m, extproc::kSubsetNamespace, extproc::kSubsetKey, present);
    auto served =
        extproc::metadataAddresses(m, extproc::kLbNamespace, extproc::kServedKey, present);
    size_t seen = subset.size() + served.size();
    for (const auto& h : m.request_headers().headers().headers()) {
      seen += extproc::headerValue(h).size();
    }
    extproc::pb::ProcessingResponse r;
    if (m.has_request_headers()) {
      extproc::setHeader(
          *r.mutable_request_headers()->mutable_response()->mutable_header_mutation(),
          extproc::kDestinationHeader, "10.0.0.1:8000");
      extproc::setDestinationMetadata(r, "10.0.0.1:8000");
    } else if (m.has_request_body()) {
      body_ += m.request_body().body();
      r.mutable_request_body()
          ->mutable_response()
          ->mutable_body_mutation()
          ->mutable_streamed_response()
          ->set_body(body_.substr(0, seen % (body_.size() + 1)));
    } else {
      extproc::setImmediate(r, 503, "{}", "fuzz");
    }
    call_.send(r);
    if (m.request_body().end_of_stream()) {
      call_.finish(extproc::GrpcStatus::kOk);
    }
  }
  void onHalfClose() override { call_.finish(extproc::GrpcStatus::kOk); }

 private:
  extproc::GrpcCall& call_;
  std::string body_;
};

// One loopback connection for the whole run: the connection under test writes its answers to
// it, and the peer end drains them.
struct Loopback {
  asio::io_context ioc;
  tcp::acceptor acceptor{ioc.get_executor(), tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)};
  tcp::socket peer{ioc.get_executor()};
  Loopback() { peer.connect(acceptor.local_endpoint()); }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Loopback* loop = new Loopback();
  error_code ec;
  TcpStream stream(loop->acceptor.accept());
  {
    auto dispatch = [](std::string_view path,
                       extproc::GrpcCall& call) -> std::unique_ptr<extproc::CallHandler> {
      if (path == "/unknown") {
        return nullptr;
      }
      return std::make_unique<ParsingHandler>(call);
    };
    auto conn = std::make_shared<extproc::GrpcConnection>(stream, nullptr, dispatch,
                                                          extproc::ServerLimits{}, "fuzz");
    // Fed in two pieces, so frames split across reads are exercised too.
    const size_t half = size / 2;
    if (conn->receive(data, half)) {
      conn->receive(data + half, size - half);
    }
    conn->close();
    loop->ioc.restart();
    loop->ioc.poll();
  }
  // Drain what was written and start the next input on a fresh connection.
  std::array<char, 65536> sink;
  loop->peer.non_blocking(true, ec);
  while (loop->peer.read_some(asio::buffer(sink), ec) > 0) {
  }
  loop->peer.close(ec);
  loop->peer = tcp::socket(loop->ioc.get_executor());
  loop->peer.connect(loop->acceptor.local_endpoint(), ec);
  return 0;
}
