// SYN-SENT (RFC 9293 3.10.7.3): active open, refusal, bad ACKs, simultaneous
// open, SYN retransmission and timeout.
#include <gtest/gtest.h>

#include <cerrno>

#include "harness.hh"

namespace shunt::test {
namespace {

class SynSentTest : public EngineTest {
 protected:
  void SetUp() override {
    seed_arp();
    ASSERT_EQ(eng().connect(kLocalPort, kRemoteIp, kRemotePort, app_.erx(), app_.etx(), kUser, now_,
                            &c_),
              0);
    eng().flush(now_);
    syn_ = sent_one();
    iss_ = syn_.seq;
    start_ = now_;
  }
  const Tcb& tcb() const { return eng_->tcb(c_); }
  Seg synack(uint32_t ack) const {
    return Seg{.seq = kRemoteIsn, .ack = ack, .flags = kSyn | kAck, .window = 30000, .mss = kPeerMss};
  }

  AppRings app_;
  ConnId c_ = kInvalidId;
  Seg syn_;
  uint32_t iss_ = 0;
  Time start_ = 0;
};

TEST_F(SynSentTest, ConnectSendsSynWithMss) {
  EXPECT_EQ(syn_.flags, kSyn);
  EXPECT_EQ(syn_.src_port, kLocalPort);
  EXPECT_EQ(syn_.dst_port, kRemotePort);
  EXPECT_EQ(syn_.ack, 0u);
  EXPECT_EQ(syn_.mss, kOurMss);
  EXPECT_EQ(syn_.window, 4096) << "the rx ring's free space";
  EXPECT_EQ(tcb().state, TcpState::kSynSent);
  EXPECT_EQ(tcb().iss.raw(), iss_);
  EXPECT_EQ(tcb().snd.nxt.raw(), iss_ + 1);
  EXPECT_EQ(eng().counters().tcp_active_opens, 1u);
  EXPECT_EQ(eng().find(kRemoteIp, kRemotePort, kLocalPort), c_);
}

TEST_F(SynSentTest, ConnectErrors) {
  ConnId c;
  AppRings other;
  EXPECT_EQ(eng().connect(kLocalPort, kRemoteIp, kRemotePort, other.erx(), other.etx(), 1, now_, &c),
            -EADDRNOTAVAIL);
  EXPECT_EQ(eng().connect(0, kRemoteIp, kRemotePort, other.erx(), other.etx(), 1, now_, &c), -EINVAL);
  EXPECT_EQ(eng().connect(5, 0, kRemotePort, other.erx(), other.etx(), 1, now_, &c), -EINVAL);
  EXPECT_EQ(eng().connect(5, kRemoteIp, 0, other.erx(), other.etx(), 1, now_, &c), -EINVAL);
}

TEST_F(SynSentTest, SynAckEstablishesAndIsAcked) {
  now_ += 100 * kMillisecond;
  EXPECT_EQ(recv(synack(iss_ + 1)), Drop::kNone);
  Seg ack = sent_one();
  EXPECT_EQ(ack.flags, kAck);
  EXPECT_EQ(ack.seq, iss_ + 1);
  EXPECT_EQ(ack.ack, kRemoteIsn + 1);
  EXPECT_EQ(ack.mss, 0) << "no MSS outside SYNs";
  EXPECT_EQ(tcb().state, TcpState::kEstablished);
  EXPECT_EQ(tcb().snd.una.raw(), iss_ + 1);
  EXPECT_EQ(tcb().rcv.nxt.raw(), kRemoteIsn + 1);
  EXPECT_EQ(tcb().irs.raw(), kRemoteIsn);
  EXPECT_EQ(tcb().snd.mss, kPeerMss);
  EXPECT_EQ(tcb().snd.wnd, 30000u);
  EXPECT_EQ(events()[kUser], kEvState | kEvWritable);
  EXPECT_EQ(eng().counters().tcp_established, 1u);
  // RFC 6298 2.2: first sample R = 100 ms: SRTT = R, RTTVAR = R/2, RTO = SRTT + 4 RTTVAR.
  EXPECT_EQ(tcb().srtt, 100 * kMillisecond);
  EXPECT_EQ(tcb().rttvar, 50 * kMillisecond);
  EXPECT_EQ(tcb().rto, 300 * kMillisecond);
}

TEST_F(SynSentTest, SynAckWithoutMssMeans536) {
  recv(Seg{.seq = kRemoteIsn, .ack = iss_ + 1, .flags = kSyn | kAck});
  EXPECT_EQ(tcb().state, TcpState::kEstablished);
  EXPECT_EQ(tcb().snd.mss, 536);
}

TEST_F(SynSentTest, RttFloorIs200ms) {
  now_ += 1 * kMillisecond;
  recv(synack(iss_ + 1));
  EXPECT_EQ(tcb().rto, 200 * kMillisecond) << "Linux TCP_RTO_MIN";
}

TEST_F(SynSentTest, DataWrittenEarlyLeavesWithTheHandshakeAck) {
  app_.write("GET / HTTP/1.0\r\n\r\n");
  eng().tx_ready(c_);
  eng().flush(now_);
  expect_silent();
  recv(synack(iss_ + 1));
  Seg s = sent_one();
  EXPECT_EQ(s.flags, kAck | kPsh);
  EXPECT_EQ(s.seq, iss_ + 1);
  EXPECT_EQ(s.ack, kRemoteIsn + 1);
  EXPECT_EQ(s.payload, "GET / HTTP/1.0\r\n\r\n");
}

TEST_F(SynSentTest, RstWithAcceptableAckIsRefusal) {
  EXPECT_EQ(recv(Seg{.seq = 0, .ack = iss_ + 1, .flags = kRst | kAck}), Drop::kNone);
  expect_silent();
  EXPECT_EQ(tcb().state, TcpState::kClosed);
  EXPECT_EQ(tcb().error, ECONNREFUSED);
  EXPECT_EQ(events()[kUser], kEvState | kEvReadable | kEvWritable);
  EXPECT_EQ(eng().find(kRemoteIp, kRemotePort, kLocalPort), kInvalidId);
  EXPECT_EQ(eng().counters().tcp_resets_received, 1u);
  // No timer survives: the SYN is never sent again.
  advance(10 * kSecond);
  expect_silent();
}

TEST_F(SynSentTest, RstWithoutAckIsIgnored) {
  EXPECT_EQ(recv(Seg{.seq = 0, .flags = kRst}), Drop::kTcpRstIgnored);
  expect_silent();
  EXPECT_EQ(tcb().state, TcpState::kSynSent);
}

TEST_F(SynSentTest, RstWithBadAckIsIgnoredSilently) {
  EXPECT_EQ(recv(Seg{.seq = 0, .ack = iss_ + 2, .flags = kRst | kAck}), Drop::kTcpBadAck);
  expect_silent();
  EXPECT_EQ(tcb().state, TcpState::kSynSent);
}

TEST_F(SynSentTest, BadAckGetsReset) {
  for (uint32_t bad : {iss_, iss_ + 2, iss_ - 1000}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ(recv(synack(bad)), Drop::kTcpBadAck);
    Seg r = sent_one();
    EXPECT_EQ(r.flags, kRst) << "RFC 9293: <SEQ=SEG.ACK><CTL=RST>";
    EXPECT_EQ(r.seq, bad);
    EXPECT_EQ(tcb().state, TcpState::kSynSent);
  }
  EXPECT_EQ(recv(synack(iss_ + 1)), Drop::kNone);
  EXPECT_EQ(tcb().state, TcpState::kEstablished);
}

TEST_F(SynSentTest, AckWithoutSynIsDropped) {
  EXPECT_EQ(recv(Seg{.seq = kRemoteIsn, .ack = iss_ + 1, .flags = kAck}), Drop::kTcpBadFlags);
  expect_silent();
  EXPECT_EQ(tcb().state, TcpState::kSynSent);
}

TEST_F(SynSentTest, SimultaneousOpen) {
  // Their SYN crosses ours: SYN-RECEIVED, and we answer SYN-ACK with our ISN.
  EXPECT_EQ(recv(Seg{.seq = kRemoteIsn, .flags = kSyn, .mss = kPeerMss}), Drop::kNone);
  Seg sa = sent_one();
  EXPECT_EQ(sa.flags, kSyn | kAck);
  EXPECT_EQ(sa.seq, iss_);
  EXPECT_EQ(sa.ack, kRemoteIsn + 1);
  EXPECT_EQ(sa.mss, kOurMss);
  EXPECT_EQ(tcb().state, TcpState::kSynReceived);
  // Their SYN-ACK (it acknowledges our SYN). By the RFC 9293 acceptability test
  // its SYN is old (SEG.SEQ = RCV.NXT - 1): we answer with an ACK. (Linux takes
  // it as the simultaneous-open case and goes ESTABLISHED one step earlier.)
  recv(Seg{.seq = kRemoteIsn, .ack = iss_ + 1, .flags = kSyn | kAck, .mss = kPeerMss});
  Seg ack = sent_one();
  EXPECT_EQ(ack.flags, kAck);
  EXPECT_EQ(ack.seq, iss_ + 1);
  EXPECT_EQ(ack.ack, kRemoteIsn + 1);
  // Their ACK of our SYN-ACK completes it.
  EXPECT_EQ(recv(Seg{.seq = kRemoteIsn + 1, .ack = iss_ + 1, .flags = kAck}), Drop::kNone);
  EXPECT_EQ(tcb().state, TcpState::kEstablished);
  EXPECT_EQ(tcb().snd.mss, kPeerMss);
  EXPECT_EQ(events()[kUser] & (kEvState | kEvWritable), kEvState | kEvWritable);
  EXPECT_EQ(eng().accept_queue_len(0), 0u) << "an active open never enters an accept queue";
}

TEST_F(SynSentTest, SynRetransmittedWithBackoffThenTimesOut) {
  // Linux tcp_syn_retries = 6 with RTO 1 s doubling: 1, 3, 7, 15, 31, 63; give up at 127 s.
  for (Time at : {1, 3, 7, 15, 31, 63}) {
    advance_to(start_ + at * kSecond - kMillisecond);
    expect_silent();
    advance_to(start_ + at * kSecond);
    Seg s = sent_one();
    EXPECT_EQ(s.flags, kSyn) << "at " << at << " s";
    EXPECT_EQ(s.seq, iss_);
    EXPECT_EQ(s.mss, kOurMss);
  }
  events();
  advance_to(start_ + 127 * kSecond - kMillisecond);
  EXPECT_EQ(tcb().state, TcpState::kSynSent);
  advance_to(start_ + 127 * kSecond);
  expect_silent();
  EXPECT_EQ(tcb().state, TcpState::kClosed);
  EXPECT_EQ(tcb().error, ETIMEDOUT);
  EXPECT_EQ(events()[kUser] & kEvState, kEvState);
  EXPECT_EQ(eng().counters().tcp_timeouts, 1u);
  EXPECT_FALSE(eng().has_timers());
}

TEST_F(SynSentTest, RetransmittedSynIsNotTimed) {
  advance(1 * kSecond);
  ASSERT_EQ(sent_one().flags, kSyn);
  advance(100 * kMillisecond);
  recv(synack(iss_ + 1));
  EXPECT_EQ(tcb().state, TcpState::kEstablished);
  EXPECT_EQ(tcb().srtt, 0u) << "Karn: the ACK may be for either SYN, so no sample";
}

TEST_F(SynSentTest, CloseDeletesTheTcbWithoutReset) {
  EXPECT_TRUE(eng().close(c_, false, now_));
  eng().flush(now_);
  expect_silent();
  EXPECT_EQ(eng().find(kRemoteIp, kRemotePort, kLocalPort), kInvalidId);
  EXPECT_EQ(eng().live_connections(), 0u);
  // A late SYN-ACK finds nothing and is reset.
  EXPECT_EQ(recv(synack(iss_ + 1)), Drop::kTcpNoSocket);
  Seg r = sent_one();
  EXPECT_EQ(r.flags, kRst);
  EXPECT_EQ(r.seq, iss_ + 1);
  advance(5 * kSecond);
  expect_silent();
}

}  // namespace
}  // namespace shunt::test
