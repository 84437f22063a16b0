// Loss recovery and congestion control: fast retransmit and NewReno (RFC 5681,
// RFC 6582), SACK-based recovery (RFC 6675, FACK-style pipe), DSACK received
// (RFC 2883), RTO during recovery, and the congestion controllers (RFC 5681 Reno,
// RFC 9438 CUBIC) both through the engine and as plain functions.
#include <gtest/gtest.h>

#include <cerrno>
#include <cmath>

#include "engine/congestion.hh"
#include "harness.hh"

namespace shunt::test {
namespace {

constexpr uint32_t kMss = kPeerMss;  // 1000: the classic fixture has no options

// Without SACK: NewReno. The peer's MSS is 1000, so segment i is our bytes
// [1000 i, 1000 (i + 1)).
class NewReno : public EstablishedTest {
 protected:
  explicit NewReno(EngineConfig c = default_config()) : EstablishedTest(c) {}
  Drop peer_ack(uint32_t off, uint16_t window = 65535) {
    return recv(Seg{.seq = rcv(0), .ack = snd(off), .flags = kAck, .window = window});
  }
  void use(CcAlgorithm a) { ASSERT_EQ(eng().set_option(c_, TcpOption::kCongestion, uint32_t(a)), 0); }
  // Sends `segments` full segments and checks they all left.
  void flight(uint32_t segments, uint32_t written = 0) {
    app_send(pattern(written ? written : segments * kMss));
    auto segs = sent();
    ASSERT_EQ(segs.size(), segments) << trace(segs);
  }
  void dupacks(int n) {
    for (int i = 0; i < n; ++i) ASSERT_EQ(peer_ack(0), Drop::kNone);
  }
  const EngineCounters& ctr() const { return eng_->counters(); }
};

TEST_F(NewReno, ThirdDuplicateAckRetransmitsSndUnaReno) {
  use(CcAlgorithm::kReno);
  flight(10);
  dupacks(2);
  expect_silent();
  EXPECT_FALSE(tcb().in_recovery);
  EXPECT_EQ(tcb().dupacks, 2);
  ASSERT_EQ(peer_ack(0), Drop::kNone);
  Seg rexmit = sent_one();
  EXPECT_EQ(rexmit.seq, snd(0));
  EXPECT_EQ(rexmit.payload, pattern(kMss));
  EXPECT_TRUE(tcb().in_recovery);
  EXPECT_EQ(tcb().ssthresh, 5000u) << "RFC 5681 (4): FlightSize / 2";
  EXPECT_EQ(tcb().cwnd, 5000u + 3 * kMss) << "ssthresh + 3 * SMSS";
  EXPECT_EQ(tcb().recover.raw(), snd(10000));
  EXPECT_EQ(ctr().tcp_fast_retransmits, 1u);
  EXPECT_EQ(ctr().tcp_recoveries, 1u);
  EXPECT_EQ(ctr().tcp_retransmits, 1u);
}

TEST_F(NewReno, ThirdDuplicateAckWithCubicTakesSeventyPercent) {
  EXPECT_EQ(tcb().cc.algorithm, CcAlgorithm::kCubic) << "EngineConfig::congestion default";
  flight(10);
  dupacks(3);
  EXPECT_EQ(sent_one().seq, snd(0));
  EXPECT_EQ(tcb().ssthresh, 7000u) << "RFC 9438 4.6: beta 0.7";
  EXPECT_EQ(tcb().cwnd, 7000u + 3 * kMss);
}

TEST_F(NewReno, FurtherDuplicatesInflateTheWindowAndReleaseNewData) {
  use(CcAlgorithm::kReno);
  flight(10, 15000);
  dupacks(3);
  auto out = sent();
  ASSERT_EQ(out.size(), 3u) << trace(out);
  EXPECT_EQ(out[0].seq, snd(10000)) << "RFC 3042 limited transmit on the first duplicate";
  EXPECT_EQ(out[1].seq, snd(11000)) << "and on the second";
  EXPECT_EQ(out[2].seq, snd(0)) << "fast retransmit on the third";
  EXPECT_EQ(tcb().ssthresh, 5000u) << "RFC 3042 2: limited-transmit segments are not FlightSize";
  EXPECT_EQ(tcb().cwnd, 8000u);
  dupacks(4);
  EXPECT_EQ(tcb().cwnd, 12000u);
  expect_silent() /* cwnd 12000 = flight */;
  dupacks(1);
  Seg fresh = sent_one();
  EXPECT_EQ(fresh.seq, snd(12000)) << "RFC 6582 3.2 step 4: new data as cwnd inflates";
  EXPECT_EQ(fresh.payload.size(), kMss);
}

TEST_F(NewReno, LimitedTransmitSendsOneNewSegmentPerEarlyDuplicate) {
  use(CcAlgorithm::kReno);
  flight(10, 15000);
  dupacks(1);
  EXPECT_EQ(sent_one().seq, snd(10000));
  dupacks(1);
  EXPECT_EQ(sent_one().seq, snd(11000));
  EXPECT_FALSE(tcb().in_recovery);
}

TEST_F(NewReno, PartialAckRetransmitsTheNextHoleAndFullAckDeflates) {
  use(CcAlgorithm::kReno);
  flight(10);  // segments 0 and 3 are lost
  dupacks(3);
  EXPECT_EQ(sent_one().seq, snd(0));
  ASSERT_EQ(peer_ack(3000), Drop::kNone);  // the retransmission filled 0; 3 is missing
  Seg hole = sent_one();
  EXPECT_EQ(hole.seq, snd(3000)) << "RFC 6582 3.2 step 5: at once, no new dupacks needed";
  EXPECT_EQ(hole.payload.size(), kMss);
  EXPECT_TRUE(tcb().in_recovery);
  EXPECT_EQ(tcb().cwnd, 8000u - 3000 + kMss) << "deflated by the amount acked, plus one SMSS";
  ASSERT_EQ(peer_ack(10000), Drop::kNone);
  expect_silent();
  EXPECT_FALSE(tcb().in_recovery);
  EXPECT_EQ(tcb().cwnd, 5000u) << "RFC 6582 3.2 step 3: cwnd = ssthresh";
  EXPECT_EQ(ctr().tcp_retransmits, 2u);
  EXPECT_EQ(ctr().tcp_recoveries, 1u);
}

TEST_F(NewReno, AcksThatChangeTheWindowOrCarryDataAreNotDuplicates) {
  flight(4);
  ASSERT_EQ(peer_ack(0, 60000), Drop::kNone);
  ASSERT_EQ(peer_ack(0, 50000), Drop::kNone);
  ASSERT_EQ(peer_ack(0, 40000), Drop::kNone);
  for (uint32_t i = 0; i < 3; ++i)
    ASSERT_EQ(recv(Seg{.seq = rcv(i), .ack = snd(0), .flags = kAck, .window = 40000,
                       .payload = "d"}),
              Drop::kNone);
  EXPECT_FALSE(tcb().in_recovery);
  EXPECT_EQ(ctr().tcp_fast_retransmits, 0u);
  for (const Seg& s : sent()) EXPECT_TRUE(s.payload.empty()) << "only ACKs of the data: " << s;
}

TEST_F(NewReno, NoDuplicateAcksWithNothingInFlight) {
  dupacks(5);
  EXPECT_EQ(tcb().dupacks, 0);
  EXPECT_FALSE(tcb().in_recovery);
}

TEST_F(NewReno, RtoCutsSsthreshOnceAndRestartsFromOneSegment) {
  use(CcAlgorithm::kReno);
  flight(10);
  advance(tcb().rto_at - now_);
  Seg rexmit = sent_one();
  EXPECT_EQ(rexmit.seq, snd(0));
  EXPECT_EQ(tcb().ssthresh, 5000u);
  EXPECT_EQ(tcb().cwnd, kMss) << "RFC 5681 (5): loss window";
  advance(tcb().rto_at - now_);
  EXPECT_EQ(sent_one().seq, snd(0));
  EXPECT_EQ(tcb().ssthresh, 5000u) << "the backed-off timeout does not halve again";
  EXPECT_EQ(ctr().tcp_timeouts, 0u);
}

// ---- SACK recovery ----

// Segments carry 1448 bytes (MSS 1460 - timestamps); segment i is our bytes
// [1448 i, 1448 (i + 1)).
constexpr uint32_t kSeg = 1448;

class SackRecovery : public OptionsEstablishedTest {
 protected:
  void SetUp() override {
    OptionsEstablishedTest::SetUp();
    ASSERT_EQ(peer_ack(0), Drop::kNone);  // the scaled window from here on
    app_send(pattern(10 * kSeg));
    auto segs = sent();
    ASSERT_EQ(segs.size(), 10u) << trace(segs);
  }
  // Bytes of segments [from, to) as a block.
  SackBlock segs(uint32_t from, uint32_t to) const { return sacked(from * kSeg, to * kSeg); }
  // Segments 0 and 3 lost; the peer reports 1-2 and 4 in three ACKs.
  void lose_0_and_3() {
    ASSERT_EQ(peer_ack(0, kPeerWindow, {segs(1, 2)}), Drop::kNone);
    ASSERT_EQ(peer_ack(0, kPeerWindow, {segs(1, 3)}), Drop::kNone);
    expect_silent();
    EXPECT_FALSE(tcb().in_recovery);
    ASSERT_EQ(peer_ack(0, kPeerWindow, {segs(4, 5), segs(1, 3)}), Drop::kNone);
  }
};

TEST_F(SackRecovery, HolesBelowTheHighestSackAreRetransmittedWhilePipeIsBelowCwnd) {
  lose_0_and_3();
  EXPECT_TRUE(tcb().in_recovery);
  EXPECT_EQ(tcb().ssthresh, 10220u) << "CUBIC: 0.7 * 10 * 1460";
  EXPECT_EQ(tcb().cwnd, 10220u) << "with SACK no inflation: pipe does the accounting";
  auto r = sent();
  ASSERT_EQ(r.size(), 2u) << trace(r);
  EXPECT_EQ(r[0].seq, snd(0));
  EXPECT_EQ(r[0].payload.size(), kSeg);
  EXPECT_EQ(r[1].seq, snd(3 * kSeg));
  EXPECT_EQ(r[1].payload.size(), kSeg);
  EXPECT_EQ(tcb().sacked.n, 2u);
  EXPECT_EQ(eng().counters().tcp_sack_retransmits, 2u);
  // More SACKs for data above: nothing else is missing below the highest block.
  ASSERT_EQ(peer_ack(0, kPeerWindow, {segs(4, 6), segs(1, 3)}), Drop::kNone);
  expect_silent();
}

TEST_F(SackRecovery, PartialAckKeepsRecoveryFullAckEndsIt) {
  lose_0_and_3();
  sent();
  ASSERT_EQ(peer_ack(3 * kSeg, kPeerWindow, {segs(4, 10)}), Drop::kNone);
  EXPECT_TRUE(tcb().in_recovery);
  EXPECT_EQ(tcb().cwnd, 10220u) << "no deflation with SACK (RFC 6675)";
  expect_silent() /* segment 3 already went */;
  ASSERT_EQ(peer_ack(10 * kSeg), Drop::kNone);
  EXPECT_FALSE(tcb().in_recovery);
  EXPECT_EQ(tcb().cwnd, tcb().ssthresh);
  EXPECT_EQ(tcb().sacked.n, 0u);
}

TEST_F(SackRecovery, EnoughSackedBytesStartRecoveryOnTheFirstDuplicate) {
  // Four segments SACKed at once: 5792 >= DupThresh * SMSS (RFC 6675 5 (b)).
  ASSERT_EQ(peer_ack(0, kPeerWindow, {segs(1, 5)}), Drop::kNone);
  EXPECT_TRUE(tcb().in_recovery);
  Seg r = sent_one();
  EXPECT_EQ(r.seq, snd(0));
}

TEST_F(SackRecovery, SackBlocksOutsideTheFlightAreIgnored) {
  ASSERT_EQ(peer_ack(0, kPeerWindow, {sacked(20 * kSeg, 21 * kSeg)}), Drop::kNone);
  ASSERT_EQ(peer_ack(0, kPeerWindow, {{snd(5), snd(2)}}), Drop::kNone);  // left >= right
  EXPECT_EQ(tcb().sacked.n, 0u);
}

TEST_F(SackRecovery, DsackBelowSndUnaIsCountedNotTakenAsLoss) {
  ASSERT_EQ(peer_ack(10 * kSeg), Drop::kNone);
  ASSERT_EQ(peer_ack(10 * kSeg, kPeerWindow, {segs(2, 3)}), Drop::kNone);
  EXPECT_EQ(eng().counters().tcp_dsacks_received, 1u);
  EXPECT_FALSE(tcb().in_recovery);
  EXPECT_EQ(tcb().sacked.n, 0u);
}

TEST_F(SackRecovery, DsackInsideTheSecondBlockIsCounted) {
  ASSERT_EQ(peer_ack(0, kPeerWindow, {segs(2, 3), segs(1, 4)}), Drop::kNone);
  EXPECT_EQ(eng().counters().tcp_dsacks_received, 1u) << "RFC 2883 4.2.2";
  EXPECT_EQ(tcb().sacked.n, 1u);
  EXPECT_EQ(tcb().sacked.r[0].start.raw(), snd(kSeg));
  EXPECT_EQ(tcb().sacked.r[0].end.raw(), snd(4 * kSeg));
}

// After a timeout the resend skips what the peer SACKed (as Linux marks only the
// rest lost); a second timeout in a row drops the scoreboard (RFC 2018 8: the
// receiver may have reneged).
TEST_F(SackRecovery, RtoDuringRecoveryGoesBackNSkippingSackedData) {
  lose_0_and_3();
  sent();
  ASSERT_NE(tcb().rto_at, 0u);
  advance(tcb().rto_at - now_);
  EXPECT_FALSE(tcb().in_recovery);
  EXPECT_EQ(tcb().sacked.n, 2u) << "kept across the first timeout";
  EXPECT_EQ(tcb().cwnd, 1460u);
  Seg r = sent_one();
  EXPECT_EQ(r.seq, snd(0));
  EXPECT_EQ(r.payload.size(), kSeg);
  // The cumulative ACK jumps to segment 3; the peer holds 4-5. Within cwnd
  // 1460 + 2920: segment 3, then (skipping 4-5) 6 and 7.
  ASSERT_EQ(peer_ack(3 * kSeg, kPeerWindow, {segs(4, 6)}), Drop::kNone);
  auto again = sent();
  ASSERT_EQ(again.size(), 3u) << trace(again);
  EXPECT_EQ(again[0].seq, snd(3 * kSeg));
  EXPECT_EQ(again[1].seq, snd(6 * kSeg));
  EXPECT_EQ(again[2].seq, snd(7 * kSeg));
}

TEST_F(SackRecovery, SecondTimeoutInARowDropsTheScoreboard) {
  lose_0_and_3();
  sent();
  advance(tcb().rto_at - now_);
  sent();
  ASSERT_EQ(tcb().sacked.n, 2u);
  advance(tcb().rto_at - now_);
  EXPECT_EQ(tcb().backoff, 2u);
  EXPECT_EQ(tcb().sacked.n, 0u) << "RFC 2018 8";
  EXPECT_EQ(sent_one().seq, snd(0));
}

// RACK (RFC 8985): a retransmission is judged like any segment. Data sent after
// it is SACKed while it is not: it was lost too, and goes again without an RTO.
TEST_F(SackRecovery, LostRetransmissionIsSentAgainWhenLaterDataIsSacked) {
  lose_0_and_3();
  auto r = sent();
  ASSERT_EQ(r.size(), 2u) << trace(r);
  advance(kMillisecond);
  app_send(pattern(4 * kSeg, 10 * kSeg));
  // Segment 3's retransmission arrives and so do 5-9: the pipe opens for new data.
  ASSERT_EQ(peer_ack(0, kPeerWindow, {segs(1, 10)}), Drop::kNone);
  auto fresh = sent();
  ASSERT_FALSE(fresh.empty()) << "new data after the retransmissions";
  EXPECT_EQ(fresh[0].seq, snd(10 * kSeg)) << trace(fresh);
  advance(kMillisecond);
  // Segment 10, sent after segment 0's retransmission, is SACKed; segment 0 is not.
  ASSERT_EQ(peer_ack(0, kPeerWindow, {segs(10, 11), segs(1, 10)}), Drop::kNone);
  auto again = sent();
  bool resent = false;
  for (const auto& s : again) resent |= s.seq == snd(0) && s.payload.size() == kSeg;
  EXPECT_TRUE(resent) << "segment 0 goes a third time:" << trace(again);
  EXPECT_EQ(eng().counters().tcp_rto_expired, 0u);
}

// Below three SACKed segments and before any reordering is known, RACK waits a
// quarter of the minimum round trip before it calls a hole lost; its timer ends
// the wait even when no further ACK comes.
TEST_F(SackRecovery, ReorderingTimerDeclaresTheHoleLostWithoutFurtherAcks) {
  ASSERT_EQ(peer_ack(0, kPeerWindow, {segs(1, 2)}), Drop::kNone);
  expect_silent();
  EXPECT_FALSE(tcb().in_recovery);
  EXPECT_NE(tcb().rack.timer_at, 0u);
  advance_to(tcb().rack.timer_at + kMillisecond);
  EXPECT_TRUE(tcb().in_recovery);
  auto r = sent();
  ASSERT_FALSE(r.empty());
  EXPECT_EQ(r[0].seq, snd(0));
}

// Every retransmission of a recovery reported back as a duplicate (DSACK, RFC
// 2883): the reduction was spurious and is undone.
TEST_F(SackRecovery, DsacksForEveryRetransmissionUndoTheReduction) {
  lose_0_and_3();
  ASSERT_EQ(sent().size(), 2u);
  EXPECT_EQ(tcb().cwnd, 10220u);
  ASSERT_EQ(peer_ack(10 * kSeg), Drop::kNone);
  EXPECT_FALSE(tcb().in_recovery);
  ASSERT_EQ(peer_ack(10 * kSeg, kPeerWindow, {segs(0, 1)}), Drop::kNone);
  EXPECT_EQ(eng().counters().tcp_spurious_undos, 0u) << "one of two retransmissions reported";
  ASSERT_EQ(peer_ack(10 * kSeg, kPeerWindow, {segs(3, 4)}), Drop::kNone);
  EXPECT_EQ(eng().counters().tcp_spurious_undos, 1u);
  EXPECT_EQ(tcb().cwnd, 14600u) << "back to the window before the reduction";
  EXPECT_TRUE(tcb().rack.reordering_seen);
}

// ---- Congestion control through the engine ----

TEST_F(NewReno, TcpCongestionSelectsTheAlgorithm) {
  EXPECT_EQ(tcb().cc.algorithm, CcAlgorithm::kCubic);
  EXPECT_EQ(eng().set_option(c_, TcpOption::kCongestion, uint32_t(CcAlgorithm::kReno)), 0);
  EXPECT_EQ(tcb().cc.algorithm, CcAlgorithm::kReno);
  EXPECT_EQ(eng().set_option(c_, TcpOption::kCongestion, 7), -ENOENT);
  EXPECT_EQ(tcb().cc.algorithm, CcAlgorithm::kReno);
}

class RenoByDefault : public NewReno {
 protected:
  static EngineConfig config() {
    EngineConfig c = default_config();
    c.congestion = CcAlgorithm::kReno;
    return c;
  }
  RenoByDefault() : NewReno(config()) {}
};

TEST_F(RenoByDefault, EngineConfigPicksTheDefault) {
  EXPECT_EQ(tcb().cc.algorithm, CcAlgorithm::kReno);
}

TEST_F(NewReno, SlowStartGrowsByAckedBytesUpToTwoSegmentsPerAck) {
  flight(10, 16000);
  EXPECT_EQ(tcb().cwnd, 10u * kMss) << "RFC 6928 initial window";
  ASSERT_EQ(peer_ack(3000), Drop::kNone);
  EXPECT_EQ(tcb().cwnd, 12000u) << "RFC 3465: L = 2 SMSS";
  EXPECT_EQ(sent().size(), 5u) << "3000 acked + 2000 more window";
  ASSERT_EQ(peer_ack(4000), Drop::kNone);
  EXPECT_EQ(tcb().cwnd, 13000u);
  EXPECT_EQ(sent().size(), 1u) << "the last 1000 of 16000";
}

TEST_F(NewReno, RenoCongestionAvoidanceGrowsOneSegmentPerWindow) {
  use(CcAlgorithm::kReno);
  flight(10, 16000);
  dupacks(3);
  sent();
  // Limited transmit sent 10000-12000 first, so recovery ends at 12000.
  ASSERT_EQ(peer_ack(12000), Drop::kNone);  // full ACK: cwnd = ssthresh = 5000
  ASSERT_EQ(tcb().cwnd, 5000u);
  auto segs = sent();  // the last 4000 bytes written
  ASSERT_EQ(segs.size(), 4u) << trace(segs);
  app_send(pattern(2000));
  segs = sent();
  ASSERT_EQ(segs.size(), 1u) << "cwnd 5000 holds five segments" << trace(segs);
  for (uint32_t k = 1; k <= 4; ++k) {
    ASSERT_EQ(peer_ack(12000 + k * kMss), Drop::kNone);
    EXPECT_EQ(tcb().cwnd, 5000u) << "after " << k << " of 5 segments";
  }
  ASSERT_EQ(peer_ack(17000), Drop::kNone);
  EXPECT_EQ(tcb().cwnd, 6000u) << "one SMSS after a window's worth of ACKs (RFC 5681 3.1)";
}

// ---- Congestion control functions ----

TEST(Congestion, NamesParseAndPrint) {
  CcAlgorithm a = CcAlgorithm::kCubic;
  EXPECT_TRUE(cc_parse("reno", &a));
  EXPECT_EQ(a, CcAlgorithm::kReno);
  EXPECT_TRUE(cc_parse("cubic", &a));
  EXPECT_EQ(a, CcAlgorithm::kCubic);
  EXPECT_TRUE(cc_parse("bbr", &a));
  EXPECT_EQ(a, CcAlgorithm::kBbr);
  a = CcAlgorithm::kCubic;
  EXPECT_FALSE(cc_parse("vegas", &a));
  EXPECT_FALSE(cc_parse("", &a));
  EXPECT_FALSE(cc_parse("Reno", &a)) << "names are case-sensitive, as Linux's";
  EXPECT_FALSE(cc_parse(nullptr, &a));
  EXPECT_EQ(a, CcAlgorithm::kCubic) << "failed parses leave the output alone";
  EXPECT_STREQ(cc_name(CcAlgorithm::kReno), "reno");
  EXPECT_STREQ(cc_name(CcAlgorithm::kCubic), "cubic");
  EXPECT_STREQ(cc_name(CcAlgorithm::kBbr), "bbr");
}

TEST(Congestion, RenoHalvesWithATwoSegmentFloor) {
  CcState s{.algorithm = CcAlgorithm::kReno};
  EXPECT_EQ(cc_on_loss(s, 10000, 1000, 0), 5000u);
  EXPECT_EQ(cc_on_loss(s, 3000, 1000, 0), 2000u);
  EXPECT_EQ(cc_on_loss(s, 1000, 1000, 0), 2000u);
}

TEST(Congestion, RenoAvoidanceAddsOneSegmentPerWindowOfAcks) {
  CcState s{.algorithm = CcAlgorithm::kReno};
  uint32_t cwnd = 10000;
  for (int i = 0; i < 9; ++i) cc_on_ack(s, &cwnd, 1000, 1000, 0, 0);
  EXPECT_EQ(cwnd, 10000u);
  cc_on_ack(s, &cwnd, 1000, 1000, 0, 0);
  EXPECT_EQ(cwnd, 11000u);
  // Byte counting: a stretch ACK of a whole window counts as a window.
  cc_on_ack(s, &cwnd, 1000, 11000, 0, 0);
  EXPECT_EQ(cwnd, 12000u);
}

TEST(Congestion, CubicTakesSeventyPercentWithATwoSegmentFloor) {
  CcState s;
  EXPECT_EQ(s.algorithm, CcAlgorithm::kCubic);
  EXPECT_EQ(cc_on_loss(s, 100000, 1000, 0), 70000u);
  EXPECT_DOUBLE_EQ(s.w_max, 100.0);
  EXPECT_EQ(s.epoch_start, 0u);
  CcState t;
  EXPECT_EQ(cc_on_loss(t, 2000, 1000, 0), 2000u);
}

TEST(Congestion, CubicFastConvergenceLowersWmax) {
  CcState s;
  cc_on_loss(s, 100000, 1000, 0);
  cc_on_loss(s, 70000, 1000, 0);  // lost again below the previous maximum
  EXPECT_DOUBLE_EQ(s.w_max, 70 * (1 + 0.7) / 2) << "RFC 9438 4.7";
  EXPECT_DOUBLE_EQ(s.w_last_max, 70.0);
}

// The window after a loss climbs back to W_max in about K seconds, concave
// below it and convex above (RFC 9438 4.2). One call per segment acked, one
// window per RTT of 100 ms.
TEST(Congestion, CubicReturnsToWmaxAfterK) {
  constexpr uint32_t kMssBytes = 1000;
  constexpr Time kRtt = 100 * kMillisecond;
  CcState s;
  uint32_t cwnd = cc_on_loss(s, 100 * kMssBytes, kMssBytes, 0);
  double k = std::cbrt(100 * (1 - 0.7) / 0.4);  // 4.2172 s
  Time now = kT0;
  std::vector<uint32_t> per_rtt;
  for (int rtt = 0; rtt < 80; ++rtt) {
    uint32_t acks = cwnd / kMssBytes;
    for (uint32_t i = 0; i < acks; ++i) cc_on_ack(s, &cwnd, kMssBytes, kMssBytes, now, kRtt);
    per_rtt.push_back(cwnd);
    now += kRtt;
  }
  size_t at_k = size_t(k * 10);
  EXPECT_NEAR(per_rtt[at_k] / double(kMssBytes), 100.0, 5.0) << "back at W_max after K";
  uint32_t first_second = per_rtt[10] - 70 * kMssBytes;
  uint32_t second_before_k = per_rtt[at_k] - per_rtt[at_k - 10];
  EXPECT_GT(first_second, second_before_k) << "concave: fast first, flat near W_max";
  uint32_t second_after_k = per_rtt[at_k + 10] - per_rtt[at_k];
  uint32_t later_second = per_rtt[at_k + 30] - per_rtt[at_k + 20];
  EXPECT_GT(later_second, second_after_k) << "convex: probing speeds up beyond W_max";
  for (size_t i = 1; i < per_rtt.size(); ++i)
    EXPECT_LE(per_rtt[i], per_rtt[i - 1] * 3 / 2 + kMssBytes) << "at most 1.5x per RTT (4.4)";
}

}  // namespace
}  // namespace shunt::test

namespace shunt::test {
namespace {

// BBR's model through its pure function: a path of 100 MB/s and 100 us.
RateSample bbr_sample(uint64_t total, uint64_t prior, Time interval, uint32_t acked, uint32_t inflight) {
  RateSample rs;
  rs.total_delivered = total;
  rs.prior_delivered = prior;
  rs.delivered = total - prior;
  rs.interval = interval;
  rs.rtt = 100;
  rs.acked = acked;
  rs.inflight = inflight;
  return rs;
}

// Twelve rounds, each delivering 10 KB in 100 us (100 MB/s): the bandwidth stops growing.
struct BbrPath {
  static constexpr uint32_t kMss = 1000;
  BbrState b;
  uint32_t cwnd = 10 * kMss;
  uint64_t total = 0;
  Time now = 1'000'000;
  BbrPath() {
    for (int round = 0; round < 12; ++round) {
      uint64_t prior = total;
      total += 10'000;
      now += 100;
      cwnd = bbr_on_ack(b, bbr_sample(total, prior, 100, 10'000, 0), cwnd, kMss, now, false);
    }
  }
  // One ACK of 1000 bytes with 5000 in flight, in recovery or not.
  void ack(bool in_recovery) {
    total += 1000;
    now += 10;
    cwnd = bbr_on_ack(b, bbr_sample(total, total - 1000, 0, 1000, 5000), cwnd, kMss, now, in_recovery);
  }
};

TEST(Bbr, StartupEndsOnAFlatBandwidthAndCwndFollowsTwiceTheBdp) {
  BbrPath p;
  const BbrState& b = p.b;
  uint32_t cwnd = p.cwnd;
  EXPECT_TRUE(b.filled_pipe);
  EXPECT_EQ(b.mode, BbrState::Mode::kProbeBw);
  EXPECT_EQ(bbr_max_bw(b), 100'000'000u);
  EXPECT_EQ(b.min_rtt, 100u);
  // BDP = 10 KB; cwnd = 2 BDP + 3 MSS + the ACK aggregation seen (none beyond the model).
  EXPECT_GE(cwnd, 23'000u);
  EXPECT_LE(cwnd, 23'000u + 10'000u);
}

TEST(Bbr, LossKeepsTheModelRecoveryConservesThenRestores) {
  BbrPath p;
  uint32_t before = p.cwnd;
  // Recovery begins: packet conservation, cwnd = what is in flight plus what was delivered.
  p.ack(true);
  EXPECT_EQ(p.cwnd, 6000u);
  // Recovery over: the window from before comes back, not a reduced one.
  p.ack(false);
  EXPECT_GE(p.cwnd, before);
}

}  // namespace
}  // namespace shunt::test
