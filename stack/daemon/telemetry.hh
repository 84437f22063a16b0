// shuntd's counters in DPDK telemetry: /shunt/stats answers a dictionary of
// groups ({"port": {"rx_packets": N, ...}, "tcp": {...}, ...}) from the loop's
// latest snapshot (daemon.hh StatsSnapshot). Call after rte_eal_init.
#pragma once

#include "daemon/daemon.hh"

namespace shunt {

void register_telemetry(StatsSnapshot* snapshot);

}  // namespace shunt
