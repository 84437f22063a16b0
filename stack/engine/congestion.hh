// Congestion control (RFC 5681 NewReno, RFC 9438 CUBIC, BBR in bbr.hh), selectable
// per connection.
// Pure functions over a small state: no clock, no I/O; windows in bytes.
#pragma once

#include <cstdint>

#include "engine/bbr.hh"

namespace shunt {

using Time = uint64_t;  // microseconds

enum class CcAlgorithm : uint8_t { kReno, kCubic, kBbr };
inline constexpr CcAlgorithm kLastCcAlgorithm = CcAlgorithm::kBbr;

// Names as TCP_CONGESTION uses them ("reno", "cubic"); nullptr-safe parse.
const char* cc_name(CcAlgorithm a);
bool cc_parse(const char* name, CcAlgorithm* out);

struct CcState {
  CcAlgorithm algorithm = CcAlgorithm::kCubic;
  // CUBIC (RFC 9438 4): in segments.
  double w_max = 0;       // window before the last reduction
  double w_last_max = 0;  // for fast convergence (4.7)
  double k = 0;           // seconds to reach w_max again
  double w_est = 0;       // Reno-friendly estimate (4.3)
  Time epoch_start = 0;   // start of the current congestion avoidance epoch, 0 = none
  uint32_t ack_bytes = 0; // Reno: bytes acknowledged towards the next MSS of growth
  BbrState bbr;
};

// Congestion avoidance growth for `acked` newly acknowledged bytes (cwnd >= ssthresh).
void cc_on_ack(CcState& s, uint32_t* cwnd, uint32_t mss, uint32_t acked, Time now, Time srtt);
// A loss was detected (fast retransmit or RTO): returns the new ssthresh. BBR
// keeps ssthresh (its model sets cwnd).
uint32_t cc_on_loss(CcState& s, uint32_t cwnd, uint32_t mss, Time now);

}  // namespace shunt
