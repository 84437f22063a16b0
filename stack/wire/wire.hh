// Wire formats: bounds-checked parsing of Ethernet/ARP/IPv4/ICMP/TCP bytes into
// validated host-order representations, and serialization back. No state, no I/O.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <span>

namespace shunt::wire {

using MacAddr = std::array<uint8_t, 6>;
inline constexpr MacAddr kBroadcastMac{0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

inline uint16_t load16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
inline uint32_t load32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}
inline void store16(uint8_t* p, uint16_t v) { p[0] = uint8_t(v >> 8); p[1] = uint8_t(v); }
inline void store32(uint8_t* p, uint32_t v) {
  p[0] = uint8_t(v >> 24); p[1] = uint8_t(v >> 16); p[2] = uint8_t(v >> 8); p[3] = uint8_t(v);
}

inline constexpr size_t kEthHeader = 14;
inline constexpr size_t kIpv4Header = 20;
inline constexpr size_t kTcpHeader = 20;
inline constexpr size_t kArpPacket = 28;
inline constexpr uint16_t kEtherIpv4 = 0x0800;
inline constexpr uint16_t kEtherArp = 0x0806;
inline constexpr uint8_t kProtoIcmp = 1;
inline constexpr uint8_t kProtoTcp = 6;
inline constexpr uint8_t kProtoUdp = 17;

// RFC 1071 one's-complement sum, unfolded; fold with checksum_finish.
uint32_t checksum_add(uint32_t sum, const uint8_t* data, size_t len);
inline uint16_t checksum_finish(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return uint16_t(~sum);
}
inline uint32_t pseudo_header_sum(uint32_t src, uint32_t dst, uint8_t proto, uint16_t len) {
  return (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + proto + len;
}

struct EthHeader {
  MacAddr dst;
  MacAddr src;
  uint16_t type;
};
bool parse_eth(std::span<const uint8_t> frame, EthHeader* out);
void write_eth(uint8_t* p, const MacAddr& dst, const MacAddr& src, uint16_t type);

struct Arp {
  uint16_t op;  // 1 request, 2 reply
  MacAddr sender_mac;
  uint32_t sender_ip;
  MacAddr target_mac;
  uint32_t target_ip;
};
enum class ParseError : uint8_t { kNone, kTruncated, kBadVersion, kBadHeaderLength,
                                  kBadChecksum, kBadLength, kFragment, kBadOptions,
                                  kUnsupported };
ParseError parse_arp(std::span<const uint8_t> packet, Arp* out);
void write_arp(uint8_t* p, const Arp& arp);

struct Ipv4 {
  uint32_t src;
  uint32_t dst;
  uint8_t proto;
  uint8_t ttl;
  uint8_t tos;
  uint16_t id;
  std::span<const uint8_t> payload;  // trimmed to total length
};
ParseError parse_ipv4(std::span<const uint8_t> packet, Ipv4* out);
// The flags and fragment offset field of a whole datagram: DF (shunt does path
// MTU discovery and never fragments TCP).
inline constexpr uint16_t kIpv4DontFragment = 0x4000;
// Writes a 20-byte header (no options) with its checksum.
void write_ipv4(uint8_t* p, uint32_t src, uint32_t dst, uint8_t proto, uint16_t payload_len,
                uint16_t id, uint8_t ttl = 64, uint8_t tos = 0, uint16_t frag_field = kIpv4DontFragment);

// TCP flags.
inline constexpr uint8_t kFin = 0x01;
inline constexpr uint8_t kSyn = 0x02;
inline constexpr uint8_t kRst = 0x04;
inline constexpr uint8_t kPsh = 0x08;
inline constexpr uint8_t kAck = 0x10;
inline constexpr uint8_t kUrg = 0x20;

// A validated TCP segment in host order: all the state machine sees.
struct TcpSegment {
  uint32_t src_ip = 0;
  uint32_t dst_ip = 0;
  uint16_t src_port = 0;
  uint16_t dst_port = 0;
  uint32_t seq = 0;
  uint32_t ack = 0;
  uint8_t flags = 0;
  uint16_t window = 0;
  uint16_t mss = 0;  // MSS option, 0 when absent
  std::span<const uint8_t> payload{};
  // RFC 7323 and RFC 2018 options.
  int8_t wscale = -1;           // window scale shift (SYN only), -1 when absent
  bool sack_permitted = false;  // SYN only
  bool has_ts = false;
  uint32_t tsval = 0;
  uint32_t tsecr = 0;
  uint8_t sack_count = 0;       // SACK blocks (left, right), at most kMaxSackBlocks
  std::array<std::array<uint32_t, 2>, 4> sack{};

  // Sequence space the segment occupies (SYN and FIN count one each).
  uint32_t seq_len() const {
    return uint32_t(payload.size()) + ((flags & kSyn) ? 1 : 0) + ((flags & kFin) ? 1 : 0);
  }
};
inline constexpr uint8_t kMaxSackBlocks = 4;
inline constexpr uint8_t kMaxWindowShift = 14;  // RFC 7323 2.3

// Parses and validates (checksum, data offset, option lengths) a TCP segment
// carried in `ip`.
ParseError parse_tcp(const Ipv4& ip, TcpSegment* out);
// Writes the TCP header with the options `seg` asks for (MSS, SACK-permitted,
// timestamps and window scale laid out as Linux does; SACK blocks as many as fit
// in 40 option bytes) at p; the payload must already be at p + tcp_header_len(seg).
// Fills in the checksum. Returns the header length.
size_t tcp_header_len(const TcpSegment& seg);
size_t write_tcp(uint8_t* p, const TcpSegment& seg);

struct Icmp {
  uint8_t type;
  uint8_t code;
  std::span<const uint8_t> body;  // everything after the 4-byte type/code/checksum
};
ParseError parse_icmp(std::span<const uint8_t> packet, Icmp* out);

}  // namespace shunt::wire
