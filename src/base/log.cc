#include "base/log.h"

#include <atomic>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace sluice::base {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::Info)};

spdlog::logger& logger() {
  // stderr keeps stdout free for the access log when it is configured there.
  static auto instance = spdlog::stderr_logger_mt("sluice");
  return *instance;
}

spdlog::level::level_enum toSpd(LogLevel level) {
  switch (level) {
    case LogLevel::Trace:
      return spdlog::level::trace;
    case LogLevel::Debug:
      return spdlog::level::debug;
    case LogLevel::Info:
      return spdlog::level::info;
    case LogLevel::Warn:
      return spdlog::level::warn;
    case LogLevel::Error:
      return spdlog::level::err;
  }
  return spdlog::level::info;
}

}  // namespace

bool logEnabled(LogLevel level) {
  return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed);
}

void setLogLevel(LogLevel level) {
  g_level.store(static_cast<int>(level), std::memory_order_relaxed);
  logger().set_level(toSpd(level));
}

bool parseLogLevel(std::string_view text, LogLevel& out) {
  static constexpr std::pair<std::string_view, LogLevel> kNames[] = {{"trace", LogLevel::Trace},
                                                                     {"debug", LogLevel::Debug},
                                                                     {"info", LogLevel::Info},
                                                                     {"warn", LogLevel::Warn},
                                                                     {"error", LogLevel::Error}};
  for (const auto& [name, level] : kNames) {
    if (name == text) {
      out = level;
      return true;
    }
  }
  return false;
}

void logMessage(LogLevel level, std::string_view component, std::string_view message) {
  logger().log(toSpd(level), "[{}] {}", component, message);
}

}  // namespace sluice::base
