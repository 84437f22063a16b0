// Why a packet was dropped: one table, counted per engine, returned from input.
#pragma once

#include <cstdint>

namespace shunt {

#define SHUNT_DROP_REASONS(X)                                   \
  X(kNone, "none")                                              \
  X(kEthTruncated, "eth_truncated")                             \
  X(kEthNotForUs, "eth_not_for_us")                             \
  X(kEthUnknownType, "eth_unknown_type")                        \
  X(kArpMalformed, "arp_malformed")                             \
  X(kArpNotForUs, "arp_not_for_us")                             \
  X(kIpTruncated, "ip_truncated")                               \
  X(kIpBadVersion, "ip_bad_version")                            \
  X(kIpBadHeaderLength, "ip_bad_header_length")                 \
  X(kIpBadLength, "ip_bad_length")                              \
  X(kIpBadChecksum, "ip_bad_checksum")                          \
  X(kIpFragment, "ip_fragment_unsupported")                     \
  X(kIpNotForUs, "ip_not_for_us")                               \
  X(kIpBadSource, "ip_bad_source")                              \
  X(kIpUnknownProtocol, "ip_unknown_protocol")                  \
  X(kIcmpMalformed, "icmp_malformed")                           \
  X(kIcmpUnhandled, "icmp_unhandled")                           \
  X(kTcpTruncated, "tcp_truncated")                             \
  X(kTcpBadHeaderLength, "tcp_bad_header_length")               \
  X(kTcpBadChecksum, "tcp_bad_checksum")                        \
  X(kTcpBadOptions, "tcp_bad_options")                          \
  X(kTcpBadFlags, "tcp_bad_flags")                              \
  X(kTcpNoSocket, "tcp_no_socket")                              \
  X(kTcpListenNotSyn, "tcp_listen_not_syn")                     \
  X(kTcpBacklogFull, "tcp_backlog_full")                        \
  X(kTcpNoMemory, "tcp_no_memory")                              \
  X(kTcpUnacceptable, "tcp_unacceptable")                       \
  X(kTcpOutOfOrder, "tcp_out_of_order")                         \
  X(kTcpRxRingFull, "tcp_rx_ring_full")                         \
  X(kTcpBadAck, "tcp_bad_ack")                                  \
  X(kTcpRstIgnored, "tcp_rst_ignored")                          \
  X(kTcpAfterClose, "tcp_after_close")                          \
  X(kTcpPaws, "tcp_paws")                                       \
  X(kTcpOooFull, "tcp_ooo_full")                                \
  X(kTcpChallengeAckLimited, "tcp_challenge_ack_limited")       \
  X(kTcpBadCookie, "tcp_bad_syn_cookie")                        \
  X(kIcmpNoSocket, "icmp_error_no_socket")                      \
  X(kIcmpInvalid, "icmp_error_invalid")                         \
  X(kNoRoute, "no_route")                                       \
  X(kArpPending, "arp_pending_overflow")                        \
  X(kUdpTruncated, "udp_truncated")                             \
  X(kUdpBadLength, "udp_bad_length")                            \
  X(kUdpBadChecksum, "udp_bad_checksum")                        \
  X(kUdpNoSocket, "udp_no_socket")                              \
  X(kUdpRxRingFull, "udp_rx_ring_full")                         \
  X(kIpFragMalformed, "ip_frag_malformed")                      \
  X(kIpFragTooBig, "ip_frag_too_big")                           \
  X(kIpFragOverlap, "ip_frag_overlap")                          \
  X(kIpFragDuplicate, "ip_frag_duplicate")                      \
  X(kIpFragTooMany, "ip_frag_too_many")                         \
  X(kIpFragTimeout, "ip_frag_timeout")                          \
  X(kIpFragEvicted, "ip_frag_evicted")                          \
  X(kIcmpRateLimited, "icmp_rate_limited")                      \
  X(kTxNoBuffer, "tx_no_buffer")                                \
  X(kLoopbackFull, "loopback_full")

enum class Drop : uint8_t {
#define SHUNT_X(name, text) name,
  SHUNT_DROP_REASONS(SHUNT_X)
#undef SHUNT_X
  kCount
};

inline const char* drop_name(Drop d) {
  static constexpr const char* kNames[] = {
#define SHUNT_X(name, text) text,
      SHUNT_DROP_REASONS(SHUNT_X)
#undef SHUNT_X
  };
  return kNames[static_cast<unsigned>(d)];
}

}  // namespace shunt
