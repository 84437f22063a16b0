// UDP (RFC 768, RFC 1122 4.1), ICMP port unreachable in and out, IPv4 fragments
// out (RFC 791 3.2) and their reassembly in, bounded in memory and time.
#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <numeric>

#include <arpa/inet.h>

#include "harness.hh"

namespace shunt::test {
namespace {

using wire::load16;
using wire::load32;
using wire::store16;
using wire::store32;

constexpr uint16_t kDnsPort = 53;
constexpr uint16_t kPeerPort = 40000;
constexpr uint64_t kUdpUser = 11;

// A UDP datagram as bytes (header + payload), checksum computed unless `csum` given.
std::vector<uint8_t> udp_bytes(uint16_t sport, uint16_t dport, const std::string& payload,
                               uint32_t src = kRemoteIp, uint32_t dst = kLocalIp,
                               std::optional<uint16_t> csum = std::nullopt) {
  std::vector<uint8_t> d(8 + payload.size());
  store16(d.data(), sport);
  store16(d.data() + 2, dport);
  store16(d.data() + 4, uint16_t(d.size()));
  std::memcpy(d.data() + 8, payload.data(), payload.size());
  uint16_t c = csum ? *csum
                    : wire::checksum_finish(wire::checksum_add(
                          wire::pseudo_header_sum(src, dst, wire::kProtoUdp, uint16_t(d.size())),
                          d.data(), d.size()));
  if (!csum && c == 0) c = 0xffff;
  store16(d.data() + 6, c);
  return d;
}

// One IPv4 fragment frame: `bytes` at byte offset `offset` of the datagram.
std::vector<uint8_t> frag_frame(uint16_t id, uint32_t offset, bool more,
                                const std::vector<uint8_t>& bytes, size_t from, size_t len,
                                uint8_t proto = wire::kProtoUdp, uint32_t src = kRemoteIp) {
  std::vector<uint8_t> f(wire::kEthHeader + wire::kIpv4Header + len);
  wire::write_eth(f.data(), kLocalMac, kRemoteMac, wire::kEtherIpv4);
  uint8_t* p = f.data() + wire::kEthHeader;
  p[0] = 0x45;
  store16(p + 2, uint16_t(wire::kIpv4Header + len));
  store16(p + 4, id);
  store16(p + 6, uint16_t((more ? 0x2000 : 0) | (offset / 8)));
  p[8] = 64;
  p[9] = proto;
  store32(p + 12, src);
  store32(p + 16, kLocalIp);
  store16(p + 10, wire::checksum_finish(wire::checksum_add(0, p, wire::kIpv4Header)));
  std::memcpy(p + wire::kIpv4Header, bytes.data() + from, len);
  return f;
}

// Splits a datagram (UDP header + payload) into fragments of `per` bytes.
std::vector<std::vector<uint8_t>> fragments(uint16_t id, const std::vector<uint8_t>& d,
                                            size_t per = 1480) {
  std::vector<std::vector<uint8_t>> out;
  for (size_t off = 0; off < d.size(); off += per) {
    size_t n = std::min(per, d.size() - off);
    out.push_back(frag_frame(id, uint32_t(off), off + n < d.size(), d, off, n));
  }
  return out;
}

// An IPv4 frame the engine emitted, fragment fields included.
struct IpOut {
  uint32_t src = 0, dst = 0;
  uint8_t proto = 0;
  uint16_t id = 0;
  bool df = false, more = false;
  uint32_t offset = 0;
  std::vector<uint8_t> payload;
};

std::optional<IpOut> parse_ip_out(const std::vector<uint8_t>& f) {
  wire::EthHeader eth;
  if (!wire::parse_eth(f, &eth) || eth.type != wire::kEtherIpv4) return std::nullopt;
  const uint8_t* p = f.data() + wire::kEthHeader;
  size_t avail = f.size() - wire::kEthHeader;
  if (avail < wire::kIpv4Header || p[0] != 0x45) return std::nullopt;
  if (wire::checksum_finish(wire::checksum_add(0, p, wire::kIpv4Header)) != 0) return std::nullopt;
  size_t total = load16(p + 2);
  if (total > avail || total < wire::kIpv4Header) return std::nullopt;
  IpOut o;
  o.src = load32(p + 12);
  o.dst = load32(p + 16);
  o.proto = p[9];
  o.id = load16(p + 4);
  uint16_t fr = load16(p + 6);
  o.df = fr & 0x4000;
  o.more = fr & 0x2000;
  o.offset = uint32_t(fr & 0x1fff) * 8;
  o.payload.assign(p + wire::kIpv4Header, p + total);
  return o;
}

class UdpTest : public EngineTest {
 protected:
  void SetUp() override { ASSERT_NO_FATAL_FAILURE(seed_arp()); }

  uint64_t drops(Drop d) const { return eng_->counters().drops[static_cast<size_t>(d)]; }

  UdpId bind(uint16_t port, AppRings& rings, uint64_t user = kUdpUser) {
    UdpId id = kNoUdp;
    EXPECT_EQ(eng().udp().bind(port, rings.erx(), user, &id), 0);
    return id;
  }

  Drop recv_udp(uint16_t sport, uint16_t dport, const std::string& payload,
                uint32_t src = kRemoteIp) {
    return input(ip_frame(wire::kProtoUdp, udp_bytes(sport, dport, payload, src), src));
  }

  // Next record in the ring: source and payload; nullopt when empty.
  struct Got {
    uint32_t ip;
    uint16_t port;
    std::string data;
  };
  static std::optional<Got> pop(AppRings& r) {
    abi::ByteRing rx = r.rx();
    abi::DgramHeader h;
    if (abi::dgram_front(rx, &h) != abi::DgramFront::kOk) return std::nullopt;
    std::string s(h.len, '\0');
    abi::dgram_pop(rx, h, reinterpret_cast<uint8_t*>(s.data()), h.len);
    return Got{ntohl(h.ip), ntohs(h.port), s};
  }

  std::vector<IpOut> out() {
    std::vector<IpOut> v;
    for (auto& f : sink_.frames) {
      auto o = parse_ip_out(f);
      EXPECT_TRUE(o) << "engine emitted a frame that is not valid IPv4";
      if (o) v.push_back(*o);
    }
    sink_.frames.clear();
    return v;
  }

  std::map<uint64_t, std::pair<uint32_t, int>> udp_events() {
    std::map<uint64_t, std::pair<uint32_t, int>> ev;
    eng().udp().drain_events([&](uint64_t user, uint32_t e, int err) {
      ev[user].first |= e;
      ev[user].second = err;
    });
    return ev;
  }
};

// ---- Port table ----

TEST_F(UdpTest, OneSocketPerPortAndClosingFreesIt) {
  AppRings a, b;
  UdpId id = bind(kDnsPort, a);
  UdpId other;
  EXPECT_EQ(eng().udp().bind(kDnsPort, b.erx(), 1, &other), -EADDRINUSE);
  EXPECT_EQ(eng().udp().bind(0, b.erx(), 1, &other), -EINVAL);
  EXPECT_TRUE(eng().udp().port_in_use(kDnsPort));
  EXPECT_FALSE(eng().port_in_use(kDnsPort)) << "TCP and UDP ports are separate spaces";
  eng().udp().close(id);
  EXPECT_FALSE(eng().udp().port_in_use(kDnsPort));
  EXPECT_EQ(eng().udp().bind(kDnsPort, b.erx(), 1, &other), 0);
  EXPECT_EQ(eng().udp().live(), 1u);
}

// ---- Input ----

TEST_F(UdpTest, DatagramLandsInTheRingWithItsSource) {
  AppRings a;
  bind(kDnsPort, a);
  EXPECT_EQ(recv_udp(kPeerPort, kDnsPort, "hello"), Drop::kNone);
  EXPECT_EQ(recv_udp(kPeerPort + 1, kDnsPort, ""), Drop::kNone) << "empty datagrams are datagrams";
  auto g = pop(a);
  ASSERT_TRUE(g);
  EXPECT_EQ(g->ip, kRemoteIp);
  EXPECT_EQ(g->port, kPeerPort);
  EXPECT_EQ(g->data, "hello");
  g = pop(a);
  ASSERT_TRUE(g);
  EXPECT_EQ(g->port, kPeerPort + 1);
  EXPECT_EQ(g->data, "");
  EXPECT_FALSE(pop(a));
  auto ev = udp_events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[kUdpUser].first, kUdpEvReadable) << "one event per socket per batch";
  EXPECT_TRUE(sink_.frames.empty()) << "UDP answers nothing by itself";
  EXPECT_EQ(eng().udp().counters.datagrams_in, 2u);
}

TEST_F(UdpTest, ZeroChecksumMeansNoneAndABadOneDrops) {
  AppRings a;
  bind(kDnsPort, a);
  EXPECT_EQ(input(ip_frame(wire::kProtoUdp, udp_bytes(kPeerPort, kDnsPort, "x", kRemoteIp,
                                                      kLocalIp, 0))),
            Drop::kNone);
  auto bad = udp_bytes(kPeerPort, kDnsPort, "abc");
  bad[8] ^= 1;
  EXPECT_EQ(input(ip_frame(wire::kProtoUdp, bad)), Drop::kUdpBadChecksum);
  EXPECT_EQ(drops(Drop::kUdpBadChecksum), 1u);
  EXPECT_EQ(pop(a)->data, "x");
  EXPECT_FALSE(pop(a));
}

TEST_F(UdpTest, LengthFieldIsCheckedAndTrailingBytesAreTrimmed) {
  AppRings a;
  bind(kDnsPort, a);
  EXPECT_EQ(input(ip_frame(wire::kProtoUdp, {1, 2, 3})), Drop::kUdpTruncated);
  auto d = udp_bytes(kPeerPort, kDnsPort, "abcd");
  auto longer = d;
  store16(longer.data() + 4, uint16_t(d.size() + 1));
  EXPECT_EQ(input(ip_frame(wire::kProtoUdp, longer)), Drop::kUdpBadLength);
  auto shorter = d;
  store16(shorter.data() + 4, 7);
  EXPECT_EQ(input(ip_frame(wire::kProtoUdp, shorter)), Drop::kUdpBadLength);
  // Padding after the datagram inside the IP payload is not data (zero checksum:
  // the sum would not cover the padding either way).
  auto padded = udp_bytes(kPeerPort, kDnsPort, "ab", kRemoteIp, kLocalIp, 0);
  padded.push_back(0xee);
  padded.push_back(0xee);
  EXPECT_EQ(input(ip_frame(wire::kProtoUdp, padded)), Drop::kNone);
  EXPECT_EQ(pop(a)->data, "ab");
}

TEST_F(UdpTest, ClosedPortAnswersIcmpPortUnreachableQuotingTheDatagram) {
  EXPECT_EQ(recv_udp(kPeerPort, 9999, "are you there"), Drop::kUdpNoSocket);
  auto v = out();
  ASSERT_EQ(v.size(), 1u);
  const IpOut& o = v[0];
  EXPECT_EQ(o.proto, wire::kProtoIcmp);
  EXPECT_EQ(o.src, kLocalIp);
  EXPECT_EQ(o.dst, kRemoteIp);
  ASSERT_GE(o.payload.size(), 8u + 20 + 8);
  EXPECT_EQ(o.payload[0], 3);
  EXPECT_EQ(o.payload[1], 3);
  EXPECT_EQ(wire::checksum_finish(wire::checksum_add(0, o.payload.data(), o.payload.size())), 0);
  const uint8_t* q = o.payload.data() + 8;
  EXPECT_EQ(q[9], wire::kProtoUdp);
  EXPECT_EQ(load32(q + 12), kRemoteIp);
  EXPECT_EQ(load32(q + 16), kLocalIp);
  EXPECT_EQ(load16(q + 20), kPeerPort);
  EXPECT_EQ(load16(q + 22), 9999);
  EXPECT_EQ(std::string(q + 28, o.payload.data() + o.payload.size()), "are you there");
  EXPECT_EQ(eng().udp().counters.port_unreachable_sent, 1u);
}

TEST_F(UdpTest, PortUnreachableQuotesAtMost576Bytes) {
  EXPECT_EQ(recv_udp(kPeerPort, 9999, pattern(1400)), Drop::kUdpNoSocket);
  auto v = out();
  ASSERT_EQ(v.size(), 1u);
  EXPECT_EQ(20 + v[0].payload.size(), 576u);
}

TEST_F(UdpTest, PortUnreachableIsRateLimited) {
  for (int i = 0; i < 60; ++i) EXPECT_EQ(recv_udp(kPeerPort, 9999, "x"), Drop::kUdpNoSocket);
  EXPECT_EQ(out().size(), 50u) << "Linux: icmp_msgs_burst 50";
  EXPECT_EQ(drops(Drop::kIcmpRateLimited), 10u);
  advance(kMillisecond);
  EXPECT_EQ(recv_udp(kPeerPort, 9999, "x"), Drop::kUdpNoSocket);
  EXPECT_EQ(recv_udp(kPeerPort, 9999, "x"), Drop::kUdpNoSocket);
  EXPECT_EQ(out().size(), 1u) << "icmp_msgs_per_sec 1000: one per millisecond";
}

TEST_F(UdpTest, ConnectedSocketHearsOnlyItsPeer) {
  AppRings a;
  UdpId id = bind(kDnsPort, a);
  eng().udp().connect(id, kRemoteIp, kPeerPort);
  EXPECT_EQ(recv_udp(kPeerPort + 1, kDnsPort, "stranger"), Drop::kUdpNoSocket);
  EXPECT_EQ(recv_udp(kPeerPort, kDnsPort, "friend", ip4(198, 18, 0, 3)), Drop::kUdpNoSocket);
  EXPECT_EQ(recv_udp(kPeerPort, kDnsPort, "peer"), Drop::kNone);
  EXPECT_EQ(pop(a)->data, "peer");
  EXPECT_FALSE(pop(a));
  eng().udp().connect(id, 0, 0);  // disconnect (AF_UNSPEC)
  EXPECT_EQ(recv_udp(kPeerPort + 1, kDnsPort, "anyone"), Drop::kNone);
  EXPECT_EQ(pop(a)->data, "anyone");
}

TEST_F(UdpTest, FullRingDropsTheDatagramAndKeepsTheOthers) {
  AppRings a(64);
  bind(kDnsPort, a);
  EXPECT_EQ(recv_udp(kPeerPort, kDnsPort, pattern(40)), Drop::kNone);  // 48 bytes of 64
  EXPECT_EQ(recv_udp(kPeerPort, kDnsPort, pattern(9)), Drop::kUdpRxRingFull);
  EXPECT_EQ(recv_udp(kPeerPort, kDnsPort, pattern(8)), Drop::kNone) << "16 bytes still fit";
  EXPECT_EQ(drops(Drop::kUdpRxRingFull), 1u);
  EXPECT_EQ(pop(a)->data, pattern(40));
  EXPECT_EQ(pop(a)->data, pattern(8));
}

// ---- ICMP errors in ----

TEST_F(UdpTest, PortUnreachableForAConnectedSocketIsReportedOnce) {
  AppRings a, b;
  UdpId c = bind(5000, a, 1);
  bind(5001, b, 2);
  eng().udp().connect(c, kRemoteIp, kDnsPort);
  // What the peer would answer to a datagram from each socket.
  auto unreachable = [&](uint16_t sport, uint8_t code) {
    auto d = udp_bytes(sport, kDnsPort, "q", kLocalIp, kRemoteIp);
    std::vector<uint8_t> quoted(20 + d.size());
    wire::write_ipv4(quoted.data(), kLocalIp, kRemoteIp, wire::kProtoUdp, uint16_t(d.size()), 7);
    std::memcpy(quoted.data() + 20, d.data(), d.size());
    std::vector<uint8_t> m(8 + quoted.size());
    m[0] = 3;
    m[1] = code;
    std::memcpy(m.data() + 8, quoted.data(), quoted.size());
    store16(m.data() + 2, wire::checksum_finish(wire::checksum_add(0, m.data(), m.size())));
    return input(ip_frame(wire::kProtoIcmp, m));
  };
  EXPECT_EQ(unreachable(5000, 3), Drop::kNone);
  EXPECT_NE(unreachable(5001, 3), Drop::kNone) << "unconnected: Linux tells no one";
  auto ev = udp_events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[1].first, kUdpEvError);
  EXPECT_EQ(ev[1].second, ECONNREFUSED);
  EXPECT_EQ(unreachable(5000, 1), Drop::kNone);
  EXPECT_EQ(udp_events()[1].second, EHOSTUNREACH);
  EXPECT_TRUE(sink_.frames.empty()) << "never an ICMP error about an ICMP error";
}

// ---- Output ----

TEST_F(UdpTest, SmallDatagramGoesOutInOneFrameWithAValidChecksum) {
  AppRings a;
  UdpId id = bind(5353, a);
  std::string msg = "query";
  ASSERT_EQ(eng().udp_send(id, kRemoteIp, kDnsPort,
                           {reinterpret_cast<const uint8_t*>(msg.data()), msg.size()}, now_),
            0);
  auto v = out();
  ASSERT_EQ(v.size(), 1u);
  const IpOut& o = v[0];
  EXPECT_EQ(o.proto, wire::kProtoUdp);
  EXPECT_TRUE(o.df) << "like Linux's IP_PMTUDISC_WANT: DF when it fits";
  EXPECT_FALSE(o.more);
  EXPECT_EQ(o.dst, kRemoteIp);
  ASSERT_EQ(o.payload.size(), 8 + msg.size());
  EXPECT_EQ(load16(o.payload.data()), 5353);
  EXPECT_EQ(load16(o.payload.data() + 2), kDnsPort);
  EXPECT_EQ(load16(o.payload.data() + 4), 8 + msg.size());
  EXPECT_NE(load16(o.payload.data() + 6), 0);
  EXPECT_EQ(wire::checksum_finish(wire::checksum_add(
                wire::pseudo_header_sum(kLocalIp, kRemoteIp, wire::kProtoUdp,
                                        uint16_t(o.payload.size())),
                o.payload.data(), o.payload.size())),
            0);
  EXPECT_EQ(std::string(o.payload.begin() + 8, o.payload.end()), msg);
  EXPECT_EQ(eng().udp().counters.datagrams_out, 1u);
}

// IP_TOS and IP_TTL (set by shuntd on the socket) mark every datagram, each of
// its fragments too; a datagram keeps its ECN bits.
TEST_F(UdpTest, TosAndTtlAreInEveryFramesHeader) {
  AppRings a(65536, 65536);
  UdpId id = bind(5353, a);
  eng().udp().socket(id).tos = 0x11;
  eng().udp().socket(id).ttl = 9;
  std::vector<uint8_t> small(10), big(3000);
  ASSERT_EQ(eng().udp_send(id, kRemoteIp, kDnsPort, small, now_), 0);
  ASSERT_EQ(eng().udp_send(id, kRemoteIp, kDnsPort, big, now_), 0);
  ASSERT_EQ(sink_.frames.size(), 4u) << "one frame, then three fragments";
  for (const auto& f : sink_.frames) {
    EXPECT_EQ(f[wire::kEthHeader + 1], 0x11);
    EXPECT_EQ(f[wire::kEthHeader + 8], 9);
  }
  EXPECT_EQ(out().size(), 4u) << "with valid header checksums";
}

TEST_F(UdpTest, ArgumentsAreChecked) {
  AppRings a;
  UdpId id = bind(5353, a);
  std::vector<uint8_t> big(abi::kMaxDatagram + 1);
  EXPECT_EQ(eng().udp_send(id, kRemoteIp, kDnsPort, big, now_), -EMSGSIZE);
  EXPECT_EQ(eng().udp_send(id, kRemoteIp, 0, {}, now_), -EINVAL);
  EXPECT_EQ(eng().udp_send(id + 1, kRemoteIp, kDnsPort, {}, now_), -EBADF);
  EXPECT_TRUE(sink_.frames.empty());
}

TEST_F(UdpTest, NoRouteIsCountedNotSent) {
  AppRings a;
  UdpId id = bind(5353, a);
  EXPECT_EQ(eng().udp_send(id, ip4(192, 0, 2, 1), kDnsPort, {}, now_), 0);
  EXPECT_EQ(drops(Drop::kNoRoute), 1u);
  EXPECT_TRUE(sink_.frames.empty());
}

TEST_F(UdpTest, DatagramToOurOwnAddressLoopsBack) {
  AppRings a, b;
  UdpId client = bind(5353, a, 1);
  bind(kDnsPort, b, 2);
  std::string msg = pattern(3000);  // no MTU on the way
  ASSERT_EQ(eng().udp_send(client, kLocalIp, kDnsPort,
                           {reinterpret_cast<const uint8_t*>(msg.data()), msg.size()}, now_),
            0);
  EXPECT_TRUE(sink_.frames.empty());
  auto g = pop(b);
  ASSERT_TRUE(g);
  EXPECT_EQ(g->ip, kLocalIp);
  EXPECT_EQ(g->port, 5353);
  EXPECT_EQ(g->data, msg);
  // Connected to a port nobody has: refused, as the ICMP error would say.
  eng().udp().connect(client, kLocalIp, 7);
  EXPECT_EQ(eng().udp_send(client, kLocalIp, 7, {}, now_), 0);
  auto ev = udp_events();
  EXPECT_EQ(ev[1].first, kUdpEvError);
  EXPECT_EQ(ev[1].second, ECONNREFUSED);
  EXPECT_EQ(ev[2].first, kUdpEvReadable);
}

// Above the MTU a datagram leaves in fragments that another engine reassembles
// byte for byte (both ends of RFC 791 3.2).
TEST_F(UdpTest, LargeDatagramIsFragmentedAndReassembles) {
  AppRings a;
  UdpId id = bind(5353, a);
  std::string msg = pattern(4000);
  ASSERT_EQ(eng().udp_send(id, kRemoteIp, kDnsPort,
                           {reinterpret_cast<const uint8_t*>(msg.data()), msg.size()}, now_),
            0);
  auto frames = sink_.frames;
  auto v = out();
  ASSERT_EQ(v.size(), 3u);  // 4008 bytes: 1480 + 1480 + 1048
  for (size_t i = 0; i < v.size(); ++i) {
    EXPECT_EQ(v[i].offset, i * 1480);
    EXPECT_EQ(v[i].more, i + 1 < v.size());
    EXPECT_FALSE(v[i].df);
    EXPECT_EQ(v[i].id, v[0].id);
    EXPECT_EQ(v[i].payload.size(), i < 2 ? 1480u : 1048u);
  }
  EXPECT_EQ(eng().udp().counters.fragments_out, 3u);

  // The peer: an engine at kRemoteIp; frames go to it with its MAC.
  CollectSink peer_sink;
  EngineConfig pc = cfg_;
  pc.mac = kRemoteMac;
  pc.ip = kRemoteIp;
  Engine peer(pc, peer_sink);
  AppRings pr;
  UdpId pid;
  ASSERT_EQ(peer.udp().bind(kDnsPort, pr.erx(), 5, &pid), 0);
  // Out of order: last, first, middle.
  for (size_t i : {2, 0, 1}) {
    auto f = frames[i];
    std::memcpy(f.data(), kRemoteMac.data(), 6);
    EXPECT_EQ(peer.input(f, now_), Drop::kNone) << "fragment " << i;
  }
  auto g = pop(pr);
  ASSERT_TRUE(g);
  EXPECT_EQ(g->ip, kLocalIp);
  EXPECT_EQ(g->port, 5353);
  EXPECT_EQ(g->data, msg);
  EXPECT_EQ(peer.udp().counters.reassembled, 1u);
}

TEST_F(UdpTest, LargestDatagramRoundTripsThroughFragments) {
  AppRings a(1 << 17);
  bind(kDnsPort, a);
  auto d = udp_bytes(kPeerPort, kDnsPort, pattern(abi::kMaxDatagram));
  auto fr = fragments(0x1234, d);
  ASSERT_EQ(fr.size(), 45u);
  for (auto& f : fr) ASSERT_EQ(input(f), Drop::kNone);
  auto g = pop(a);
  ASSERT_TRUE(g);
  EXPECT_EQ(g->data, pattern(abi::kMaxDatagram));
}

// ---- Reassembly ----

TEST_F(UdpTest, ReverseOrderAndDuplicatesStillReassemble) {
  AppRings a(1 << 14);
  bind(kDnsPort, a);
  auto d = udp_bytes(kPeerPort, kDnsPort, pattern(3000));
  auto fr = fragments(7, d, 1000);
  ASSERT_EQ(fr.size(), 4u);
  EXPECT_EQ(input(fr[3]), Drop::kNone);
  EXPECT_EQ(input(fr[1]), Drop::kNone);
  EXPECT_EQ(input(fr[1]), Drop::kIpFragDuplicate) << "RFC 5722 erratum: exact duplicates are skipped";
  EXPECT_EQ(input(fr[2]), Drop::kNone);
  EXPECT_FALSE(pop(a));
  EXPECT_EQ(input(fr[0]), Drop::kNone);
  EXPECT_EQ(pop(a)->data, pattern(3000));
  EXPECT_EQ(input(fr[0]), Drop::kNone) << "a late duplicate starts a new datagram";
}

TEST_F(UdpTest, OverlappingFragmentDiscardsTheDatagram) {
  AppRings a(1 << 14);
  bind(kDnsPort, a);
  auto d = udp_bytes(kPeerPort, kDnsPort, pattern(2000));
  EXPECT_EQ(input(frag_frame(9, 0, true, d, 0, 1000)), Drop::kNone);
  // Overlaps bytes 992..999 with different claims (the classic teardrop shape).
  EXPECT_EQ(input(frag_frame(9, 992, false, d, 992, d.size() - 992)), Drop::kIpFragOverlap);
  // The rest of an honest split no longer completes anything: the first part is gone.
  EXPECT_EQ(input(frag_frame(9, 1000, false, d, 1000, d.size() - 1000)), Drop::kNone);
  EXPECT_FALSE(pop(a));
  EXPECT_EQ(drops(Drop::kIpFragOverlap), 1u);
}

TEST_F(UdpTest, InconsistentEndDiscardsTheDatagram) {
  AppRings a(1 << 14);
  bind(kDnsPort, a);
  auto d = udp_bytes(kPeerPort, kDnsPort, pattern(3000));
  EXPECT_EQ(input(frag_frame(3, 2000, true, d, 2000, 1000)), Drop::kNone);
  // A "last" fragment ending before data we hold.
  EXPECT_EQ(input(frag_frame(3, 1000, false, d, 1000, 8)), Drop::kIpFragOverlap);
  EXPECT_EQ(input(frag_frame(4, 1000, false, d, 1000, 8)), Drop::kNone);
  // Data past the known end.
  EXPECT_EQ(input(frag_frame(4, 2000, true, d, 2000, 1000)), Drop::kIpFragOverlap);
}

TEST_F(UdpTest, MalformedAndOversizedFragmentsDrop) {
  AppRings a;
  bind(kDnsPort, a);
  std::vector<uint8_t> junk(2000, 0x55);
  EXPECT_EQ(input(frag_frame(1, 0, true, junk, 0, 100)), Drop::kIpFragMalformed)
      << "MF set: a multiple of 8 bytes";
  EXPECT_EQ(input(frag_frame(1, 65512, false, junk, 0, 8)), Drop::kIpFragTooBig)
      << "past 65535 bytes in all: the ping of death";
  EXPECT_EQ(input(frag_frame(1, 0, true, junk, 0, 1000, wire::kProtoTcp)), Drop::kIpFragment)
      << "only UDP is reassembled";
  EXPECT_EQ(input(frag_frame(1, 0, true, junk, 0, 1000, wire::kProtoIcmp)), Drop::kIpFragment);
}

TEST_F(UdpTest, TooManyFragmentsDiscardTheDatagram) {
  AppRings a;
  bind(kDnsPort, a);
  std::vector<uint8_t> junk(8 * 200, 0x55);
  for (uint32_t i = 0; i < Reassembly::kMaxFragments; ++i)
    ASSERT_EQ(input(frag_frame(2, i * 8, true, junk, 0, 8)), Drop::kNone);
  EXPECT_EQ(input(frag_frame(2, Reassembly::kMaxFragments * 8, true, junk, 0, 8)),
            Drop::kIpFragTooMany);
}

TEST_F(UdpTest, ReassemblyGivesUpAfterThirtySeconds) {
  AppRings a(1 << 14);
  bind(kDnsPort, a);
  auto d = udp_bytes(kPeerPort, kDnsPort, pattern(2000));
  EXPECT_EQ(input(frag_frame(5, 0, true, d, 0, 1000)), Drop::kNone);
  advance(30 * kSecond);
  EXPECT_EQ(input(frag_frame(5, 1000, false, d, 1000, d.size() - 1000)), Drop::kNone);
  EXPECT_FALSE(pop(a)) << "the first half expired (Linux ipfrag_time)";
  EXPECT_EQ(drops(Drop::kIpFragTimeout), 1u);
  // Just under the limit it completes.
  EXPECT_EQ(input(frag_frame(6, 0, true, d, 0, 1000)), Drop::kNone);
  advance(30 * kSecond - 1);
  EXPECT_EQ(input(frag_frame(6, 1000, false, d, 1000, d.size() - 1000)), Drop::kNone);
  EXPECT_EQ(pop(a)->data, pattern(2000));
}

TEST_F(UdpTest, ContextsAreBoundedAndTheOldestIsEvicted) {
  AppRings a(1 << 14);
  bind(kDnsPort, a);
  auto d = udp_bytes(kPeerPort, kDnsPort, pattern(2000));
  // 64 datagrams in progress, then a 65th: the first one goes.
  for (uint16_t id = 100; id < 165; ++id) {
    ASSERT_EQ(input(frag_frame(id, 0, true, d, 0, 1000)), Drop::kNone);
    advance(kMillisecond);
  }
  EXPECT_EQ(drops(Drop::kIpFragEvicted), 1u);
  EXPECT_EQ(input(frag_frame(100, 1000, false, d, 1000, d.size() - 1000)), Drop::kNone);
  EXPECT_FALSE(pop(a)) << "datagram 100 was evicted";
  EXPECT_EQ(input(frag_frame(164, 1000, false, d, 1000, d.size() - 1000)), Drop::kNone);
  EXPECT_EQ(pop(a)->data, pattern(2000));
}

TEST_F(UdpTest, FragmentsFromDifferentSourcesDoNotMix) {
  AppRings a(1 << 14);
  bind(kDnsPort, a);
  auto d = udp_bytes(kPeerPort, kDnsPort, pattern(2000));
  uint32_t other = ip4(198, 18, 0, 3);
  auto d2 = udp_bytes(kPeerPort, kDnsPort, pattern(2000, 5), other);
  EXPECT_EQ(input(frag_frame(8, 0, true, d, 0, 1000)), Drop::kNone);
  EXPECT_EQ(input(frag_frame(8, 1000, false, d2, 1000, d2.size() - 1000, wire::kProtoUdp, other)),
            Drop::kNone);
  EXPECT_FALSE(pop(a));
  EXPECT_EQ(input(frag_frame(8, 1000, false, d, 1000, d.size() - 1000)), Drop::kNone);
  EXPECT_EQ(pop(a)->data, pattern(2000));
}

TEST(Reassembly, MemoryIsFixed) {
  Reassembly r(4, 1000);
  uint64_t drops[static_cast<size_t>(Drop::kCount)] = {};
  EXPECT_EQ(r.memory(), 0u) << "nothing until the first fragment";
  std::vector<uint8_t> bytes(8, 1);
  bool complete = false;
  Reassembled out;
  for (uint16_t id = 0; id < 100; ++id)
    ASSERT_EQ(r.add(Fragment{.src = 1, .dst = 2, .proto = 17, .id = id, .more = true,
                             .payload = bytes},
                    id, drops, &complete, &out),
              Drop::kNone);
  EXPECT_EQ(r.in_use(), 4u);
  EXPECT_EQ(r.memory(), 4u * 65536);
  EXPECT_EQ(drops[static_cast<size_t>(Drop::kIpFragEvicted)], 96u);
  // Time alone frees nothing until the next fragment looks.
  ASSERT_EQ(r.add(Fragment{.src = 1, .dst = 2, .proto = 17, .id = 999, .more = true,
                           .payload = bytes},
                  5000, drops, &complete, &out),
            Drop::kNone);
  EXPECT_EQ(r.in_use(), 1u);
  EXPECT_EQ(drops[static_cast<size_t>(Drop::kIpFragTimeout)], 4u);
}

}  // namespace
}  // namespace shunt::test
