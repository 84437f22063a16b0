#include "engine/congestion.hh"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace shunt {

namespace {
constexpr double kCubicC = 0.4;     // RFC 9438 5
constexpr double kCubicBeta = 0.7;  // RFC 9438 4.6
}  // namespace

const char* cc_name(CcAlgorithm a) {
  switch (a) {
    case CcAlgorithm::kReno: return "reno";
    case CcAlgorithm::kCubic: return "cubic";
    case CcAlgorithm::kBbr: return "bbr";
  }
  return "cubic";
}

bool cc_parse(const char* name, CcAlgorithm* out) {
  if (!name) return false;
  if (std::strcmp(name, "reno") == 0) *out = CcAlgorithm::kReno;
  else if (std::strcmp(name, "cubic") == 0) *out = CcAlgorithm::kCubic;
  else if (std::strcmp(name, "bbr") == 0) *out = CcAlgorithm::kBbr;
  else return false;
  return true;
}

void cc_on_ack(CcState& s, uint32_t* cwnd, uint32_t mss, uint32_t acked, Time now, Time srtt) {
  if (s.algorithm == CcAlgorithm::kReno) {
    // RFC 5681 3.1: about one MSS per RTT, counted in acknowledged bytes.
    s.ack_bytes += acked;
    if (s.ack_bytes >= *cwnd) {
      s.ack_bytes -= *cwnd;
      *cwnd += mss;
    }
    return;
  }
  double w = double(*cwnd) / mss;
  if (s.epoch_start == 0) {
    // First ACK of an epoch (RFC 9438 4.2): start the curve from here.
    s.epoch_start = now;
    if (s.w_max < w) {
      s.k = 0;
      s.w_max = w;
    } else {
      s.k = std::cbrt(s.w_max * (1 - kCubicBeta) / kCubicC);
    }
    s.w_est = w;
  }
  double t = double(now - s.epoch_start + srtt) / 1e6;
  double target = kCubicC * std::pow(t - s.k, 3) + s.w_max;
  // Reno-friendly region (4.3): alpha = 3 (1 - beta) / (1 + beta).
  s.w_est += 3 * (1 - kCubicBeta) / (1 + kCubicBeta) * double(acked) / mss / w;
  if (s.w_est > target) target = s.w_est;
  // 4.4: grow by (target - cwnd) / cwnd per acknowledged segment, at most 1.5x per RTT.
  target = std::min(target, 1.5 * w);
  if (target > w) {
    double inc = (target - w) / w * (double(acked) / mss) * mss;
    *cwnd += std::max<uint32_t>(1, uint32_t(inc));
  }
}

uint32_t cc_on_loss(CcState& s, uint32_t cwnd, uint32_t mss, Time now) {
  (void)now;
  if (s.algorithm == CcAlgorithm::kBbr) return 0xffffffff;
  if (s.algorithm == CcAlgorithm::kReno) {
    s.ack_bytes = 0;
    return std::max(cwnd / 2, 2 * mss);  // RFC 5681 (4), with cwnd for FlightSize
  }
  double w = double(cwnd) / mss;
  // Fast convergence (RFC 9438 4.7): yield to newer flows.
  s.w_max = w < s.w_last_max ? w * (1 + kCubicBeta) / 2 : w;
  s.w_last_max = w;
  s.epoch_start = 0;
  return std::max(uint32_t(w * kCubicBeta * mss), 2 * mss);
}

}  // namespace shunt
