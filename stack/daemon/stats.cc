// shunt stat: every counter of the port, the engine, the daemon and each
// application as "group.name value" lines, from the X-macro tables where they are
// declared. The shunt tool groups them and hides zeros (tools/shunt.cc).
#include <unistd.h>

#include <sstream>

#include "daemon/daemon.hh"

namespace shunt {

std::string Daemon::stats_text() {
  std::ostringstream o;
  auto line = [&](const char* name, uint64_t v) { o << name << ' ' << v << '\n'; };
  o << "port.driver " << port_.driver() << '\n';
  PortStats p = port_.stats();
#define SHUNT_X(field, name) line(name, p.field);
  SHUNT_PORT_COUNTERS(SHUNT_X)
#undef SHUNT_X
  for (auto [dir, f] : {std::pair{"rx", &p.rx_fault}, std::pair{"tx", &p.tx_fault}}) {
#define SHUNT_X(field, name) o << "fault." << dir << '_' << name << ' ' << f->field << '\n';
    SHUNT_FAULT_COUNTERS(SHUNT_X)
#undef SHUNT_X
  }
  const EngineCounters& e = engine_.counters();
#define SHUNT_X(field, name) line(name, e.field);
  SHUNT_ENGINE_COUNTERS(SHUNT_X)
#undef SHUNT_X
  line("tcp.live_connections", engine_.live_connections());
  const UdpCounters& u = engine_.udp().counters;
#define SHUNT_X(field, name) line(name, u.field);
  SHUNT_UDP_COUNTERS(SHUNT_X)
#undef SHUNT_X
  line("udp.sockets", engine_.udp().live());
  for (size_t i = 1; i < size_t(Drop::kCount); ++i)
    o << "drop." << drop_name(static_cast<Drop>(i)) << ' ' << e.drops[i] << '\n';
#define SHUNT_X(field, name) line(name, ctr_.field);
  SHUNT_DAEMON_COUNTERS(SHUNT_X)
#undef SHUNT_X
  for (size_t i = 1; i < size_t(Violation::kCount); ++i)
    o << "violation." << violation_name(Violation(i)) << ' ' << violations_[i] << '\n';
  // Gauges of what is held: after applications go, these come back down.
  uint32_t slots = 0, zombies = 0;
  for (uint32_t id = 0; id < apps_.capacity(); ++id) {
    const App& a = apps_.app(id);
    if (!a.in_use) continue;
    slots += a.used_slots;
    zombies += a.zombies;
  }
  line("apps.active", apps_.active().size());
  line("apps.regions", apps_.regions_in_use());
  line("daemon.sockets", sockets_.live());
  line("daemon.slots", slots);
  line("daemon.zombie_slots", zombies);
  line("daemon.uptime_s", (now_us() - started_at_) / kSecond);
  line("daemon.pid", uint64_t(getpid()));
  // One block per attached application, by pid.
  for (uint32_t id : apps_.active()) {
    const App& a = apps_.app(id);
    std::string key = "app." + std::to_string(a.cred.pid) + '.';
    o << key << "comm " << a.comm << '\n';
    o << key << "uid " << a.cred.uid << '\n';
    o << key << "region " << id << '\n';
    o << key << "sockets " << a.used_slots - a.zombies << '\n';
    o << key << "closing " << a.zombies << '\n';
    o << key << "commands " << a.commands << '\n';
  }
  return o.str();
}

}  // namespace shunt
