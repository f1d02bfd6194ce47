#include "server/epp_service.h"

#include <chrono>

#include <boost/asio/ssl/error.hpp>

#include "base/log.h"
#include "extproc/grpc_server.h"
#include "grpc/health/v1/health.pb.h"
#include "server/epp_pick.h"
#include "server/epp_stream.h"
#include "server/session.h"
#include "server/worker.h"

namespace sluice::server {

namespace health = grpc::health::v1;
using extproc::GrpcStatus;

namespace {

constexpr std::string_view kCheckPath = "/grpc.health.v1.Health/Check";
constexpr std::string_view kWatchPath = "/grpc.health.v1.Health/Watch";
constexpr auto kWatchPoll = std::chrono::milliseconds(250);

// Liveness: the process serves. Readiness (and the ext_proc service): started, synced with its
// source, not draining, and the pool is known.
std::optional<health::HealthCheckResponse::ServingStatus> servingStatus(Worker& w,
                                                                        std::string_view service) {
  using S = health::HealthCheckResponse;
  if (service == "liveness") {
    return S::SERVING;
  }
  if (service.empty() || service == "readiness" || service == kExtProcService) {
    const auto& ready = w.context().ready;
    const bool ok = (!ready || ready()) && servedPool(*w.generation()->snapshot) != nullptr;
    return ok ? S::SERVING : S::NOT_SERVING;
  }
  return std::nullopt;
}

class HealthHandler final : public extproc::CallHandler {
 public:
  HealthHandler(Worker& w, extproc::GrpcCall& call, LiveHandlers& live, bool watch)
      : w_(w), call_(call), live_(live), watch_(watch) {
    ++live_.count;
  }
  ~HealthHandler() override {
    if (--live_.count == 0 && live_.zero) {
      live_.zero->cancel();
    }
  }
  void onMessage(std::string_view bytes) override {
    health::HealthCheckRequest req;
    if (!req.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
      call_.finish(GrpcStatus::kInvalidArgument, "not a HealthCheckRequest");
      return;
    }
    service_ = req.service();
    auto status = servingStatus(w_, service_);
    if (!watch_) {
      if (!status) {
        call_.finish(GrpcStatus::kNotFound, "unknown service " + service_);
        return;
      }
      health::HealthCheckResponse resp;
      resp.set_status(*status);
      call_.send(resp);
      call_.finish(GrpcStatus::kOk);
      return;
    }
    asio::co_spawn(w_.ioContext(), watch(call_.shared_from_this(), this), asio::detached);
  }

 private:
  // Sends the status now and again whenever it changes, until the client goes.
  static awaitable<void> watch(std::shared_ptr<extproc::GrpcCall> keep, HealthHandler* self) {
    SteadyTimer timer(self->w_.ioContext());
    int last = -1;
    while (keep->open()) {
      auto status = servingStatus(self->w_, self->service_);
      const int now = status ? *status : health::HealthCheckResponse::SERVICE_UNKNOWN;
      if (now != last) {
        health::HealthCheckResponse resp;
        resp.set_status(static_cast<health::HealthCheckResponse::ServingStatus>(now));
        keep->send(resp);
        last = now;
      }
      timer.expires_after(kWatchPoll);
      error_code ec;
      co_await timer.async_wait(asio::redirect_error(use_awaitable, ec));
    }
  }

  Worker& w_;
  extproc::GrpcCall& call_;
  LiveHandlers& live_;
  bool watch_;
  std::string service_;
};

}  // namespace

awaitable<void> runGrpcSession(Worker& worker, tcp::socket socket, uint16_t port) {
  Session s(worker, std::move(socket), port);
  const GenerationPtr accepted = worker.generation();
  if (const auto& ctx = worker.context().epp_tls) {
    s.tls = std::make_unique<asio::ssl::stream<TcpStream&>>(s.stream, *ctx);
    s.stream.expires_after(accepted->snapshot->config.timeouts.header_read);
    error_code ec;
    co_await s.tls->async_handshake(asio::ssl::stream_base::server,
                                    asio::redirect_error(use_awaitable, ec));
    s.stream.expires_never();
    if (ec) {
      SLUICE_LOG(Debug, "epp", "TLS handshake from {}: {}", s.client_ip, ec.message());
      co_return;
    }
  }
  LiveHandlers live;
  live.zero = std::make_unique<SteadyTimer>(worker.ioContext());
  auto dispatch = [&s, &live](std::string_view path,
                              extproc::GrpcCall& call) -> std::unique_ptr<extproc::CallHandler> {
    if (path == kExtProcPath) {
      return makeExtProcHandler(s, call, live);
    }
    if (path == kCheckPath || path == kWatchPath) {
      return std::make_unique<HealthHandler>(s.worker, call, live, path == kWatchPath);
    }
    return nullptr;
  };
  auto conn = std::make_shared<extproc::GrpcConnection>(s.stream, s.tls.get(), dispatch,
                                                        extproc::ServerLimits{}, s.client_ip);
  s.grpc = conn.get();
  if (worker.context().draining.load()) {
    conn->shutdown();
  }
  co_await conn->run();
  s.grpc = nullptr;
  // Handlers still waiting (a flow-control queue) see their call cancelled and end soon.
  while (live.count > 0) {
    live.zero->expires_at(SteadyTimer::time_point::max());
    error_code ec;
    co_await live.zero->async_wait(asio::redirect_error(use_awaitable, ec));
  }
}

}  // namespace sluice::server
