// UDP (RFC 768, RFC 1122 4.1) and the IPv4 work it needs: fragment reassembly on
// input (reassembly.hh), fragmentation on output, ICMP port unreachable out and
// ICMP destination unreachable in (RFC 792, RFC 1122 3.2.2.1 / 4.1.3.3).
#include "engine/udp.hh"

#include <bit>
#include <cerrno>
#include <cstring>

#include "engine/engine.hh"

namespace shunt {

using namespace wire;

namespace {

constexpr uint8_t kIcmpDestUnreachable = 3;
constexpr uint8_t kIcmpCodePortUnreachable = 3;
constexpr size_t kUdpHeader = 8;
// RFC 1812 4.3.2.3: an ICMP error holds as much of the offending datagram as fits
// in 576 bytes (Linux does the same).
constexpr size_t kIcmpErrorMax = 576;

constexpr uint32_t to_net32(uint32_t v) {
  return std::endian::native == std::endian::little ? __builtin_bswap32(v) : v;
}
constexpr uint16_t to_net16(uint16_t v) {
  return std::endian::native == std::endian::little ? __builtin_bswap16(v) : v;
}

// Linux's icmp_err_convert for type 3 (destination unreachable), by code.
int unreachable_errno(uint8_t code) {
  switch (code) {
    case 0: return ENETUNREACH;   // net unreachable
    case 1: return EHOSTUNREACH;  // host unreachable
    case 2: return ENOPROTOOPT;   // protocol unreachable
    case 3: return ECONNREFUSED;  // port unreachable
    case 4: return EMSGSIZE;      // fragmentation needed
    case 5: return EOPNOTSUPP;    // source route failed
    case 6: return ENETUNREACH;
    case 7: return EHOSTDOWN;
    case 8: return ENONET;
    case 9: case 10: return ENETUNREACH;  // administratively prohibited (net)
    case 11: return ENETUNREACH;
    case 12: return EHOSTUNREACH;
    default: return EHOSTUNREACH;  // 13-15: administratively filtered, precedence
  }
}

}  // namespace

// ---- UdpTable ----

UdpTable::UdpTable(uint32_t max_sockets) : max_(max_sockets), by_port_(65536, 0) {}

int UdpTable::bind(uint16_t port, abi::ProducerEnd rx, uint64_t user, UdpId* out) {
  if (port == 0) return -EINVAL;
  if (by_port_[port] != 0) return -EADDRINUSE;
  UdpId id = free_head_;
  if (id != kNoUdp) {
    free_head_ = socks_[id].next_free;
  } else {
    if (socks_.size() >= max_) return -ENOBUFS;
    id = UdpId(socks_.size());
    socks_.emplace_back();
    events_.reserve(socks_.capacity());  // note() never allocates
  }
  UdpSocket& s = socks_[id];
  bool queued = s.in_events;  // still listed by a closed predecessor: stays listed once
  s = UdpSocket{};
  s.in_events = queued;
  s.active = true;
  s.local_port = port;
  s.rx = rx;
  s.user = user;
  by_port_[port] = id + 1;
  ++live_;
  *out = id;
  return 0;
}

void UdpTable::connect(UdpId id, uint32_t ip, uint16_t port) {
  UdpSocket& s = socks_[id];
  s.remote_ip = ip;
  s.remote_port = ip == 0 ? 0 : port;
  s.error = 0;
}

void UdpTable::close(UdpId id) {
  UdpSocket& s = socks_[id];
  if (!s.active) return;
  if (by_port_[s.local_port] == id + 1) by_port_[s.local_port] = 0;
  bool queued = s.in_events;
  s = UdpSocket{};
  s.in_events = queued;  // drain_events skips it (inactive) and clears the flag
  s.next_free = free_head_;
  free_head_ = id;
  --live_;
}

void UdpTable::note(UdpId id, uint32_t ev) {
  UdpSocket& s = socks_[id];
  s.events |= ev;
  if (!s.in_events) {
    s.in_events = true;
    events_.push_back(id);
  }
}

bool UdpTable::icmp_allow(uint64_t now) {
  constexpr uint64_t kBurst = 50 * 1000;  // tokens are 1/1000 of a message
  if (!icmp_started_) {
    icmp_started_ = true;
    icmp_tokens_ = kBurst;
    icmp_refill_at_ = now;
  }
  // 1000 messages per second = one token (1/1000 message) per microsecond.
  uint64_t add = now > icmp_refill_at_ ? now - icmp_refill_at_ : 0;
  icmp_refill_at_ = now;
  icmp_tokens_ = icmp_tokens_ + add > kBurst ? kBurst : icmp_tokens_ + add;
  if (icmp_tokens_ < 1000) return false;
  icmp_tokens_ -= 1000;
  return true;
}

// ---- Input ----

Drop Engine::input_udp(const Ipv4& ip, Time now) {
  auto p = ip.payload;
  if (p.size() < kUdpHeader) return Drop::kUdpTruncated;
  uint16_t sport = load16(p.data());
  uint16_t dport = load16(p.data() + 2);
  uint16_t ulen = load16(p.data() + 4);
  uint16_t csum = load16(p.data() + 6);
  // RFC 768: the length covers header and data; bytes past it (Ethernet padding)
  // are not the datagram's, as Linux trims them.
  if (ulen < kUdpHeader || ulen > p.size()) return Drop::kUdpBadLength;
  p = p.first(ulen);
  // A zero checksum means none was computed (RFC 768); else the sum over the
  // pseudo-header and the datagram folds to zero.
  if (csum != 0 &&
      checksum_finish(checksum_add(pseudo_header_sum(ip.src, ip.dst, kProtoUdp, ulen), p.data(),
                                   ulen)) != 0)
    return Drop::kUdpBadChecksum;
  UdpId id = udp_.lookup(dport);
  if (id != kNoUdp) {
    const UdpSocket& s = udp_.socket(id);
    if (s.connected() && (s.remote_ip != ip.src || s.remote_port != sport)) id = kNoUdp;
  }
  if (id == kNoUdp) {
    // RFC 1122 4.1.3.1: no one listens on the port: ICMP port unreachable.
    send_port_unreachable(ip, p, now);
    return Drop::kUdpNoSocket;
  }
  UdpSocket& s = udp_.socket(id);
  if (!abi::dgram_push(s.rx, to_net32(ip.src), to_net16(sport), p.data() + kUdpHeader,
                       uint32_t(ulen - kUdpHeader)))
    return Drop::kUdpRxRingFull;
  ++udp_.counters.datagrams_in;
  udp_.note(id, kUdpEvReadable);
  return Drop::kNone;
}

// A fragment (MF set or a non-zero offset): parse_ipv4 validated version, header
// length, total length and checksum before it stopped at the fragment fields.
Drop Engine::input_fragment(std::span<const uint8_t> packet, Time now) {
  const uint8_t* h = packet.data();
  size_t ihl = size_t(h[0] & 0x0f) * 4;
  size_t total = load16(h + 2);
  uint16_t frag = load16(h + 6);
  Fragment f{.src = load32(h + 12),
             .dst = load32(h + 16),
             .proto = h[9],
             .ttl = h[8],
             .tos = h[1],
             .id = load16(h + 4),
             .offset = uint32_t(frag & 0x1fff) * 8,
             .more = (frag & 0x2000) != 0,
             .payload = packet.subspan(ihl, total - ihl)};
  if (f.dst != cfg_.ip) return Drop::kIpNotForUs;
  if (f.src == cfg_.ip || f.src == 0xffffffff || (f.src >> 28) == 0xe) return Drop::kIpBadSource;
  // Only UDP is reassembled (docs/rfc-coverage.md): TCP segments fit the MSS we announce
  // and our ICMP echo replies are not fragmented on output.
  if (f.proto != kProtoUdp) return Drop::kIpFragment;
  bool complete = false;
  Reassembled r;
  Drop d = reasm_.add(f, now, ctr_.drops, &complete, &r);
  if (d != Drop::kNone || !complete) return d;
  ++udp_.counters.reassembled;
  Ipv4 whole{.src = r.src,
             .dst = r.dst,
             .proto = r.proto,
             .ttl = r.ttl,
             .tos = r.tos,
             .id = r.id,
             .payload = r.payload};
  return input_udp(whole, now);
}

// ICMP destination unreachable quoting one of our UDP datagrams (RFC 1122
// 4.1.3.3: UDP passes it to the application). Like Linux without IP_RECVERR, only a
// connected socket hears of it: the next call on it fails once with the errno.
Drop Engine::udp_icmp_error(uint8_t type, uint8_t code, std::span<const uint8_t> quoted) {
  if (type != kIcmpDestUnreachable) return Drop::kIcmpUnhandled;
  if (quoted.size() < kIpv4Header || (quoted[0] >> 4) != 4) return Drop::kIcmpMalformed;
  size_t ihl = size_t(quoted[0] & 0x0f) * 4;
  if (ihl < kIpv4Header || quoted.size() < ihl + 4 || quoted[9] != kProtoUdp)
    return Drop::kIcmpMalformed;
  uint32_t src = load32(quoted.data() + 12), dst = load32(quoted.data() + 16);
  uint16_t sport = load16(quoted.data() + ihl), dport = load16(quoted.data() + ihl + 2);
  if (src != cfg_.ip) return Drop::kIcmpMalformed;
  UdpId id = udp_.lookup(sport);
  if (id == kNoUdp) return Drop::kIcmpUnhandled;
  UdpSocket& s = udp_.socket(id);
  if (!s.connected() || s.remote_ip != dst || s.remote_port != dport) return Drop::kIcmpUnhandled;
  // Fragmentation needed: the datagram was sent with DF because it fit our MTU; a
  // smaller path MTU is not tracked for UDP, and Linux reports EMSGSIZE only with
  // IP_PMTUDISC_DO. Count it as handled and say nothing.
  if (code == 4) return Drop::kNone;
  s.error = unreachable_errno(code);
  ++udp_.counters.icmp_errors_in;
  udp_.note(id, kUdpEvError);
  return Drop::kNone;
}

// ---- Output ----

void Engine::send_port_unreachable(const Ipv4& ip, std::span<const uint8_t> datagram, Time now) {
  if (!udp_.icmp_allow(now)) {
    ++ctr_.drops[static_cast<size_t>(Drop::kIcmpRateLimited)];
    return;
  }
  // The quoted datagram: its IPv4 header (rebuilt: the options, if any, are not
  // kept; the peer matches on addresses, protocol and ports) and as much of the
  // UDP datagram as fits in 576 bytes.
  size_t quote = std::min(datagram.size(), kIcmpErrorMax - 2 * kIpv4Header - 8);
  size_t icmp_len = 8 + kIpv4Header + quote;
  if (kIpv4Header + icmp_len > cfg_.mtu) return;
  uint8_t* f = begin_ip_frame(ip.src, now);
  if (!f) return;  // counted by begin_ip_frame
  uint8_t* m = f + kEthHeader + kIpv4Header;
  m[0] = kIcmpDestUnreachable;
  m[1] = kIcmpCodePortUnreachable;
  store16(m + 2, 0);
  store32(m + 4, 0);  // unused (RFC 792)
  uint8_t* q = m + 8;
  q[0] = 0x45;
  q[1] = ip.tos;
  store16(q + 2, uint16_t(kIpv4Header + datagram.size()));
  store16(q + 4, ip.id);
  store16(q + 6, 0);
  q[8] = ip.ttl;
  q[9] = ip.proto;
  store16(q + 10, 0);
  store32(q + 12, ip.src);
  store32(q + 16, ip.dst);
  store16(q + 10, checksum_finish(checksum_add(0, q, kIpv4Header)));
  std::memcpy(q + kIpv4Header, datagram.data(), quote);
  store16(m + 2, checksum_finish(checksum_add(0, m, icmp_len)));
  write_ipv4(f + kEthHeader, cfg_.ip, ip.src, kProtoIcmp, uint16_t(icmp_len), ip_id_++);
  end_ip_frame(kEthHeader + kIpv4Header + icmp_len);
  ++udp_.counters.port_unreachable_sent;
}

int Engine::udp_send(UdpId id, uint32_t dst, uint16_t dport, std::span<const uint8_t> payload,
                     Time now) {
  if (!udp_.valid(id)) return -EBADF;
  if (payload.size() > abi::kMaxDatagram) return -EMSGSIZE;
  if (dst == 0 || dport == 0) return -EINVAL;
  const UdpSocket& sock = udp_.socket(id);
  const uint16_t sport = sock.local_port;
  if (dst == cfg_.ip) {
    // To our own address: looped back inside the engine, as the kernel loops
    // traffic to its own addresses, with the same socket lookup.
    ++udp_.counters.datagrams_out;
    UdpId to = udp_.lookup(dport);
    if (to != kNoUdp) {
      const UdpSocket& t = udp_.socket(to);
      if (t.connected() && (t.remote_ip != cfg_.ip || t.remote_port != sport)) to = kNoUdp;
    }
    Drop d = Drop::kNone;
    if (to == kNoUdp) {
      d = Drop::kUdpNoSocket;
      UdpSocket& s = udp_.socket(id);  // what the ICMP port unreachable would tell it
      if (s.connected() && s.remote_ip == dst && s.remote_port == dport) {
        s.error = ECONNREFUSED;
        udp_.note(id, kUdpEvError);
      }
    } else if (!abi::dgram_push(udp_.socket(to).rx, to_net32(cfg_.ip), to_net16(sport),
                                payload.data(), uint32_t(payload.size()))) {
      d = Drop::kUdpRxRingFull;
    } else {
      ++udp_.counters.datagrams_in;
      udp_.note(to, kUdpEvReadable);
    }
    if (d != Drop::kNone) ++ctr_.drops[static_cast<size_t>(d)];
    return 0;
  }
  const size_t ulen = kUdpHeader + payload.size();
  uint8_t hdr[kUdpHeader];
  store16(hdr, sport);
  store16(hdr + 2, dport);
  store16(hdr + 4, uint16_t(ulen));
  store16(hdr + 6, 0);
  // The payload's sum is added after the 8-byte header: both start on an even
  // offset, so the one's-complement sums just add.
  uint32_t sum = checksum_add(pseudo_header_sum(cfg_.ip, dst, kProtoUdp, uint16_t(ulen)), hdr,
                              kUdpHeader);
  sum = checksum_add(sum, payload.data(), payload.size());
  uint16_t csum = checksum_finish(sum);
  store16(hdr + 6, csum == 0 ? 0xffff : csum);  // RFC 768: a computed zero is sent as ones

  const size_t room = size_t(cfg_.mtu) - kIpv4Header;
  if (ulen <= room) {
    uint8_t* f = begin_ip_frame(dst, now);
    if (!f) return 0;  // counted (no route, ARP queue full, no buffer): the datagram is lost
    uint8_t* p = f + kEthHeader + kIpv4Header;
    std::memcpy(p, hdr, kUdpHeader);
    if (!payload.empty()) std::memcpy(p + kUdpHeader, payload.data(), payload.size());
    write_ipv4(f + kEthHeader, cfg_.ip, dst, kProtoUdp, uint16_t(ulen), ip_id_++, sock.ttl, sock.tos);
    end_ip_frame(kEthHeader + kIpv4Header + ulen);
    ++udp_.counters.datagrams_out;
    return 0;
  }
  // Larger than the MTU: IPv4 fragments (RFC 791 3.2), as Linux does for a UDP
  // socket without IP_PMTUDISC_DO. Every fragment but the last carries a multiple
  // of 8 bytes. A fragment that cannot be sent loses the datagram: stop there.
  const size_t per = room & ~size_t{7};
  const uint16_t ip_id = ip_id_++;
  for (size_t off = 0; off < ulen; off += per) {
    size_t n = std::min(per, ulen - off);
    uint8_t* f = begin_ip_frame(dst, now);
    if (!f) return 0;
    uint8_t* p = f + kEthHeader + kIpv4Header;
    // Bytes [off, off + n) of header + payload.
    size_t from_hdr = off < kUdpHeader ? std::min(n, kUdpHeader - off) : 0;
    if (from_hdr > 0) std::memcpy(p, hdr + off, from_hdr);
    size_t poff = off + from_hdr - kUdpHeader;
    std::memcpy(p + from_hdr, payload.data() + poff, n - from_hdr);
    bool more = off + n < ulen;
    write_ipv4(f + kEthHeader, cfg_.ip, dst, kProtoUdp, uint16_t(n), ip_id, sock.ttl, sock.tos,
               uint16_t((more ? 0x2000 : 0) | (off / 8)));  // MF, offset in 8-byte units
    end_ip_frame(kEthHeader + kIpv4Header + n);
    ++udp_.counters.fragments_out;
  }
  ++udp_.counters.datagrams_out;
  return 0;
}

}  // namespace shunt
