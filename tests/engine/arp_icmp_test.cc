// Link and network layers: Ethernet filtering, ARP (RFC 826), IPv4 checks, ICMP echo.
#include <gtest/gtest.h>

#include "harness.hh"

namespace shunt::test {
namespace {

class LinkTest : public EngineTest {
 protected:
  wire::EthHeader eth_;
  uint64_t drops(Drop d) const { return eng_->counters().drops[static_cast<size_t>(d)]; }
  // An ICMP echo request from the peer; returns the input's verdict.
  Drop ping(uint16_t seqno, std::string_view data = "abcdefgh") {
    return input(ip_frame(wire::kProtoIcmp, icmp_echo(8, 0xbeef, seqno, data)));
  }
};

// ---- Ethernet ----

TEST_F(LinkTest, FrameForAnotherMacIsDropped) {
  auto f = tcp_frame(Seg{.flags = kSyn}, kRemoteIp, kLocalIp, kOtherMac);
  EXPECT_EQ(input(f), Drop::kEthNotForUs);
  EXPECT_EQ(drops(Drop::kEthNotForUs), 1u);
  EXPECT_TRUE(sink_.frames.empty()) << "not even a RST";
}

TEST_F(LinkTest, MulticastMacIsDropped) {
  const wire::MacAddr mcast{0x01, 0x00, 0x5e, 0x00, 0x00, 0x01};
  EXPECT_EQ(input(ip_frame(wire::kProtoIcmp, icmp_echo(8, 1, 1, "x"), kRemoteIp, kLocalIp, mcast)),
            Drop::kEthNotForUs);
  EXPECT_TRUE(sink_.frames.empty());
}

TEST_F(LinkTest, TruncatedAndUnknownEtherType) {
  EXPECT_EQ(input(std::vector<uint8_t>(13, 0)), Drop::kEthTruncated);
  std::vector<uint8_t> v6(60, 0);
  wire::write_eth(v6.data(), kLocalMac, kRemoteMac, 0x86dd);
  EXPECT_EQ(input(v6), Drop::kEthUnknownType);
  EXPECT_EQ(eng().counters().rx_frames, 2u);
  EXPECT_EQ(drops(Drop::kEthTruncated), 1u);
  EXPECT_EQ(drops(Drop::kEthUnknownType), 1u);
}

// ---- ARP ----

TEST_F(LinkTest, ArpRequestForUsIsAnswered) {
  EXPECT_EQ(input(arp_frame(1, kRemoteMac, kRemoteIp, {}, kLocalIp)), Drop::kNone);
  ASSERT_EQ(sink_.frames.size(), 1u);
  EXPECT_EQ(sink_.frames[0].size(), 60u) << "padded to the Ethernet minimum";
  for (size_t i = 14 + 28; i < 60; ++i) EXPECT_EQ(sink_.frames[0][i], 0) << "padding byte " << i;
  wire::EthHeader eth;
  auto a = parse_arp_frame(sink_.frames[0], &eth);
  ASSERT_TRUE(a);
  EXPECT_EQ(eth.dst, kRemoteMac) << "the reply is unicast to the asker";
  EXPECT_EQ(eth.src, kLocalMac);
  EXPECT_EQ(a->op, 2);
  EXPECT_EQ(a->sender_mac, kLocalMac);
  EXPECT_EQ(a->sender_ip, kLocalIp);
  EXPECT_EQ(a->target_mac, kRemoteMac);
  EXPECT_EQ(a->target_ip, kRemoteIp);
  EXPECT_EQ(eng().counters().arp_replies_sent, 1u);
}

TEST_F(LinkTest, ArpRequestForAnotherHostIsNotAnsweredNorLearned) {
  EXPECT_EQ(input(arp_frame(1, kRemoteMac, kRemoteIp, {}, ip4(198, 18, 0, 77))),
            Drop::kArpNotForUs);
  EXPECT_TRUE(sink_.frames.empty());
  // RFC 826: only a packet for us adds an entry, so a ping reply must ask first.
  EXPECT_EQ(ping(1), Drop::kNone);
  ASSERT_EQ(sink_.frames.size(), 1u);
  auto a = parse_arp_frame(sink_.frames[0]);
  ASSERT_TRUE(a) << "expected an ARP request, not the echo reply";
  EXPECT_EQ(a->op, 1);
}

TEST_F(LinkTest, ArpFromKnownHostUpdatesItsEntry) {
  seed_arp();
  // A gratuitous ARP from the peer with a new MAC, aimed at nobody in particular.
  EXPECT_EQ(input(arp_frame(1, kOtherMac, kRemoteIp, {}, kRemoteIp)), Drop::kArpNotForUs);
  ASSERT_EQ(ping(1), Drop::kNone);
  ASSERT_EQ(sink_.frames.size(), 1u);
  wire::EthHeader eth;
  ASSERT_TRUE(wire::parse_eth(sink_.frames[0], &eth));
  EXPECT_EQ(eth.dst, kOtherMac);
}

TEST_F(LinkTest, ProbesAndOwnAnnouncementsTeachNothing) {
  // RFC 5227 probe: sender address 0.
  EXPECT_EQ(input(arp_frame(1, kRemoteMac, 0, {}, kLocalIp)), Drop::kNone);
  // Our own address as sender (our announcement reflected, or a conflict).
  EXPECT_EQ(input(arp_frame(1, kOtherMac, kLocalIp, {}, kLocalIp)), Drop::kArpNotForUs);
  sink_.frames.clear();
  ASSERT_EQ(ping(1), Drop::kNone);
  ASSERT_EQ(sink_.frames.size(), 1u);
  EXPECT_TRUE(parse_arp_frame(sink_.frames[0])) << "nothing was learned: we must ask";
}

TEST_F(LinkTest, MalformedArp) {
  auto f = arp_frame(1, kRemoteMac, kRemoteIp, {}, kLocalIp);
  f[14 + 7] = 9;  // op 9
  EXPECT_EQ(input(f), Drop::kArpMalformed);
  EXPECT_EQ(input(std::vector<uint8_t>(f.begin(), f.begin() + 14 + 20)), Drop::kArpMalformed);
  EXPECT_TRUE(sink_.frames.empty());
}

TEST_F(LinkTest, AnnounceIsGratuitousRequest) {
  eng().announce();
  ASSERT_EQ(sink_.frames.size(), 1u);
  wire::EthHeader eth;
  auto a = parse_arp_frame(sink_.frames[0], &eth);
  ASSERT_TRUE(a);
  EXPECT_EQ(eth.dst, wire::kBroadcastMac);
  EXPECT_EQ(a->op, 1);
  EXPECT_EQ(a->sender_ip, kLocalIp);
  EXPECT_EQ(a->target_ip, kLocalIp);
  EXPECT_EQ(a->sender_mac, kLocalMac);
}

TEST_F(LinkTest, OutputParksUntilArpReplyThenLeavesInOrder) {
  // Nothing known about the peer: the SYN waits while we ask.
  AppRings app;
  ConnId c;
  ASSERT_EQ(eng().connect(kLocalPort, kRemoteIp, kRemotePort, app.erx(), app.etx(), kUser, now_, &c),
            0);
  eng().flush(now_);
  ASSERT_EQ(sink_.frames.size(), 1u);
  wire::EthHeader eth;
  auto req = parse_arp_frame(sink_.frames[0], &eth);
  ASSERT_TRUE(req);
  EXPECT_EQ(eth.dst, wire::kBroadcastMac);
  EXPECT_EQ(req->op, 1);
  EXPECT_EQ(req->target_ip, kRemoteIp);
  EXPECT_EQ(req->sender_ip, kLocalIp);
  EXPECT_EQ(eng().counters().arp_requests_sent, 1u);
  sink_.frames.clear();

  // A ping in the meantime parks behind the SYN, and asks no second time (200 ms).
  now_ += 50 * kMillisecond;
  ASSERT_EQ(ping(1), Drop::kNone);
  EXPECT_TRUE(sink_.frames.empty());

  now_ += 10 * kMillisecond;
  EXPECT_EQ(input(arp_frame(2, kRemoteMac, kRemoteIp, kLocalMac, kLocalIp, kLocalMac)), Drop::kNone);
  ASSERT_EQ(sink_.frames.size(), 2u) << "the reply releases both parked frames, and is not answered";
  auto syn = parse_tcp_frame(sink_.frames[0]);
  ASSERT_TRUE(syn);
  EXPECT_EQ(syn->eth.dst, kRemoteMac);
  EXPECT_EQ(syn->seg.flags, kSyn);
  EXPECT_EQ(syn->seg.seq, eng().tcb(c).iss.raw());
  ASSERT_TRUE(wire::parse_eth(sink_.frames[1], &eth));
  EXPECT_EQ(eth.dst, kRemoteMac);
  EXPECT_EQ(eth.type, wire::kEtherIpv4);
  EXPECT_EQ(eng().counters().tx_frames, 3u);
}

TEST_F(LinkTest, ArpIsRetriedAfter200ms) {
  ASSERT_EQ(ping(1), Drop::kNone);
  now_ += 199 * kMillisecond;
  ASSERT_EQ(ping(2), Drop::kNone);
  EXPECT_EQ(eng().counters().arp_requests_sent, 1u);
  now_ += 1 * kMillisecond;
  ASSERT_EQ(ping(3), Drop::kNone);
  EXPECT_EQ(eng().counters().arp_requests_sent, 2u);
  ASSERT_EQ(sink_.frames.size(), 2u);
  for (auto& f : sink_.frames) EXPECT_TRUE(parse_arp_frame(f));
}

TEST_F(LinkTest, ParkedFramesAreBounded) {
  for (uint16_t i = 0; i < 6; ++i) ASSERT_EQ(ping(i), Drop::kNone);
  EXPECT_EQ(drops(Drop::kArpPending), 2u) << "four frames wait per address";
  sink_.frames.clear();
  input(arp_frame(2, kRemoteMac, kRemoteIp, kLocalMac, kLocalIp, kLocalMac));
  ASSERT_EQ(sink_.frames.size(), 4u);
  for (uint16_t i = 0; i < 4; ++i) {
    // Echo replies leave in the order they were made: sequence numbers 0..3.
    std::span<const uint8_t> f = sink_.frames[i];
    wire::Ipv4 ip;
    ASSERT_EQ(wire::parse_ipv4(f.subspan(14), &ip), wire::ParseError::kNone);
    EXPECT_EQ(wire::load16(ip.payload.data() + 6), i);
  }
}

// An ARP frame's Ethernet destination and ARP fields, or nullopt.
struct ArpSeen {
  wire::MacAddr dst;
  wire::Arp arp;
};
std::optional<ArpSeen> arp_of(const std::vector<uint8_t>& f) {
  wire::EthHeader eth;
  auto a = parse_arp_frame(f, &eth);
  if (!a) return std::nullopt;
  return ArpSeen{eth.dst, *a};
}

// RFC 1122 2.3.2.1: a stale entry is polled by unicast while it goes on being used
// (a busy peer never refreshes it for us: Linux confirms neighbours from TCP).
TEST_F(LinkTest, StaleEntryIsUsedWhileItIsPolled) {
  seed_arp();
  now_ += 61 * kSecond;  // the entry is fresh for 60 s
  ASSERT_EQ(ping(1), Drop::kNone);
  ASSERT_EQ(sink_.frames.size(), 2u) << "a poll, and the echo reply at once";
  auto poll = arp_of(sink_.frames[0]);
  ASSERT_TRUE(poll);
  EXPECT_EQ(poll->dst, kRemoteMac) << "unicast to the cached address";
  EXPECT_EQ(poll->arp.op, 1);
  EXPECT_EQ(poll->arp.target_ip, kRemoteIp);
  wire::EthHeader eth;
  ASSERT_TRUE(wire::parse_eth(sink_.frames[1], &eth));
  EXPECT_EQ(eth.type, wire::kEtherIpv4);
  EXPECT_EQ(eth.dst, kRemoteMac);
  sink_.frames.clear();

  now_ += 500 * kMillisecond;
  ASSERT_EQ(ping(2), Drop::kNone);
  ASSERT_EQ(sink_.frames.size(), 1u) << "no second poll within a second";
  EXPECT_FALSE(arp_of(sink_.frames[0]));
  EXPECT_EQ(drops(Drop::kArpPending), 0u);
  EXPECT_EQ(eng().counters().arp_requests_sent, 1u);
}

TEST_F(LinkTest, AnsweredPollFreshensTheEntry) {
  seed_arp();
  now_ += 61 * kSecond;
  ASSERT_EQ(ping(1), Drop::kNone);
  EXPECT_EQ(eng().counters().arp_requests_sent, 1u);
  EXPECT_EQ(input(arp_frame(2, kRemoteMac, kRemoteIp, kLocalMac, kLocalIp, kLocalMac)), Drop::kNone);
  sink_.frames.clear();
  now_ += 59 * kSecond;
  ASSERT_EQ(ping(2), Drop::kNone);
  ASSERT_EQ(sink_.frames.size(), 1u);
  EXPECT_FALSE(arp_of(sink_.frames[0])) << "fresh again for 60 s from the reply";
  EXPECT_EQ(eng().counters().arp_requests_sent, 1u);
}

TEST_F(LinkTest, UnansweredPollsEndInAskingEveryone) {
  seed_arp();
  now_ += 61 * kSecond;
  for (uint16_t i = 0; i < 3; ++i) {  // three polls a second apart, each reply sent
    sink_.frames.clear();
    ASSERT_EQ(ping(i), Drop::kNone);
    ASSERT_EQ(sink_.frames.size(), 2u) << "poll " << i;
    auto poll = arp_of(sink_.frames[0]);
    ASSERT_TRUE(poll);
    EXPECT_EQ(poll->dst, kRemoteMac);
    now_ += 1 * kSecond;
  }
  sink_.frames.clear();
  ASSERT_EQ(ping(3), Drop::kNone);
  ASSERT_EQ(sink_.frames.size(), 1u) << "the reply waits for an answer now";
  auto req = arp_of(sink_.frames[0]);
  ASSERT_TRUE(req);
  EXPECT_EQ(req->dst, wire::kBroadcastMac);
  EXPECT_EQ(req->arp.target_ip, kRemoteIp);
  sink_.frames.clear();
  input(arp_frame(2, kOtherMac, kRemoteIp, kLocalMac, kLocalIp, kLocalMac));
  ASSERT_EQ(sink_.frames.size(), 1u) << "the parked reply leaves, to the new address";
  ASSERT_TRUE(wire::parse_eth(sink_.frames[0], &eth_));
  EXPECT_EQ(eth_.dst, kOtherMac);
  EXPECT_EQ(eng().counters().arp_requests_sent, 4u);
}

// ---- IPv4 ----

TEST_F(LinkTest, IpChecks) {
  seed_arp();
  auto syn = Seg{.flags = kSyn};
  EXPECT_EQ(input(tcp_frame(syn, kRemoteIp, ip4(198, 18, 0, 3))), Drop::kIpNotForUs);
  EXPECT_EQ(input(tcp_frame(syn, 0xffffffff, kLocalIp)), Drop::kIpBadSource);
  EXPECT_EQ(input(tcp_frame(syn, ip4(224, 0, 0, 5), kLocalIp)), Drop::kIpBadSource);
  EXPECT_EQ(input(tcp_frame(syn, kLocalIp, kLocalIp)), Drop::kIpBadSource);
  EXPECT_EQ(input(ip_frame(47 /* GRE */, std::vector<uint8_t>(8, 0))), Drop::kIpUnknownProtocol);
  EXPECT_EQ(input(ip_frame(wire::kProtoUdp, std::vector<uint8_t>(8, 0))), Drop::kUdpBadLength);
  EXPECT_TRUE(sink_.frames.empty()) << "none of these is answered, not even with a RST";
}

TEST_F(LinkTest, MalformedIpIsDroppedByReason) {
  seed_arp();
  auto f = tcp_frame(Seg{.flags = kSyn});
  auto bad_sum = f;
  bad_sum[14 + 10] ^= 0xff;
  EXPECT_EQ(input(bad_sum), Drop::kIpBadChecksum);
  auto frag = ip_frame(wire::kProtoIcmp, icmp_echo(8, 1, 1, "x"));
  wire::store16(frag.data() + 14 + 6, 0x2000);
  wire::store16(frag.data() + 14 + 10, 0);
  wire::store16(frag.data() + 14 + 10,
                wire::checksum_finish(wire::checksum_add(0, frag.data() + 14, 20)));
  EXPECT_EQ(input(frag), Drop::kIpFragment);
  EXPECT_EQ(input(std::vector<uint8_t>(f.begin(), f.begin() + 14 + 19)), Drop::kIpTruncated);
  auto v6 = f;
  v6[14] = 0x65;
  EXPECT_EQ(input(v6), Drop::kIpBadVersion);
  auto ihl = f;
  ihl[14] = 0x44;
  EXPECT_EQ(input(ihl), Drop::kIpBadHeaderLength);
  auto len = f;
  len.resize(14 + 30);  // total length says more than arrived
  EXPECT_EQ(input(len), Drop::kIpBadLength);
  EXPECT_EQ(drops(Drop::kIpBadChecksum), 1u);
  EXPECT_TRUE(sink_.frames.empty());
}

TEST_F(LinkTest, MalformedTcpIsDroppedByReason) {
  seed_arp();
  auto f = tcp_frame(Seg{.flags = kSyn, .payload = "zz"});
  auto sum = f;
  sum.back() ^= 1;
  EXPECT_EQ(input(sum), Drop::kTcpBadChecksum);
  auto doff = f;
  doff[34 + 12] = 0x30;
  EXPECT_EQ(input(doff), Drop::kTcpBadHeaderLength);
  EXPECT_EQ(input(tcp_frame(Seg{.flags = kSyn | kFin})), Drop::kTcpBadFlags);
  EXPECT_EQ(input(tcp_frame(Seg{.src_port = 0, .flags = kSyn})), Drop::kTcpBadFlags);
  EXPECT_TRUE(sink_.frames.empty());
}

TEST_F(LinkTest, OffLinkWithoutGatewayHasNoRoute) {
  const uint32_t far = ip4(10, 1, 2, 3);
  EXPECT_EQ(input(tcp_frame(Seg{.seq = 5, .flags = kSyn}, far, kLocalIp)), Drop::kTcpNoSocket);
  EXPECT_TRUE(sink_.frames.empty()) << "the RST has nowhere to go";
  EXPECT_EQ(drops(Drop::kNoRoute), 1u);
}

class GatewayTest : public EngineTest {
 protected:
  static EngineConfig with_gateway() {
    EngineConfig c = default_config();
    c.gateway = ip4(198, 18, 0, 254);
    return c;
  }
  GatewayTest() : EngineTest(with_gateway()) {}
};

TEST_F(GatewayTest, OffLinkGoesThroughGatewayMac) {
  const uint32_t far = ip4(10, 1, 2, 3);
  const wire::MacAddr gw_mac{0x02, 0, 0, 0, 0, 0xfe};
  input(arp_frame(1, gw_mac, cfg_.gateway, {}, kLocalIp));
  sink_.frames.clear();
  EXPECT_EQ(input(tcp_frame(Seg{.seq = 5, .flags = kSyn}, far, kLocalIp)), Drop::kTcpNoSocket);
  ASSERT_EQ(sink_.frames.size(), 1u);
  auto rst = parse_tcp_frame(sink_.frames[0]);
  ASSERT_TRUE(rst);
  EXPECT_EQ(rst->eth.dst, gw_mac);
  EXPECT_EQ(rst->dst_ip, far);
  EXPECT_EQ(rst->seg.flags, kRst | kAck);
}

// ---- ICMP ----

TEST_F(LinkTest, EchoRequestGetsReply) {
  seed_arp();
  const std::string data = "0123456789abcdefXYZ";  // odd length: the checksum pads
  EXPECT_EQ(input(ip_frame(wire::kProtoIcmp, icmp_echo(8, 0xbeef, 42, data))), Drop::kNone);
  ASSERT_EQ(sink_.frames.size(), 1u);
  std::span<const uint8_t> f = sink_.frames[0];
  wire::EthHeader eth;
  ASSERT_TRUE(wire::parse_eth(f, &eth));
  EXPECT_EQ(eth.dst, kRemoteMac);
  wire::Ipv4 ip;
  ASSERT_EQ(wire::parse_ipv4(f.subspan(14), &ip), wire::ParseError::kNone);
  EXPECT_EQ(ip.src, kLocalIp);
  EXPECT_EQ(ip.dst, kRemoteIp);
  EXPECT_EQ(ip.proto, wire::kProtoIcmp);
  wire::Icmp icmp;
  ASSERT_EQ(wire::parse_icmp(ip.payload, &icmp), wire::ParseError::kNone) << "checksum must verify";
  EXPECT_EQ(icmp.type, 0);
  EXPECT_EQ(icmp.code, 0);
  auto want = icmp_echo(0, 0xbeef, 42, data);
  EXPECT_EQ(std::vector<uint8_t>(ip.payload.begin(), ip.payload.end()), want)
      << "identifier, sequence and data echoed; checksum as computed from scratch";
  EXPECT_EQ(eng().counters().icmp_echo_replies, 1u);
}

TEST_F(LinkTest, BadOrUnhandledIcmp) {
  seed_arp();
  auto m = icmp_echo(8, 1, 1, "data");
  m[5] ^= 1;  // checksum no longer matches
  EXPECT_EQ(input(ip_frame(wire::kProtoIcmp, m)), Drop::kIcmpMalformed);
  EXPECT_EQ(input(ip_frame(wire::kProtoIcmp, std::vector<uint8_t>{8, 0})), Drop::kIcmpMalformed);
  EXPECT_EQ(input(ip_frame(wire::kProtoIcmp, icmp_echo(3, 0, 0, "unreach"))), Drop::kIcmpUnhandled);
  EXPECT_EQ(input(ip_frame(wire::kProtoIcmp, icmp_echo(0, 1, 1, "reply"))), Drop::kIcmpUnhandled);
  auto code1 = icmp_echo(8, 1, 1, "x");
  code1[1] = 1;
  code1[2] = code1[3] = 0;
  wire::store16(code1.data() + 2, wire::checksum_finish(wire::checksum_add(0, code1.data(), code1.size())));
  EXPECT_EQ(input(ip_frame(wire::kProtoIcmp, code1)), Drop::kIcmpUnhandled);
  EXPECT_TRUE(sink_.frames.empty());
  EXPECT_EQ(eng().counters().icmp_echo_replies, 0u);
}

TEST_F(LinkTest, NoTxBufferIsCounted) {
  seed_arp();
  sink_.starved = true;
  EXPECT_EQ(ping(1), Drop::kNone);
  EXPECT_TRUE(sink_.frames.empty());
  EXPECT_EQ(drops(Drop::kTxNoBuffer), 1u);
  EXPECT_EQ(eng().counters().icmp_echo_replies, 0u) << "nothing was sent";
}

}  // namespace
}  // namespace shunt::test
