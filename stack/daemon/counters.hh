// shuntd's own counters (the engine's are in engine/engine.hh, the port's in
// port.hh): X(field, "name in shunt stat"), declared once, printed by a loop.
#pragma once

#include <cstdint>

namespace shunt {

#define SHUNT_DAEMON_COUNTERS(X)                                                  \
  X(apps_attached, "apps.attached")                                               \
  X(apps_detached, "apps.detached")                                               \
  X(apps_refused, "apps.refused")   /* not admitted (SHUNT_ALLOW) */              \
  X(apps_cut_off, "apps.cut_off")   /* broke the shared-memory contract */        \
  X(commands, "daemon.commands")                                                  \
  X(bad_commands, "daemon.bad_commands")  /* unknown op or slot: answered */      \
  X(doorbells_rung, "daemon.doorbells")                                           \
  X(cell_bells_rung, "daemon.cell_bells")                                         \
  X(sleeps, "daemon.sleeps")                                                      \
  X(accepts, "tcp.connections_accepted")                                          \
  X(accepts_handed, "tcp.accepts_handed")   /* accepted ahead of accept() */     \
  X(accepts_requeued, "tcp.accepts_requeued") /* handed, not taken: requeued */  \
  X(connects, "tcp.connections_requested")                                        \
  X(inherits, "daemon.inherits")                                                  \
  X(inherits_refused, "daemon.inherits_refused")                                  \
  X(option_errors, "daemon.option_errors") /* kSetOption without reply failed */  \
  X(captures, "capture.started")

struct DaemonCounters {
#define SHUNT_X(field, name) uint64_t field = 0;
  SHUNT_DAEMON_COUNTERS(SHUNT_X)
#undef SHUNT_X
};

}  // namespace shunt
