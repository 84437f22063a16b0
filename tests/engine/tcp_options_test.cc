// TCP options: window scaling and timestamps (RFC 7323), SACK-permitted and SACK
// blocks on the receiving side (RFC 2018, RFC 2883), the room options take in a
// segment, and ICMP errors about connections (RFC 1191, RFC 5927, RFC 1122
// 4.2.3.9). Sender-side SACK is in tcp_recovery_test.cc.
#include <gtest/gtest.h>

#include <cerrno>

#include "harness.hh"

namespace shunt::test {
namespace {

constexpr uint32_t kPeerTsval = 0x12345678;

// ---- Passive open: the SYN-ACK answers what the SYN offered ----

class PassiveOptions : public EngineTest {
 protected:
  static EngineConfig config(bool ts = true, bool sack = true) {
    EngineConfig c = default_config();
    c.staging_size = 1 << 16;  // more than 65535: shows the SYN-ACK window is not scaled
    c.timestamps = ts;
    c.sack = sack;
    return c;
  }
  explicit PassiveOptions(EngineConfig c = config()) : EngineTest(c) {}
  void SetUp() override {
    seed_arp();
    ASSERT_EQ(eng().listen(kLocalPort, 4, kListenUser, &lid_), 0);
  }
  static Seg full_syn() {
    return Seg{.seq = kRemoteIsn, .flags = kSyn, .window = 1000, .mss = 1460, .wscale = 5,
               .sack_permitted = true, .ts = true, .tsval = kPeerTsval};
  }
  ConnId child() const { return eng_->find(kRemoteIp, kRemotePort, kLocalPort); }
  ListenerId lid_ = kInvalidId;
};

TEST_F(PassiveOptions, SynWithAllOptionsGetsSynAckWithAllFour) {
  ASSERT_EQ(recv(full_syn()), Drop::kNone);
  Seg sa = sent_one();
  EXPECT_EQ(sa.flags, kSyn | kAck);
  EXPECT_EQ(sa.mss, kOurMss);
  EXPECT_EQ(sa.wscale, int8_t(cfg_.window_shift)) << "our shift, not theirs";
  EXPECT_TRUE(sa.sack_permitted);
  EXPECT_TRUE(sa.ts);
  EXPECT_EQ(sa.tsecr, kPeerTsval) << "TSecr echoes the SYN's TSval (RFC 7323 4.3)";
  EXPECT_EQ(sa.window, 65535) << "a SYN-ACK's window is never scaled (RFC 7323 2.2)";
  const Tcb& t = eng().tcb(child());
  EXPECT_EQ(sa.tsval, uint32_t(now_ / kMillisecond) + t.ts_offset);
  EXPECT_TRUE(t.wscale_ok);
  EXPECT_EQ(t.snd_wscale, 5);
  EXPECT_EQ(t.rcv_wscale, cfg_.window_shift);
  EXPECT_TRUE(t.ts_ok);
  EXPECT_TRUE(t.sack_ok);
  EXPECT_EQ(t.ts_recent, kPeerTsval);
  EXPECT_EQ(t.snd.wnd, 1000u) << "the SYN's window is taken unscaled";
}

TEST_F(PassiveOptions, SynWithMssOnlyGetsSynAckWithMssOnly) {
  ASSERT_EQ(recv(Seg{.seq = kRemoteIsn, .flags = kSyn, .mss = 1460}), Drop::kNone);
  Seg sa = sent_one();
  EXPECT_EQ(sa.mss, kOurMss);
  EXPECT_EQ(sa.wscale, -1);
  EXPECT_FALSE(sa.sack_permitted);
  EXPECT_FALSE(sa.ts);
  const Tcb& t = eng().tcb(child());
  EXPECT_FALSE(t.wscale_ok);
  EXPECT_EQ(t.rcv_wscale, 0);
  EXPECT_FALSE(t.ts_ok);
  EXPECT_FALSE(t.sack_ok);
}

TEST_F(PassiveOptions, EachOptionIsAnsweredOnlyWhenOffered) {
  ASSERT_EQ(recv(Seg{.src_port = 1001, .seq = kRemoteIsn, .flags = kSyn, .mss = 1460, .ts = true,
                     .tsval = 7}),
            Drop::kNone);
  Seg ts_only = sent_one();
  EXPECT_TRUE(ts_only.ts);
  EXPECT_EQ(ts_only.tsecr, 7u);
  EXPECT_EQ(ts_only.wscale, -1);
  EXPECT_FALSE(ts_only.sack_permitted);

  ASSERT_EQ(recv(Seg{.src_port = 1002, .seq = kRemoteIsn, .flags = kSyn, .mss = 1460, .wscale = 0,
                     .sack_permitted = true}),
            Drop::kNone);
  Seg ws_sack = sent_one();
  EXPECT_FALSE(ws_sack.ts);
  EXPECT_EQ(ws_sack.wscale, int8_t(cfg_.window_shift)) << "a shift of 0 still enables scaling";
  EXPECT_TRUE(ws_sack.sack_permitted);
}

TEST_F(PassiveOptions, HandshakeAckWindowIsScaledByTheirShift) {
  ASSERT_EQ(recv(full_syn()), Drop::kNone);
  Seg sa = sent_one();
  ASSERT_EQ(recv(Seg{.seq = kRemoteIsn + 1, .ack = sa.seq + 1, .flags = kAck, .window = 1000,
                     .ts = true, .tsval = kPeerTsval + 1, .tsecr = sa.tsval}),
            Drop::kNone);
  const Tcb& t = eng().tcb(child());
  EXPECT_EQ(t.state, TcpState::kEstablished);
  EXPECT_EQ(t.snd.wnd, 1000u << 5);
  EXPECT_EQ(t.ts_recent, kPeerTsval + 1);
}

TEST_F(PassiveOptions, ShiftAbove14IsTakenAs14) {
  Seg syn = full_syn();
  syn.wscale = 15;
  ASSERT_EQ(recv(syn), Drop::kNone);
  sent_one();
  EXPECT_EQ(eng().tcb(child()).snd_wscale, 14) << "RFC 7323 2.3";
}

class PassiveOptionsOff : public PassiveOptions {
 protected:
  PassiveOptionsOff() : PassiveOptions(config(/*ts=*/false, /*sack=*/false)) {}
};

TEST_F(PassiveOptionsOff, ConfigurationDeclinesTimestampsAndSack) {
  ASSERT_EQ(recv(full_syn()), Drop::kNone);
  Seg sa = sent_one();
  EXPECT_FALSE(sa.ts);
  EXPECT_FALSE(sa.sack_permitted);
  EXPECT_EQ(sa.wscale, int8_t(cfg_.window_shift));
  EXPECT_FALSE(eng().tcb(child()).ts_ok);
  EXPECT_FALSE(eng().tcb(child()).sack_ok);
}

// ---- Active open: our SYN offers everything, the SYN-ACK decides ----

class ActiveOptions : public EngineTest {
 protected:
  void SetUp() override {
    seed_arp();
    ASSERT_EQ(eng().connect(kLocalPort, kRemoteIp, kRemotePort, app_.erx(), app_.etx(), kUser, now_,
                            &c_),
              0);
    eng().flush(now_);
    syn_ = sent_one();
  }
  const Tcb& tcb() const { return eng_->tcb(c_); }
  Drop synack(Seg s) {
    s.seq = kRemoteIsn;
    s.ack = syn_.seq + 1;
    s.flags = kSyn | kAck;
    return recv(s);
  }
  AppRings app_{1 << 17, 1 << 16};
  ConnId c_ = kInvalidId;
  Seg syn_;
};

TEST_F(ActiveOptions, SynOffersAllFour) {
  EXPECT_EQ(syn_.flags, kSyn);
  EXPECT_EQ(syn_.mss, kOurMss);
  EXPECT_EQ(syn_.wscale, int8_t(cfg_.window_shift));
  EXPECT_TRUE(syn_.sack_permitted);
  EXPECT_TRUE(syn_.ts);
  EXPECT_EQ(syn_.tsval, uint32_t(now_ / kMillisecond) + tcb().ts_offset);
  EXPECT_EQ(syn_.tsecr, 0u) << "nothing to echo yet";
  EXPECT_EQ(syn_.window, 65535) << "128 KiB free, but a SYN's window is not scaled";
}

TEST_F(ActiveOptions, SynAckWithoutOptionsTurnsThemOff) {
  ASSERT_EQ(synack(Seg{.window = 2000, .mss = 1460}), Drop::kNone);
  Seg ack = sent_one();
  EXPECT_EQ(ack.flags, kAck);
  EXPECT_FALSE(ack.ts);
  EXPECT_TRUE(ack.sack.empty());
  EXPECT_EQ(ack.window, 65535) << "no scaling: the field is capped, not shifted";
  EXPECT_FALSE(tcb().wscale_ok);
  EXPECT_EQ(tcb().rcv_wscale, 0);
  EXPECT_EQ(tcb().snd_wscale, 0);
  EXPECT_FALSE(tcb().ts_ok);
  EXPECT_FALSE(tcb().sack_ok);
  EXPECT_EQ(tcb().snd.wnd, 2000u);
}

TEST_F(ActiveOptions, SynAckWithAllOptionsTurnsThemOn) {
  advance(7 * kMillisecond);
  ASSERT_EQ(synack(Seg{.window = 2000, .mss = 1460, .wscale = 3, .sack_permitted = true,
                       .ts = true, .tsval = kPeerTsval, .tsecr = syn_.tsval}),
            Drop::kNone);
  Seg ack = sent_one();
  EXPECT_TRUE(ack.ts);
  EXPECT_EQ(ack.tsecr, kPeerTsval);
  EXPECT_EQ(ack.tsval, syn_.tsval + 7) << "1 ms ticks";
  EXPECT_EQ(ack.window, (1u << 17) >> cfg_.window_shift) << "free space >> our shift";
  EXPECT_EQ(tcb().snd.wnd, 2000u) << "the SYN-ACK's own window is not scaled";
  EXPECT_EQ(tcb().snd_wscale, 3);
  EXPECT_EQ(tcb().rcv_wscale, cfg_.window_shift);
  EXPECT_TRUE(tcb().ts_ok);
  EXPECT_TRUE(tcb().sack_ok);
  // The first window after the handshake is scaled.
  ASSERT_EQ(recv(Seg{.seq = kRemoteIsn + 1, .ack = syn_.seq + 1, .flags = kAck, .window = 2000,
                     .ts = true, .tsval = kPeerTsval + 1, .tsecr = ack.tsval}),
            Drop::kNone);
  EXPECT_EQ(tcb().snd.wnd, 2000u << 3);
}

TEST_F(ActiveOptions, SynAckWithTimestampsButNoWindowScale) {
  ASSERT_EQ(synack(Seg{.window = 2000, .mss = 1460, .ts = true, .tsval = kPeerTsval}), Drop::kNone);
  Seg ack = sent_one();
  EXPECT_TRUE(ack.ts);
  EXPECT_EQ(ack.window, 65535) << "RFC 7323 2.2: scaling needs both sides' option";
  EXPECT_FALSE(tcb().wscale_ok);
  EXPECT_FALSE(tcb().sack_ok);
}

// A peer MSS of 1 byte: RFC 9293 sets no floor; Linux enforces tcp_min_snd_mss =
// 48 (CVE-2019-11479: tiny segments as a resource attack), and so does the engine.
// 100 bytes then go out as 48 + 48 + 4 without options, and with timestamps (12
// bytes of options inside the 48) as 36 + 36 + 28.
TEST_F(ActiveOptions, TinyPeerMssWithoutOptionsSendsSegmentsOfTheFloor) {
  ASSERT_EQ(synack(Seg{.mss = 1}), Drop::kNone);
  sent();
  EXPECT_EQ(tcb().snd.mss, 48);
  ASSERT_EQ(eng().set_option(c_, TcpOption::kNoDelay, 1), 0);
  ASSERT_EQ(app_.write(pattern(100)), 100u);
  eng().tx_ready(c_);
  eng().flush(now_);
  auto segs = sent();
  ASSERT_EQ(segs.size(), 3u) << trace(segs);
  EXPECT_EQ(segs[0].payload.size(), 48u);
  EXPECT_EQ(segs[1].payload.size(), 48u);
  EXPECT_EQ(segs[2].payload.size(), 4u);
  EXPECT_EQ(segs[0].payload + segs[1].payload + segs[2].payload, pattern(100));
}

TEST_F(ActiveOptions, TinyPeerMssWithTimestampsKeepsTheOptionsInsideTheFloor) {
  ASSERT_EQ(synack(Seg{.mss = 1, .ts = true, .tsval = kPeerTsval}), Drop::kNone);
  sent();
  ASSERT_EQ(eng().set_option(c_, TcpOption::kNoDelay, 1), 0);
  ASSERT_EQ(app_.write(pattern(100)), 100u);
  eng().tx_ready(c_);
  eng().flush(now_);
  auto segs = sent();
  ASSERT_EQ(segs.size(), 3u) << trace(segs);
  for (const Seg& s : segs) EXPECT_TRUE(s.ts) << s;
  EXPECT_EQ(segs[0].payload.size(), 36u);
  EXPECT_EQ(segs[1].payload.size(), 36u);
  EXPECT_EQ(segs[2].payload.size(), 28u);
  EXPECT_EQ(segs[0].payload + segs[1].payload + segs[2].payload, pattern(100));
}

// ---- Established with every option ----

class Options : public OptionsEstablishedTest {};

TEST_F(Options, NegotiatedState) {
  EXPECT_EQ(tcb().snd.mss, 1460);
  EXPECT_EQ(tcb().snd_wscale, kPeerShift);
  EXPECT_EQ(tcb().rcv_wscale, cfg_.window_shift);
  EXPECT_TRUE(tcb().ts_ok);
  EXPECT_TRUE(tcb().sack_ok);
  EXPECT_EQ(tcb().snd.wnd, 65535u) << "the SYN-ACK's window, unscaled";
}

TEST_F(Options, OurWindowFieldIsFreeSpaceShifted) {
  ASSERT_EQ(peer_data(0, pattern(1000)), Drop::kNone);
  Seg ack = sent_one();
  EXPECT_EQ(ack.ack, rcv(1000));
  EXPECT_EQ(ack.window, (65536 - 1000) >> 7);
  EXPECT_EQ(tcb().rcv.adv_wnd, uint32_t((65536 - 1000) >> 7) << 7)
      << "what we advertised, at the granularity the peer sees";
}

TEST_F(Options, TheirWindowIsShiftedIntoSndWnd) {
  ASSERT_EQ(peer_ack(0, 2 * 1448), Drop::kNone);
  EXPECT_EQ(tcb().snd.wnd, 2u * 1448);
  app_send(pattern(10000));
  auto segs = sent();
  ASSERT_EQ(segs.size(), 2u) << "two full segments fill the scaled window" << trace(segs);
  EXPECT_EQ(segs[0].payload.size(), 1448u);
  EXPECT_EQ(segs[1].payload.size(), 1448u);
  // The peer opens to 4 * 16383 << 2.
  ASSERT_EQ(peer_ack(2 * 1448, 65532u << kPeerShift), Drop::kNone);
  EXPECT_EQ(tcb().snd.wnd, 65532u << kPeerShift);
  EXPECT_EQ(sent().size(), 5u) << "the rest: 10000 - 2896 = 7104 bytes in 1448-byte segments";
}

TEST_F(Options, EverySegmentCarriesTimestamps) {
  uint32_t their = peer_tsval();
  ASSERT_EQ(peer_data(0, "request"), Drop::kNone);
  Seg ack = sent_one();
  EXPECT_TRUE(ack.ts);
  EXPECT_EQ(ack.tsval, our_tsval());
  EXPECT_EQ(ack.tsecr, their);
  advance(3 * kMillisecond);
  app_send("response");
  Seg data = sent_one();
  EXPECT_TRUE(data.ts);
  EXPECT_EQ(data.tsval, ack.tsval + 3);
  EXPECT_EQ(data.tsecr, their);
  // The retransmission after an RTO carries a fresh TSval.
  advance(tcb().rto);
  Seg rexmit = sent_one();
  EXPECT_EQ(rexmit.seq, data.seq);
  EXPECT_TRUE(rexmit.ts);
  EXPECT_EQ(rexmit.tsval, our_tsval());
  EXPECT_GT(rexmit.tsval, data.tsval);
  // And the FIN.
  ASSERT_EQ(peer_ack(8, kPeerWindow, {}, 7), Drop::kNone);
  eng().shutdown_write(c_);
  eng().flush(now_);
  Seg fin = sent_one();
  EXPECT_EQ(fin.flags, kFin | kAck);
  EXPECT_TRUE(fin.ts);
}

TEST_F(Options, TsRecentFollowsInOrderSegmentsOnly) {
  ASSERT_EQ(peer_data(0, "aaaa"), Drop::kNone);
  sent();
  Seg s{.seq = rcv(4), .ack = snd(0), .flags = kAck, .window = 16383, .payload = "bbbb",
        .ts = true, .tsval = 1000, .tsecr = our_tsval()};
  ASSERT_EQ(recv(s), Drop::kNone);
  EXPECT_EQ(tcb().ts_recent, 1000u);
  EXPECT_EQ(sent_one().tsecr, 1000u);
  // Out of order, newer TSval: held, but TS.Recent stays (RFC 7323 4.3 (2)).
  Seg ooo{.seq = rcv(100), .ack = snd(0), .flags = kAck, .window = 16383, .payload = "zz",
          .ts = true, .tsval = 2000, .tsecr = our_tsval()};
  ASSERT_EQ(recv(ooo), Drop::kNone);
  EXPECT_EQ(tcb().ts_recent, 1000u);
  EXPECT_EQ(sent_one().tsecr, 1000u) << "the duplicate ACK echoes the last in-order segment";
  // The same TSval again (several segments per tick) is fine and keeps it.
  Seg same{.seq = rcv(8), .ack = snd(0), .flags = kAck, .window = 16383, .payload = "cccc",
           .ts = true, .tsval = 1000, .tsecr = our_tsval()};
  ASSERT_EQ(recv(same), Drop::kNone);
  EXPECT_EQ(tcb().ts_recent, 1000u);
  sent();
  // A hole-filling segment updates it (RFC 7323 4.3 case C).
  Seg fill{.seq = rcv(12), .ack = snd(0), .flags = kAck, .window = 16383,
           .payload = pattern(88), .ts = true, .tsval = 1500, .tsecr = our_tsval()};
  ASSERT_EQ(recv(fill), Drop::kNone);
  EXPECT_EQ(tcb().ts_recent, 1500u);
  EXPECT_EQ(sent_one().tsecr, 1500u);
}

// RFC 7323 4.3 (2): TS.Recent takes SEG.TSval only when SEG.SEQ <= Last.ACK.sent,
// so one ACK for several segments echoes the earliest of them (case A), and the
// peer's RTT sample covers the whole delay. Two segments in one batch, one ACK.
TEST_F(Options, CoalescedAckEchoesTheEarliestUnacknowledgedSegment) {
  eng().input(tcp_frame(Seg{.seq = rcv(0), .ack = snd(0), .flags = kAck, .window = 16383,
                            .payload = "first", .ts = true, .tsval = 5000, .tsecr = our_tsval()}),
              now_);
  eng().input(tcp_frame(Seg{.seq = rcv(5), .ack = snd(0), .flags = kAck, .window = 16383,
                            .payload = "second", .ts = true, .tsval = 5001,
                            .tsecr = our_tsval()}),
              now_);
  eng().flush(now_);
  Seg ack = sent_one();
  EXPECT_EQ(ack.ack, rcv(11));
  EXPECT_EQ(ack.tsecr, 5000u) << "echo the earliest unacknowledged segment's TSval";
}

TEST_F(Options, PawsDropsAnOldTimestampWithAnAck) {
  ASSERT_EQ(peer_data(0, "new"), Drop::kNone);
  sent();
  uint32_t recent = tcb().ts_recent;
  Seg old{.seq = rcv(3), .ack = snd(0), .flags = kAck, .window = 16383, .payload = "old",
          .ts = true, .tsval = recent - 1, .tsecr = our_tsval()};
  EXPECT_EQ(recv(old), Drop::kTcpPaws);
  Seg ack = sent_one();
  EXPECT_EQ(ack.flags, kAck);
  EXPECT_EQ(ack.ack, rcv(3)) << "not taken";
  EXPECT_EQ(ack.tsecr, recent);
  EXPECT_EQ(app_->read(), "new");
  EXPECT_EQ(drops(Drop::kTcpPaws), 1u);
  EXPECT_EQ(tcb().ts_recent, recent);
}

// TSvals compare modulo 2^32 (RFC 7323 5.2): half the space ahead is newer.
TEST_F(Options, PawsComparesAcrossTheWrap) {
  uint32_t off = 0;
  auto send_ts = [&](uint32_t tsval) {
    Drop d = recv(Seg{.seq = rcv(off), .ack = snd(0), .flags = kAck, .window = 16383,
                      .payload = "a", .ts = true, .tsval = tsval, .tsecr = our_tsval()});
    if (d == Drop::kNone) ++off;
    return d;
  };
  // Walk TS.Recent forward to 0xfffffff0 in steps the peer may take (< 2^31).
  uint32_t cur = tcb().ts_recent;
  for (uint32_t left = 0xfffffff0u - cur; left != 0;) {
    uint32_t step = std::min(left, 0x40000000u);
    cur += step;
    left -= step;
    ASSERT_EQ(send_ts(cur), Drop::kNone);
  }
  EXPECT_EQ(send_ts(0x10), Drop::kNone) << "32 ticks later, across 2^32";
  EXPECT_EQ(tcb().ts_recent, 0x10u);
  EXPECT_EQ(send_ts(0x10 + 0x7fffffffu), Drop::kNone) << "the far edge of newer";
  EXPECT_EQ(send_ts(0x10), Drop::kTcpPaws) << "now 2^31 - 1 behind";
  EXPECT_EQ(app_->read(), std::string(off, 'a'));
}

TEST_F(Options, RstIsNotSubjectToPaws) {
  ASSERT_EQ(peer_data(0, "x"), Drop::kNone);
  sent();
  Seg rst{.seq = rcv(1), .flags = kRst, .ts = true, .tsval = tcb().ts_recent - 1000};
  EXPECT_EQ(recv(rst), Drop::kNone) << "RFC 7323 5.3 R1: RSTs are exempt";
  EXPECT_EQ(tcb().state, TcpState::kClosed);
  EXPECT_EQ(tcb().error, ECONNRESET);
  EXPECT_EQ(drops(Drop::kTcpPaws), 0u);
}

TEST_F(Options, PayloadLeavesRoomForTimestamps) {
  ASSERT_EQ(peer_ack(0), Drop::kNone);
  app_send(pattern(3000));
  auto segs = sent();
  ASSERT_EQ(segs.size(), 3u) << trace(segs);
  EXPECT_EQ(segs[0].payload.size(), 1448u) << "MSS 1460 - 12 bytes of timestamps";
  EXPECT_EQ(segs[1].payload.size(), 1448u);
  EXPECT_EQ(segs[2].payload.size(), 104u);
}

TEST_F(Options, PayloadLeavesRoomForSackBlocks) {
  ASSERT_EQ(peer_ack(0), Drop::kNone);
  ASSERT_EQ(peer_data(100, "held"), Drop::kNone);  // out of order: our ACKs carry a block
  ASSERT_EQ(sent_one().sack.size(), 1u);
  app_send(pattern(3000));
  auto segs = sent();
  ASSERT_EQ(segs.size(), 3u) << trace(segs);
  for (const Seg& s : segs) {
    ASSERT_EQ(s.sack.size(), 1u);
    EXPECT_EQ(s.sack[0], (SackBlock{rcv(100), rcv(104)}));
  }
  EXPECT_EQ(segs[0].payload.size(), 1460u - 12 - 12) << "TS 12 + NOP NOP SACK(1 block) 12";
  EXPECT_EQ(segs[1].payload.size(), 1436u);
  EXPECT_EQ(segs[2].payload.size(), 3000u - 2 * 1436);
}

// ---- Reassembly and SACK blocks (RFC 2018, RFC 2883) ----

TEST_F(Options, OutOfOrderIsHeldAndSacked) {
  ASSERT_EQ(peer_data(1000, pattern(100, 1000)), Drop::kNone);
  Seg ack = sent_one();
  EXPECT_EQ(ack.ack, rcv(0));
  EXPECT_EQ(ack.sack, (std::vector<SackBlock>{{rcv(1000), rcv(1100)}}));
  EXPECT_EQ(app_->rx().readable(), 0u);
  EXPECT_EQ(eng().counters().tcp_ooo_queued, 1u);
}

TEST_F(Options, FirstSackBlockIsTheMostRecentArrival) {
  ASSERT_EQ(peer_data(1000, pattern(100, 1000)), Drop::kNone);
  sent();
  ASSERT_EQ(peer_data(3000, pattern(100, 3000)), Drop::kNone);
  Seg a2 = sent_one();
  ASSERT_EQ(a2.sack.size(), 2u);
  EXPECT_EQ(a2.sack[0], (SackBlock{rcv(3000), rcv(3100)}));
  EXPECT_EQ(a2.sack[1], (SackBlock{rcv(1000), rcv(1100)}));
  ASSERT_EQ(peer_data(2000, pattern(100, 2000)), Drop::kNone);
  Seg a3 = sent_one();
  ASSERT_EQ(a3.sack.size(), 3u);
  EXPECT_EQ(a3.sack[0], (SackBlock{rcv(2000), rcv(2100)}));
  // A segment that joins two ranges reports the merged range first.
  ASSERT_EQ(peer_data(1100, pattern(900, 1100)), Drop::kNone);
  Seg a4 = sent_one();
  ASSERT_EQ(a4.sack.size(), 2u);
  EXPECT_EQ(a4.sack[0], (SackBlock{rcv(1000), rcv(2100)}));
  EXPECT_EQ(a4.sack[1], (SackBlock{rcv(3000), rcv(3100)}));
  EXPECT_EQ(tcb().ooo.n, 2u);
}

TEST_F(Options, FillingTheHolesMakesEverythingReadable) {
  ASSERT_EQ(peer_data(2000, pattern(500, 2000)), Drop::kNone);
  ASSERT_EQ(peer_data(1000, pattern(500, 1000)), Drop::kNone);
  sent();
  ASSERT_EQ(peer_data(0, pattern(1000)), Drop::kNone);
  Seg a1 = sent_one();
  EXPECT_EQ(a1.ack, rcv(1500)) << "the first hole filled: rcv.nxt jumps over [1000, 1500)";
  EXPECT_EQ(a1.sack, (std::vector<SackBlock>{{rcv(2000), rcv(2500)}}));
  ASSERT_EQ(peer_data(1500, pattern(500, 1500)), Drop::kNone);
  Seg a2 = sent_one();
  EXPECT_EQ(a2.ack, rcv(2500));
  EXPECT_TRUE(a2.sack.empty());
  EXPECT_EQ(app_->read(), pattern(2500));
  EXPECT_EQ(tcb().ooo.n, 0u);
}

TEST_F(Options, WithTimestampsThreeSackBlocksFit) {
  for (uint32_t off : {100u, 300u, 500u, 700u}) ASSERT_EQ(peer_data(off, "xx"), Drop::kNone);
  auto acks = sent();
  ASSERT_EQ(acks.size(), 4u);
  EXPECT_EQ(acks.back().sack.size(), 3u) << "40 option bytes: TS 12 + 4 + 3 * 8";
  EXPECT_EQ(acks.back().sack[0], (SackBlock{rcv(700), rcv(702)}));
}

TEST_F(Options, DuplicateBelowRcvNxtIsReportedAsDsack) {
  ASSERT_EQ(peer_data(0, pattern(100)), Drop::kNone);
  sent();
  EXPECT_EQ(peer_data(0, pattern(100)), Drop::kTcpUnacceptable);
  Seg ack = sent_one();
  EXPECT_EQ(ack.ack, rcv(100));
  EXPECT_EQ(ack.sack, (std::vector<SackBlock>{{rcv(0), rcv(100)}})) << "RFC 2883 4.1.1";
  EXPECT_EQ(eng().counters().tcp_dsacks_sent, 1u);
  // Reported once: the next ACK carries no DSACK.
  ASSERT_EQ(peer_data(100, "more"), Drop::kNone);
  EXPECT_TRUE(sent_one().sack.empty());
}

TEST_F(Options, PartialOverlapReportsTheDuplicatePart) {
  ASSERT_EQ(peer_data(0, pattern(100)), Drop::kNone);
  sent();
  ASSERT_EQ(peer_data(50, pattern(100, 50)), Drop::kNone);
  Seg ack = sent_one();
  EXPECT_EQ(ack.ack, rcv(150));
  EXPECT_EQ(ack.sack, (std::vector<SackBlock>{{rcv(50), rcv(100)}}));
  EXPECT_EQ(app_->read(), pattern(150));
}

TEST_F(Options, DsackComesFirstThenTheHeldRanges) {
  ASSERT_EQ(peer_data(0, pattern(100)), Drop::kNone);
  ASSERT_EQ(peer_data(500, pattern(100, 500)), Drop::kNone);
  sent();
  EXPECT_EQ(peer_data(0, pattern(100)), Drop::kTcpUnacceptable);
  Seg ack = sent_one();
  ASSERT_EQ(ack.sack.size(), 2u);
  EXPECT_EQ(ack.sack[0], (SackBlock{rcv(0), rcv(100)}));
  EXPECT_EQ(ack.sack[1], (SackBlock{rcv(500), rcv(600)}));
  // A duplicate of held out-of-order data is a DSACK too (RFC 2883 4.1.2).
  EXPECT_EQ(peer_data(500, pattern(100, 500)), Drop::kNone);
  Seg ack2 = sent_one();
  ASSERT_EQ(ack2.sack.size(), 2u);
  EXPECT_EQ(ack2.sack[0], (SackBlock{rcv(500), rcv(600)}));
  EXPECT_EQ(ack2.sack[1], (SackBlock{rcv(500), rcv(600)}));
}

TEST_F(Options, AFullOutOfOrderTableKeepsWhatIsNearestDelivery) {
  constexpr uint32_t kMax = RxRanges::kMax;
  for (uint32_t i = 0; i < kMax; ++i)
    ASSERT_EQ(peer_data(100 + 20 * i, "0123456789"), Drop::kNone) << i;
  EXPECT_EQ(tcb().ooo.n, kMax);
  sent();
  uint32_t beyond = 100 + 20 * kMax;
  EXPECT_EQ(peer_data(beyond, "0123456789"), Drop::kTcpOooFull) << "above every range: dropped";
  EXPECT_EQ(drops(Drop::kTcpOooFull), 1u);
  Seg ack = sent_one();
  EXPECT_EQ(ack.ack, rcv(0)) << "still a duplicate ACK";
  EXPECT_EQ(tcb().ooo.n, kMax);
  // Below the highest range, touching none: the highest range is forgotten.
  const uint32_t top = 100 + 20 * (kMax - 1);
  EXPECT_EQ(peer_data(50, "01234"), Drop::kNone);
  EXPECT_EQ(eng().counters().tcp_ooo_pruned, 1u);
  EXPECT_EQ(tcb().ooo.n, kMax);
  EXPECT_EQ(tcb().ooo.r[0].start.raw(), rcv(50));
  EXPECT_EQ(tcb().ooo.r[kMax - 1].start.raw(), rcv(top - 20)) << "the range at " << top << " is gone";
  Seg ack2 = sent_one();
  ASSERT_FALSE(ack2.sack.empty());
  EXPECT_EQ(ack2.sack[0], (SackBlock{rcv(50), rcv(55)}));
  for (const SackBlock& b : ack2.sack) EXPECT_NE(b.left, rcv(top)) << "no longer SACKed";
  // A segment touching a held range still merges.
  EXPECT_EQ(peer_data(110, "0123456789"), Drop::kNone);
  EXPECT_EQ(tcb().ooo.n, kMax - 1);
  // The hole filled: everything up to the first gap in the pruned range is delivered,
  // and the forgotten range is accepted again when it comes back.
  EXPECT_EQ(peer_data(0, pattern(50)), Drop::kNone);
  EXPECT_EQ(peer_data(top, "0123456789"), Drop::kNone);
  EXPECT_EQ(tcb().ooo.r[tcb().ooo.n - 1].start.raw(), rcv(top));
}

TEST(SeqRangesTest, AddMergesAndTrims) {
  using tcp::SeqNum;
  SeqRanges r;
  EXPECT_TRUE(r.add(SeqNum(0xfffffff0u), SeqNum(0xfffffffau)));
  EXPECT_TRUE(r.add(SeqNum(10), SeqNum(20)));
  EXPECT_EQ(r.n, 2u);
  EXPECT_EQ(r.recent, 1u);
  EXPECT_TRUE(r.add(SeqNum(0xfffffffau), SeqNum(10)));  // joins both across 2^32
  EXPECT_EQ(r.n, 1u);
  EXPECT_EQ(r.r[0].start, SeqNum(0xfffffff0u));
  EXPECT_EQ(r.r[0].end, SeqNum(20));
  EXPECT_EQ(r.bytes(), 36u);
  EXPECT_TRUE(r.contains(SeqNum(0xfffffff5u), SeqNum(5)));
  r.trim_below(SeqNum(2));
  EXPECT_EQ(r.r[0].start, SeqNum(2));
  EXPECT_EQ(r.bytes(), 18u);
  for (uint32_t i = 0; i < SeqRanges::kMax - 1; ++i)
    EXPECT_TRUE(r.add(SeqNum(100 + 10 * i), SeqNum(105 + 10 * i)));
  EXPECT_FALSE(r.add(SeqNum(1000), SeqNum(1001))) << "full";
  EXPECT_TRUE(r.add(SeqNum(105), SeqNum(110))) << "touches: merges";
  EXPECT_TRUE(r.contains(SeqNum(100), SeqNum(110)));
  EXPECT_TRUE(r.contains(SeqNum(120), SeqNum(125)));
  EXPECT_FALSE(r.contains(SeqNum(124), SeqNum(126))) << "across a hole";
  EXPECT_FALSE(r.contains(SeqNum(115), SeqNum(116))) << "in a hole";
  uint16_t n = r.n;
  r.drop_last();
  EXPECT_EQ(r.n, n - 1);
  EXPECT_LT(r.recent, r.n);
}

class NoOptions : public EstablishedTest {};

TEST_F(NoOptions, WithoutSackPermittedNoBlocksAreSent) {
  ASSERT_EQ(recv(Seg{.seq = rcv(100), .ack = snd(0), .flags = kAck, .payload = "x"}), Drop::kNone);
  Seg ack = sent_one();
  EXPECT_EQ(ack.ack, rcv(0));
  EXPECT_TRUE(ack.sack.empty());
  EXPECT_FALSE(ack.ts);
}

// ---- ICMP errors (engine.cc input_icmp -> tcp_icmp_error) ----

// ICMP destination unreachable quoting our segment: the IPv4 header we sent and
// the first 8 bytes of its TCP header (ports and sequence number).
std::vector<uint8_t> icmp_unreachable(uint8_t code, uint16_t next_mtu, uint32_t quoted_seq,
                                      uint16_t src_port = kLocalPort,
                                      uint16_t dst_port = kRemotePort) {
  std::vector<uint8_t> m(8 + wire::kIpv4Header + 8, 0);
  m[0] = 3;
  m[1] = code;
  wire::store16(m.data() + 6, next_mtu);
  uint8_t* q = m.data() + 8;
  wire::write_ipv4(q, kLocalIp, kRemoteIp, wire::kProtoTcp, 20, 0x1234);
  wire::store16(q + 20, src_port);
  wire::store16(q + 22, dst_port);
  wire::store32(q + 24, quoted_seq);
  wire::store16(m.data() + 2, wire::checksum_finish(wire::checksum_add(0, m.data(), m.size())));
  return ip_frame(wire::kProtoIcmp, m, kRemoteIp);  // from a router: any source would do
}

class TcpIcmpError : public EstablishedTest {
 protected:
  uint64_t drops(Drop d) const { return eng_->counters().drops[static_cast<size_t>(d)]; }
};

TEST_F(TcpIcmpError, FragmentationNeededLowersTheMssAndResends) {
  app_send(pattern(2000));
  auto first = sent();
  ASSERT_EQ(first.size(), 2u);
  EXPECT_EQ(input(icmp_unreachable(4, 1000, snd(0))), Drop::kNone);
  EXPECT_EQ(tcb().snd.mss, 960) << "next-hop MTU 1000 - 40";
  EXPECT_EQ(eng().counters().pmtu_updates, 1u);
  EXPECT_EQ(eng().counters().icmp_errors_received, 1u);
  auto again = sent();
  ASSERT_EQ(again.size(), 3u) << trace(again);
  EXPECT_EQ(again[0].seq, snd(0));
  EXPECT_EQ(again[0].payload, pattern(960));
  EXPECT_EQ(again[1].seq, snd(960));
  EXPECT_EQ(again[1].payload.size(), 960u);
  EXPECT_EQ(again[2].seq, snd(1920));
  EXPECT_EQ(again[2].payload.size(), 80u);
  EXPECT_EQ(tcb().snd.max.raw(), snd(2000));
}

TEST_F(TcpIcmpError, PathMtuHasA552ByteFloor) {
  app_send(pattern(100));
  sent();
  EXPECT_EQ(input(icmp_unreachable(4, 68, snd(50))), Drop::kNone);
  EXPECT_EQ(tcb().snd.mss, 552 - 40);
  sent();
  // A larger MTU later does not raise it (nor does one equal to ours).
  EXPECT_EQ(input(icmp_unreachable(4, 1500, snd(50))), Drop::kNone);
  EXPECT_EQ(tcb().snd.mss, 512);
  EXPECT_EQ(eng().counters().pmtu_updates, 1u);
  expect_silent();
}

TEST_F(TcpIcmpError, SequenceNumberOutsideTheFlightIsRejected) {
  app_send(pattern(100));
  sent();
  EXPECT_EQ(input(icmp_unreachable(4, 600, snd(100))), Drop::kIcmpInvalid) << "snd.max itself";
  EXPECT_EQ(input(icmp_unreachable(4, 600, snd(0) - 1)), Drop::kIcmpInvalid) << "below snd.una";
  EXPECT_EQ(input(icmp_unreachable(4, 600, snd(0) + 0x40000000u)), Drop::kIcmpInvalid);
  EXPECT_EQ(tcb().snd.mss, kPeerMss);
  EXPECT_EQ(drops(Drop::kIcmpInvalid), 3u);
  EXPECT_EQ(eng().counters().icmp_errors_received, 0u);
  expect_silent();
}

TEST_F(TcpIcmpError, NothingInFlightMeansNothingToBelieve) {
  EXPECT_EQ(input(icmp_unreachable(4, 600, snd(0))), Drop::kIcmpInvalid);
  EXPECT_EQ(tcb().snd.mss, kPeerMss);
}

TEST_F(TcpIcmpError, ErrorForAnUnknownConnection) {
  EXPECT_EQ(input(icmp_unreachable(4, 600, snd(0), kLocalPort, 1234)), Drop::kIcmpNoSocket);
}

TEST_F(TcpIcmpError, PortUnreachableInEstablishedIsSoft) {
  app_send("x");
  sent();
  EXPECT_EQ(input(icmp_unreachable(3, 0, snd(0))), Drop::kNone);
  EXPECT_EQ(tcb().state, TcpState::kEstablished) << "RFC 1122 4.2.3.9: not fatal once connected";
}

class SynSentIcmp : public EngineTest {};

TEST_F(SynSentIcmp, PortUnreachableRefusesTheConnection) {
  seed_arp();
  AppRings app;
  ConnId c;
  ASSERT_EQ(eng().connect(kLocalPort, kRemoteIp, kRemotePort, app.erx(), app.etx(), kUser, now_, &c),
            0);
  eng().flush(now_);
  Seg syn = sent_one();
  ASSERT_EQ(syn.flags, kSyn);
  events();
  EXPECT_EQ(input(icmp_unreachable(3, 0, syn.seq)), Drop::kNone);
  EXPECT_EQ(eng().tcb(c).state, TcpState::kClosed);
  EXPECT_EQ(eng().tcb(c).error, ECONNREFUSED);
  EXPECT_EQ(events()[kUser] & kEvState, kEvState);
  advance(5 * kSecond);
  expect_silent();
}

}  // namespace
}  // namespace shunt::test
