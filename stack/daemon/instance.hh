// One shuntd per NIC: a lock file per (network namespace, NIC), held for the
// daemon's life, that names the daemon holding it. (One per run directory is the
// control socket's own check, in Daemon::start.)
#pragma once

#include <string>

namespace shunt {

// What identifies the NIC of a SHUNT_NIC value: the interface of a vdev spec
// (iface=vA), a plain interface name, or the device itself (a PCI address, a
// vdev without an interface).
std::string nic_key(const std::string& nic);

// Takes the lock for `nic` in `lock_dir` (created if missing). False with *error
// naming SHUNT_NIC and the daemon that holds it. The lock lasts as long as the
// process (the descriptor is kept open, close-on-exec).
bool lock_nic(const std::string& nic, const std::string& rundir, const std::string& lock_dir,
              std::string* error);

}  // namespace shunt
