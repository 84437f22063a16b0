// SYN cookies (RFC 4987 3.6): with the SYN queue full a SYN is answered without
// state; the cookie in our ISN (and, with timestamps, in our TSval) brings the
// connection back when the handshake's last ACK arrives.
#include <gtest/gtest.h>

#include "harness.hh"

namespace shunt::test {
namespace {

constexpr uint32_t kPeerTsval = 0x0badcafe;
constexpr Time kCookiePeriod = 64 * kSecond;

class SynCookie : public EngineTest {
 protected:
  void SetUp() override {
    seed_arp();
    ASSERT_EQ(eng().listen(kLocalPort, 2, kListenUser, &lid_), 0);
    // Two half-open connections fill the SYN queue (backlog 2).
    for (uint16_t port : {2001, 2002}) {
      ASSERT_EQ(recv(Seg{.src_port = port, .seq = 1000, .flags = kSyn, .mss = 1460}), Drop::kNone);
      ASSERT_EQ(sent_one().flags, kSyn | kAck);
    }
    live_before_ = eng().live_connections();
    ASSERT_EQ(live_before_, 2u);
  }

  // A SYN from kRemotePort answered with a cookie; returns the SYN-ACK.
  Seg cookie_syn(Seg syn) {
    syn.seq = kRemoteIsn;
    syn.flags = kSyn;
    uint64_t cookies = eng().counters().tcp_syn_cookies_sent;
    EXPECT_EQ(recv(syn), Drop::kNone);
    EXPECT_EQ(eng().counters().tcp_syn_cookies_sent, cookies + 1);
    return sent_one();
  }
  Seg final_ack(const Seg& synack, std::string data = "") {
    return Seg{.seq = kRemoteIsn + 1, .ack = synack.seq + 1, .flags = kAck, .window = 1000,
               .payload = std::move(data)};
  }
  ConnId child() const { return eng_->find(kRemoteIp, kRemotePort, kLocalPort); }
  uint64_t drops(Drop d) const { return eng_->counters().drops[static_cast<size_t>(d)]; }

  ListenerId lid_ = kInvalidId;
  uint32_t live_before_ = 0;
};

TEST_F(SynCookie, FullSynQueueAnswersWithoutState) {
  Seg sa = cookie_syn(Seg{.window = 1000, .mss = 1460});
  EXPECT_EQ(sa.flags, kSyn | kAck);
  EXPECT_EQ(sa.ack, kRemoteIsn + 1);
  EXPECT_EQ(sa.mss, kOurMss);
  EXPECT_EQ(sa.dst_port, kRemotePort);
  EXPECT_EQ(eng().live_connections(), live_before_) << "no TCB for a cookie";
  EXPECT_EQ(child(), kInvalidId);
  EXPECT_EQ(eng().accept_queue_len(lid_), 0u);
  advance(10 * kSecond);
  for (const Seg& s : sent()) EXPECT_NE(s.dst_port, kRemotePort) << "a cookie is never resent";
}

// The SYN-ACK announces the window the connection will have (its staging ring,
// unscaled). With no TCB behind it there is no ring to measure, but a zero
// window would keep the peer from sending its request until it probes.
TEST_F(SynCookie, SynAckAdvertisesTheWindowTheConnectionWillHave) {
  for (bool ts : {false, true}) {
    SCOPED_TRACE(ts ? "with timestamps" : "without timestamps");
    Seg sa = cookie_syn(Seg{.src_port = uint16_t(kRemotePort + ts), .mss = 1460, .wscale = 5,
                            .ts = ts, .tsval = kPeerTsval});
    EXPECT_GT(sa.window, 0) << "a cookie SYN-ACK must not close the window";
    EXPECT_LE(sa.window, cfg_.staging_size) << "nor offer more than the staging ring holds";
  }
}

TEST_F(SynCookie, FinalAckCreatesAnEstablishedConnectionInTheAcceptQueue) {
  Seg sa = cookie_syn(Seg{.window = 1000, .mss = 1460});
  events();
  EXPECT_EQ(recv(final_ack(sa)), Drop::kNone);
  expect_silent();
  ConnId c = child();
  ASSERT_NE(c, kInvalidId);
  const Tcb& t = eng().tcb(c);
  EXPECT_EQ(t.state, TcpState::kEstablished);
  EXPECT_EQ(t.iss.raw(), sa.seq);
  EXPECT_EQ(t.snd.una.raw(), sa.seq + 1);
  EXPECT_EQ(t.snd.nxt.raw(), sa.seq + 1);
  EXPECT_EQ(t.irs.raw(), kRemoteIsn);
  EXPECT_EQ(t.rcv.nxt.raw(), kRemoteIsn + 1);
  EXPECT_EQ(t.snd.mss, 1460);
  EXPECT_EQ(t.snd.wnd, 1000u);
  EXPECT_EQ(t.cwnd, 10u * 1460);
  EXPECT_FALSE(t.ts_ok);
  EXPECT_FALSE(t.wscale_ok);
  EXPECT_FALSE(t.sack_ok);
  EXPECT_EQ(eng().live_connections(), live_before_ + 1);
  EXPECT_EQ(eng().accept_queue_len(lid_), 1u);
  EXPECT_EQ(events()[kListenUser], kEvAcceptable);
  EXPECT_EQ(eng().counters().tcp_syn_cookies_accepted, 1u);
  EXPECT_EQ(eng().accept(lid_), c);
}

struct MssCase {
  uint16_t offered;  // 0: no option
  uint16_t kept;
};

class SynCookieMss : public SynCookie, public ::testing::WithParamInterface<MssCase> {};

// Three bits carry the MSS: the largest table entry not above the peer's.
TEST_P(SynCookieMss, MssSurvivesAsTheNextTableEntryDown) {
  Seg sa = cookie_syn(Seg{.mss = GetParam().offered});
  ASSERT_EQ(recv(final_ack(sa)), Drop::kNone);
  ASSERT_NE(child(), kInvalidId);
  EXPECT_EQ(eng().tcb(child()).snd.mss, GetParam().kept);
}

INSTANTIATE_TEST_SUITE_P(Table, SynCookieMss,
                         ::testing::Values(MssCase{0, 536}, MssCase{536, 536}, MssCase{1000, 536},
                                           MssCase{1200, 1200}, MssCase{1399, 1360},
                                           MssCase{1400, 1400}, MssCase{1460, 1460},
                                           MssCase{9000, 1460}),
                         [](const auto& info) { return "mss" + std::to_string(info.param.offered); });

TEST_F(SynCookie, WithTimestampsWindowScaleAndSackSurvive) {
  Seg sa = cookie_syn(Seg{.window = 1000, .mss = 1460, .wscale = 5, .sack_permitted = true,
                          .ts = true, .tsval = kPeerTsval});
  EXPECT_TRUE(sa.ts);
  EXPECT_EQ(sa.tsecr, kPeerTsval);
  EXPECT_EQ(sa.wscale, int8_t(cfg_.window_shift));
  EXPECT_TRUE(sa.sack_permitted);
  EXPECT_EQ(sa.tsval & 0x3f, (5u << 2 | 2u | 1u)) << "[wscale:4][sack:1][valid:1]";
  EXPECT_LE(int32_t(sa.tsval - uint32_t(now_ / kMillisecond)), 0)
      << "never ahead of the clock later segments use (the peer's PAWS)";
  advance(3 * kMillisecond);
  Seg ack = final_ack(sa);
  ack.ts = true;
  ack.tsval = kPeerTsval + 3;
  ack.tsecr = sa.tsval;
  ASSERT_EQ(recv(ack), Drop::kNone);
  ConnId c = child();
  ASSERT_NE(c, kInvalidId);
  const Tcb& t = eng().tcb(c);
  EXPECT_TRUE(t.ts_ok);
  EXPECT_EQ(t.ts_recent, kPeerTsval + 3);
  EXPECT_TRUE(t.wscale_ok);
  EXPECT_EQ(t.snd_wscale, 5);
  EXPECT_EQ(t.rcv_wscale, cfg_.window_shift);
  EXPECT_TRUE(t.sack_ok);
  EXPECT_EQ(t.snd.wnd, 1000u << 5) << "the ACK's window is scaled";
  // The accepted connection's segments carry timestamps that did not go back.
  ASSERT_EQ(eng().accept(lid_), c);
  AppRings app;
  eng().attach(c, app.erx(), app.etx(), kUser);
  ASSERT_EQ(eng().set_option(c, TcpOption::kNoDelay, 1), 0);
  ASSERT_EQ(app.write("hello"), 5u);
  eng().tx_ready(c);
  eng().flush(now_);
  Seg data = sent_one();
  EXPECT_EQ(data.payload, "hello");
  EXPECT_TRUE(data.ts);
  EXPECT_EQ(data.tsecr, kPeerTsval + 3);
  EXPECT_GE(int32_t(data.tsval - sa.tsval), 0);
  EXPECT_EQ(data.window, 4096 >> cfg_.window_shift) << "scaled from now on";
}

TEST_F(SynCookie, TimestampsWithoutWindowScale) {
  Seg sa = cookie_syn(Seg{.mss = 1460, .sack_permitted = true, .ts = true, .tsval = kPeerTsval});
  EXPECT_EQ(sa.wscale, -1);
  Seg ack = final_ack(sa);
  ack.ts = true;
  ack.tsval = kPeerTsval;
  ack.tsecr = sa.tsval;
  ASSERT_EQ(recv(ack), Drop::kNone);
  const Tcb& t = eng().tcb(child());
  EXPECT_FALSE(t.wscale_ok);
  EXPECT_EQ(t.rcv_wscale, 0);
  EXPECT_EQ(t.snd.wnd, 1000u);
  EXPECT_TRUE(t.sack_ok);
}

TEST_F(SynCookie, WithoutTimestampsWindowScaleAndSackAreDeclined) {
  Seg sa = cookie_syn(Seg{.mss = 1460, .wscale = 5, .sack_permitted = true});
  EXPECT_FALSE(sa.ts);
  EXPECT_EQ(sa.wscale, -1) << "nowhere to keep the shift: offer none";
  EXPECT_FALSE(sa.sack_permitted);
  ASSERT_EQ(recv(final_ack(sa)), Drop::kNone);
  EXPECT_FALSE(eng().tcb(child()).wscale_ok);
  EXPECT_EQ(eng().tcb(child()).snd.wnd, 1000u);
}

TEST_F(SynCookie, ForgedAckGetsRstAndIsCounted) {
  Seg sa = cookie_syn(Seg{.mss = 1460});
  Seg forged = final_ack(sa);
  forged.ack += 0x100;  // another hash
  EXPECT_EQ(recv(forged), Drop::kTcpListenNotSyn);
  Seg rst = sent_one();
  EXPECT_EQ(rst.flags, kRst);
  EXPECT_EQ(rst.seq, forged.ack);
  EXPECT_EQ(drops(Drop::kTcpBadCookie), 1u);
  EXPECT_EQ(child(), kInvalidId);
  EXPECT_EQ(eng().live_connections(), live_before_);
  // The right cookie with another initial sequence number fails too.
  Seg other = final_ack(sa);
  other.seq += 1;
  EXPECT_EQ(recv(other), Drop::kTcpListenNotSyn);
  EXPECT_EQ(sent_one().flags, kRst);
  EXPECT_EQ(drops(Drop::kTcpBadCookie), 2u);
  // And from another port.
  Seg port = final_ack(sa);
  port.src_port = kRemotePort + 1;
  EXPECT_EQ(recv(port), Drop::kTcpListenNotSyn);
  EXPECT_EQ(drops(Drop::kTcpBadCookie), 3u);
  sent();
  // The genuine ACK still works.
  EXPECT_EQ(recv(final_ack(sa)), Drop::kNone);
  EXPECT_NE(child(), kInvalidId);
}

TEST_F(SynCookie, AckWithinTheNextPeriodIsAccepted) {
  Seg sa = cookie_syn(Seg{.mss = 1460});
  advance(kCookiePeriod);
  sent();
  EXPECT_EQ(recv(final_ack(sa)), Drop::kNone);
  EXPECT_NE(child(), kInvalidId);
}

TEST_F(SynCookie, AckOlderThanTwoPeriodsIsRejected) {
  Seg sa = cookie_syn(Seg{.mss = 1460});
  advance(2 * kCookiePeriod);
  sent();
  EXPECT_EQ(recv(final_ack(sa)), Drop::kTcpListenNotSyn);
  EXPECT_EQ(sent_one().flags, kRst);
  EXPECT_EQ(drops(Drop::kTcpBadCookie), 1u);
  EXPECT_EQ(child(), kInvalidId);
}

TEST_F(SynCookie, DataInTheCookieAckIsDelivered) {
  Seg sa = cookie_syn(Seg{.mss = 1460});
  const std::string req = "GET / HTTP/1.0\r\n\r\n";
  EXPECT_EQ(recv(final_ack(sa, req)), Drop::kNone);
  Seg ack = sent_one();
  EXPECT_EQ(ack.flags, kAck);
  EXPECT_EQ(ack.ack, kRemoteIsn + 1 + uint32_t(req.size()));
  EXPECT_EQ(ack.seq, sa.seq + 1);
  ConnId c = eng().accept(lid_);
  ASSERT_NE(c, kInvalidId);
  AppRings app;
  eng().attach(c, app.erx(), app.etx(), kUser);
  EXPECT_EQ(app.read(), req);
}

TEST_F(SynCookie, NoCookieWhileTheSynQueueHasRoom) {
  ASSERT_EQ(eng().accept(lid_), kInvalidId);
  // Complete one of the half-open handshakes: its slot frees once accepted.
  ConnId half = eng().find(kRemoteIp, 2001, kLocalPort);
  ASSERT_NE(half, kInvalidId);
  uint32_t iss = eng().tcb(half).iss.raw();
  ASSERT_EQ(recv(Seg{.src_port = 2001, .seq = 1001, .ack = iss + 1, .flags = kAck}), Drop::kNone);
  ASSERT_EQ(eng().accept(lid_), half);
  EXPECT_EQ(recv(Seg{.seq = kRemoteIsn, .flags = kSyn, .mss = 1460}), Drop::kNone);
  sent_one();
  EXPECT_EQ(eng().counters().tcp_syn_cookies_sent, 0u);
  EXPECT_NE(child(), kInvalidId) << "a normal SYN-RECEIVED child";
}

// A spoofed SYN flood on a listener whose backlog exceeds the staging rings (8;
// the fixture's two half-open children hold two): half-open children stop at
// half of the rings and cookies answer the rest, so a real client's handshake
// completes and is accepted during the flood.
TEST_F(SynCookie, RealClientsAreAcceptedWhileAFloodFillsTheSynQueue) {
  constexpr uint16_t kPort = kLocalPort + 1;
  ListenerId lid = kInvalidId;
  ASSERT_EQ(eng().listen(kPort, 64, kListenUser, &lid), 0);
  for (uint16_t port = 3000; port < 3040; ++port)
    ASSERT_EQ(recv(Seg{.src_port = port, .dst_port = kPort, .seq = 7, .flags = kSyn, .mss = 1460}),
              Drop::kNone);
  sent();
  EXPECT_EQ(eng().live_connections(), 4u) << "half of the 8 staging rings";
  EXPECT_EQ(eng().counters().tcp_syn_cookies_sent, 38u);
  ASSERT_EQ(recv(Seg{.dst_port = kPort, .seq = kRemoteIsn, .flags = kSyn, .mss = 1460}),
            Drop::kNone);
  Seg sa = sent_one();
  ASSERT_EQ(sa.flags, kSyn | kAck);
  EXPECT_EQ(recv(Seg{.dst_port = kPort, .seq = kRemoteIsn + 1, .ack = sa.seq + 1, .flags = kAck,
                     .window = 1000}),
            Drop::kNone);
  EXPECT_EQ(eng().counters().tcp_syn_cookies_accepted, 1u);
  EXPECT_NE(eng().accept(lid), kInvalidId) << "the real client's connection";
}

}  // namespace
}  // namespace shunt::test
