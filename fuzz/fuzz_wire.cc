// libFuzzer target: the wire parsers (parse_eth, parse_arp, parse_ipv4, parse_tcp,
// parse_icmp) on arbitrary bytes. Besides ASan/UBSan, checks what a parser promises:
// a payload it returns lies inside the input, and a TCP segment it accepts, written
// back with write_tcp, parses to the same header fields and payload.
//
// The first byte steers: bit 0 set, the rest is a TCP segment (or, with bit 1, an
// ICMP message) whose checksum the harness fixes first, so the option and length
// checks behind the checksum are reached; else the rest is an Ethernet frame, also
// tried as a bare IPv4 packet and a bare ARP packet.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "wire/wire.hh"

using namespace shunt::wire;

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_wire: %s\n", what);
  std::abort();
}

void within(std::span<const uint8_t> inner, std::span<const uint8_t> outer, const char* what) {
  if (inner.empty()) return;
  if (inner.data() < outer.data() || inner.data() + inner.size() > outer.data() + outer.size()) fail(what);
}

constexpr uint32_t kSrc = 0xc6120002, kDst = 0xc6120001;

// The parsed segment, for the report of a failed check.
void print(const char* what, const TcpSegment& s) {
  std::fprintf(stderr, "%s: %u > %u seq %u ack %u flags 0x%02x win %u mss %u wscale %d sack_permitted %d ts %d(%u,%u) "
               "sack_count %u payload %zu\n", what, s.src_port, s.dst_port, s.seq, s.ack, s.flags, s.window, s.mss,
               int(s.wscale), int(s.sack_permitted), int(s.has_ts), s.tsval, s.tsecr, unsigned(s.sack_count),
               s.payload.size());
}

void check_tcp(const Ipv4& ip) {
  TcpSegment seg;
  if (parse_tcp(ip, &seg) != ParseError::kNone) return;
  auto bad = [&](const char* what) {
    print("parsed", seg);
    fail(what);
  };
  within(seg.payload, ip.payload, "parse_tcp: payload outside the packet");
  if (seg.seq_len() < seg.payload.size()) bad("parse_tcp: seq_len below the payload length");
  // Round trip: write it back, parse again, same header and payload.
  TcpSegment out = seg;
  size_t hlen = tcp_header_len(out);
  if (hlen < kTcpHeader || hlen > 60 || hlen % 4 != 0) {
    std::fprintf(stderr, "tcp_header_len = %zu\n", hlen);
    bad("tcp_header_len out of 20..60 or not a multiple of 4");
  }
  std::vector<uint8_t> buf(hlen + seg.payload.size());
  if (!seg.payload.empty()) std::memcpy(buf.data() + hlen, seg.payload.data(), seg.payload.size());
  out.payload = {buf.data() + hlen, seg.payload.size()};
  if (write_tcp(buf.data(), out) != hlen) bad("write_tcp wrote another length than tcp_header_len");
  Ipv4 ip2 = ip;
  ip2.payload = buf;
  TcpSegment back;
  if (parse_tcp(ip2, &back) != ParseError::kNone) bad("a segment written by write_tcp does not parse");
  if (back.src_port != seg.src_port || back.dst_port != seg.dst_port || back.seq != seg.seq ||
      back.ack != seg.ack || back.flags != seg.flags || back.window != seg.window || back.mss != seg.mss ||
      back.payload.size() != seg.payload.size() ||
      (!seg.payload.empty() && std::memcmp(back.payload.data(), seg.payload.data(), seg.payload.size()) != 0)) {
    print("written back", back);
    bad("write_tcp/parse_tcp round trip changed the segment");
  }
}

void check_ipv4(std::span<const uint8_t> packet) {
  Ipv4 ip;
  if (parse_ipv4(packet, &ip) != ParseError::kNone) return;
  within(ip.payload, packet, "parse_ipv4: payload outside the packet");
  if (ip.proto == kProtoTcp) check_tcp(ip);
  if (ip.proto == kProtoIcmp) {
    Icmp icmp;
    if (parse_icmp(ip.payload, &icmp) == ParseError::kNone) within(icmp.body, ip.payload, "parse_icmp: body outside");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  uint8_t mode = data[0];
  std::vector<uint8_t> bytes(data + 1, data + size);  // exactly sized: overreads are caught
  std::span<const uint8_t> all(bytes);

  if (mode & 1) {
    if (mode & 2) {
      if (bytes.size() >= 4) {
        bytes[2] = bytes[3] = 0;
        store16(bytes.data() + 2, checksum_finish(checksum_add(0, bytes.data(), bytes.size())));
      }
      Icmp icmp;
      if (parse_icmp(all, &icmp) == ParseError::kNone) within(icmp.body, all, "parse_icmp: body outside");
      return 0;
    }
    if (bytes.size() >= kTcpHeader && bytes.size() <= 0xffff) {
      bytes[16] = bytes[17] = 0;
      uint32_t sum = pseudo_header_sum(kSrc, kDst, kProtoTcp, uint16_t(bytes.size()));
      store16(bytes.data() + 16, checksum_finish(checksum_add(sum, bytes.data(), bytes.size())));
    }
    Ipv4 ip{};
    ip.src = kSrc;
    ip.dst = kDst;
    ip.proto = kProtoTcp;
    ip.ttl = 64;
    ip.payload = all;
    check_tcp(ip);
    return 0;
  }

  EthHeader eth;
  if (parse_eth(all, &eth) && all.size() >= kEthHeader) {
    auto rest = all.subspan(kEthHeader);
    Arp arp;
    if (eth.type == kEtherArp) (void)parse_arp(rest, &arp);
    if (eth.type == kEtherIpv4) check_ipv4(rest);
  }
  Arp arp;
  (void)parse_arp(all, &arp);
  check_ipv4(all);
  return 0;
}
