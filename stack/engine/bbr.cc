#include "engine/bbr.hh"

#include <algorithm>

namespace shunt {

namespace {
constexpr double kHighGain = 2.885;  // 2/ln 2: STARTUP doubles the delivery rate per round
constexpr double kCwndGain = 2.0;    // PROBE_BW
constexpr Time kMinRttWindow = 10'000'000;  // 10 s
constexpr Time kProbeRttTime = 200'000;     // 200 ms
constexpr uint32_t kMinCwndSegments = 4;
constexpr uint32_t kInitialSegments = 10;

uint64_t bdp(const BbrState& b, double gain) {
  return uint64_t(double(bbr_max_bw(b)) * double(b.min_rtt) / 1e6 * gain);
}
}  // namespace

uint64_t bbr_max_bw(const BbrState& b) { return *std::max_element(b.bw, b.bw + BbrState::kBwRounds); }

uint32_t bbr_on_ack(BbrState& b, const RateSample& rs, uint32_t cwnd, uint32_t mss, Time now,
                    bool in_recovery) {
  using Mode = BbrState::Mode;
  // Rounds: one ends when data sent after its start is delivered.
  bool round_start = false;
  if (rs.interval != 0 && rs.prior_delivered >= b.next_round_delivered) {
    b.next_round_delivered = rs.total_delivered;
    ++b.round_count;
    round_start = true;
    b.bw_slot = uint8_t((b.bw_slot + 1) % BbrState::kBwRounds);
    b.bw[b.bw_slot] = 0;
  }
  // Bottleneck bandwidth: an application-limited sample only when it raises the max.
  if (rs.interval != 0) {
    uint64_t sample = rs.delivered * 1'000'000 / rs.interval;
    if (!rs.app_limited || sample >= bbr_max_bw(b)) b.bw[b.bw_slot] = std::max(b.bw[b.bw_slot], sample);
  }
  // STARTUP ends when three rounds in a row grow the bandwidth by less than 25%.
  if (!b.filled_pipe && round_start && !rs.app_limited) {
    uint64_t bw = bbr_max_bw(b);
    if (bw >= b.full_bw + b.full_bw / 4) {
      b.full_bw = bw;
      b.full_bw_rounds = 0;
    } else if (++b.full_bw_rounds >= 3) {
      b.filled_pipe = true;
    }
  }
  // ACK aggregation (see bbr.hh).
  if (round_start && ++b.extra_rounds >= 5) {
    b.extra_rounds = 0;
    b.extra_slot ^= 1;
    b.extra_acked[b.extra_slot] = 0;
  }
  uint64_t expected = bbr_max_bw(b) * (now - b.ack_epoch_start) / 1'000'000;
  if (b.ack_epoch_start == 0 || b.ack_epoch_acked <= expected || b.ack_epoch_acked > (1ull << 30)) {
    b.ack_epoch_start = now;
    b.ack_epoch_acked = 0;
    expected = 0;
  }
  b.ack_epoch_acked += rs.acked;
  uint64_t extra = std::min<uint64_t>(b.ack_epoch_acked - expected, cwnd);
  b.extra_acked[b.extra_slot] = std::max(b.extra_acked[b.extra_slot], extra);
  if (b.mode == Mode::kStartup && b.filled_pipe) b.mode = Mode::kDrain;
  if (b.mode == Mode::kDrain && rs.inflight <= bdp(b, 1.0)) b.mode = Mode::kProbeBw;
  // Propagation delay, and PROBE_RTT when it has not been seen for 10 s.
  bool expired = b.min_rtt_at != 0 && now - b.min_rtt_at > kMinRttWindow;
  if (rs.rtt != 0 && (b.min_rtt == 0 || rs.rtt <= b.min_rtt || expired)) {
    b.min_rtt = rs.rtt;
    b.min_rtt_at = now;
  }
  if (expired && b.mode != Mode::kProbeRtt) {
    b.mode = Mode::kProbeRtt;
    b.prior_cwnd = std::max(b.prior_cwnd, cwnd);
    b.probe_rtt_done = 0;
  }
  if (b.mode == Mode::kProbeRtt) {
    if (b.probe_rtt_done == 0 && rs.inflight <= kMinCwndSegments * mss) {
      b.probe_rtt_done = now + kProbeRttTime;
      b.probe_rtt_round = b.round_count + 1;
    } else if (b.probe_rtt_done != 0 && now >= b.probe_rtt_done && b.round_count >= b.probe_rtt_round) {
      b.min_rtt_at = now;
      b.mode = b.filled_pipe ? Mode::kProbeBw : Mode::kStartup;
      cwnd = std::max(cwnd, b.prior_cwnd);
    }
  }
  // Recovery: packet conservation for a round, then the model; on leaving, the
  // window from before.
  if (in_recovery && !b.in_recovery) {
    b.prior_cwnd = cwnd;
    cwnd = rs.inflight + rs.acked;
    b.conservation_until = b.round_count + 1;
  } else if (!in_recovery && b.in_recovery) {
    cwnd = std::max(cwnd, b.prior_cwnd);
  }
  b.in_recovery = in_recovery;
  bool conserving = in_recovery && b.round_count < b.conservation_until;
  if (conserving) {
    cwnd = std::max(cwnd, rs.inflight + rs.acked);
  } else if (bbr_max_bw(b) != 0 && b.min_rtt != 0) {
    double gain = b.mode == Mode::kProbeBw || b.mode == Mode::kProbeRtt ? kCwndGain : kHighGain;
    uint64_t target = bdp(b, gain) + 3ull * mss + std::max(b.extra_acked[0], b.extra_acked[1]);
    if (b.filled_pipe) cwnd = uint32_t(std::min<uint64_t>(uint64_t(cwnd) + rs.acked, target));
    else if (cwnd < target || rs.total_delivered < kInitialSegments * mss) cwnd += rs.acked;
  } else {
    cwnd += rs.acked;  // no model yet: grow as slow start does
  }
  cwnd = std::min<uint32_t>(std::max(cwnd, kMinCwndSegments * mss), 1u << 30);
  if (b.mode == Mode::kProbeRtt) cwnd = std::min(cwnd, kMinCwndSegments * mss);
  return cwnd;
}

}  // namespace shunt
