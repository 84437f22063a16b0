// LISTEN and SYN-RECEIVED (RFC 9293 3.10.7.2, 3.10.7.4), the accept queue, and
// segments to closed ports (3.10.7.1).
#include <gtest/gtest.h>

#include <cerrno>

#include "harness.hh"

namespace shunt::test {
namespace {

class ListenTest : public EngineTest {
 protected:
  using EngineTest::EngineTest;
  void SetUp() override {
    seed_arp();
    ASSERT_EQ(eng().listen(kLocalPort, 4, kListenUser, &lid_), 0);
  }

  static Seg syn(uint16_t port = kRemotePort) {
    return Seg{.src_port = port, .seq = kRemoteIsn, .flags = kSyn, .mss = kPeerMss};
  }
  // SYN in, SYN-ACK out; returns our ISN.
  uint32_t syn_in(uint16_t port = kRemotePort) {
    EXPECT_EQ(recv(syn(port)), Drop::kNone);
    Seg synack = sent_one();
    EXPECT_EQ(synack.flags, kSyn | kAck);
    return synack.seq;
  }
  // The full three-way handshake; returns our ISN.
  uint32_t handshake(uint16_t port = kRemotePort, std::string data = "") {
    uint32_t iss = syn_in(port);
    EXPECT_EQ(recv(Seg{.src_port = port, .seq = kRemoteIsn + 1, .ack = iss + 1, .flags = kAck,
                       .payload = data}),
              Drop::kNone);
    return iss;
  }
  // The application writes `bytes` on c; the one segment that goes out.
  Seg send_from(AppRings& app, ConnId c, const std::string& bytes) {
    app.write(bytes);
    eng().tx_ready(c);
    eng().flush(now_);
    return sent_one();
  }
  ConnId child(uint16_t port = kRemotePort) const { return eng_->find(kRemoteIp, port, kLocalPort); }
  uint64_t drops(Drop d) const { return eng_->counters().drops[static_cast<size_t>(d)]; }

  ListenerId lid_ = kInvalidId;
};

TEST_F(ListenTest, SynGetsSynAckWithMssAndAck) {
  EXPECT_EQ(recv(Seg{.seq = kRemoteIsn, .flags = kSyn, .window = 8192, .mss = kPeerMss}),
            Drop::kNone);
  Seg s = sent_one();
  EXPECT_EQ(s.flags, kSyn | kAck);
  EXPECT_EQ(s.src_port, kLocalPort);
  EXPECT_EQ(s.dst_port, kRemotePort);
  EXPECT_EQ(s.ack, kRemoteIsn + 1) << "the SYN occupies one sequence number (wraps to 0xfffffff1)";
  EXPECT_EQ(s.mss, kOurMss);
  EXPECT_EQ(s.window, cfg_.staging_size) << "before accept the staging buffer is the window";
  EXPECT_TRUE(s.payload.empty());
  ConnId c = child();
  ASSERT_NE(c, kInvalidId);
  const Tcb& t = eng().tcb(c);
  EXPECT_EQ(t.state, TcpState::kSynReceived);
  EXPECT_EQ(t.iss.raw(), s.seq);
  EXPECT_EQ(t.snd.nxt.raw(), s.seq + 1);
  EXPECT_EQ(t.snd.mss, kPeerMss);
  EXPECT_EQ(t.snd.wnd, 8192u);
  EXPECT_EQ(eng().counters().tcp_passive_opens, 1u);
  EXPECT_EQ(eng().accept_queue_len(lid_), 0u) << "not acceptable before the handshake completes";
}

TEST_F(ListenTest, MssDefaultsAndIsCappedByOurs) {
  recv(Seg{.src_port = 1000, .seq = 1, .flags = kSyn});
  recv(Seg{.src_port = 1001, .seq = 1, .flags = kSyn, .mss = 9000});
  sent();
  EXPECT_EQ(eng().tcb(child(1000)).snd.mss, 536) << "RFC 9293 3.7.1 default";
  EXPECT_EQ(eng().tcb(child(1001)).snd.mss, kOurMss) << "never more than our own MTU allows";
}

TEST_F(ListenTest, IsnDependsOnTheTuple) {
  uint32_t a = syn_in(1000);
  uint32_t b = syn_in(1001);
  EXPECT_NE(a, b) << "RFC 6528: F(4-tuple, secret)";
}

TEST_F(ListenTest, HandshakeAckMakesConnectionAcceptable) {
  uint32_t iss = handshake();
  expect_silent();
  ConnId c = child();
  ASSERT_NE(c, kInvalidId);
  EXPECT_EQ(eng().tcb(c).state, TcpState::kEstablished);
  EXPECT_EQ(eng().tcb(c).snd.una.raw(), iss + 1);
  EXPECT_EQ(eng().accept_queue_len(lid_), 1u);
  auto ev = events();
  EXPECT_EQ(ev[kListenUser], kEvAcceptable);
  EXPECT_EQ(eng().accept(lid_), c);
  EXPECT_EQ(eng().accept_queue_len(lid_), 0u);
  EXPECT_EQ(eng().accept(lid_), kInvalidId);
}

TEST_F(ListenTest, AcceptQueueIsFifo) {
  handshake(1000);
  handshake(1001);
  handshake(1002);
  EXPECT_EQ(eng().accept_queue_len(lid_), 3u);
  EXPECT_EQ(eng().accept(lid_), child(1000));
  EXPECT_EQ(eng().accept(lid_), child(1001));
  EXPECT_EQ(eng().accept(lid_), child(1002));
}

TEST_F(ListenTest, AttachMovesStagedBytesAndOpensTheWindow) {
  uint32_t iss = handshake(kRemotePort, "early");
  Seg ack = sent_one();
  EXPECT_EQ(ack.ack, kRemoteIsn + 1 + 5);
  EXPECT_EQ(ack.window, cfg_.staging_size - 5);
  recv(Seg{.seq = kRemoteIsn + 6, .ack = iss + 1, .flags = kAck | kPsh, .payload = " bird"});
  sent();
  ConnId c = eng().accept(lid_);
  ASSERT_NE(c, kInvalidId);
  AppRings app(8192);
  eng().attach(c, app.erx(), app.etx(), kUser);
  EXPECT_EQ(app.read(), "early bird");
  EXPECT_EQ(events()[kUser], kEvState | kEvReadable | kEvWritable);
  // The application ring is the window now.
  eng().rx_drained(c);
  eng().flush(now_);
  Seg upd = sent_one();
  EXPECT_EQ(upd.flags, kAck);
  EXPECT_EQ(upd.window, 8192);
  // And it can send.
  Seg data = send_from(app, c, "hi");
  EXPECT_EQ(data.seq, iss + 1);
  EXPECT_EQ(data.payload, "hi");
}

// A connection accepted ahead for a process that never took it goes back to the
// queue (the daemon's hand-ahead, when that process gives the listener up) with
// the bytes that reached its rings, and is accepted again like any other.
TEST_F(ListenTest, RequeueGivesTheConnectionBackWithItsBytes) {
  uint32_t iss = handshake(kRemotePort, "early");
  sent();
  ConnId c = eng().accept(lid_);
  ASSERT_NE(c, kInvalidId);
  EXPECT_EQ(eng().accept_queue_len(lid_), 0u);
  AppRings first(8192);
  eng().attach(c, first.erx(), first.etx(), kUser);
  recv(Seg{.seq = kRemoteIsn + 6, .ack = iss + 1, .flags = kAck | kPsh, .payload = " bird"});
  sent();
  events();
  ASSERT_TRUE(eng().requeue(c, lid_));
  EXPECT_EQ(eng().accept_queue_len(lid_), 1u);
  auto ev = events();
  EXPECT_EQ(ev.count(kUser), 0u);  // its old owner hears nothing more of it
  EXPECT_EQ(ev.count(kListenUser), 1u);  // and the listener has one to accept
  ASSERT_EQ(eng().accept(lid_), c);
  AppRings second(8192);
  eng().attach(c, second.erx(), second.etx(), kUser + 1);
  EXPECT_EQ(second.read(), "early bird");
  Seg data = send_from(second, c, "hi");
  EXPECT_EQ(data.seq, iss + 1);
  EXPECT_EQ(data.payload, "hi");
}

// It cannot go back once the application sent on it, or the listener is gone:
// nothing changes, and the caller resets it instead.
TEST_F(ListenTest, RequeueRefusesWhatCannotGoBackAsItCame) {
  uint32_t iss = handshake(kRemotePort);
  ConnId c = eng().accept(lid_);
  AppRings app(8192);
  eng().attach(c, app.erx(), app.etx(), kUser);
  EXPECT_EQ(send_from(app, c, "x").seq, iss + 1);
  EXPECT_FALSE(eng().requeue(c, lid_));
  EXPECT_EQ(eng().accept_queue_len(lid_), 0u);

  handshake(kRemotePort + 1);
  ConnId d = eng().accept(lid_);
  AppRings other(8192);
  eng().attach(d, other.erx(), other.etx(), kUser + 1);
  eng().unlisten(lid_);
  EXPECT_FALSE(eng().requeue(d, lid_));
}

TEST_F(ListenTest, AckToListenerGetsReset) {
  EXPECT_EQ(recv(Seg{.seq = 100, .ack = 0xdeadbeef, .flags = kAck}), Drop::kTcpListenNotSyn);
  Seg r = sent_one();
  EXPECT_EQ(r.flags, kRst) << "RFC 9293: <SEQ=SEG.ACK><CTL=RST>";
  EXPECT_EQ(r.seq, 0xdeadbeefu);
  EXPECT_EQ(child(), kInvalidId);
}

TEST_F(ListenTest, SynAckToListenerGetsReset) {
  EXPECT_EQ(recv(Seg{.seq = 100, .ack = 555, .flags = kSyn | kAck}), Drop::kTcpListenNotSyn);
  Seg r = sent_one();
  EXPECT_EQ(r.flags, kRst);
  EXPECT_EQ(r.seq, 555u);
}

TEST_F(ListenTest, RstToListenerIsIgnored) {
  EXPECT_EQ(recv(Seg{.seq = 100, .flags = kRst}), Drop::kTcpRstIgnored);
  EXPECT_EQ(recv(Seg{.seq = 100, .ack = 5, .flags = kRst | kAck}), Drop::kTcpRstIgnored);
  expect_silent();
}

TEST_F(ListenTest, BareFinOrDataToListenerIsDropped) {
  EXPECT_EQ(recv(Seg{.seq = 100, .flags = kFin}), Drop::kTcpListenNotSyn);
  EXPECT_EQ(recv(Seg{.seq = 100, .payload = "x"}), Drop::kTcpListenNotSyn);
  expect_silent();
}

TEST_F(ListenTest, SynToClosedPortGetsRstAck) {
  EXPECT_EQ(recv(Seg{.dst_port = 81, .seq = kRemoteIsn + 15, .flags = kSyn}), Drop::kTcpNoSocket);
  Seg r = sent_one();
  EXPECT_EQ(r.flags, kRst | kAck);
  EXPECT_EQ(r.seq, 0u);
  EXPECT_EQ(r.ack, 0u) << "SEG.SEQ + SEG.LEN wraps: 0xffffffff + 1";
  EXPECT_EQ(r.src_port, 81);
  EXPECT_EQ(r.dst_port, kRemotePort);
  EXPECT_EQ(eng().counters().tcp_resets_sent, 1u);
}

TEST_F(ListenTest, DataAndFinToClosedPortAckCoverIt) {
  EXPECT_EQ(recv(Seg{.dst_port = 81, .seq = 1000, .flags = kFin | kPsh, .payload = "abc"}),
            Drop::kTcpNoSocket);
  Seg r = sent_one();
  EXPECT_EQ(r.flags, kRst | kAck);
  EXPECT_EQ(r.ack, 1004u);
}

TEST_F(ListenTest, AckToClosedPortGetsRstAtItsAck) {
  EXPECT_EQ(recv(Seg{.dst_port = 81, .seq = 1000, .ack = 77, .flags = kAck}), Drop::kTcpNoSocket);
  Seg r = sent_one();
  EXPECT_EQ(r.flags, kRst);
  EXPECT_EQ(r.seq, 77u);
}

TEST_F(ListenTest, RstToClosedPortIsNotAnswered) {
  EXPECT_EQ(recv(Seg{.dst_port = 81, .seq = 1000, .flags = kRst}), Drop::kTcpNoSocket);
  expect_silent();
}

// The SYN queue is full: the SYN gets a stateless cookie SYN-ACK (RFC 4987);
// the accept queue is full: SYNs are dropped, as Linux does. Linux counts a
// backlog of N as full past N waiting connections (sk_acceptq_is_full): N + 1.
TEST_F(ListenTest, BacklogFull) {
  ListenerId l2;
  ASSERT_EQ(eng().listen(81, 1, kListenUser + 1, &l2), 0);
  recv(Seg{.src_port = 1000, .dst_port = 81, .seq = 1, .flags = kSyn});
  Seg synack = sent_one();
  uint32_t live = eng().live_connections();
  EXPECT_EQ(recv(Seg{.src_port = 1001, .dst_port = 81, .seq = 1, .flags = kSyn}), Drop::kNone);
  EXPECT_EQ(sent_one().flags, kSyn | kAck) << "a cookie";
  EXPECT_EQ(eng().live_connections(), live) << "and no state";
  EXPECT_EQ(eng().counters().tcp_syn_cookies_sent, 1u);
  // One established and waiting: a backlog of 1 takes one more.
  recv(Seg{.src_port = 1000, .dst_port = 81, .seq = 2, .ack = synack.seq + 1, .flags = kAck});
  EXPECT_EQ(recv(Seg{.src_port = 1002, .dst_port = 81, .seq = 1, .flags = kSyn}), Drop::kNone);
  Seg synack2 = sent_one();
  EXPECT_EQ(synack2.flags, kSyn | kAck);
  recv(Seg{.src_port = 1002, .dst_port = 81, .seq = 2, .ack = synack2.seq + 1, .flags = kAck});
  EXPECT_EQ(eng().accept_queue_len(l2), 2u);
  // Two waiting: full, SYNs are dropped.
  EXPECT_EQ(recv(Seg{.src_port = 1003, .dst_port = 81, .seq = 1, .flags = kSyn}),
            Drop::kTcpBacklogFull)
      << "established, unaccepted connections still count";
  expect_silent();
  ASSERT_NE(eng().accept(l2), kInvalidId);
  EXPECT_EQ(recv(Seg{.src_port = 1003, .dst_port = 81, .seq = 1, .flags = kSyn}), Drop::kNone);
  EXPECT_EQ(sent_one().flags, kSyn | kAck);
}

// listen(fd, 0) on Linux still takes a connection: every SYN is answered with a
// cookie (the SYN queue holds none) and the first completed one waits for accept.
TEST_F(ListenTest, BacklogZeroHoldsOneConnection) {
  ListenerId l0;
  ASSERT_EQ(eng().listen(82, 0, kListenUser + 2, &l0), 0);
  EXPECT_EQ(recv(Seg{.src_port = 1100, .dst_port = 82, .seq = 1, .flags = kSyn}), Drop::kNone);
  Seg cookie = sent_one();
  EXPECT_EQ(cookie.flags, kSyn | kAck);
  EXPECT_EQ(eng().counters().tcp_syn_cookies_sent, 1u);
  EXPECT_EQ(recv(Seg{.src_port = 1100, .dst_port = 82, .seq = 2, .ack = cookie.seq + 1, .flags = kAck}),
            Drop::kNone);
  EXPECT_EQ(eng().accept_queue_len(l0), 1u);
  EXPECT_EQ(recv(Seg{.src_port = 1101, .dst_port = 82, .seq = 1, .flags = kSyn}),
            Drop::kTcpBacklogFull);
  expect_silent();
  EXPECT_NE(eng().accept(l0), kInvalidId);
}

class ListenNoCookiesTest : public ListenTest {
 protected:
  static EngineConfig no_cookies() {
    EngineConfig c = default_config();
    c.syn_cookies = false;
    return c;
  }
  ListenNoCookiesTest() : ListenTest(no_cookies()) {}
};

TEST_F(ListenNoCookiesTest, OutOfStagingBuffers) {
  // cfg_.staging_buffers = 8, backlog large enough: the ninth SYN finds no buffer.
  ListenerId l2;
  ASSERT_EQ(eng().listen(81, 100, 1, &l2), 0);
  for (uint16_t p = 0; p < 8; ++p)
    EXPECT_EQ(recv(Seg{.src_port = uint16_t(2000 + p), .dst_port = 81, .seq = 1, .flags = kSyn}),
              Drop::kNone);
  sent();
  EXPECT_EQ(recv(Seg{.src_port = 3000, .dst_port = 81, .seq = 1, .flags = kSyn}),
            Drop::kTcpNoMemory);
  expect_silent();
}

// With cookies, half-open children take at most half of the 8 staging rings; the
// rest waits for handshakes that complete (SynCookie.RealClientsAreAccepted...).
TEST_F(ListenTest, OutOfStagingBuffersAnswersWithACookie) {
  ListenerId l2;
  ASSERT_EQ(eng().listen(81, 100, 1, &l2), 0);
  for (uint16_t p = 0; p < 4; ++p)
    recv(Seg{.src_port = uint16_t(2000 + p), .dst_port = 81, .seq = 1, .flags = kSyn});
  sent();
  EXPECT_EQ(eng().live_connections(), 4u);
  EXPECT_EQ(eng().counters().tcp_syn_cookies_sent, 0u);
  EXPECT_EQ(recv(Seg{.src_port = 3000, .dst_port = 81, .seq = 1, .flags = kSyn}), Drop::kNone);
  EXPECT_EQ(sent_one().flags, kSyn | kAck);
  EXPECT_EQ(eng().counters().tcp_syn_cookies_sent, 1u);
  EXPECT_EQ(eng().live_connections(), 4u);
}

TEST_F(ListenTest, RetransmittedSynGetsSameSynAck) {
  uint32_t iss = syn_in();
  now_ += 300 * kMillisecond;
  EXPECT_EQ(recv(syn()), Drop::kNone);
  Seg again = sent_one();
  EXPECT_EQ(again.flags, kSyn | kAck);
  EXPECT_EQ(again.seq, iss);
  EXPECT_EQ(again.ack, kRemoteIsn + 1);
  EXPECT_EQ(eng().live_connections(), 1u);
}

TEST_F(ListenTest, SynAckRetransmittedWithBackoffThenChildDropped) {
  ListenerId l2;
  ASSERT_EQ(eng().listen(81, 1, 1, &l2), 0);
  recv(Seg{.src_port = 1000, .dst_port = 81, .seq = 1, .flags = kSyn});
  uint32_t iss = sent_one().seq;
  // RTO 1 s, doubling: retransmissions at 1, 3, 7, 15, 31, 63 s, give-up at 127 s.
  Time start = now_;
  for (Time at : {1, 3, 7, 15, 31, 63}) {
    advance_to(start + at * kSecond - kMillisecond);
    expect_silent();
    advance_to(start + at * kSecond);
    Seg s = sent_one();
    EXPECT_EQ(s.flags, kSyn | kAck) << "at " << at << " s";
    EXPECT_EQ(s.seq, iss);
  }
  advance_to(start + 127 * kSecond);
  expect_silent();
  EXPECT_EQ(eng().find(kRemoteIp, 1000, 81), kInvalidId);
  EXPECT_EQ(eng().counters().tcp_timeouts, 1u);
  // The backlog slot came back.
  EXPECT_EQ(recv(Seg{.src_port = 1001, .dst_port = 81, .seq = 1, .flags = kSyn}), Drop::kNone);
}

TEST_F(ListenTest, BadAckInSynReceivedGetsReset) {
  uint32_t iss = syn_in();
  EXPECT_EQ(recv(Seg{.seq = kRemoteIsn + 1, .ack = iss + 7, .flags = kAck}), Drop::kTcpBadAck);
  Seg r = sent_one();
  EXPECT_EQ(r.flags, kRst);
  EXPECT_EQ(r.seq, iss + 7);
  EXPECT_EQ(eng().tcb(child()).state, TcpState::kSynReceived) << "the bad ACK does not kill it";
  EXPECT_EQ(recv(Seg{.seq = kRemoteIsn + 1, .ack = iss + 1, .flags = kAck}), Drop::kNone);
  EXPECT_EQ(eng().tcb(child()).state, TcpState::kEstablished);
}

TEST_F(ListenTest, RstInSynReceivedDropsChildQuietly) {
  ListenerId l2;
  ASSERT_EQ(eng().listen(81, 1, 1, &l2), 0);
  recv(Seg{.src_port = 1000, .dst_port = 81, .seq = 50, .flags = kSyn});
  sent();
  EXPECT_EQ(recv(Seg{.src_port = 1000, .dst_port = 81, .seq = 51, .flags = kRst}), Drop::kNone);
  expect_silent();
  EXPECT_EQ(eng().find(kRemoteIp, 1000, 81), kInvalidId);
  EXPECT_EQ(eng().live_connections(), 0u);
  EXPECT_EQ(eng().accept_queue_len(l2), 0u);
  EXPECT_EQ(recv(Seg{.src_port = 1001, .dst_port = 81, .seq = 1, .flags = kSyn}), Drop::kNone)
      << "backlog slot released";
}

TEST_F(ListenTest, ListenErrors) {
  ListenerId l;
  EXPECT_EQ(eng().listen(kLocalPort, 1, 1, &l), -EADDRINUSE);
  EXPECT_EQ(eng().listen(0, 1, 1, &l), -EINVAL);
  EXPECT_TRUE(eng().port_in_use(kLocalPort));
  EXPECT_FALSE(eng().port_in_use(81));
}

TEST_F(ListenTest, UnlistenResetsChildrenAndClosesPort) {
  uint32_t iss_a = handshake(1000);  // ESTABLISHED, queued
  uint32_t iss_b = syn_in(1001);     // SYN-RECEIVED
  sent();
  eng().unlisten(lid_);
  eng().flush(now_);
  auto out = sent();
  ASSERT_EQ(out.size(), 2u) << trace(out);
  for (const Seg& r : out) {
    EXPECT_EQ(r.flags, kRst | kAck);
    EXPECT_EQ(r.seq, r.dst_port == 1000 ? iss_a + 1 : iss_b + 1);
  }
  EXPECT_FALSE(eng().port_in_use(kLocalPort));
  EXPECT_EQ(recv(syn(1002)), Drop::kTcpNoSocket);
  EXPECT_EQ(sent_one().flags, kRst | kAck);
  events();  // the owner drains events every batch; the children are freed then
  EXPECT_EQ(eng().live_connections(), 0u);
}

}  // namespace
}  // namespace shunt::test
