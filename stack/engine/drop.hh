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
  X(kNoRoute, "no_route")                                       \
  X(kArpPending, "arp_pending_overflow")                        \
  X(kTxNoBuffer, "tx_no_buffer")

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
