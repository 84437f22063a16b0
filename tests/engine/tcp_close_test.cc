// Closing (RFC 9293 3.10.4, 3.10.7.4 eighth step, 3.6): active, passive and
// simultaneous close, TIME-WAIT, and the Linux-style aborts on close().
#include <gtest/gtest.h>

#include <cerrno>

#include "harness.hh"

namespace shunt::test {
namespace {

class Close : public EstablishedTest {
 protected:
  Drop peer(uint32_t peer_off, uint32_t ack_off, uint8_t flags, std::string data = "") {
    return recv(Seg{.seq = rcv(peer_off), .ack = snd(ack_off), .flags = flags,
                    .payload = std::move(data)});
  }
  TcpState state() const { return tcb().state; }
  uint64_t drops(Drop d) const { return eng_->counters().drops[static_cast<size_t>(d)]; }
};

// ---- Active close ----

TEST_F(Close, ActiveCloseThroughTimeWait) {
  eng().shutdown_write(c_);
  eng().flush(now_);
  Seg fin = sent_one();
  EXPECT_EQ(fin.flags, kFin | kAck);
  EXPECT_EQ(fin.seq, snd(0));
  EXPECT_EQ(fin.ack, rcv(0));
  EXPECT_EQ(state(), TcpState::kFinWait1);

  EXPECT_EQ(peer(0, 1, kAck), Drop::kNone);
  expect_silent();
  EXPECT_EQ(state(), TcpState::kFinWait2);

  EXPECT_EQ(peer(0, 1, kFin | kAck), Drop::kNone);
  Seg ack = sent_one();
  EXPECT_EQ(ack.flags, kAck);
  EXPECT_EQ(ack.seq, snd(1));
  EXPECT_EQ(ack.ack, rcv(1));
  EXPECT_EQ(state(), TcpState::kTimeWait);
  EXPECT_EQ(events()[kUser] & (kEvReadable | kEvState), kEvReadable | kEvState);

  EXPECT_TRUE(eng().close(c_, false, now_)) << "nothing left to send: rings released at once";
  eng().flush(now_);
  expect_silent();
  Time tw = now_;
  advance_to(tw + 60 * kSecond - kMillisecond);
  EXPECT_EQ(state(), TcpState::kTimeWait);
  EXPECT_EQ(eng().live_connections(), 1u);
  advance_to(tw + 60 * kSecond);
  expect_silent();
  events();
  EXPECT_EQ(eng().find(kRemoteIp, kRemotePort, kLocalPort), kInvalidId);
  EXPECT_EQ(eng().live_connections(), 0u);
  EXPECT_FALSE(eng().has_timers());
}

TEST_F(Close, LastDataCarriesTheFin) {
  app_->write("bye");
  eng().shutdown_write(c_);
  eng().tx_ready(c_);
  eng().flush(now_);
  Seg s = sent_one();
  EXPECT_EQ(s.flags, kAck | kPsh | kFin);
  EXPECT_EQ(s.seq, snd(0));
  EXPECT_EQ(s.payload, "bye");
  EXPECT_EQ(tcb().snd.nxt.raw(), snd(4));
  EXPECT_EQ(state(), TcpState::kFinWait1);
  peer(0, 3, kAck);
  EXPECT_EQ(state(), TcpState::kFinWait1) << "data acked, FIN not yet";
  peer(0, 4, kAck);
  EXPECT_EQ(state(), TcpState::kFinWait2);
}

TEST_F(Close, FinIsRetransmittedOnRto) {
  eng().shutdown_write(c_);
  eng().flush(now_);
  Seg fin = sent_one();
  advance(tcb().rto);
  Seg again = sent_one();
  EXPECT_EQ(again.flags, kFin | kAck);
  EXPECT_EQ(again.seq, fin.seq);
  EXPECT_EQ(tcb().snd.nxt.raw(), snd(1));
  EXPECT_EQ(state(), TcpState::kFinWait1);
}

TEST_F(Close, FinAckAndPeerFinInOneSegment) {
  eng().shutdown_write(c_);
  eng().flush(now_);
  sent();
  EXPECT_EQ(peer(0, 1, kFin | kAck), Drop::kNone);
  EXPECT_EQ(sent_one().ack, rcv(1));
  EXPECT_EQ(state(), TcpState::kTimeWait);
}

TEST_F(Close, SimultaneousCloseGoesThroughClosing) {
  eng().shutdown_write(c_);
  eng().flush(now_);
  sent();
  // Their FIN crossed ours: it does not acknowledge our FIN.
  EXPECT_EQ(peer(0, 0, kFin | kAck), Drop::kNone);
  Seg ack = sent_one();
  EXPECT_EQ(ack.flags, kAck);
  EXPECT_EQ(ack.ack, rcv(1));
  EXPECT_EQ(state(), TcpState::kClosing);
  EXPECT_EQ(peer(1, 1, kAck), Drop::kNone);
  EXPECT_EQ(state(), TcpState::kTimeWait);
}

TEST_F(Close, TimeWaitReAcksRetransmittedFin) {
  eng().shutdown_write(c_);
  eng().flush(now_);
  peer(0, 1, kFin | kAck);
  sent();
  ASSERT_EQ(state(), TcpState::kTimeWait);
  advance(5 * kSecond);
  EXPECT_EQ(peer(0, 1, kFin | kAck), Drop::kNone);
  Seg ack = sent_one();
  EXPECT_EQ(ack.flags, kAck);
  EXPECT_EQ(ack.seq, snd(1));
  EXPECT_EQ(ack.ack, rcv(1));
  EXPECT_EQ(state(), TcpState::kTimeWait);
}

// RFC 9293 3.10.7.4 (TIME-WAIT): a retransmitted FIN is acknowledged "and the
// 2 MSL timeout restarted"; Linux reschedules too. process_fin has that case,
// but a retransmitted FIN (SEG.SEQ = RCV.NXT - 1) fails the acceptability test
// first, so the timer is never restarted.
TEST_F(Close, TimeWaitRestartsOnRetransmittedFin) {
  eng().shutdown_write(c_);
  eng().flush(now_);
  peer(0, 1, kFin | kAck);
  sent();
  Time tw = now_;
  advance_to(tw + 30 * kSecond);
  peer(0, 1, kFin | kAck);
  sent();
  advance_to(tw + 61 * kSecond);
  EXPECT_EQ(state(), TcpState::kTimeWait) << "60 s from the retransmitted FIN, not the first";
  advance_to(tw + 90 * kSecond);
  EXPECT_EQ(state(), TcpState::kClosed);
}

TEST_F(Close, SynAboveTimeWaitReopensThroughListener) {
  ListenerId l;
  ASSERT_EQ(eng().listen(kLocalPort, 4, kListenUser, &l), 0);
  eng().shutdown_write(c_);
  eng().flush(now_);
  peer(0, 1, kFin | kAck);
  sent();
  ASSERT_EQ(state(), TcpState::kTimeWait);
  EXPECT_EQ(recv(Seg{.seq = rcv(100000), .flags = kSyn, .mss = kPeerMss}), Drop::kNone);
  Seg sa = sent_one();
  EXPECT_EQ(sa.flags, kSyn | kAck);
  EXPECT_EQ(sa.ack, rcv(100001));
  EXPECT_EQ(eng().counters().tcp_time_wait_recycled, 1u);
  ConnId n = eng().find(kRemoteIp, kRemotePort, kLocalPort);
  ASSERT_NE(n, kInvalidId);
  EXPECT_EQ(eng().tcb(n).state, TcpState::kSynReceived);
}

// An application that close()s (not shutdown) orphans the connection: its rings
// are released at once when nothing is left to send. The orphan must still take
// the peer's FIN at RCV.NXT and acknowledge it.
TEST_F(Close, OrphanInFinWait2AcceptsPeerFin) {
  EXPECT_TRUE(eng().close(c_, false, now_));
  eng().flush(now_);
  Seg fin = sent_one();
  EXPECT_EQ(fin.flags, kFin | kAck);
  peer(0, 1, kAck);
  ASSERT_EQ(state(), TcpState::kFinWait2);
  EXPECT_EQ(peer(0, 1, kFin | kAck), Drop::kNone);
  Seg ack = sent_one();
  EXPECT_EQ(ack.ack, rcv(1)) << "the peer's FIN must be acknowledged";
  EXPECT_EQ(state(), TcpState::kTimeWait);
}

// Linux keeps advertising a closed socket's receive space: a peer that saw a
// zero window could not send its own FIN at all (it would probe and sit in
// LAST-ACK for minutes). The orphan's window stays what it was; data arriving
// there resets it (DataForClosedSocketResets), a FIN closes it.
TEST_F(Close, OrphanKeepsAdvertisingItsWindow) {
  eng().flush(now_);
  uint32_t open_window = tcb().rcv.adv_wnd;
  ASSERT_GT(open_window, 0u);
  EXPECT_TRUE(eng().close(c_, false, now_));
  eng().flush(now_);
  Seg fin = sent_one();
  EXPECT_EQ(fin.flags, kFin | kAck);
  EXPECT_EQ(fin.window, open_window) << "the FIN does not close the window";
  peer(0, 1, kAck);
  ASSERT_EQ(state(), TcpState::kFinWait2);
  EXPECT_FALSE(tcb().rx.valid()) << "rings released";
  // The peer probes (an old sequence number): we answer with the same window.
  EXPECT_EQ(recv(Seg{.seq = rcv(0) - 1, .ack = snd(1), .flags = kAck}), Drop::kTcpUnacceptable);
  Seg ack = sent_one();
  EXPECT_EQ(ack.window, open_window);
  EXPECT_EQ(peer(0, 1, kFin | kAck), Drop::kNone);
  EXPECT_EQ(sent_one().ack, rcv(1));
  EXPECT_EQ(state(), TcpState::kTimeWait);
  EXPECT_EQ(eng_->counters().tcp_orphan_fins, 1u);
}

TEST_F(Close, OrphanInFinWait1AcceptsSimultaneousFin) {
  EXPECT_TRUE(eng().close(c_, false, now_));
  eng().flush(now_);
  sent();
  EXPECT_EQ(peer(0, 0, kFin | kAck), Drop::kNone);
  EXPECT_EQ(sent_one().ack, rcv(1));
  EXPECT_EQ(state(), TcpState::kClosing);
}

// ---- Passive close ----

TEST_F(Close, PassiveCloseThroughLastAck) {
  EXPECT_EQ(peer(0, 0, kFin | kAck | kPsh, "last words"), Drop::kNone);
  Seg ack = sent_one();
  EXPECT_EQ(ack.ack, rcv(11)) << "ten bytes and the FIN";
  EXPECT_EQ(state(), TcpState::kCloseWait);
  EXPECT_TRUE(tcb().peer_fin);
  EXPECT_EQ(events()[kUser], kEvReadable | kEvState);
  EXPECT_EQ(app_->read(), "last words");

  // CLOSE-WAIT: we may still send.
  app_send("reply");
  Seg data = sent_one();
  EXPECT_EQ(data.payload, "reply");
  EXPECT_EQ(data.ack, rcv(11));
  peer(11, 5, kAck);

  EXPECT_TRUE(eng().close(c_, false, now_));
  eng().flush(now_);
  Seg fin = sent_one();
  EXPECT_EQ(fin.flags, kFin | kAck);
  EXPECT_EQ(fin.seq, snd(5));
  EXPECT_EQ(state(), TcpState::kLastAck);
  EXPECT_EQ(peer(11, 6, kAck), Drop::kNone);
  expect_silent();
  EXPECT_EQ(state(), TcpState::kClosed);
  events();
  EXPECT_EQ(eng().live_connections(), 0u);
  EXPECT_FALSE(eng().has_timers());
}

TEST_F(Close, LastAckRetransmitsFin) {
  peer(0, 0, kFin | kAck);
  sent();
  eng().shutdown_write(c_);
  eng().flush(now_);
  Seg fin = sent_one();
  EXPECT_EQ(state(), TcpState::kLastAck);
  advance(tcb().rto);
  Seg again = sent_one();
  EXPECT_EQ(again.flags, kFin | kAck);
  EXPECT_EQ(again.seq, fin.seq);
  peer(1, 1, kAck);
  EXPECT_EQ(state(), TcpState::kClosed);
  EXPECT_EQ(tcb().error, 0);
  EXPECT_EQ(events()[kUser] & kEvState, kEvState);
}

TEST_F(Close, DataAfterPeerFinIsIgnored) {
  peer(0, 0, kFin | kAck);
  sent();
  // Anything past the FIN is outside the stream.
  peer(1, 0, kAck, "ghost");
  EXPECT_EQ(app_->rx().readable(), 0u);
  EXPECT_EQ(tcb().rcv.nxt.raw(), rcv(1));
}

// ---- Aborts ----

TEST_F(Close, CloseWithUnreadDataSendsReset) {
  peer(0, 0, kAck, "unread");
  sent();
  EXPECT_TRUE(eng().close(c_, false, now_));
  eng().flush(now_);
  Seg r = sent_one();
  EXPECT_EQ(r.flags, kRst | kAck) << "Linux: unread data turns close into an abort";
  EXPECT_EQ(r.seq, snd(0));
  EXPECT_EQ(r.ack, rcv(6));
  EXPECT_EQ(state(), TcpState::kClosed);
  EXPECT_EQ(eng().counters().tcp_resets_sent, 1u);
}

TEST_F(Close, CloseAbortSendsReset) {
  app_send("in flight");
  sent();
  EXPECT_TRUE(eng().close(c_, true, now_));
  eng().flush(now_);
  Seg r = sent_one();
  EXPECT_EQ(r.flags, kRst | kAck);
  EXPECT_EQ(r.seq, snd(9)) << "RFC 9293 3.10.4 ABORT: <SEQ=SND.NXT><CTL=RST>";
  EXPECT_EQ(state(), TcpState::kClosed);
  events();
  EXPECT_EQ(eng().live_connections(), 0u);
  advance(10 * kSecond);
  expect_silent();
}

TEST_F(Close, CloseWithUnsentDataDrainsThenDetaches) {
  const std::string data = pattern(2500);
  app_->write(data);
  EXPECT_FALSE(eng().close(c_, false, now_)) << "the rings stay until the peer has every byte";
  eng().flush(now_);
  auto out = sent();
  ASSERT_EQ(out.size(), 3u) << trace(out);
  EXPECT_EQ(out[2].flags, kAck | kPsh | kFin);
  EXPECT_EQ(state(), TcpState::kFinWait1);
  EXPECT_TRUE(tcb().tx.valid());
  peer(0, 1000, kAck);
  EXPECT_EQ(events()[kUser] & kEvDetached, 0u);
  peer(0, 2501, kAck);
  EXPECT_EQ(state(), TcpState::kFinWait2);
  EXPECT_FALSE(tcb().tx.valid());
  EXPECT_EQ(events()[kUser] & kEvDetached, kEvDetached);
}

TEST_F(Close, DataForClosedSocketResets) {
  app_->write("pending");
  EXPECT_FALSE(eng().close(c_, false, now_));
  eng().flush(now_);
  sent();
  EXPECT_EQ(peer(0, 0, kAck | kPsh, "late"), Drop::kTcpAfterClose);
  Seg r = sent_one();
  EXPECT_EQ(r.flags, kRst | kAck);
  EXPECT_EQ(state(), TcpState::kClosed);
  EXPECT_EQ(drops(Drop::kTcpAfterClose), 1u);
}

}  // namespace
}  // namespace shunt::test

namespace shunt::test {
namespace {

// Linux tcp_fin_timeout: a closed socket whose peer never sends its FIN does not
// stay in FIN-WAIT-2 forever.
TEST_F(Close, OrphanInFinWait2GivesUpAfterFinTimeout) {
  EXPECT_TRUE(eng().close(c_, false, now_));
  eng().flush(now_);
  sent_one();
  peer(0, 1, kAck);
  ASSERT_EQ(state(), TcpState::kFinWait2);
  uint32_t live = eng().live_connections();
  advance(59 * kSecond);
  EXPECT_EQ(state(), TcpState::kFinWait2);
  advance(2 * kSecond);
  EXPECT_EQ(eng().live_connections(), live - 1) << "freed after 60 s";
}

// A connection the application still holds may wait in FIN-WAIT-2 as long as
// it likes (half-close): the timeout is for orphans only.
TEST_F(Close, HalfClosedFinWait2WithItsOwnerWaits) {
  eng().shutdown_write(c_);
  eng().flush(now_);
  sent_one();
  peer(0, 1, kAck);
  ASSERT_EQ(state(), TcpState::kFinWait2);
  advance(120 * kSecond);
  EXPECT_EQ(state(), TcpState::kFinWait2);
}

// Data left for a peer that keeps its window shut: an orphan gives up after
// Linux's tcp_orphan_retries probes and resets, instead of probing forever.
TEST_F(Close, OrphanProbingAZeroWindowGivesUp) {
  app_->write("data");
  recv(Seg{.seq = rcv(0), .ack = snd(0), .flags = kAck, .window = 0});
  EXPECT_FALSE(eng().close(c_, false, now_));
  eng().flush(now_);
  sent();
  bool reset = false;
  for (int i = 0; i < 400 && !reset; ++i) {
    advance(kSecond);
    for (auto& s : sent()) reset |= (s.flags & kRst) != 0;
  }
  EXPECT_TRUE(reset);
  EXPECT_EQ(state(), TcpState::kClosed);
}

}  // namespace
}  // namespace shunt::test
