// Daemon logging to stderr with a level from SHUNT_LOG.
#pragma once

#include <cstdio>

namespace shunt {

inline int g_log_level = 1;  // 0 error, 1 info, 2 debug

template <typename... Args>
void log_at(int level, const char* fmt, Args... args) {
  if (level > g_log_level) return;
  std::fprintf(stderr, "shuntd: ");
  if constexpr (sizeof...(Args) == 0) std::fputs(fmt, stderr);
  else std::fprintf(stderr, fmt, args...);
  std::fputc('\n', stderr);
}
template <typename... Args>
void log_error(const char* fmt, Args... args) { log_at(0, fmt, args...); }
template <typename... Args>
void log_info(const char* fmt, Args... args) { log_at(1, fmt, args...); }
template <typename... Args>
void log_debug(const char* fmt, Args... args) { log_at(2, fmt, args...); }

}  // namespace shunt
