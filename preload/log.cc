#include "log.hh"

#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <algorithm>

#include "libc.hh"

namespace shunt::preload {

bool log_enabled(LogLevel level) { return int(config().log_level) >= int(level); }

void log_line(bool with_pid, const char* fmt, ...) {
  int saved = errno;
  char buf[512];
  int n = with_pid ? snprintf(buf, sizeof buf, "shunt[%d]: ", int(getpid()))
                   : snprintf(buf, sizeof buf, "shunt: ");
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(buf + n, sizeof buf - size_t(n) - 1, fmt, ap);
  va_end(ap);
  size_t len = size_t(n) + (m < 0 ? 0 : std::min(size_t(m), sizeof buf - size_t(n) - 2));
  buf[len++] = '\n';
  ssize_t w = libc().write(STDERR_FILENO, buf, len);
  (void)w;
  errno = saved;
}

}  // namespace shunt::preload
