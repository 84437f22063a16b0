// stderr logging that never disturbs errno  and never allocates.
#pragma once

#include "config.hh"

namespace shunt::preload {

bool log_enabled(LogLevel level);
// One line on stderr: "shunt: ..." (warnings) or "shunt[pid]: ..." (debug).
void log_line(bool with_pid, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace shunt::preload

#define SHUNT_LOG_AT(level, ...)                                                          \
  do {                                                                                    \
    if (::shunt::preload::log_enabled(level))                                             \
      ::shunt::preload::log_line(level == ::shunt::preload::LogLevel::kDebug, __VA_ARGS__); \
  } while (0)
#define SHUNT_DEBUG(...) SHUNT_LOG_AT(::shunt::preload::LogLevel::kDebug, __VA_ARGS__)
#define SHUNT_WARN(...) SHUNT_LOG_AT(::shunt::preload::LogLevel::kWarn, __VA_ARGS__)
