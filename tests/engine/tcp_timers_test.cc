// Time-driven behaviour: delayed ACKs (RFC 1122 4.2.3.2, RFC 5681 4.2) with the
// fixture turning them back on, Nagle (RFC 9293 3.7.4) and TCP_CORK, keepalive
// (RFC 1122 4.2.3.6), slow start after idle (RFC 5681 4.1), and the RFC 5961 7
// challenge-ACK budget per second.
#include <gtest/gtest.h>

#include <cerrno>

#include "harness.hh"

namespace shunt::test {
namespace {

constexpr Time kDelAck = 40 * kMillisecond;  // Linux TCP_DELACK_MIN

class Timers : public EstablishedTest {
 protected:
  static EngineConfig config() {
    EngineConfig c = default_config();
    c.delayed_ack = true;
    c.challenge_ack_limit = 3;
    return c;
  }
  Timers() : EstablishedTest(config()) {}

  Drop peer_data(uint32_t peer_off, std::string data, uint32_t ack_off = 0) {
    return recv(Seg{.seq = rcv(peer_off), .ack = snd(ack_off), .flags = kAck | kPsh,
                    .payload = std::move(data)});
  }
  Drop peer_ack(uint32_t off, uint32_t peer_off = 0) {
    return recv(Seg{.seq = rcv(peer_off), .ack = snd(off), .flags = kAck});
  }
  uint64_t drops(Drop d) const { return eng_->counters().drops[static_cast<size_t>(d)]; }
  void set(TcpOption o, uint32_t v) {
    ASSERT_EQ(eng().set_option(c_, o, v), 0);
    eng().flush(now_);
  }
};

// ---- Delayed ACK ----

TEST_F(Timers, OneSmallSegmentIsAckedAfter40ms) {
  ASSERT_EQ(peer_data(0, "abc"), Drop::kNone);
  expect_silent();
  advance(kDelAck - kMillisecond);
  expect_silent();
  advance(kMillisecond);
  Seg ack = sent_one();
  EXPECT_EQ(ack.flags, kAck);
  EXPECT_EQ(ack.ack, rcv(3));
  EXPECT_EQ(eng().counters().tcp_delayed_acks, 1u);
  advance(kSecond);
  expect_silent();
}

TEST_F(Timers, SecondFullSegmentIsAckedAtOnce) {
  ASSERT_EQ(peer_data(0, pattern(kPeerMss)), Drop::kNone);
  expect_silent();
  ASSERT_EQ(peer_data(kPeerMss, pattern(kPeerMss, kPeerMss)), Drop::kNone);
  Seg ack = sent_one();
  EXPECT_EQ(ack.ack, rcv(2 * kPeerMss)) << "RFC 5681 4.2: at least every second full segment";
  advance(kDelAck);
  expect_silent();
  EXPECT_EQ(eng().counters().tcp_delayed_acks, 0u);
}

TEST_F(Timers, FullSegmentsShortOfTheMssByTheirOptionsCountAsFull) {
  // A peer sending timestamps fills each segment with its MSS less 12 bytes.
  const uint32_t full = kPeerMss - 12;
  ASSERT_EQ(peer_data(0, pattern(full)), Drop::kNone);
  expect_silent();
  ASSERT_EQ(peer_data(full, pattern(full, full)), Drop::kNone);
  EXPECT_EQ(sent_one().ack, rcv(2 * full)) << "the second of them is acknowledged at once";
  EXPECT_EQ(eng().counters().tcp_delayed_acks, 0u);
}

TEST_F(Timers, TheTimerRunsFromTheFirstUnackedSegment) {
  ASSERT_EQ(peer_data(0, "a"), Drop::kNone);
  advance(30 * kMillisecond);
  ASSERT_EQ(peer_data(1, "b"), Drop::kNone);
  expect_silent();
  advance(10 * kMillisecond);
  EXPECT_EQ(sent_one().ack, rcv(2)) << "40 ms after the first byte, not the last";
}

TEST_F(Timers, DataWeSendCarriesTheAckAndCancelsTheTimer) {
  ASSERT_EQ(peer_data(0, "request"), Drop::kNone);
  expect_silent();
  advance(5 * kMillisecond);
  app_send("response");
  Seg data = sent_one();
  EXPECT_EQ(data.payload, "response");
  EXPECT_EQ(data.ack, rcv(7)) << "piggybacked";
  EXPECT_EQ(tcb().delack_at, 0u);
  advance(kDelAck);
  expect_silent();
  EXPECT_EQ(eng().counters().tcp_delayed_acks, 0u);
}

TEST_F(Timers, QuickAckAcksAtOnce) {
  ASSERT_EQ(peer_data(0, "abc"), Drop::kNone);
  expect_silent();
  set(TcpOption::kQuickAck, 1);
  EXPECT_EQ(sent_one().ack, rcv(3)) << "the pending ACK goes now";
  ASSERT_EQ(peer_data(3, "def"), Drop::kNone);
  EXPECT_EQ(sent_one().ack, rcv(6)) << "and the next ones too while quickack lasts";
  set(TcpOption::kQuickAck, 0);
  ASSERT_EQ(peer_data(6, "ghi"), Drop::kNone);
  expect_silent();
  advance(kDelAck);
  EXPECT_EQ(sent_one().ack, rcv(9));
}

TEST_F(Timers, OutOfOrderAndHoleFillingAreAckedAtOnce) {
  ASSERT_EQ(peer_data(10, "later"), Drop::kNone);
  EXPECT_EQ(sent_one().ack, rcv(0)) << "RFC 5681 4.2: a duplicate ACK at once";
  ASSERT_EQ(peer_data(0, pattern(10)), Drop::kNone);
  EXPECT_EQ(sent_one().ack, rcv(15)) << "a hole filled: at once";
}

TEST_F(Timers, PartOfAHoleFilledIsAckedAtOnce) {
  ASSERT_EQ(peer_data(20, "later"), Drop::kNone);
  EXPECT_EQ(sent_one().ack, rcv(0));
  ASSERT_EQ(peer_data(0, pattern(10)), Drop::kNone);
  EXPECT_EQ(sent_one().ack, rcv(10)) << "RFC 5681 4.2: all or part of a gap, at once";
  ASSERT_EQ(peer_data(10, pattern(10, 10)), Drop::kNone);
  EXPECT_EQ(sent_one().ack, rcv(25));
}

// ---- Nagle and cork ----

TEST_F(Timers, NagleHoldsASmallSegmentWhileDataIsInFlight) {
  set(TcpOption::kNoDelay, 0);
  app_send("a");
  EXPECT_EQ(sent_one().payload, "a") << "nothing in flight: goes at once";
  app_send("b");
  expect_silent();
  app_send("c");
  expect_silent();
  ASSERT_EQ(peer_ack(1), Drop::kNone);
  Seg s = sent_one();
  EXPECT_EQ(s.seq, snd(1));
  EXPECT_EQ(s.payload, "bc") << "coalesced while waiting";
}

TEST_F(Timers, NagleLetsFullSegmentsThrough) {
  set(TcpOption::kNoDelay, 0);
  app_send("a");
  sent();
  app_send(pattern(1500));
  Seg s = sent_one();
  EXPECT_EQ(s.seq, snd(1));
  EXPECT_EQ(s.payload.size(), kPeerMss) << "a full segment is no tinygram";
  ASSERT_EQ(peer_ack(1001), Drop::kNone);
  EXPECT_EQ(sent_one().payload.size(), 500u);
}

TEST_F(Timers, SettingNoDelayPushesWhatNagleHeld) {
  set(TcpOption::kNoDelay, 0);
  app_send("a");
  sent();
  app_send("b");
  expect_silent();
  set(TcpOption::kNoDelay, 1);
  EXPECT_EQ(sent_one().payload, "b");
}

TEST_F(Timers, CorkHoldsPartialSegmentsUntilUncorked) {
  set(TcpOption::kCork, 1);
  app_send("abc");
  expect_silent() /* even with nothing in flight, and with TCP_NODELAY set */;
  app_send(pattern(2500));
  auto segs = sent();
  ASSERT_EQ(segs.size(), 2u) << "full segments go" << trace(segs);
  EXPECT_EQ(segs[0].payload.size(), kPeerMss);
  EXPECT_EQ(segs[1].payload.size(), kPeerMss);
  peer_ack(2000);  // nothing in flight: no loss probe either
  advance(kDelAck);
  expect_silent();
  set(TcpOption::kCork, 0);
  Seg rest = sent_one();
  EXPECT_EQ(rest.seq, snd(2000));
  EXPECT_EQ(rest.payload.size(), 503u);
  EXPECT_EQ(rest.flags, kAck | kPsh);
}

TEST_F(Timers, ShutdownPushesCorkedData) {
  set(TcpOption::kCork, 1);
  app_send("last words");
  expect_silent();
  eng().shutdown_write(c_);
  eng().flush(now_);
  Seg s = sent_one();
  EXPECT_EQ(s.payload, "last words");
  EXPECT_EQ(s.flags, kAck | kPsh | kFin);
}

// ---- Keepalive ----

class Keepalive : public Timers {
 protected:
  void SetUp() override {
    Timers::SetUp();
    set(TcpOption::kKeepIdle, 10);
    set(TcpOption::kKeepIntvl, 2);
    set(TcpOption::kKeepCnt, 3);
    advance(5 * kMillisecond);
    ASSERT_EQ(peer_ack(0), Drop::kNone);  // the last segment from the peer
    set(TcpOption::kKeepAlive, 1);
    idle_from_ = now_;
  }
  void expect_probe() {
    Seg p = sent_one();
    EXPECT_EQ(p.flags, kAck);
    EXPECT_EQ(p.seq, snd(0) - 1) << "SEG.SEQ = SND.UNA - 1: the peer must answer";
    EXPECT_EQ(p.ack, rcv(0));
    EXPECT_TRUE(p.payload.empty());
  }
  Time idle_from_ = 0;
};

TEST_F(Keepalive, ProbesAtIdleThenEveryIntervalThenTimesOut) {
  advance_to(idle_from_ + 10 * kSecond - kMillisecond);
  expect_silent();
  advance_to(idle_from_ + 10 * kSecond);
  expect_probe();
  advance_to(idle_from_ + 12 * kSecond - kMillisecond);
  expect_silent();
  advance_to(idle_from_ + 12 * kSecond);
  expect_probe();
  advance_to(idle_from_ + 14 * kSecond);
  expect_probe();
  EXPECT_EQ(eng().counters().tcp_keepalive_probes, 3u);
  EXPECT_EQ(tcb().state, TcpState::kEstablished);
  events();
  advance_to(idle_from_ + 16 * kSecond);
  for (const Seg& s : sent()) EXPECT_NE(s.flags, kAck) << "no fourth probe: " << s;
  EXPECT_EQ(tcb().state, TcpState::kClosed) << "three probes unanswered";
  EXPECT_EQ(tcb().error, ETIMEDOUT);
  EXPECT_EQ(events()[kUser] & kEvState, kEvState);
  EXPECT_EQ(eng().counters().tcp_timeouts, 1u);
}

TEST_F(Keepalive, AnAnswerResetsTheCount) {
  advance_to(idle_from_ + 10 * kSecond);
  expect_probe();
  advance_to(idle_from_ + 12 * kSecond);
  expect_probe();
  advance_to(idle_from_ + 12 * kSecond + 500 * kMillisecond);
  ASSERT_EQ(peer_ack(0), Drop::kNone);  // the answer to the probe
  expect_silent();
  EXPECT_EQ(tcb().keep_probes, 0);
  advance_to(idle_from_ + 14 * kSecond);
  expect_silent() /* idle again only since the answer */;
  advance_to(idle_from_ + 22 * kSecond + 500 * kMillisecond);
  expect_probe();
  EXPECT_EQ(tcb().state, TcpState::kEstablished);
}

TEST_F(Keepalive, TrafficPostponesTheFirstProbe) {
  advance_to(idle_from_ + 9 * kSecond);
  ASSERT_EQ(peer_data(0, "x"), Drop::kNone);
  advance(kDelAck);
  EXPECT_EQ(sent_one().ack, rcv(1));
  advance_to(idle_from_ + 10 * kSecond);
  expect_silent();
  advance_to(idle_from_ + 19 * kSecond);
  Seg p = sent_one();
  EXPECT_EQ(p.seq, snd(0) - 1);
  EXPECT_EQ(p.ack, rcv(1));
}

// The idle time counts from the last segment received (RFC 1122 4.2.3.6; Linux's
// rcv_tstamp). On an active open that is the SYN-ACK, which arrived 10 ms after
// our SYN (EstablishedTest::establish).
TEST_F(Timers, KeepaliveIdleCountsFromTheSynAck) {
  Time synack_at = now_;
  set(TcpOption::kKeepIdle, 10);
  set(TcpOption::kKeepAlive, 1);
  advance_to(synack_at + 10 * kSecond - kMillisecond);
  expect_silent();
  advance_to(synack_at + 10 * kSecond);
  EXPECT_EQ(sent_one().seq, snd(0) - 1);
}

TEST_F(Keepalive, TurningItOffStopsProbes) {
  set(TcpOption::kKeepAlive, 0);
  advance_to(idle_from_ + 60 * kSecond);
  expect_silent();
  EXPECT_EQ(tcb().keepalive_at, 0u);
}

TEST_F(Timers, KeepaliveOptionsAreRangeChecked) {
  EXPECT_EQ(eng().set_option(c_, TcpOption::kKeepIdle, 0), -EINVAL);
  EXPECT_EQ(eng().set_option(c_, TcpOption::kKeepIdle, 32768), -EINVAL);
  EXPECT_EQ(eng().set_option(c_, TcpOption::kKeepIntvl, 0), -EINVAL);
  EXPECT_EQ(eng().set_option(c_, TcpOption::kKeepCnt, 0), -EINVAL);
  EXPECT_EQ(eng().set_option(c_, TcpOption::kKeepCnt, 128), -EINVAL);
  EXPECT_EQ(eng().set_option(c_, TcpOption::kKeepIdle, 32767), 0);
  EXPECT_EQ(eng().set_option(c_, TcpOption::kKeepCnt, 127), 0);
  EXPECT_EQ(tcb().keep_idle, 32767u);
  EXPECT_EQ(tcb().keep_intvl, 75u) << "Linux default";
  EXPECT_EQ(tcb().keep_cnt, 127u);
}

// ---- Slow start after idle (RFC 5681 4.1) ----

class Restart : public Timers {
 protected:
  // Grows cwnd to 12000 with one flight of 10 segments, fully acknowledged.
  void SetUp() override {
    Timers::SetUp();
    app_send(pattern(10000));
    ASSERT_EQ(sent().size(), 10u);
    ASSERT_EQ(peer_ack(10000), Drop::kNone);
    ASSERT_EQ(tcb().cwnd, 12000u);
    ASSERT_EQ(tcb().rto, 200 * kMillisecond);
  }
};

TEST_F(Restart, IdleLongerThanRtoRestartsFromTheInitialWindow) {
  advance(5 * kSecond);
  app_send(pattern(14000));
  EXPECT_EQ(sent().size(), 10u) << "cwnd back to 10 segments";
  EXPECT_EQ(tcb().cwnd, 10000u);
}

TEST_F(Restart, ShortIdleKeepsTheWindow) {
  advance(100 * kMillisecond);
  app_send(pattern(14000));
  EXPECT_EQ(sent().size(), 12u);
  EXPECT_EQ(tcb().cwnd, 12000u);
}

// ---- RFC 5961 7: challenge ACKs per second ----

TEST_F(Timers, ChallengeAcksAreRateLimitedPerSecond) {
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(recv(Seg{.seq = rcv(10), .flags = kRst}), Drop::kTcpRstIgnored);
    Seg ack = sent_one();
    EXPECT_EQ(ack.flags, kAck);
    EXPECT_EQ(ack.seq, snd(0));
    EXPECT_EQ(ack.ack, rcv(0));
  }
  EXPECT_EQ(recv(Seg{.seq = rcv(10), .flags = kRst}), Drop::kTcpRstIgnored);
  expect_silent();
  EXPECT_EQ(drops(Drop::kTcpChallengeAckLimited), 1u);
  // A SYN draws on the same budget.
  advance(500 * kMillisecond);
  EXPECT_EQ(recv(Seg{.seq = rcv(0), .flags = kSyn}), Drop::kTcpBadFlags);
  expect_silent();
  EXPECT_EQ(drops(Drop::kTcpChallengeAckLimited), 2u);
  EXPECT_EQ(tcb().state, TcpState::kEstablished);
  // The budget refills a second after the window opened.
  advance(500 * kMillisecond);
  EXPECT_EQ(recv(Seg{.seq = rcv(0), .flags = kSyn}), Drop::kTcpBadFlags);
  EXPECT_EQ(sent_one().ack, rcv(0));
  EXPECT_EQ(recv(Seg{.seq = rcv(10), .flags = kRst}), Drop::kTcpRstIgnored);
  EXPECT_EQ(sent_one().ack, rcv(0));
  EXPECT_EQ(eng().counters().tcp_challenge_acks, 5u);
}

TEST_F(Timers, ExactRstIsNeverRateLimited) {
  for (int i = 0; i < 4; ++i) recv(Seg{.seq = rcv(10), .flags = kRst});
  sent();
  EXPECT_EQ(recv(Seg{.seq = rcv(0), .flags = kRst}), Drop::kNone);
  EXPECT_EQ(tcb().state, TcpState::kClosed);
  EXPECT_EQ(tcb().error, ECONNRESET);
}

}  // namespace
}  // namespace shunt::test
