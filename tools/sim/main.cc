// sluice-sim: serves one or more simulated OpenAI-compatible engines from one process.
#include <charconv>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <boost/asio/signal_set.hpp>
#include <fmt/core.h>

#include "base/asio.h"
#include "base/strings.h"
#include "sim/sim_server.h"

namespace {

constexpr const char* kUsage = R"(usage: sluice-sim [options]
Serving:
  --replicas N                 engines to run (default 1)
  --address A                  first engine address (default 127.0.0.1); engine i listens on A+i
                               (127.0.0.11, .12, ...) so each has its own address
  --port P                     port for every engine (default 8000; 0 = a free port each)
  --model NAME[,ALIAS...]      served model name(s) (default sim-model)
  --engine vllm|vllm-v0|sglang metric names to expose (default vllm)
  --max-tokens N               output tokens when a request sets none (default 16)
  --time-scale X               run model time X times faster than real time (default 1)
  --seed N                     random faults are drawn from this seed (default 1)
  --ready-file PATH            write one "address:port" line per engine once listening
Engine (defaults: an 8B model on one H100, vLLM v1):
  --max-num-seqs N             running sequences (256)
  --max-num-batched-tokens N   per-step token budget shared by prefill chunks and decodes (8192)
  --block-size N               tokens per KV block (16)
  --num-gpu-blocks N           KV blocks (16384)
  --max-model-len N            prompt + output limit (32768)
  --step-overhead-ms X         fixed cost of a step (5)
  --prefill-ms-per-token X     per prompt token computed in a step (0.06)
  --decode-ms-per-seq X        per sequence decoded in a step (0.04)
  --lora-adapters A,B,...      adapters this engine serves
  --max-loras N                adapter slots (4)
  --lora-load-ms X             adapter load time (30)
Faults (also switchable at run time with POST /admin):
  --error-rate X --error-status 429|500|503   fail this share of requests at once
  --error-types 429,500,503                    ...with a status drawn from this list
  --stall-rate X --stall-ms X                  pause this share of streams once mid-stream
  --disconnect-rate X                          cut this share of streams mid-way
  --startup-delay-ms X                         answer 503 (and /health 503) until then
)";

}  // namespace

int main(int argc, char** argv) {
  using namespace sluice;
  int replicas = 1;
  std::string address = "127.0.0.1";
  uint16_t port = 8000;
  std::string ready_file;
  sim::SimOptions options;
  double error_rate = 0, stall_rate = 0, stall_ms = 0, disconnect_rate = 0, startup_ms = 0;
  int error_status = 503;
  int error_types = 0;

  auto& e = options.engine;
  // Flags taking a number: name -> (max, setter).
  using Setter = std::function<void(double)>;
  const std::map<std::string_view, std::pair<double, Setter>> numeric = {
      {"--replicas", {1000, [&](double v) { replicas = static_cast<int>(v); }}},
      {"--port", {65535, [&](double v) { port = static_cast<uint16_t>(v); }}},
      {"--max-tokens",
       {1e6, [&](double v) { options.default_max_tokens = static_cast<uint32_t>(v); }}},
      {"--time-scale", {1e4, [&](double v) { options.time_scale = v; }}},
      {"--seed", {1e18, [&](double v) { options.seed = static_cast<uint64_t>(v); }}},
      {"--max-num-seqs", {1e5, [&](double v) { e.max_num_seqs = static_cast<uint32_t>(v); }}},
      {"--max-num-batched-tokens",
       {1e7, [&](double v) { e.max_num_batched_tokens = static_cast<uint32_t>(v); }}},
      {"--block-size", {4096, [&](double v) { e.block_size = static_cast<uint32_t>(v); }}},
      {"--num-gpu-blocks", {1e8, [&](double v) { e.num_gpu_blocks = static_cast<uint32_t>(v); }}},
      {"--max-model-len", {1e8, [&](double v) { e.max_model_len = static_cast<uint32_t>(v); }}},
      {"--step-overhead-ms", {1e6, [&](double v) { e.step_overhead_ms = v; }}},
      {"--prefill-ms-per-token", {1e3, [&](double v) { e.prefill_ms_per_token = v; }}},
      {"--decode-ms-per-seq", {1e3, [&](double v) { e.decode_ms_per_seq = v; }}},
      {"--max-loras", {1024, [&](double v) { e.max_loras = static_cast<uint32_t>(v); }}},
      {"--lora-load-ms", {1e7, [&](double v) { e.lora_load_ms = v; }}},
      {"--error-rate", {1, [&](double v) { error_rate = v; }}},
      {"--error-status", {599, [&](double v) { error_status = static_cast<int>(v); }}},
      {"--stall-rate", {1, [&](double v) { stall_rate = v; }}},
      {"--stall-ms", {1e7, [&](double v) { stall_ms = v; }}},
      {"--disconnect-rate", {1, [&](double v) { disconnect_rate = v; }}},
      {"--startup-delay-ms", {1e8, [&](double v) { startup_ms = v; }}},
  };
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
    if (auto it = numeric.find(arg); it != numeric.end()) {
      double d = 0;
      auto [ptr, ec] = std::from_chars(v.data(), v.data() + v.size(), d);
      if (ec != std::errc() || ptr != v.data() + v.size() || d < 0 || d > it->second.first) {
        std::fprintf(stderr, "%s: expected a number in 0..%g, got \"%s\"\n", argv[i - 1],
                     it->second.first, argv[i]);
        return 2;
      }
      it->second.second(d);
    } else if (arg == "--address") {
      address = v;
    } else if (arg == "--model") {
      options.served_names = base::splitList(v);
    } else if (arg == "--engine") {
      bool ok = false;
      options.kind = sim::parseEngineKind(v, ok);
      if (!ok) {
        std::fprintf(stderr, "--engine: expected vllm, vllm-v0 or sglang\n");
        return 2;
      }
    } else if (arg == "--error-types") {
      error_types = sim::parseErrorTypes(v);
      if (error_types < 0) {
        std::fprintf(stderr, "--error-types: a list of 429, 500, 503\n");
        return 2;
      }
    } else if (arg == "--lora-adapters") {
      e.lora_adapters = base::splitList(v);
    } else if (arg == "--ready-file") {
      ready_file = v;
    } else {
      std::fprintf(stderr, "unknown option %s\n%s", argv[i - 1], kUsage);
      return 2;
    }
  }
  if (options.served_names.empty()) {
    std::fprintf(stderr, "--model: at least one name\n");
    return 2;
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
    opts.seed = options.seed + static_cast<uint64_t>(i);
    auto control = std::make_shared<sim::SimControl>();
    control->error_rate = error_rate;
    control->error_status = error_status;
    control->error_types = error_types;
    control->stall_rate = stall_rate;
    control->stall_ms = stall_ms;
    control->disconnect_rate = disconnect_rate;
    control->ready_at_ms = startup_ms;
    auto server = std::make_unique<sim::SimServer>(ioc, opts, control);
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
  std::fprintf(stderr, "sluice-sim: %d engine(s) serving %s\n%s", replicas,
               options.served_names.front().c_str(), ready.c_str());
  asio::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](const error_code&, int) { ioc.stop(); });
  ioc.run();
  return 0;
}
