#include "wire/wire.hh"

namespace shunt::wire {

uint32_t checksum_add(uint32_t sum, const uint8_t* data, size_t len) {
  // Sum 16-bit big-endian words, 64 bits at a time would be faster; this is clear.
  uint64_t acc = sum;
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    acc += load16(data + i) + load16(data + i + 2) + load16(data + i + 4) +
           load16(data + i + 6);
  }
  for (; i + 2 <= len; i += 2) acc += load16(data + i);
  if (i < len) acc += uint32_t(data[i]) << 8;
  while (acc >> 32) acc = (acc & 0xffffffff) + (acc >> 32);
  // Fold to 32 bits without losing carries: callers fold to 16 at the end.
  acc = (acc & 0xffff) + (acc >> 16);
  acc = (acc & 0xffff) + (acc >> 16);
  return uint32_t(acc);
}

bool parse_eth(std::span<const uint8_t> frame, EthHeader* out) {
  if (frame.size() < kEthHeader) return false;
  std::memcpy(out->dst.data(), frame.data(), 6);
  std::memcpy(out->src.data(), frame.data() + 6, 6);
  out->type = load16(frame.data() + 12);
  return true;
}

void write_eth(uint8_t* p, const MacAddr& dst, const MacAddr& src, uint16_t type) {
  std::memcpy(p, dst.data(), 6);
  std::memcpy(p + 6, src.data(), 6);
  store16(p + 12, type);
}

ParseError parse_arp(std::span<const uint8_t> p, Arp* out) {
  if (p.size() < kArpPacket) return ParseError::kTruncated;
  // Ethernet hardware (1), IPv4 protocol, 6-byte and 4-byte addresses only.
  if (load16(p.data()) != 1 || load16(p.data() + 2) != kEtherIpv4 || p[4] != 6 || p[5] != 4)
    return ParseError::kUnsupported;
  out->op = load16(p.data() + 6);
  std::memcpy(out->sender_mac.data(), p.data() + 8, 6);
  out->sender_ip = load32(p.data() + 14);
  std::memcpy(out->target_mac.data(), p.data() + 18, 6);
  out->target_ip = load32(p.data() + 24);
  if (out->op != 1 && out->op != 2) return ParseError::kUnsupported;
  return ParseError::kNone;
}

void write_arp(uint8_t* p, const Arp& arp) {
  store16(p, 1);
  store16(p + 2, kEtherIpv4);
  p[4] = 6;
  p[5] = 4;
  store16(p + 6, arp.op);
  std::memcpy(p + 8, arp.sender_mac.data(), 6);
  store32(p + 14, arp.sender_ip);
  std::memcpy(p + 18, arp.target_mac.data(), 6);
  store32(p + 24, arp.target_ip);
}

ParseError parse_ipv4(std::span<const uint8_t> p, Ipv4* out) {
  if (p.size() < kIpv4Header) return ParseError::kTruncated;
  if ((p[0] >> 4) != 4) return ParseError::kBadVersion;
  size_t ihl = size_t(p[0] & 0x0f) * 4;
  if (ihl < kIpv4Header || ihl > p.size()) return ParseError::kBadHeaderLength;
  size_t total = load16(p.data() + 2);
  if (total < ihl || total > p.size()) return ParseError::kBadLength;
  if (checksum_finish(checksum_add(0, p.data(), ihl)) != 0) return ParseError::kBadChecksum;
  uint16_t frag = load16(p.data() + 6);
  if ((frag & 0x2000) || (frag & 0x1fff)) return ParseError::kFragment;  // MF or offset
  out->tos = p[1];
  out->id = load16(p.data() + 4);
  out->ttl = p[8];
  out->proto = p[9];
  out->src = load32(p.data() + 12);
  out->dst = load32(p.data() + 16);
  out->payload = p.subspan(ihl, total - ihl);
  return ParseError::kNone;
}

void write_ipv4(uint8_t* p, uint32_t src, uint32_t dst, uint8_t proto, uint16_t payload_len,
                uint16_t id, uint8_t ttl, uint8_t tos) {
  p[0] = 0x45;
  p[1] = tos;
  store16(p + 2, uint16_t(kIpv4Header + payload_len));
  store16(p + 4, id);
  store16(p + 6, 0x4000);  // DF: we do path MTU discovery, never fragment
  p[8] = ttl;
  p[9] = proto;
  store16(p + 10, 0);
  store32(p + 12, src);
  store32(p + 16, dst);
  store16(p + 10, checksum_finish(checksum_add(0, p, kIpv4Header)));
}

ParseError parse_tcp(const Ipv4& ip, TcpSegment* out) {
  auto p = ip.payload;
  if (p.size() < kTcpHeader) return ParseError::kTruncated;
  size_t doff = size_t(p[12] >> 4) * 4;
  if (doff < kTcpHeader || doff > p.size()) return ParseError::kBadHeaderLength;
  uint32_t sum = pseudo_header_sum(ip.src, ip.dst, kProtoTcp, uint16_t(p.size()));
  if (checksum_finish(checksum_add(sum, p.data(), p.size())) != 0)
    return ParseError::kBadChecksum;
  out->src_ip = ip.src;
  out->dst_ip = ip.dst;
  out->src_port = load16(p.data());
  out->dst_port = load16(p.data() + 2);
  out->seq = load32(p.data() + 4);
  out->ack = load32(p.data() + 8);
  out->flags = p[13] & 0x3f;
  out->window = load16(p.data() + 14);
  out->mss = 0;
  // Options (RFC 9293 3.2): kinds 0 and 1 are one byte, every other carries a
  // length >= 2 that must fit; a malformed list drops the segment.
  size_t i = kTcpHeader;
  while (i < doff) {
    uint8_t kind = p[i];
    if (kind == 0) break;
    if (kind == 1) { ++i; continue; }
    if (i + 1 >= doff) return ParseError::kBadOptions;
    uint8_t len = p[i + 1];
    if (len < 2 || i + len > doff) return ParseError::kBadOptions;
    if (kind == 2) {
      if (len != 4) return ParseError::kBadOptions;
      if (out->flags & kSyn) out->mss = load16(p.data() + i + 2);
    }
    i += len;
  }
  out->payload = p.subspan(doff);
  return ParseError::kNone;
}

size_t tcp_header_len(const TcpSegment& seg) { return kTcpHeader + (seg.mss ? 4 : 0); }

size_t write_tcp(uint8_t* p, const TcpSegment& seg) {
  size_t hlen = tcp_header_len(seg);
  store16(p, seg.src_port);
  store16(p + 2, seg.dst_port);
  store32(p + 4, seg.seq);
  store32(p + 8, seg.ack);
  p[12] = uint8_t((hlen / 4) << 4);
  p[13] = seg.flags;
  store16(p + 14, seg.window);
  store16(p + 16, 0);
  store16(p + 18, 0);
  if (seg.mss) {
    p[20] = 2;
    p[21] = 4;
    store16(p + 22, seg.mss);
  }
  size_t total = hlen + seg.payload.size();
  uint32_t sum = pseudo_header_sum(seg.src_ip, seg.dst_ip, kProtoTcp, uint16_t(total));
  store16(p + 16, checksum_finish(checksum_add(sum, p, total)));
  return hlen;
}

ParseError parse_icmp(std::span<const uint8_t> p, Icmp* out) {
  if (p.size() < 4) return ParseError::kTruncated;
  if (checksum_finish(checksum_add(0, p.data(), p.size())) != 0)
    return ParseError::kBadChecksum;
  out->type = p[0];
  out->code = p[1];
  out->body = p.subspan(4);
  return ParseError::kNone;
}

}  // namespace shunt::wire
