// Wire formats: round trips, checksum vectors, and every malformed-input path.
#include <gtest/gtest.h>

#include "harness.hh"
#include "wire/wire.hh"

namespace shunt::test {
namespace {

using wire::ParseError;

std::vector<uint8_t> bytes(std::initializer_list<int> v) {
  std::vector<uint8_t> out;
  for (int b : v) out.push_back(uint8_t(b));
  return out;
}

uint16_t checksum(const std::vector<uint8_t>& v) {
  return wire::checksum_finish(wire::checksum_add(0, v.data(), v.size()));
}

// ---- Checksum (RFC 1071) ----

TEST(Checksum, Rfc1071Example) {
  // RFC 1071 section 3: the sum of 0001 f203 f4f5 f6f7 is ddf2 (folded), so the
  // checksum is its complement.
  auto v = bytes({0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7});
  EXPECT_EQ(checksum(v), uint16_t(~0xddf2));
}

TEST(Checksum, KnownIpv4Header) {
  // A widely quoted header (c0a80001 -> c0a800c7, UDP, 115 bytes) whose
  // checksum field is b861; with it in place the header sums to zero.
  auto h = bytes({0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0,
                  0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7});
  EXPECT_EQ(checksum(h), 0xb861);
  h[10] = 0xb8;
  h[11] = 0x61;
  EXPECT_EQ(checksum(h), 0);
}

TEST(Checksum, OddLengthPadsWithZero) {
  auto odd = bytes({0x12, 0x34, 0x56});
  auto even = bytes({0x12, 0x34, 0x56, 0x00});
  EXPECT_EQ(checksum(odd), checksum(even));
  EXPECT_EQ(checksum(odd), uint16_t(~(0x1234 + 0x5600)));
}

TEST(Checksum, CarriesFoldOverLongInput) {
  // 4096 bytes of 0xff: every word is ffff, the one's-complement sum is ffff and
  // the checksum 0. A fold that loses carries gets this wrong.
  std::vector<uint8_t> v(4096, 0xff);
  EXPECT_EQ(checksum(v), 0);
  std::vector<uint8_t> w(4097, 0xff);
  w.back() = 0x01;  // adds 0100
  EXPECT_EQ(checksum(w), uint16_t(~0x0100));
}

TEST(Checksum, IncrementalEqualsWhole) {
  std::vector<uint8_t> v(1000);
  for (size_t i = 0; i < v.size(); ++i) v[i] = uint8_t(i * 7 + 3);
  uint32_t part = wire::checksum_add(0, v.data(), 500);
  part = wire::checksum_add(part, v.data() + 500, 500);
  EXPECT_EQ(wire::checksum_finish(part), checksum(v));
}

// The definition itself, one big-endian word at a time: the fast sum must agree
// with it at every length (the 16-, 4- and 2-byte steps and the pad byte), every
// alignment of the buffer, and a starting sum that carries.
TEST(Checksum, AgreesWithWordByWordDefinition) {
  std::vector<uint8_t> buf(1600);
  uint32_t x = 12345;
  for (auto& b : buf) b = uint8_t((x = x * 1103515245 + 12345) >> 16);
  std::fill(buf.begin() + 700, buf.begin() + 900, 0xff);  // runs of ffff: carries
  for (uint32_t start : {0u, 0x1fffeu, 0xfffffff0u}) {
    for (size_t offset = 0; offset < 8; ++offset) {
      for (size_t len = 0; len + offset <= buf.size(); len += len < 80 ? 1 : 97) {
        const uint8_t* p = buf.data() + offset;
        uint64_t want = start;
        for (size_t i = 0; i + 1 < len; i += 2) want += uint32_t(p[i]) << 8 | p[i + 1];
        if (len % 2 != 0) want += uint32_t(p[len - 1]) << 8;
        while (want >> 16) want = (want & 0xffff) + (want >> 16);
        ASSERT_EQ(wire::checksum_finish(wire::checksum_add(start, p, len)), uint16_t(~want))
            << "start " << start << " offset " << offset << " length " << len;
      }
    }
  }
}

// ---- Ethernet and ARP ----

TEST(Eth, RoundTripAndTruncation) {
  std::vector<uint8_t> f(14);
  wire::write_eth(f.data(), kRemoteMac, kLocalMac, wire::kEtherArp);
  wire::EthHeader e;
  ASSERT_TRUE(wire::parse_eth(f, &e));
  EXPECT_EQ(e.dst, kRemoteMac);
  EXPECT_EQ(e.src, kLocalMac);
  EXPECT_EQ(e.type, wire::kEtherArp);
  EXPECT_FALSE(wire::parse_eth(std::span(f).first(13), &e));
}

TEST(Arp, RoundTrip) {
  auto f = arp_frame(2, kRemoteMac, kRemoteIp, kLocalMac, kLocalIp);
  wire::Arp a;
  ASSERT_EQ(wire::parse_arp(std::span(f).subspan(14), &a), ParseError::kNone);
  EXPECT_EQ(a.op, 2);
  EXPECT_EQ(a.sender_mac, kRemoteMac);
  EXPECT_EQ(a.sender_ip, kRemoteIp);
  EXPECT_EQ(a.target_mac, kLocalMac);
  EXPECT_EQ(a.target_ip, kLocalIp);
}

TEST(Arp, Malformed) {
  auto f = arp_frame(1, kRemoteMac, kRemoteIp, {}, kLocalIp);
  auto p = std::span(f).subspan(14);
  wire::Arp a;
  EXPECT_EQ(wire::parse_arp(p.first(27), &a), ParseError::kTruncated);
  auto bad_hw = f;
  bad_hw[14 + 1] = 6;  // hardware type 6 (IEEE 802)
  EXPECT_EQ(wire::parse_arp(std::span(bad_hw).subspan(14), &a), ParseError::kUnsupported);
  auto bad_op = f;
  bad_op[14 + 7] = 3;  // RARP request
  EXPECT_EQ(wire::parse_arp(std::span(bad_op).subspan(14), &a), ParseError::kUnsupported);
  auto bad_len = f;
  bad_len[14 + 4] = 8;  // hardware address length
  EXPECT_EQ(wire::parse_arp(std::span(bad_len).subspan(14), &a), ParseError::kUnsupported);
}

// ---- IPv4 ----

std::vector<uint8_t> ip_packet(size_t payload_len, uint8_t proto = wire::kProtoUdp) {
  std::vector<uint8_t> p(20 + payload_len, 0x5a);
  wire::write_ipv4(p.data(), kRemoteIp, kLocalIp, proto, uint16_t(payload_len), 0x1234, 33, 0x10);
  return p;
}

void refresh_ip_checksum(std::vector<uint8_t>& p) {
  size_t ihl = size_t(p[0] & 0xf) * 4;
  wire::store16(p.data() + 10, 0);
  wire::store16(p.data() + 10, wire::checksum_finish(wire::checksum_add(0, p.data(), ihl)));
}

TEST(Ipv4, RoundTrip) {
  auto p = ip_packet(8);
  EXPECT_EQ(p[0], 0x45);
  EXPECT_EQ(wire::load16(p.data() + 6), 0x4000) << "DF set, no fragment offset";
  wire::Ipv4 ip;
  ASSERT_EQ(wire::parse_ipv4(p, &ip), ParseError::kNone);
  EXPECT_EQ(ip.src, kRemoteIp);
  EXPECT_EQ(ip.dst, kLocalIp);
  EXPECT_EQ(ip.proto, wire::kProtoUdp);
  EXPECT_EQ(ip.ttl, 33);
  EXPECT_EQ(ip.tos, 0x10);
  EXPECT_EQ(ip.id, 0x1234);
  EXPECT_EQ(ip.payload.size(), 8u);
  EXPECT_EQ(ip.payload.data(), p.data() + 20);
}

TEST(Ipv4, WritesKnownHeader) {
  std::vector<uint8_t> p(20);
  wire::write_ipv4(p.data(), ip4(192, 168, 0, 1), ip4(192, 168, 0, 199), wire::kProtoUdp,
                   0x73 - 20, 0, 64);
  auto want = bytes({0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61,
                     0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7});
  EXPECT_EQ(p, want);
}

TEST(Ipv4, PayloadTrimmedToTotalLength) {
  auto p = ip_packet(8);
  p.resize(p.size() + 18, 0);  // Ethernet padding after the datagram
  wire::Ipv4 ip;
  ASSERT_EQ(wire::parse_ipv4(p, &ip), ParseError::kNone);
  EXPECT_EQ(ip.payload.size(), 8u);
}

TEST(Ipv4, OptionsAreSkipped) {
  // IHL 6: one 4-byte option (NOPs + EOL) before the payload.
  std::vector<uint8_t> p(24 + 4, 0);
  p[0] = 0x46;
  wire::store16(p.data() + 2, 28);
  p[8] = 64;
  p[9] = wire::kProtoUdp;
  wire::store32(p.data() + 12, kRemoteIp);
  wire::store32(p.data() + 16, kLocalIp);
  p[20] = p[21] = p[22] = 1;
  p[24] = 0xab;
  refresh_ip_checksum(p);
  wire::Ipv4 ip;
  ASSERT_EQ(wire::parse_ipv4(p, &ip), ParseError::kNone);
  ASSERT_EQ(ip.payload.size(), 4u);
  EXPECT_EQ(ip.payload[0], 0xab);
}

struct Ipv4Case {
  const char* name;
  void (*mutate)(std::vector<uint8_t>&);
  ParseError want;
};
void PrintTo(const Ipv4Case& c, std::ostream* os) { *os << c.name; }

class Ipv4Malformed : public ::testing::TestWithParam<Ipv4Case> {};

TEST_P(Ipv4Malformed, IsRejected) {
  auto p = ip_packet(16);
  GetParam().mutate(p);
  wire::Ipv4 ip;
  EXPECT_EQ(wire::parse_ipv4(p, &ip), GetParam().want);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, Ipv4Malformed,
    ::testing::Values(
        Ipv4Case{"Truncated", [](auto& p) { p.resize(19); }, ParseError::kTruncated},
        Ipv4Case{"Version6", [](auto& p) { p[0] = 0x65; refresh_ip_checksum(p); },
                 ParseError::kBadVersion},
        Ipv4Case{"IhlBelowFive", [](auto& p) { p[0] = 0x44; }, ParseError::kBadHeaderLength},
        Ipv4Case{"IhlZero", [](auto& p) { p[0] = 0x40; }, ParseError::kBadHeaderLength},
        Ipv4Case{"IhlPastPacket", [](auto& p) { p.resize(24); p[0] = 0x47; },
                 ParseError::kBadHeaderLength},
        Ipv4Case{"TotalLengthPastPacket",
                 [](auto& p) { wire::store16(p.data() + 2, uint16_t(p.size() + 1)); refresh_ip_checksum(p); },
                 ParseError::kBadLength},
        Ipv4Case{"TotalLengthBelowHeader",
                 [](auto& p) { wire::store16(p.data() + 2, 19); refresh_ip_checksum(p); },
                 ParseError::kBadLength},
        Ipv4Case{"BadChecksum", [](auto& p) { p[11] ^= 1; }, ParseError::kBadChecksum},
        Ipv4Case{"CorruptSourceAddress", [](auto& p) { p[13] ^= 0x40; }, ParseError::kBadChecksum},
        Ipv4Case{"MoreFragments",
                 [](auto& p) { wire::store16(p.data() + 6, 0x2000); refresh_ip_checksum(p); },
                 ParseError::kFragment},
        Ipv4Case{"FragmentOffset",
                 [](auto& p) { wire::store16(p.data() + 6, 0x4001); refresh_ip_checksum(p); },
                 ParseError::kFragment}),
    [](const auto& info) { return std::string(info.param.name); });

// ---- TCP ----

struct TcpBuf {
  std::vector<uint8_t> bytes;
  wire::Ipv4 ip;
};

// A TCP segment as IPv4 payload; `opts` replaces the header's option bytes (the
// data offset is set to cover them) and the checksum is recomputed.
TcpBuf tcp_packet(const Seg& s, std::vector<uint8_t> opts = {}, bool fix_checksum = true) {
  auto f = tcp_frame(s);
  TcpBuf b;
  std::vector<uint8_t> tcp(f.begin() + 34, f.end());
  size_t hlen = size_t(tcp[12] >> 4) * 4;
  std::vector<uint8_t> payload(tcp.begin() + long(hlen), tcp.end());
  tcp.resize(20);
  tcp.insert(tcp.end(), opts.begin(), opts.end());
  tcp[12] = uint8_t(((20 + opts.size()) / 4) << 4);
  tcp.insert(tcp.end(), payload.begin(), payload.end());
  if (fix_checksum) {
    wire::store16(tcp.data() + 16, 0);
    uint32_t sum = wire::pseudo_header_sum(kRemoteIp, kLocalIp, wire::kProtoTcp, uint16_t(tcp.size()));
    wire::store16(tcp.data() + 16, wire::checksum_finish(wire::checksum_add(sum, tcp.data(), tcp.size())));
  }
  b.bytes = tcp;
  b.ip = wire::Ipv4{.src = kRemoteIp, .dst = kLocalIp, .proto = wire::kProtoTcp, .ttl = 64,
                    .tos = 0, .id = 0, .payload = {}};
  return b;
}

ParseError parse(TcpBuf& b, wire::TcpSegment* out) {
  b.ip.payload = b.bytes;
  return wire::parse_tcp(b.ip, out);
}

TEST(Tcp, RoundTripWithMssAndPayload) {
  Seg s{.src_port = 1234, .dst_port = 80, .seq = 0xfffffffe, .ack = 0x01020304,
        .flags = kSyn | kAck, .window = 4321, .mss = 1460, .payload = "hello"};
  auto f = tcp_frame(s);
  auto t = parse_tcp_frame(f);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->seg.src_port, 1234);
  EXPECT_EQ(t->seg.dst_port, 80);
  EXPECT_EQ(t->seg.seq, 0xfffffffeu);
  EXPECT_EQ(t->seg.ack, 0x01020304u);
  EXPECT_EQ(t->seg.flags, kSyn | kAck);
  EXPECT_EQ(t->seg.window, 4321);
  EXPECT_EQ(t->seg.mss, 1460);
  EXPECT_EQ(t->seg.payload, "hello");
  EXPECT_EQ(f[34 + 12] >> 4, 6) << "data offset covers the 4-byte MSS option";
}

TEST(Tcp, HeaderLengthAndSeqLen) {
  wire::TcpSegment s{.flags = kSyn};
  EXPECT_EQ(wire::tcp_header_len(s), 20u);
  s.mss = 536;
  EXPECT_EQ(wire::tcp_header_len(s), 24u);
  EXPECT_EQ(s.seq_len(), 1u);
  uint8_t data[3] = {};
  s.payload = data;
  s.flags = kSyn | kFin;
  EXPECT_EQ(s.seq_len(), 5u);
}

TEST(Tcp, ChecksumCoversPseudoHeader) {
  auto b = tcp_packet(Seg{.seq = 1, .flags = kAck, .payload = "x"});
  wire::TcpSegment out;
  ASSERT_EQ(parse(b, &out), ParseError::kNone);
  b.ip.dst = kLocalIp + 1;  // same bytes, delivered to another address
  EXPECT_EQ(wire::parse_tcp(b.ip, &out), ParseError::kBadChecksum);
}

TEST(Tcp, BadChecksum) {
  auto b = tcp_packet(Seg{.seq = 1, .flags = kAck, .payload = "abc"});
  b.bytes.back() ^= 0x01;
  wire::TcpSegment out;
  EXPECT_EQ(parse(b, &out), ParseError::kBadChecksum);
}

TEST(Tcp, Truncated) {
  auto b = tcp_packet(Seg{.flags = kAck});
  b.bytes.resize(19);
  wire::TcpSegment out;
  EXPECT_EQ(parse(b, &out), ParseError::kTruncated);
}

TEST(Tcp, DataOffsetBelowFive) {
  auto b = tcp_packet(Seg{.flags = kAck, .payload = "abcd"});
  b.bytes[12] = 0x40;
  wire::TcpSegment out;
  EXPECT_EQ(parse(b, &out), ParseError::kBadHeaderLength);
}

TEST(Tcp, DataOffsetPastSegment) {
  auto b = tcp_packet(Seg{.flags = kAck});
  b.bytes[12] = 0x60;  // 24 bytes claimed, 20 present
  wire::TcpSegment out;
  EXPECT_EQ(parse(b, &out), ParseError::kBadHeaderLength);
}

TEST(Tcp, MssOnlyFromSyn) {
  wire::TcpSegment out;
  auto syn = tcp_packet(Seg{.flags = kSyn}, {1, 2, 4, 0x02, 0x18, 1, 1, 0});
  ASSERT_EQ(parse(syn, &out), ParseError::kNone);
  EXPECT_EQ(out.mss, 0x0218);
  auto ack = tcp_packet(Seg{.flags = kAck}, {2, 4, 0x02, 0x18});
  ASSERT_EQ(parse(ack, &out), ParseError::kNone);
  EXPECT_EQ(out.mss, 0) << "RFC 9293 3.7.1: MSS is only sent, and only read, in SYNs";
}

TEST(Tcp, EndOfOptionListStopsParsing) {
  // After EOL the rest is padding, even if it looks like a bad option.
  wire::TcpSegment out;
  auto b = tcp_packet(Seg{.flags = kSyn, .payload = "pp"}, {0, 2, 0, 0});
  ASSERT_EQ(parse(b, &out), ParseError::kNone);
  EXPECT_EQ(out.mss, 0);
  EXPECT_EQ(std::string(out.payload.begin(), out.payload.end()), "pp");
}

TEST(Tcp, UnknownOptionIsSkipped) {
  // Window scale (3) and SACK-permitted (4), then MSS.
  wire::TcpSegment out;
  auto b = tcp_packet(Seg{.flags = kSyn}, {3, 3, 7, 4, 2, 2, 4, 0x05, 0xb4, 0, 0, 0});
  ASSERT_EQ(parse(b, &out), ParseError::kNone);
  EXPECT_EQ(out.mss, 1460);
}

struct OptCase {
  const char* name;
  std::vector<uint8_t> opts;
};
void PrintTo(const OptCase& c, std::ostream* os) { *os << c.name; }

class TcpBadOptions : public ::testing::TestWithParam<OptCase> {};

TEST_P(TcpBadOptions, AreRejected) {
  wire::TcpSegment out;
  auto b = tcp_packet(Seg{.flags = kSyn}, GetParam().opts);
  EXPECT_EQ(parse(b, &out), ParseError::kBadOptions);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, TcpBadOptions,
    ::testing::Values(OptCase{"LengthZero", {8, 0, 1, 1}},
                      OptCase{"LengthOne", {8, 1, 1, 1}},
                      OptCase{"LengthOverrun", {1, 1, 8, 10}},
                      OptCase{"KindWithoutLengthByte", {1, 1, 1, 8}},
                      OptCase{"MssWrongLength", {2, 3, 5, 1}},
                      OptCase{"MssOverrun", {1, 1, 1, 1, 1, 2, 4, 5}}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Tcp, MssOverrunIntoPayloadIsRejected) {
  // The option's length must fit in the header, not merely in the segment.
  wire::TcpSegment out;
  auto b = tcp_packet(Seg{.flags = kSyn, .payload = "\x05\xb4"}, {1, 1, 2, 4});
  EXPECT_EQ(parse(b, &out), ParseError::kBadOptions);
}

// ---- ICMP ----

TEST(Icmp, ParseAndMalformed) {
  auto m = icmp_echo(8, 0x1234, 7, "ping");
  wire::Icmp icmp;
  ASSERT_EQ(wire::parse_icmp(m, &icmp), ParseError::kNone);
  EXPECT_EQ(icmp.type, 8);
  EXPECT_EQ(icmp.code, 0);
  EXPECT_EQ(icmp.body.size(), 8u);
  EXPECT_EQ(wire::parse_icmp(std::span(m).first(3), &icmp), ParseError::kTruncated);
  m.back() ^= 0xff;
  EXPECT_EQ(wire::parse_icmp(m, &icmp), ParseError::kBadChecksum);
}

}  // namespace
}  // namespace shunt::test

namespace shunt::test {
namespace {

// Every option at once on a SYN plus SACK blocks: the blocks are cut to what
// fits in 40 option bytes, and the data offset stays right (found by fuzz.wire).
TEST(Tcp, OptionsNeverOverflowTheDataOffset) {
  std::array<uint8_t, 128> buf{};
  wire::TcpSegment s{.src_port = 1, .dst_port = 2, .flags = wire::kSyn, .mss = 1460};
  s.wscale = 7;
  s.sack_permitted = true;
  s.has_ts = true;
  s.sack_count = 3;
  size_t hlen = wire::tcp_header_len(s);
  EXPECT_LE(hlen, 60u);
  EXPECT_EQ(wire::write_tcp(buf.data(), s), hlen);
  EXPECT_EQ(size_t(buf[12] >> 4) * 4, hlen);
  s.has_ts = false;  // SACK-permitted alone (4 bytes) + window scale + MSS
  hlen = wire::tcp_header_len(s);
  EXPECT_LE(hlen, 60u);
  EXPECT_EQ(wire::write_tcp(buf.data(), s), hlen);
  EXPECT_EQ(size_t(buf[12] >> 4) * 4, hlen);
}

}  // namespace
}  // namespace shunt::test
