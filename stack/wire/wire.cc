#include "wire/wire.hh"

#include <bit>

namespace shunt::wire {

uint32_t checksum_add(uint32_t sum, const uint8_t* data, size_t len) {
  // RFC 1071 section 2(B): the one's-complement sum does not depend on byte order,
  // so add the words as the CPU loads them (32 bits at a time into 64-bit
  // accumulators, carries collecting in the top halves) and swap the folded sum
  // once. Every segment sent and received goes through here.
  uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  for (; len >= 16; data += 16, len -= 16) {
    uint32_t w[4];
    std::memcpy(w, data, sizeof w);
    a0 += w[0];
    a1 += w[1];
    a2 += w[2];
    a3 += w[3];
  }
  uint64_t acc = a0 + a1 + a2 + a3;
  for (; len >= 4; data += 4, len -= 4) {
    uint32_t w;
    std::memcpy(&w, data, sizeof w);
    acc += w;
  }
  for (; len >= 2; data += 2, len -= 2) {
    uint16_t w;
    std::memcpy(&w, data, sizeof w);
    acc += w;
  }
  if (len != 0) {
    const uint8_t padded[2] = {data[0], 0};  // RFC 1071's zero pad byte
    uint16_t w;
    std::memcpy(&w, padded, sizeof w);
    acc += w;
  }
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  uint16_t folded = uint16_t(acc);
  if constexpr (std::endian::native == std::endian::little) folded = __builtin_bswap16(folded);
  // Unfolded 32 bits, the caller's sum added without losing carries: callers fold.
  uint64_t total = uint64_t(sum) + folded;
  return uint32_t((total & 0xffffffff) + (total >> 32));
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
                uint16_t id, uint8_t ttl, uint8_t tos, uint16_t frag_field) {
  p[0] = 0x45;
  p[1] = tos;
  store16(p + 2, uint16_t(kIpv4Header + payload_len));
  store16(p + 4, id);
  store16(p + 6, frag_field);
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
  out->wscale = -1;
  out->sack_permitted = false;
  out->has_ts = false;
  out->tsval = out->tsecr = 0;
  out->sack_count = 0;
  // Options (RFC 9293 3.2): kinds 0 and 1 are one byte, every other carries a
  // length >= 2 that must fit; a malformed list drops the segment. Options that
  // belong on SYNs only are ignored elsewhere (RFC 7323 2.2, RFC 2018 2).
  bool syn = out->flags & kSyn;
  size_t i = kTcpHeader;
  while (i < doff) {
    uint8_t kind = p[i];
    if (kind == 0) break;
    if (kind == 1) { ++i; continue; }
    if (i + 1 >= doff) return ParseError::kBadOptions;
    uint8_t len = p[i + 1];
    if (len < 2 || i + len > doff) return ParseError::kBadOptions;
    const uint8_t* o = p.data() + i;
    switch (kind) {
      case 2:  // MSS
        if (len != 4) return ParseError::kBadOptions;
        if (syn) out->mss = load16(o + 2);
        break;
      case 3:  // window scale; a shift above 14 is taken as 14 (RFC 7323 2.3)
        if (len != 3) return ParseError::kBadOptions;
        if (syn) out->wscale = int8_t(o[2] > kMaxWindowShift ? kMaxWindowShift : o[2]);
        break;
      case 4:  // SACK permitted
        if (len != 2) return ParseError::kBadOptions;
        if (syn) out->sack_permitted = true;
        break;
      case 5: {  // SACK blocks
        if (len < 10 || (len - 2) % 8 != 0) return ParseError::kBadOptions;
        uint8_t n = uint8_t((len - 2) / 8);
        for (uint8_t b = 0; b < n && b < kMaxSackBlocks; ++b)
          out->sack[b] = {load32(o + 2 + 8 * b), load32(o + 6 + 8 * b)};
        out->sack_count = n < kMaxSackBlocks ? n : kMaxSackBlocks;
        break;
      }
      case 8:  // timestamps
        if (len != 10) return ParseError::kBadOptions;
        out->has_ts = true;
        out->tsval = load32(o + 2);
        out->tsecr = load32(o + 6);
        break;
      default:
        break;  // unknown options are skipped by their length
    }
    i += len;
  }
  out->payload = p.subspan(doff);
  return ParseError::kNone;
}

namespace {
// SACK blocks that fit next to the other options in 40 bytes.
uint8_t sack_blocks_that_fit(const TcpSegment& seg) {
  if (seg.sack_count == 0) return 0;
  size_t used = (seg.mss ? 4 : 0) + (seg.has_ts ? 12 : seg.sack_permitted ? 4 : 0) +
                (seg.wscale >= 0 ? 4 : 0);
  size_t room = used >= 40 ? 0 : (40 - used - 4) / 8;  // NOP NOP kind len
  return uint8_t(seg.sack_count < room ? seg.sack_count : room);
}
}  // namespace

size_t tcp_header_len(const TcpSegment& seg) {
  size_t len = kTcpHeader;
  if (seg.mss) len += 4;
  if (seg.has_ts || seg.sack_permitted) len += 12;  // (NOP NOP | SACK-perm) + TS, or NOP NOP SACK-perm
  if (!seg.has_ts && seg.sack_permitted) len -= 8;
  if (seg.wscale >= 0) len += 4;
  if (uint8_t n = sack_blocks_that_fit(seg)) len += 4 + 8 * size_t(n);
  return len;
}

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
  uint8_t* o = p + kTcpHeader;
  if (seg.mss) {
    o[0] = 2;
    o[1] = 4;
    store16(o + 2, seg.mss);
    o += 4;
  }
  if (seg.has_ts) {
    if (seg.sack_permitted) {
      o[0] = 4;  // SACK-permitted in the two bytes Linux pads with NOPs
      o[1] = 2;
    } else {
      o[0] = o[1] = 1;
    }
    o[2] = 8;
    o[3] = 10;
    store32(o + 4, seg.tsval);
    store32(o + 8, seg.tsecr);
    o += 12;
  } else if (seg.sack_permitted) {
    o[0] = o[1] = 1;
    o[2] = 4;
    o[3] = 2;
    o += 4;
  }
  if (seg.wscale >= 0) {
    o[0] = 1;
    o[1] = 3;
    o[2] = 3;
    o[3] = uint8_t(seg.wscale);
    o += 4;
  }
  if (uint8_t n = sack_blocks_that_fit(seg)) {
    o[0] = o[1] = 1;
    o[2] = 5;
    o[3] = uint8_t(2 + 8 * n);
    for (uint8_t b = 0; b < n; ++b) {
      store32(o + 4 + 8 * b, seg.sack[b][0]);
      store32(o + 8 + 8 * b, seg.sack[b][1]);
    }
    o += 4 + 8 * size_t(n);
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
