#include "config.hh"

#include <pthread.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <unistd.h>

#include "log.hh"

#include "shunt/control.h"

namespace shunt::preload {
namespace {

Config g_config;
pthread_once_t g_once = PTHREAD_ONCE_INIT;

void load() {
  const char* v = getenv("SHUNT_DISABLE");
  g_config.disabled = v != nullptr && v[0] != '\0' && strcmp(v, "0") != 0;
  const char* rundir = getenv("SHUNT_RUNDIR");
  if (rundir == nullptr || rundir[0] == '\0') rundir = ctl::kDefaultRundir;
  int n = snprintf(g_config.socket_path, sizeof g_config.socket_path, "%s/%s", rundir,
                   ctl::kSocketName);
  g_config.path_too_long = n < 0 || size_t(n) >= sizeof g_config.socket_path;
  // Spinning before sleeping saves a wake-up only when a core is free to spin
  // on; with two or fewer, the spinner takes the core the daemon or the peer
  // needs (measured on 2 cores, nginx under wrk: 72k req/s spinning 50 us, 88-95k not).
  g_config.spin_us = sysconf(_SC_NPROCESSORS_ONLN) > 2 ? 50 : 0;
  if (const char* s = getenv("SHUNT_SPIN_US"); s != nullptr && s[0] != '\0') {
    char* end = nullptr;
    unsigned long us = strtoul(s, &end, 10);
    if (end != nullptr && *end == '\0' && us <= 1000000) {
      g_config.spin_us = uint32_t(us);
    } else {
      log_line(false, "SHUNT_SPIN_US=%s: not a number of microseconds (0-1000000); using %u",
               s, g_config.spin_us);
    }
  }
  if (const char* l = getenv("SHUNT_LOG"); l != nullptr && l[0] != '\0') {
    if (strcmp(l, "debug") == 0) g_config.log_level = LogLevel::kDebug;
    else if (strcmp(l, "error") == 0) g_config.log_level = LogLevel::kError;
    else if (strcmp(l, "info") != 0 && strcmp(l, "warn") != 0)
      log_line(false, "SHUNT_LOG=%s: expected error, warn, info or debug; using info", l);
  }
}

}  // namespace

const Config& config() {
  pthread_once(&g_once, load);
  return g_config;
}

}  // namespace shunt::preload
