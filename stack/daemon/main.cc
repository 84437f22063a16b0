// shuntd: one per dedicated NIC. Configuration comes from SHUNT_* variables.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <random>

#include "daemon/config.hh"
#include "daemon/daemon.hh"
#include "device/device.hh"
#include "daemon/instance.hh"
#include "daemon/log.hh"
#include "device/telemetry.hh"

namespace {
shunt::Daemon* g_daemon = nullptr;
void on_signal(int) {
  if (g_daemon) g_daemon->stop();
}
// Where the per-NIC locks live: shared by every run directory on the host.
constexpr const char* kLockDir = "/run/lock/shunt";
}  // namespace

int main() {
  using namespace shunt;
  DaemonConfig cfg;
  std::string error;
  if (!load_config(&cfg, &error)) {
    std::fprintf(stderr, "shuntd: %s\n", error.c_str());
    return 2;
  }
  g_log_level = cfg.log_level;
  if (!lock_nic(cfg.nic, cfg.rundir, kLockDir, &error)) {
    std::fprintf(stderr, "shuntd: %s\n", error.c_str());
    return 1;
  }
  Device dev;
  dev.set_fault(cfg.fault);
  if (!dev.open(cfg.nic, cfg.huge, cfg.eal_extra, &error)) {
    std::fprintf(stderr, "shuntd: %s\n", error.c_str());
    return 1;
  }
  EngineConfig ecfg;
  ecfg.mac = dev.mac();
  ecfg.ip = cfg.ip;
  ecfg.prefix_len = cfg.prefix_len;
  ecfg.gateway = cfg.gateway;
  ecfg.congestion = cfg.congestion;
  ecfg.mtu = dev.mtu();
  ecfg.isn_secret = std::random_device{}() * 0x100000001ull ^ std::random_device{}();
  ecfg.staging_size = std::min<uint32_t>(ecfg.staging_size, cfg.ring_size);
  int rc = 0;
  StatsSnapshot snapshot;  // read by the telemetry thread until rte_eal_cleanup
  {
    Engine engine(ecfg, dev);
    Daemon daemon(cfg, dev, engine);
    if (!daemon.start(&error)) {
      std::fprintf(stderr, "shuntd: %s\n", error.c_str());
      rc = 1;
    } else {
      daemon.set_stats_snapshot(&snapshot);
      register_telemetry(&snapshot);
      g_daemon = &daemon;
      struct sigaction sa {};
      sa.sa_handler = on_signal;
      sigaction(SIGINT, &sa, nullptr);
      sigaction(SIGTERM, &sa, nullptr);
      signal(SIGPIPE, SIG_IGN);
      log_info("serving %s/%u on %s (mac %02x:%02x:%02x:%02x:%02x:%02x, mtu %u), control %s, "
               "telemetry /var/run/dpdk/shuntd%d/dpdk_telemetry.v2",
               format_ipv4(cfg.ip).c_str(), cfg.prefix_len, dev.driver().c_str(), ecfg.mac[0],
               ecfg.mac[1], ecfg.mac[2], ecfg.mac[3], ecfg.mac[4], ecfg.mac[5], ecfg.mtu,
               daemon.socket_path().c_str(), int(getpid()));
      if (cfg.fault.active())
        log_info("SHUNT_FAULT: injecting %s", format_fault_spec(cfg.fault).c_str());
      if (dev.wake_fds().empty() && cfg.mode == PollMode::kAdaptive)
        log_info("the port raises no wake-up: an idle daemon naps (50 us to 1 ms) and polls");
      daemon.run();
      g_daemon = nullptr;
      log_info("stopped");
    }
  }
  dev.close();
  return rc;
}
