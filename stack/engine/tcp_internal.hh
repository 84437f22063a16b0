// Constants and small helpers shared by tcp*.cc; not part of the engine's interface.
#pragma once

#include <cstdint>

#include "engine/engine.hh"

namespace shunt {

inline constexpr Time kMinRto = 200 * kMillisecond;  // Linux TCP_RTO_MIN (RFC 6298 says 1 s)
inline constexpr Time kMaxRto = 120 * kSecond;       // Linux TCP_RTO_MAX
inline constexpr Time kDelayedAck = 40 * kMillisecond;  // Linux TCP_DELACK_MIN
// A reader that empties a half-full receive buffer within this keeps up with the
// network: its buffer doubles (Engine::rx_drained).
inline constexpr Time kRxGrowWithin = 2 * kMillisecond;
inline constexpr uint32_t kSynRetries = 6;           // Linux tcp_syn_retries
inline constexpr uint32_t kDataRetries = 15;         // Linux tcp_retries2
inline constexpr uint32_t kOrphanRetries = 8;        // Linux tcp_orphan_retries (0 means 8)
inline constexpr Time kFinTimeout = 60 * kSecond;    // Linux tcp_fin_timeout
inline constexpr uint32_t kInitialWindowSegments = 10;  // RFC 6928
inline constexpr uint32_t kDupThresh = 3;            // RFC 5681, RFC 6675 DupThresh
inline constexpr uint16_t kMinMss = 48;              // Linux TCP_MIN_SND_MSS

inline bool is_synchronized(TcpState s) {
  return s != TcpState::kClosed && s != TcpState::kListen && s != TcpState::kSynSent;
}
inline bool may_send_data(TcpState s) {
  return s == TcpState::kEstablished || s == TcpState::kCloseWait ||
         s == TcpState::kFinWait1 || s == TcpState::kClosing || s == TcpState::kLastAck;
}
inline bool may_receive_data(TcpState s) {
  return s == TcpState::kEstablished || s == TcpState::kFinWait1 || s == TcpState::kFinWait2;
}
inline uint64_t mix64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdull;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ull;
  k ^= k >> 33;
  return k;
}

}  // namespace shunt
