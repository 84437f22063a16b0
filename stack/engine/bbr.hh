// BBR congestion control (v1, draft-cardwell-iccrg-bbr-congestion-control-00):
// a model of the path (bottleneck bandwidth: the largest delivery rate of the
// last 10 rounds; propagation delay: the smallest RTT of the last 10 s) sets
// cwnd to twice the bandwidth-delay product. Random loss does not shrink it;
// in recovery, packet conservation for one round, then the model again. ACKs that
// come in bursts (batched receivers, delayed ACKs) deliver more than the model
// expects; that excess, the largest of the last 10 rounds, is added to cwnd so
// the sender keeps sending through the gaps between bursts (as Linux's BBR does).
// The engine does not pace yet, so the pacing-gain cycle of PROBE_BW has nothing
// to act on and is left out. Pure functions: no clock, no I/O; windows in bytes.
#pragma once

#include <cstdint>

namespace shunt {

using Time = uint64_t;  // microseconds

// One delivery rate sample (draft-cheng-iccrg-delivery-rate-estimation), taken
// per ACK from the most recently sent data it delivered.
struct RateSample {
  uint64_t delivered = 0;        // bytes delivered over `interval`
  Time interval = 0;             // 0: no valid sample
  uint64_t prior_delivered = 0;  // the connection's delivered count when that data was sent
  uint64_t total_delivered = 0;  // the connection's delivered count now
  bool app_limited = false;
  Time rtt = 0;                  // 0: none
  uint32_t acked = 0;            // bytes this ACK newly delivered
  uint32_t inflight = 0;         // bytes in flight after it
};

struct BbrState {
  static constexpr uint8_t kBwRounds = 10;
  enum class Mode : uint8_t { kStartup, kDrain, kProbeBw, kProbeRtt };
  Mode mode = Mode::kStartup;
  uint64_t bw[kBwRounds] = {};   // bytes/s: the largest sample of each recent round
  uint8_t bw_slot = 0;
  uint64_t round_count = 0;
  uint64_t next_round_delivered = 0;
  Time min_rtt = 0, min_rtt_at = 0;
  uint64_t full_bw = 0;
  uint8_t full_bw_rounds = 0;
  bool filled_pipe = false;
  Time probe_rtt_done = 0;       // PROBE_RTT ends then (0: not yet timed)
  uint64_t probe_rtt_round = 0;
  uint32_t prior_cwnd = 0;
  // ACK aggregation: data ACKed since the epoch began beyond what bw predicts.
  Time ack_epoch_start = 0;
  uint64_t ack_epoch_acked = 0;
  uint64_t extra_acked[2] = {};  // largest excess of this and the previous 5-round window
  uint8_t extra_slot = 0, extra_rounds = 0;
  bool in_recovery = false;      // what the last ACK saw
  uint64_t conservation_until = 0;  // round at which packet conservation ends
};

uint64_t bbr_max_bw(const BbrState& b);
// The next cwnd after an ACK that delivered data.
uint32_t bbr_on_ack(BbrState& b, const RateSample& rs, uint32_t cwnd, uint32_t mss, Time now,
                    bool in_recovery);

}  // namespace shunt
