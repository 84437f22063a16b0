// The counters as "group.name value" lines, refreshed by the loop now and then
// (Daemon::set_stats_snapshot), for readers on other threads: DPDK telemetry in the
// device layer (stack/device/telemetry.hh).
#pragma once

#include <mutex>
#include <string>

namespace shunt {

struct StatsSnapshot {
  std::mutex mu;
  std::string text;
};

}  // namespace shunt
