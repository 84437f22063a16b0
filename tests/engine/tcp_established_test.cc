// ESTABLISHED (RFC 9293 3.10.7.4): data both ways, acceptability, RST and SYN
// handling (RFC 5961), retransmission (RFC 6298), zero windows. Both ISNs sit
// just below 2^32, so every test here runs its sequence numbers across the wrap.
#include <gtest/gtest.h>

#include <cerrno>

#include "harness.hh"

namespace shunt::test {
namespace {

class Established : public EstablishedTest {
 protected:
  // The peer acknowledges our byte `off` (its own stream stays at rcv(peer_off)).
  Drop peer_ack(uint32_t off, uint16_t window = 65535, uint32_t peer_off = 0) {
    return recv(Seg{.seq = rcv(peer_off), .ack = snd(off), .flags = kAck, .window = window});
  }
  Drop peer_data(uint32_t peer_off, std::string data, uint32_t ack_off = 0) {
    return recv(Seg{.seq = rcv(peer_off), .ack = snd(ack_off), .flags = kAck | kPsh,
                    .payload = std::move(data)});
  }
  uint64_t drops(Drop d) const { return eng_->counters().drops[static_cast<size_t>(d)]; }
};

// ---- Receiving ----

TEST_F(Established, DataInGoesToRxRingAndIsAcked) {
  const std::string data = "sixteen bytes...and then some";  // crosses 2^32 after 15
  EXPECT_EQ(peer_data(0, data), Drop::kNone);
  EXPECT_EQ(app_->read(), data);
  Seg ack = sent_one();
  EXPECT_EQ(ack.flags, kAck);
  EXPECT_EQ(ack.seq, snd(0));
  EXPECT_EQ(ack.ack, rcv(data.size()));
  EXPECT_LT(ack.ack, kRemoteIsn) << "the ACK number wrapped";
  EXPECT_EQ(ack.window, 4096 - data.size());
  EXPECT_EQ(events()[kUser], kEvReadable);
}

TEST_F(Established, AcksAreCoalescedPerBatch) {
  eng().input(tcp_frame(Seg{.seq = rcv(0), .ack = snd(0), .flags = kAck, .payload = "abc"}), now_);
  eng().input(tcp_frame(Seg{.seq = rcv(3), .ack = snd(0), .flags = kAck, .payload = "def"}), now_);
  eng().input(tcp_frame(Seg{.seq = rcv(6), .ack = snd(0), .flags = kAck, .payload = "ghi"}), now_);
  expect_silent();
  eng().flush(now_);
  Seg ack = sent_one();
  EXPECT_EQ(ack.ack, rcv(9));
  EXPECT_EQ(app_->read(), "abcdefghi");
}

TEST_F(Established, PureAckIsNotAcked) {
  EXPECT_EQ(peer_ack(0), Drop::kNone);
  expect_silent();
}

TEST_F(Established, SegmentWithoutAckBitIsDropped) {
  EXPECT_EQ(recv(Seg{.seq = rcv(0), .flags = kPsh, .payload = "x"}), Drop::kTcpBadAck);
  EXPECT_EQ(app_->rx().readable(), 0u);
}

TEST_F(Established, OutOfWindowSegmentIsAckedAndDropped) {
  EXPECT_EQ(peer_data(5000, "far"), Drop::kTcpUnacceptable);  // window is 4096
  Seg ack = sent_one();
  EXPECT_EQ(ack.flags, kAck);
  EXPECT_EQ(ack.ack, rcv(0));
  EXPECT_EQ(app_->rx().readable(), 0u);
  EXPECT_EQ(drops(Drop::kTcpUnacceptable), 1u);
}

TEST_F(Established, DuplicateDataIsAckedOnce) {
  peer_data(0, "abc");
  sent();
  EXPECT_EQ(peer_data(0, "abc"), Drop::kTcpUnacceptable);
  Seg ack = sent_one();
  EXPECT_EQ(ack.ack, rcv(3)) << "the duplicate ACK repeats RCV.NXT";
  EXPECT_EQ(app_->read(), "abc");
}

TEST_F(Established, OverlapIsTrimmed) {
  peer_data(0, "abcdef");
  EXPECT_EQ(peer_data(3, "defghi"), Drop::kNone);
  auto acks = sent();
  ASSERT_EQ(acks.size(), 2u);
  EXPECT_EQ(acks[1].ack, rcv(9));
  EXPECT_EQ(app_->read(), "abcdefghi");
}

TEST_F(Established, OutOfOrderSegmentIsHeldAndDupAcked) {
  EXPECT_EQ(peer_data(100, "later"), Drop::kNone) << "queued for reassembly, not dropped";
  Seg ack = sent_one();
  EXPECT_EQ(ack.flags, kAck);
  EXPECT_EQ(ack.ack, rcv(0)) << "duplicate ACK: asks for the hole";
  EXPECT_EQ(app_->rx().readable(), 0u) << "nothing readable until the hole fills";
  EXPECT_EQ(tcb().rcv.nxt.raw(), rcv(0));
  EXPECT_EQ(tcb().ooo.n, 1u);
  EXPECT_EQ(eng().counters().tcp_ooo_queued, 1u);
  // The hole fills: both pieces become readable in order and rcv.nxt jumps.
  EXPECT_EQ(peer_data(0, pattern(100)), Drop::kNone);
  EXPECT_EQ(sent_one().ack, rcv(105));
  EXPECT_EQ(app_->read(), pattern(100) + "later");
  EXPECT_EQ(tcb().ooo.n, 0u);
}

// Beyond the ring there is nowhere to keep a segment: it is dropped with a reason.
TEST_F(Established, OutOfOrderBeyondTheRingIsDropped) {
  EXPECT_EQ(peer_data(4096, "x"), Drop::kTcpUnacceptable) << "outside the 4096-byte window";
  EXPECT_EQ(tcb().ooo.n, 0u);
}

TEST_F(Established, RxRingFullTakesWhatFits) {
  std::string big = pattern(5000);
  EXPECT_EQ(peer_data(0, big), Drop::kNone);
  Seg ack = sent_one();
  EXPECT_EQ(ack.ack, rcv(4096));
  EXPECT_EQ(ack.window, 0);
  EXPECT_EQ(drops(Drop::kTcpRxRingFull), 1u);
  EXPECT_EQ(app_->read(), big.substr(0, 4096));
}

TEST_F(Established, ZeroWindowRejectsDataButAnswersProbes) {
  peer_data(0, pattern(4096));
  ASSERT_EQ(sent_one().window, 0);
  // A one-byte window probe at RCV.NXT: not acceptable, answered with our window.
  EXPECT_EQ(peer_data(4096, "p"), Drop::kTcpUnacceptable);
  Seg ack = sent_one();
  EXPECT_EQ(ack.ack, rcv(4096));
  EXPECT_EQ(ack.window, 0);
  EXPECT_EQ(app_->rx().readable(), 4096u);
}

TEST_F(Established, WindowUpdateAfterRxDrained) {
  peer_data(0, pattern(4096));
  ASSERT_EQ(sent_one().window, 0);
  // Receiver SWS avoidance: 500 bytes free is less than an MSS (1000): stay quiet.
  app_->read(500);
  eng().rx_drained(c_);
  eng().flush(now_);
  expect_silent();
  app_->read(1500);
  eng().rx_drained(c_);
  eng().flush(now_);
  Seg upd = sent_one();
  EXPECT_EQ(upd.flags, kAck);
  EXPECT_EQ(upd.ack, rcv(4096));
  EXPECT_EQ(upd.window, 2000);
}

// ---- Receive buffers that grow (autotuning) and SO_RCVBUF ----

// Rings of 16 KiB memory that start at 4 KiB.
class GrowingBuffers : public Established {
 protected:
  void SetUp() override { ASSERT_NO_FATAL_FAILURE(establish(16384, 16384, 4096)); }
  uint64_t grown() const { return eng_->counters().tcp_rx_buffer_grown; }
  // The peer sends `n` bytes at `off` in 1000-byte segments; the reader takes
  // each at once. Returns the window of the last ACK.
  uint32_t stream(uint32_t off, uint32_t n) {
    uint32_t wnd = 0;
    for (uint32_t done = 0; done < n; done += 1000) {
      peer_data(off + done, pattern(1000, off + done));
      wnd = sent_one().window;
      EXPECT_EQ(app_->read(), pattern(1000, off + done));
    }
    return wnd;
  }
};

TEST_F(GrowingBuffers, AFastReaderThatEmptiesAHalfFullBufferDoublesIt) {
  peer_data(0, pattern(2200));
  EXPECT_LT(sent_one().window, 2048u) << "below half of 4096: the window is low";
  app_->read();
  eng().poll(now_);
  eng().rx_drained(c_);
  EXPECT_EQ(grown(), 1u);
  // The ring holds 4096 until the reader is past the switch (8192), then 8192.
  EXPECT_GT(stream(2200, 9000), 4096u);
  EXPECT_EQ(app_->rx().capacity(), 8192u) << "the reader sees the grown ring";
}

TEST_F(GrowingBuffers, AReaderSlowerThanTwoMillisecondsKeepsItsBuffer) {
  peer_data(0, pattern(2200));
  sent_one();
  advance(3 * kMillisecond);
  app_->read();
  eng().poll(now_);
  eng().rx_drained(c_);
  EXPECT_EQ(grown(), 0u);
  EXPECT_LE(stream(2200, 9000), 4096u);
}

TEST_F(GrowingBuffers, RcvBufSetsTheSizeAndStopsAutotuning) {
  ASSERT_EQ(eng().set_option(c_, TcpOption::kRcvBuf, 2000), 0);
  peer_data(0, pattern(1500));
  EXPECT_EQ(sent_one().window, 500u) << "2000 bytes, not the ring's 4096";
  app_->read();
  eng().poll(now_);
  eng().rx_drained(c_);
  EXPECT_EQ(grown(), 0u) << "SO_RCVBUF fixed the size";
  ASSERT_EQ(eng().set_option(c_, TcpOption::kRcvBuf, 12000), 0);
  // Past the switch (16384) the ring is 16 KiB, of which 12000 may be used.
  EXPECT_EQ(stream(1500, 17000), 12000u - 1000u);
  EXPECT_EQ(app_->rx().capacity(), 12000u) << "grown to 16 KiB, limited to 12000";
}

// The ACK that takes the reader past the switch frees a ring that was full at
// the old size: the writer blocked on it must hear so, though the freed bytes
// are less than half of the grown ring.
TEST_F(GrowingBuffers, AWriterOnAFullRingIsWokenEvenAsTheRingGrows) {
  uint32_t off = 0;
  for (int round = 0; round < 8 && app_->tx().capacity() == 4096; ++round) {
    uint32_t room = app_->tx().writable();
    ASSERT_EQ(room, 4096u) << "round " << round;
    app_send(pattern(room, off));
    off += room;
    ASSERT_FALSE(sent().empty());
    events();
    peer_ack(off);
    EXPECT_EQ(events()[kUser] & kEvWritable, kEvWritable) << "round " << round << ", at " << off;
  }
  EXPECT_GT(eng_->counters().tcp_tx_buffer_grown, 0u);
  EXPECT_GT(app_->tx().capacity(), 4096u) << "the writer sees the grown ring";
}

TEST_F(Established, WindowLowEventWhenWindowHalves) {
  peer_data(0, pattern(2000));
  sent();
  EXPECT_EQ(events()[kUser] & kEvWindowLow, 0u) << "2096 of 4096 left: not yet";
  peer_data(2000, pattern(100));
  sent();
  EXPECT_EQ(events()[kUser] & kEvWindowLow, kEvWindowLow);
  peer_data(2100, pattern(100));
  sent();
  EXPECT_EQ(events()[kUser] & kEvWindowLow, 0u) << "reported once until rx_drained";
}

// A FIN that overtakes the data before it (reordering) is kept until the hole
// fills; dropping it would leave the peer waiting for its retransmission timeout.
TEST_F(Established, FinAheadOfAHoleClosesTheStreamWhenTheHoleFills) {
  EXPECT_EQ(recv(Seg{.seq = rcv(100), .ack = snd(0), .flags = kAck | kFin,
                     .payload = pattern(50)}),
            Drop::kNone);
  EXPECT_EQ(sent_one().ack, rcv(0)) << "a duplicate ACK for the hole";
  EXPECT_EQ(tcb().state, TcpState::kEstablished);
  EXPECT_EQ(peer_data(0, pattern(100)), Drop::kNone);
  Seg ack = sent_one();
  EXPECT_EQ(ack.ack, rcv(151)) << "the 150 bytes and the FIN";
  EXPECT_EQ(tcb().state, TcpState::kCloseWait);
  EXPECT_EQ(app_->read().size(), 150u);
}

TEST_F(Established, BareFinAheadOfAHoleIsTakenWhenTheHoleFills) {
  EXPECT_EQ(recv(Seg{.seq = rcv(10), .ack = snd(0), .flags = kAck | kFin}), Drop::kNone);
  sent();
  EXPECT_EQ(peer_data(0, pattern(10)), Drop::kNone);
  EXPECT_EQ(sent_one().ack, rcv(11));
  EXPECT_EQ(tcb().state, TcpState::kCloseWait);
  EXPECT_EQ(app_->read().size(), 10u);
}

// ---- RST and SYN (RFC 5961) ----

// Linux's tcp_reset: the peer had closed, so what failed is writing: EPIPE.
TEST_F(Established, RstInCloseWaitIsEpipe) {
  EXPECT_EQ(recv(Seg{.seq = rcv(0), .ack = snd(0), .flags = kAck | kFin}), Drop::kNone);
  sent();
  ASSERT_EQ(tcb().state, TcpState::kCloseWait);
  EXPECT_EQ(recv(Seg{.seq = rcv(1), .flags = kRst}), Drop::kNone);
  EXPECT_EQ(tcb().state, TcpState::kClosed);
  EXPECT_EQ(tcb().error, EPIPE);
}

TEST_F(Established, RstAtExactSequenceResets) {
  EXPECT_EQ(recv(Seg{.seq = rcv(0), .flags = kRst}), Drop::kNone);
  expect_silent();
  EXPECT_EQ(tcb().state, TcpState::kClosed);
  EXPECT_EQ(tcb().error, ECONNRESET);
  EXPECT_EQ(events()[kUser], kEvState | kEvReadable | kEvWritable);
  EXPECT_EQ(eng().find(kRemoteIp, kRemotePort, kLocalPort), kInvalidId);
  advance(5 * kSecond);
  expect_silent();
}

TEST_F(Established, RstInWindowButNotExactGetsChallengeAck) {
  EXPECT_EQ(recv(Seg{.seq = rcv(100), .flags = kRst}), Drop::kTcpRstIgnored);
  Seg ack = sent_one();
  EXPECT_EQ(ack.flags, kAck);
  EXPECT_EQ(ack.seq, snd(0));
  EXPECT_EQ(ack.ack, rcv(0));
  EXPECT_EQ(tcb().state, TcpState::kEstablished);
}

TEST_F(Established, RstOutsideWindowIsIgnoredSilently) {
  EXPECT_EQ(recv(Seg{.seq = rcv(100000), .flags = kRst}), Drop::kTcpUnacceptable);
  EXPECT_EQ(recv(Seg{.seq = rcv(0) - 1, .flags = kRst}), Drop::kTcpUnacceptable);
  expect_silent();
  EXPECT_EQ(tcb().state, TcpState::kEstablished);
}

TEST_F(Established, SynGetsChallengeAck) {
  EXPECT_EQ(recv(Seg{.seq = rcv(0), .flags = kSyn}), Drop::kTcpBadFlags);
  Seg ack = sent_one();
  EXPECT_EQ(ack.flags, kAck);
  EXPECT_EQ(ack.ack, rcv(0));
  EXPECT_EQ(tcb().state, TcpState::kEstablished);
  // An old SYN (the handshake's, retransmitted) is outside the window: plain ACK.
  EXPECT_EQ(recv(Seg{.seq = kRemoteIsn, .flags = kSyn}), Drop::kTcpUnacceptable);
  EXPECT_EQ(sent_one().ack, rcv(0));
  EXPECT_EQ(tcb().state, TcpState::kEstablished);
}

// RFC 5961 5.2: a blind injector who guessed the sequence number but not the
// acknowledgement; the data must not be taken.
TEST_F(Established, DataWithAnAckOlderThanAnyWindowGetsChallengeAck) {
  EXPECT_EQ(recv(Seg{.seq = rcv(0), .ack = snd(0) - (1u << 30), .flags = kAck | kPsh,
                     .payload = "evil"}),
            Drop::kTcpBadAck);
  Seg ack = sent_one();
  EXPECT_EQ(ack.flags, kAck);
  EXPECT_EQ(ack.ack, rcv(0));
  EXPECT_EQ(app_->read(), "");
  EXPECT_EQ(eng().counters().tcp_challenge_acks, 1u);
  // Old by less than the window the peer offered (65535): only old, data taken.
  EXPECT_EQ(recv(Seg{.seq = rcv(0), .ack = snd(0) - 60000, .flags = kAck | kPsh,
                     .payload = "fine"}),
            Drop::kNone);
  EXPECT_EQ(app_->read(), "fine");
}

// ---- Sending ----

TEST_F(Established, DataOutIsCutIntoMssSegments) {
  const std::string data = pattern(2500);
  app_send(data);
  auto out = sent();
  ASSERT_EQ(out.size(), 3u) << trace(out);
  uint32_t off = 0;
  for (const Seg& s : out) {
    EXPECT_EQ(s.seq, snd(off));
    EXPECT_EQ(s.ack, rcv(0));
    EXPECT_LE(s.payload.size(), kPeerMss);
    EXPECT_EQ(s.payload, data.substr(off, s.payload.size()));
    off += uint32_t(s.payload.size());
  }
  EXPECT_EQ(off, 2500u);
  EXPECT_EQ(out[0].flags, kAck);
  EXPECT_EQ(out[2].flags, kAck | kPsh) << "PSH on the segment that empties the buffer";
  EXPECT_LT(out[1].seq, out[0].seq) << "our sequence numbers wrapped past 2^32";
  EXPECT_EQ(tcb().snd.nxt.raw(), snd(2500));
  EXPECT_EQ(app_->tx().readable(), 2500u) << "kept until acknowledged";
}

TEST_F(Established, InitialWindowIsTenSegments) {
  app_send(pattern(16000));
  auto out = sent();
  EXPECT_EQ(out.size(), 10u) << "RFC 6928: IW = 10 MSS";
  peer_ack(2000);
  out = sent();
  // Slow start: cwnd grows by at most 2 MSS per ACK (RFC 3465 L = 2 SMSS):
  // 12000 - 8000 in flight.
  ASSERT_EQ(out.size(), 4u) << trace(out);
  EXPECT_EQ(out[0].seq, snd(10000));
}

TEST_F(Established, PeerWindowLimitsAndSenderAvoidsRunts) {
  peer_ack(0, 1500);
  app_send(pattern(3000));
  auto out = sent();
  ASSERT_EQ(out.size(), 1u) << "500 more would fit, but a runt waits while data is in flight"
                            << trace(out);
  EXPECT_EQ(out[0].payload.size(), 1000u);
  peer_ack(1000, 1500);
  out = sent();
  ASSERT_EQ(out.size(), 1u) << trace(out);
  EXPECT_EQ(out[0].seq, snd(1000));
  EXPECT_EQ(out[0].payload.size(), 1000u);
}

TEST_F(Established, AckAdvancesTxTail) {
  app_send(pattern(2500));
  sent();
  uint32_t tail = app_->tx().tail();
  events();
  EXPECT_EQ(peer_ack(1000), Drop::kNone);
  EXPECT_EQ(app_->tx().tail(), tail + 1000);
  EXPECT_EQ(app_->tx().readable(), 1500u);
  EXPECT_EQ(tcb().snd.una.raw(), snd(1000));
  EXPECT_EQ(events()[kUser], 0u) << "a ring far from full: nobody waits for space";
  peer_ack(2500);
  EXPECT_EQ(app_->tx().readable(), 0u);
  EXPECT_EQ(tcb().rto_at, 0u) << "RFC 6298 5.2: all acknowledged, timer off";
}

// Like Linux's SOCK_NOSPACE: space freed in a ring that was more than half
// full is reported (a writer or poller may be waiting for it).
TEST_F(Established, AckFreeingAFillingRingReportsWritable) {
  std::string big = pattern(12000);  // of 16384: more than half
  app_send(big);
  sent();
  events();
  EXPECT_EQ(peer_ack(1000), Drop::kNone);
  EXPECT_EQ(events()[kUser] & kEvWritable, kEvWritable);
}

TEST_F(Established, AckOfUnsentDataIsAnsweredAndDropped) {
  app_send("abc");
  sent();
  EXPECT_EQ(peer_ack(100), Drop::kTcpBadAck);
  Seg ack = sent_one();
  EXPECT_EQ(ack.flags, kAck);
  EXPECT_EQ(ack.seq, snd(3));
  EXPECT_EQ(tcb().snd.una.raw(), snd(0));
  EXPECT_EQ(app_->tx().readable(), 3u);
}

TEST_F(Established, OldAckChangesNothing) {
  app_send(pattern(2000));
  sent();
  peer_ack(1000, 5000);
  EXPECT_EQ(tcb().snd.wnd, 5000u);
  EXPECT_EQ(peer_ack(500, 60000), Drop::kNone);
  expect_silent();
  EXPECT_EQ(tcb().snd.una.raw(), snd(1000));
  EXPECT_EQ(tcb().snd.wnd, 5000u) << "RFC 9293: SND.WL2 > SEG.ACK, the window is stale";
}

TEST_F(Established, RttIsMeasuredOnNewData) {
  ASSERT_EQ(tcb().srtt, 10 * kMillisecond);
  app_send("x");
  sent();
  now_ += 50 * kMillisecond;
  peer_ack(1);
  // RFC 6298 2.3: RTTVAR = 3/4 * 5 + 1/4 * |10 - 50|, SRTT = 7/8 * 10 + 1/8 * 50.
  EXPECT_EQ(tcb().rttvar, (3 * 5 * kMillisecond + 40 * kMillisecond) / 4);
  EXPECT_EQ(tcb().srtt, (7 * 10 * kMillisecond + 50 * kMillisecond) / 8);
}

TEST_F(Established, RtoResendsFromSndUna) {
  ASSERT_EQ(eng().set_option(c_, TcpOption::kCongestion, uint32_t(CcAlgorithm::kReno)), 0);
  app_send(pattern(3000));
  sent();
  peer_ack(1000);
  Time rto = tcb().rto;
  ASSERT_EQ(rto, 200 * kMillisecond);
  advance(rto - kMillisecond);
  expect_silent();
  advance(kMillisecond);
  Seg re = sent_one();  // cwnd collapses to one segment
  EXPECT_EQ(re.seq, snd(1000));
  EXPECT_EQ(re.payload, pattern(3000).substr(1000, 1000));
  EXPECT_EQ(tcb().backoff, 1u);
  EXPECT_EQ(tcb().rto_at - now_, 2 * rto) << "RFC 6298 5.5: back off";
  EXPECT_EQ(tcb().cwnd, kPeerMss);
  EXPECT_EQ(tcb().ssthresh, 2u * kPeerMss) << "RFC 5681 (4): max(flight / 2, 2 SMSS)";
  EXPECT_EQ(eng().counters().tcp_retransmits, 1u);
  // Go-back-N: the ACK of the retransmission releases the rest in slow start.
  peer_ack(2000);
  auto out = sent();
  ASSERT_EQ(out.size(), 1u) << trace(out);
  EXPECT_EQ(out[0].seq, snd(2000));
  EXPECT_EQ(out[0].payload.size(), 1000u);
}

// Go-back-N after an RTO rewinds snd.nxt to snd.una (tcp.cc on_timer), but the
// peer may already hold everything sent before the RTO (only its ACKs were
// lost). Its ACK is then above the rewound snd.nxt yet below the highest
// sequence sent, and must be accepted (BSD keeps snd_max for this). process_ack
// drops it as "acks something not yet sent", so the sender retransmits the same
// segment until it times out: the connection stalls (see sim_test).
TEST_F(Established, AckForDataSentBeforeRtoIsAccepted) {
  app_send(pattern(3000));
  ASSERT_EQ(sent().size(), 3u);
  advance(tcb().rto);
  ASSERT_EQ(sent_one().seq, snd(0));
  EXPECT_EQ(peer_ack(3000), Drop::kNone);
  EXPECT_EQ(tcb().snd.una.raw(), snd(3000));
  EXPECT_EQ(app_->tx().readable(), 0u);
  advance(10 * kSecond);
  expect_silent();
}

// The other half of the same stall: after the rewind our ACKs carry
// SEQ = snd.nxt, which is below the peer's RCV.NXT (it holds all 3000 bytes),
// so the peer finds them unacceptable and drops them unread. BSD sends pure
// ACKs with snd_max. (Today the peer's data is even dropped, by the bad-ACK
// check above, before it reaches the rx ring.)
TEST_F(Established, AcksAfterRtoCarryHighestSequenceSent) {
  app_send(pattern(3000));
  ASSERT_EQ(sent().size(), 3u);
  advance(tcb().rto);
  ASSERT_EQ(sent_one().seq, snd(0));
  peer_data(0, "y", 3000);
  EXPECT_EQ(app_->read(), "y");
  auto out = sent();
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out.back().ack, rcv(1));
  EXPECT_EQ(out.back().seq, snd(3000)) << "acceptable to a peer whose RCV.NXT is snd(3000)";
}

TEST_F(Established, RetransmissionGivesUpAfter15Retries) {
  app_send("doomed");
  sent();
  Time start = now_;
  int retransmissions = 0;
  while (tcb().state == TcpState::kEstablished && retransmissions < 20) {
    advance_to(tcb().rto_at);
    for (const Seg& s : sent()) {
      EXPECT_EQ(s.seq, snd(0));
      EXPECT_EQ(s.payload, "doomed");
      ++retransmissions;
    }
  }
  EXPECT_EQ(retransmissions, 15) << "Linux tcp_retries2";
  EXPECT_EQ(tcb().state, TcpState::kClosed);
  EXPECT_EQ(tcb().error, ETIMEDOUT);
  // 0.2 s doubling to the 120 s cap: 0.2 * (2^10 - 1) + 6 * 120 = 924.6 s.
  EXPECT_EQ(now_ - start, 924600 * kMillisecond);
  EXPECT_EQ(events()[kUser] & kEvState, kEvState);
}

// ---- getsockopt(TCP_INFO) and the IP header options ----

TEST_F(Established, TcpInfoReportsWhatTheConnectionTracks) {
  app_send(pattern(3000));
  sent();
  advance(10 * kMillisecond);
  peer_ack(3000);
  abi::TcpInfo info;
  eng().tcp_info(c_, now_, &info);
  EXPECT_EQ(info.state, 0u) << "the caller numbers the state";
  EXPECT_EQ(info.snd_mss, kPeerMss);
  EXPECT_EQ(info.snd_cwnd, tcb().cwnd / kPeerMss);
  EXPECT_EQ(info.rtt, uint32_t(tcb().srtt));
  EXPECT_EQ(info.rtt, 10000u) << "one sample: SRTT is the RTT, in microseconds";
  EXPECT_EQ(info.rttvar, uint32_t(tcb().rttvar));
  EXPECT_EQ(info.snd_ssthresh, 0x7fffffffu) << "infinite, as Linux reports it";
  EXPECT_EQ(info.bytes_acked, 3000u);
  EXPECT_EQ(info.unacked, 0u);
  EXPECT_EQ(info.total_retrans, 0u);
  EXPECT_EQ(info.ca_state, 0u);
  EXPECT_EQ(info.options, 0u) << "the peer offered no timestamps, SACK or scaling";
  EXPECT_EQ(info.snd_wnd, 65535u);
  EXPECT_EQ(info.pmtu, kPeerMss + 40u);
  EXPECT_EQ(info.last_data_sent_ms, 10u);

  // An RTO: the retransmission counts, the state is Loss, the RTO backs off.
  app_send(pattern(2000));
  sent();
  advance(tcb().rto);
  ASSERT_EQ(sent().size(), 1u);
  eng().tcp_info(c_, now_, &info);
  EXPECT_EQ(info.total_retrans, 1u);
  EXPECT_EQ(info.ca_state, 4u) << "TCP_CA_Loss";
  EXPECT_EQ(info.backoff, 1u);
  EXPECT_EQ(info.rto, uint32_t(2 * tcb().rto));
  EXPECT_EQ(info.unacked, 2u) << "2000 bytes in flight";
}

TEST_F(Established, TosAndTtlOptionsAreInEverySegmentsHeader) {
  ASSERT_EQ(eng().set_option(c_, TcpOption::kTos, 0x13), 0);
  ASSERT_EQ(eng().set_option(c_, TcpOption::kTtl, 7), 0);
  EXPECT_EQ(eng().set_option(c_, TcpOption::kTtl, 0), -EINVAL);
  EXPECT_EQ(eng().set_option(c_, TcpOption::kTos, 256), -EINVAL);
  app_send(pattern(100));
  ASSERT_EQ(sink_.frames.size(), 1u);
  const auto& f = sink_.frames.back();
  EXPECT_EQ(f[wire::kEthHeader + 1], 0x10) << "a TCP socket's ECN bits are the stack's";
  EXPECT_EQ(f[wire::kEthHeader + 8], 7);
  EXPECT_EQ(sent_one().payload, pattern(100)) << "and the header checksum still holds";
}

TEST_F(Established, RetransmittedDataIsNotTimed) {
  app_send("x");
  sent();
  advance(tcb().rto);
  ASSERT_EQ(sent_one().payload, "x");
  Time srtt = tcb().srtt;
  now_ += 30 * kMillisecond;
  peer_ack(1);
  EXPECT_EQ(tcb().srtt, srtt) << "Karn's algorithm";
}

TEST_F(Established, ZeroWindowIsProbed) {
  app_send("first");
  sent();
  EXPECT_EQ(peer_ack(5, 0), Drop::kNone);
  app_send("more");
  expect_silent();
  advance(tcb().rto - kMillisecond);
  expect_silent();
  advance(kMillisecond);
  Seg probe = sent_one();
  EXPECT_EQ(probe.flags, kAck);
  EXPECT_EQ(probe.seq, snd(5) - 1) << "an old sequence number forces an ACK with the window";
  EXPECT_TRUE(probe.payload.empty());
  // The window opens: the data goes, probing stops.
  EXPECT_EQ(peer_ack(5, 4000), Drop::kNone);
  Seg data = sent_one();
  EXPECT_EQ(data.seq, snd(5));
  EXPECT_EQ(data.payload, "more");
  EXPECT_EQ(tcb().persist_at, 0u);
}

// RFC 9293 3.8.6.1: successive zero-window probes SHOULD back off exponentially
// (Linux does). on_timer computes rto << backoff but never increments backoff.
TEST_F(Established, PersistProbesBackOff) {
  peer_ack(0, 0);
  app_send("more");
  Time rto = tcb().rto;
  advance(rto);
  ASSERT_EQ(sent_one().seq, snd(0) - 1);
  advance(rto);
  expect_silent();
  advance(rto);
  EXPECT_EQ(sent_one().seq, snd(0) - 1) << "second probe after 2 RTO";
}

TEST_F(Established, FlushWithoutWorkSendsNothing) {
  eng().tx_ready(c_);
  eng().flush(now_);
  advance(10 * kSecond);
  expect_silent();
}

}  // namespace
}  // namespace shunt::test
