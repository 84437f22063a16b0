// shuntd's counters in DPDK telemetry: /shunt/stats answers a dictionary of
// groups ({"port": {"rx_packets": N, ...}, "tcp": {...}, ...}) from the loop's
// latest snapshot (daemon/stats_snapshot.hh). Call after rte_eal_init.
#pragma once

#include "daemon/stats_snapshot.hh"

namespace shunt {

void register_telemetry(StatsSnapshot* snapshot);

}  // namespace shunt
