// sluice-sim: serves one or more simulated OpenAI-compatible engines from one process.
#include <arpa/inet.h>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <boost/asio/signal_set.hpp>
#include <fmt/core.h>

#include "base/asio.h"
#include "base/strings.h"
#include "sim/sim_server.h"

namespace {

constexpr const char* kUsage = R"(usage: sluice-sim [options]
  --replicas N          engines to run (default 1)
  --address A           first engine address (default 127.0.0.1); with --replicas > 1 and a
                        127.x address, engine i listens on A+i (127.0.0.11, .12, ...)
  --port P              port for every engine (default 8000; 0 = pick free ports)
  --model NAME          served model name (default sim-model)
  --max-tokens N        output tokens when the request sets none (default 16)
  --ttft-ms MS          delay before the first token (default 0)
  --itl-ms MS           delay between tokens (default 0)
  --ready-file PATH     write one "address:port" line per engine once listening
)";

}  // namespace

int main(int argc, char** argv) {
  using namespace sluice;
  int replicas = 1;
  std::string address = "127.0.0.1";
  uint16_t port = 8000;
  std::string ready_file;
  sim::SimOptions options;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "%s needs a value\n%s", argv[i], kUsage);
      return 2;
    }
    std::string_view v = argv[++i];
    auto number = [&](uint64_t max) -> std::optional<uint64_t> {
      auto n = base::parseUint(v);
      if (!n || *n > max) {
        std::fprintf(stderr, "%s: expected a number up to %llu\n", argv[i - 1],
                     static_cast<unsigned long long>(max));
        return std::nullopt;
      }
      return n;
    };
    std::optional<uint64_t> n;
    if (arg == "--replicas") {
      if (!(n = number(1000)))
        return 2;
      replicas = static_cast<int>(*n);
    } else if (arg == "--address") {
      address = v;
    } else if (arg == "--port") {
      if (!(n = number(65535)))
        return 2;
      port = static_cast<uint16_t>(*n);
    } else if (arg == "--model") {
      options.model = v;
    } else if (arg == "--max-tokens") {
      if (!(n = number(1'000'000)))
        return 2;
      options.default_max_tokens = static_cast<uint32_t>(*n);
    } else if (arg == "--ttft-ms") {
      if (!(n = number(3'600'000)))
        return 2;
      options.ttft = std::chrono::milliseconds(*n);
    } else if (arg == "--itl-ms") {
      if (!(n = number(3'600'000)))
        return 2;
      options.itl = std::chrono::milliseconds(*n);
    } else if (arg == "--ready-file") {
      ready_file = v;
    } else {
      std::fprintf(stderr, "unknown option %s\n%s", argv[i - 1], kUsage);
      return 2;
    }
  }

  asio::io_context ioc(1);
  std::vector<std::unique_ptr<sim::SimServer>> servers;
  std::string ready;
  error_code ec;
  auto base_addr = asio::ip::make_address_v4(address, ec);
  if (ec) {
    std::fprintf(stderr, "--address: not an IPv4 address: %s\n", address.c_str());
    return 2;
  }
  for (int i = 0; i < replicas; ++i) {
    auto addr = asio::ip::address_v4(base_addr.to_uint() + static_cast<uint32_t>(i));
    sim::SimOptions opts = options;
    opts.name = fmt::format("sim-{}", i);
    auto server = std::make_unique<sim::SimServer>(ioc, opts, std::make_shared<sim::SimControl>());
    if (auto err = server->listen(tcp::endpoint(addr, port))) {
      std::fprintf(stderr, "sluice-sim: cannot listen on %s:%u: %s\n", addr.to_string().c_str(),
                   port, err.message().c_str());
      return 1;
    }
    server->start();
    ready += fmt::format("{}:{}\n", addr.to_string(), server->port());
    servers.push_back(std::move(server));
  }
  if (!ready_file.empty()) {
    std::string tmp = ready_file + ".tmp";
    std::ofstream(tmp) << ready;
    std::rename(tmp.c_str(), ready_file.c_str());
  }
  std::fprintf(stderr, "sluice-sim: %d engine(s) serving %s\n%s", replicas, options.model.c_str(),
               ready.c_str());
  asio::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](const error_code&, int) { ioc.stop(); });
  ioc.run();
  return 0;
}
