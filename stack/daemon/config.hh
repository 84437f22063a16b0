// shuntd configuration from SHUNT_* environment variables, validated at start.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "daemon/access.hh"
#include "daemon/fault.hh"
#include "engine/congestion.hh"

namespace shunt {

enum class PollMode { kBusy, kAdaptive };

struct DaemonConfig {
  std::string nic;            // SHUNT_NIC: DPDK device spec, or a Linux interface name
  uint32_t ip = 0;            // SHUNT_IP (host order)
  uint8_t prefix_len = 24;
  uint32_t gateway = 0;       // SHUNT_GATEWAY (host order), 0 = none
  std::string rundir = "/run/shunt";  // SHUNT_RUNDIR
  std::vector<std::string> eal_extra;  // SHUNT_EAL, split on spaces
  int huge = -1;              // SHUNT_HUGE: 1 use hugepages, 0 --no-huge, -1 auto
  PollMode mode = PollMode::kAdaptive;  // SHUNT_MODE
  // SHUNT_SPIN_US: adaptive mode polls this long without work before it sleeps.
  uint32_t idle_spin_us = 200;
  // With two CPUs or fewer the daemon shares a core with the applications: it
  // spins only while one of them is blocked waiting for it (load_config).
  bool spin_while_apps_run = true;
  int log_level = 1;          // SHUNT_LOG: 0 error, 1 info, 2 debug
  uint32_t max_apps = 64;
  uint32_t slots_per_app = 4096;  // SHUNT_SOCKETS: sockets per application (its region's slots)
  uint32_t ring_size = 1 << 18;   // bytes per direction per socket, at first
  uint32_t ring_max = 1 << 22;    // bytes reserved per ring: what it may grow to
  uint32_t queue_pairs = 16;      // threads per application with their own queues
  fault::Spec fault;              // SHUNT_FAULT: faults injected at the device (tests)
  // SHUNT_CONGESTION; by default the host kernel's (net.ipv4.tcp_congestion_control)
  // when shunt has it, else cubic.
  CcAlgorithm congestion = CcAlgorithm::kCubic;
  AccessPolicy allow;             // SHUNT_ALLOW: who may attach besides root and our user
  std::string allow_text;
};

// Parses the environment. On error returns false and sets *error to a message
// that names the variable and its value.
bool load_config(DaemonConfig* cfg, std::string* error);

bool parse_ipv4(const std::string& text, uint32_t* out);
bool parse_ipv4_prefix(const std::string& text, uint32_t* ip, uint8_t* prefix);
std::string format_ipv4(uint32_t ip);

// SHUNT_FAULT's value: comma-separated KEY=VALUE with keys drop, reorder, dup,
// corrupt (probabilities in [0, 1]), delay (milliseconds, 0..10000), seed (an
// unsigned integer) and dir (rx, tx or both; default both). Empty = no faults.
// On error returns false with *error naming SHUNT_FAULT, its value and the bad part.
bool parse_fault_spec(const std::string& text, fault::Spec* out, std::string* error);
// The spec in SHUNT_FAULT syntax ("none" when it injects nothing).
std::string format_fault_spec(const fault::Spec& spec);

}  // namespace shunt
