#pragma once

#include <string_view>

#include <fmt/core.h>

namespace sluice::base {

enum class LogLevel { Trace, Debug, Info, Warn, Error };

void logMessage(LogLevel level, std::string_view component, std::string_view message);
bool logEnabled(LogLevel level);
void setLogLevel(LogLevel level);
// Parses trace|debug|info|warn|error; returns false on anything else.
bool parseLogLevel(std::string_view text, LogLevel& out);

}  // namespace sluice::base

// Formatting happens only when the level is enabled.
#define SLUICE_LOG(level, component, ...)                                    \
  do {                                                                       \
    if (::sluice::base::logEnabled(::sluice::base::LogLevel::level)) {       \
      ::sluice::base::logMessage(::sluice::base::LogLevel::level, component, \
                                 ::fmt::format(__VA_ARGS__));                \
    }                                                                        \
  } while (0)
