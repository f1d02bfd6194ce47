#include "server/worker.h"

#include <exception>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/socket_base.hpp>

#include "backends/h2_client.h"
#include "backends/provider.h"
#include "base/log.h"
#include "base/strings.h"
#include "extproc/grpc_server.h"
#include "openai/errors.h"
#include "server/client_io.h"
#include "server/epp_service.h"
#include "server/session.h"

namespace sluice::server {

namespace {

void logCoroutineFailure(std::exception_ptr e) {
  if (!e) {
    return;
  }
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    SLUICE_LOG(Error, "worker", "connection ended by an internal error: {}", ex.what());
  } catch (...) {
    SLUICE_LOG(Error, "worker", "connection ended by an unknown internal error");
  }
}

}  // namespace

Worker::Worker(size_t index, ServerContext& ctx, uint64_t seed)
    : index_(index),
      ctx_(ctx),
      ioc_(std::make_unique<asio::io_context>(1)),
      pool_(64, std::chrono::seconds(60)),
      random_(seed),
      shard_(ctx.registry.shard(index)) {}

Worker::~Worker() {
  stop();
  acceptors_.clear();
  pool_.clear();
  provider_pool_.reset();
  if (h2_pool_) {
    h2_pool_->clear();
  }
  // Destroys suspended coroutines (sessions) while the state they refer to is still alive.
  ioc_.reset();
}

error_code Worker::listen(const tcp::endpoint& endpoint, int fd) {
  auto acceptor = std::make_shared<tcp::acceptor>(*ioc_);
  error_code ec;
  acceptor->assign(endpoint.protocol(), fd, ec);
  if (ec) {
    ::close(fd);
    return ec;
  }
  acceptors_[endpoint] = std::move(acceptor);
  return {};
}

uint16_t Worker::localPort() const {
  return acceptors_.empty() ? 0 : acceptors_.begin()->first.port();
}

void Worker::setListeners(std::vector<std::pair<tcp::endpoint, int>> listeners) {
  asio::post(*ioc_, [this, l = std::move(listeners)] { reconcileListeners(l); });
}

void Worker::reconcileListeners(const std::vector<std::pair<tcp::endpoint, int>>& listeners) {
  if (!accepting_) {
    for (const auto& [ep, fd] : listeners) {
      if (fd >= 0) {
        ::close(fd);
      }
    }
    return;
  }
  std::map<tcp::endpoint, int> wanted(listeners.begin(), listeners.end());
  for (auto it = acceptors_.begin(); it != acceptors_.end();) {
    if (wanted.count(it->first) == 0) {
      error_code ec;
      it->second->close(ec);
      SLUICE_LOG(Info, "worker", "worker {} closed listener {}:{}", index_,
                 it->first.address().to_string(), it->first.port());
      it = acceptors_.erase(it);
    } else {
      ++it;
    }
  }
  for (const auto& [ep, fd] : wanted) {
    if (fd < 0 || acceptors_.count(ep) > 0) {
      if (fd >= 0) {
        ::close(fd);
      }
      continue;
    }
    if (auto ec = listen(ep, fd)) {
      SLUICE_LOG(Error, "worker", "worker {} cannot accept on {}:{}: {}", index_,
                 ep.address().to_string(), ep.port(), ec.message());
      continue;
    }
    asio::co_spawn(*ioc_, acceptLoop(acceptors_[ep], ep.port()), logCoroutineFailure);
  }
}

backends::H2Pool& Worker::h2Pool() {
  if (!h2_pool_) {
    h2_pool_ = std::make_unique<backends::H2Pool>(gen_->snapshot->config.upstream.idle_timeout);
  }
  return *h2_pool_;
}

asio::ssl::context& Worker::pickerTls() {
  if (!picker_tls_) {
    picker_tls_ = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
    picker_tls_->set_options(asio::ssl::context::default_workarounds |
                             asio::ssl::context::no_sslv2 | asio::ssl::context::no_sslv3);
    picker_tls_->set_verify_mode(asio::ssl::verify_none);
  }
  return *picker_tls_;
}

backends::ProviderPool& Worker::providerPool() {
  if (!provider_pool_) {
    const auto& u = gen_->snapshot->config.upstream;
    provider_pool_ =
        std::make_unique<backends::ProviderPool>(u.max_idle_per_endpoint, u.idle_timeout);
    provider_pool_->configure(u.max_idle_per_endpoint, u.idle_timeout, u.ca_file);
  }
  return *provider_pool_;
}

void Worker::start() {
  if (gen_) {
    pool_.configure(gen_->snapshot->config.upstream.max_idle_per_endpoint,
                    gen_->snapshot->config.upstream.idle_timeout);
  }
  for (const auto& [endpoint, acceptor] : acceptors_) {
    asio::co_spawn(*ioc_, acceptLoop(acceptor, endpoint.port()), logCoroutineFailure);
  }
  thread_ = std::thread([this] {
    auto guard = asio::make_work_guard(*ioc_);
    ioc_->run();
  });
}

void Worker::publish(GenerationPtr gen) {
  if (!thread_.joinable()) {
    gen_ = std::move(gen);
    return;
  }
  asio::post(*ioc_, [this, g = std::move(gen)]() mutable {
    const auto& u = g->snapshot->config.upstream;
    pool_.configure(u.max_idle_per_endpoint, u.idle_timeout);
    if (provider_pool_) {
      provider_pool_->configure(u.max_idle_per_endpoint, u.idle_timeout, u.ca_file);
    }
    if (h2_pool_) {
      h2_pool_->configure(u.idle_timeout);
    }
    gen_ = std::move(g);
  });
}

void Worker::publishMetrics(backends::MetricsViewPtr view) {
  asio::post(*ioc_, [this, view = std::move(view)]() mutable { metrics_view_ = std::move(view); });
}

void Worker::stopAccepting() {
  asio::post(*ioc_, [this] {
    error_code ec;
    accepting_ = false;
    for (auto& [_, acceptor] : acceptors_) {
      acceptor->close(ec);
    }
    for (Session* s : sessions_) {
      if (s->grpc != nullptr) {
        s->grpc->shutdown();  // GOAWAY: the open calls finish, new ones go elsewhere
      } else if (s->idle) {
        s->stream.socket().close(ec);
      }
    }
    pool_.clear();
    if (provider_pool_) {
      provider_pool_->clear();
    }
    if (h2_pool_) {
      h2_pool_->clear();
    }
  });
}

void Worker::cutExchanges(std::atomic<uint64_t>& cut) {
  asio::post(*ioc_, [this, &cut] {
    std::vector<Session*> grpc;
    for (Session* s : sessions_) {
      if (s->grpc != nullptr && s->grpc->openCalls() > 0) {
        grpc.push_back(s);  // closed below: closing ends the session and edits the set
      } else if (s->watch != nullptr && !s->cut_by_shutdown) {
        cutForShutdown(*s);
        cut.fetch_add(1, std::memory_order_relaxed);
      }
    }
    for (Session* s : grpc) {
      cut.fetch_add(s->grpc->openCalls(), std::memory_order_relaxed);
      s->grpc->close();  // the gateway sees the streams fail and applies its failure mode
    }
  });
}

void Worker::stop() {
  if (thread_.joinable()) {
    ioc_->stop();
    thread_.join();
  }
}

void Worker::recordDecision(std::string_view request_id, std::string_view model,
                            scheduler::Decision&& decision, size_t keep) {
  std::lock_guard<std::mutex> lock(decisions_mu_);
  decisions_.push_back({std::string(request_id), std::string(model), std::move(decision)});
  while (decisions_.size() > keep) {
    decisions_.pop_front();
  }
}

void Worker::appendDecisionsJson(std::string& out, bool& first) const {
  std::lock_guard<std::mutex> lock(decisions_mu_);
  for (const auto& d : decisions_) {
    out += first ? "" : ",";
    first = false;
    // The request id may be the client's x-request-id: quoted, like every string here.
    out += "{\"worker\":" + std::to_string(index_) +
           ",\"request_id\":" + base::jsonQuote(d.request_id) +
           ",\"model\":" + base::jsonQuote(d.model) +
           ",\"decision\":" + scheduler::decisionJson(d.decision) + "}";
  }
}

std::unique_ptr<char[]> Worker::takeRelayBuffer() {
  if (relay_pool_.empty()) {
    return std::unique_ptr<char[]>(new char[kRelayBytes]);  // uninitialised on purpose
  }
  auto buf = std::move(relay_pool_.back());
  relay_pool_.pop_back();
  return buf;
}

void Worker::returnRelayBuffer(std::unique_ptr<char[]> buf) {
  constexpr size_t kMaxPooled = 256;  // bounds the pool at 4 MiB per worker
  if (buf && relay_pool_.size() < kMaxPooled) {
    relay_pool_.push_back(std::move(buf));
  }
}

awaitable<void> Worker::acceptLoop(std::shared_ptr<tcp::acceptor> acceptor, uint16_t port) {
  while (acceptor->is_open()) {
    error_code ec;
    tcp::socket socket = co_await acceptor->async_accept(asio::redirect_error(use_awaitable, ec));
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor->is_open()) {
        break;
      }
      // Out of descriptors or a transient error: back off briefly instead of spinning.
      SLUICE_LOG(Warn, "worker", "accept failed: {}", ec.message());
      SteadyTimer backoff(*ioc_, std::chrono::milliseconds(10));
      co_await backoff.async_wait(asio::redirect_error(use_awaitable, ec));
      continue;
    }
    const auto max = static_cast<int64_t>(gen_->snapshot->config.limits.max_connections);
    if (ctx_.connections.fetch_add(1, std::memory_order_relaxed) >= max) {
      ctx_.connections.fetch_sub(1, std::memory_order_relaxed);
      shard_.connections_rejected.fetch_add(1, std::memory_order_relaxed);
      // Best effort, never blocking: tell the client why, then close.
      std::string body = openai::errorBody(openai::ErrorKind::Unavailable,
                                           "the router is at its connection limit");
      std::string msg =
          "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
          "Connection: close\r\nContent-Length: " +
          std::to_string(body.size()) + "\r\n\r\n" + body;
      socket.non_blocking(true, ec);
      socket.write_some(asio::buffer(msg), ec);
      socket.close(ec);
      continue;
    }
    if (gen_->snapshot->config.epp.enabled) {
      asio::co_spawn(*ioc_, runGrpcSession(*this, std::move(socket), port), logCoroutineFailure);
    } else {
      asio::co_spawn(*ioc_, runSession(*this, std::move(socket), port), logCoroutineFailure);
    }
  }
}

}  // namespace sluice::server
