// Slot readiness as docs/abi.md "Slot readiness" states it, and as Linux's
// tcp_poll reports the same situations.
#include "readiness.hh"

#include <gtest/gtest.h>

#include "test_region.hh"

namespace shunt::preload {
namespace {

using abi::SlotState;

SlotSnapshot connected(uint32_t rx = 0, uint32_t tx_room = 4096) {
  SlotSnapshot v;
  v.state = uint32_t(SlotState::kConnected);
  v.rx_readable = rx;
  v.tx_writable = tx_room;
  return v;
}

TEST(Readiness, ConnectedIdleIsWritableOnly) {
  EXPECT_EQ(readiness(connected(), {}), uint32_t(EPOLLOUT | EPOLLWRNORM));
}

TEST(Readiness, BytesMakeItReadable) {
  uint32_t m = readiness(connected(10), {});
  EXPECT_TRUE(m & EPOLLIN);
  EXPECT_TRUE(m & EPOLLRDNORM);
  EXPECT_FALSE(m & (EPOLLRDHUP | EPOLLHUP | EPOLLERR));
}

TEST(Readiness, FullTxRingIsNotWritable) {
  EXPECT_FALSE(readiness(connected(0, 0), {}) & EPOLLOUT);
}

TEST(Readiness, PeerFinIsReadableAndRdhup) {
  SlotSnapshot v = connected();
  v.flags = abi::kFlagPeerFin;
  uint32_t m = readiness(v, {});
  EXPECT_TRUE(m & EPOLLIN);
  EXPECT_TRUE(m & EPOLLRDHUP);
  EXPECT_TRUE(m & EPOLLOUT);  // half-closed by the peer: we may still write
  EXPECT_FALSE(m & EPOLLHUP);
}

TEST(Readiness, BothDirectionsClosedIsHup) {
  SlotSnapshot v = connected();
  v.flags = abi::kFlagPeerFin | abi::kFlagWriteShut;
  uint32_t m = readiness(v, {});
  EXPECT_TRUE(m & EPOLLHUP);
  EXPECT_TRUE(m & EPOLLOUT);  // as Linux's tcp_poll once shut for writing: a write fails at once
  LocalView local;
  local.shut_wr = true;
  v.flags = abi::kFlagPeerFin;
  EXPECT_TRUE(readiness(v, local) & EPOLLHUP);
}

TEST(Readiness, ShutForWritingPollsWritableEvenWhenFull) {
  SlotSnapshot v = connected();
  v.tx_writable = 0;
  EXPECT_FALSE(readiness(v, {}) & EPOLLOUT);
  LocalView local;
  local.shut_wr = true;  // write() now returns EPIPE without waiting
  EXPECT_TRUE(readiness(v, local) & EPOLLOUT);
  EXPECT_FALSE(readiness(v, local) & EPOLLHUP);
}

TEST(Readiness, ResetIsEverythingWithError) {
  SlotSnapshot v = connected(0, 0);
  v.state = uint32_t(SlotState::kClosed);
  v.flags = abi::kFlagReset;
  v.error = 104;
  uint32_t m = readiness(v, {});
  EXPECT_EQ(m & (EPOLLIN | EPOLLOUT | EPOLLHUP | EPOLLERR | EPOLLRDHUP),
            uint32_t(EPOLLIN | EPOLLOUT | EPOLLHUP | EPOLLERR | EPOLLRDHUP));
  LocalView taken;
  taken.error_consumed = true;  // SO_ERROR read it: no more EPOLLERR
  EXPECT_FALSE(readiness(v, taken) & EPOLLERR);
  EXPECT_TRUE(readiness(v, taken) & EPOLLHUP);
}

TEST(Readiness, ConnectingIsNothingUntilDone) {
  SlotSnapshot v;
  v.state = uint32_t(SlotState::kConnecting);
  v.tx_writable = 4096;
  EXPECT_EQ(readiness(v, {}), 0u);
  v.state = uint32_t(SlotState::kClosed);  // refused
  v.error = 111;
  uint32_t m = readiness(v, {});
  EXPECT_TRUE(m & EPOLLERR);
  EXPECT_TRUE(m & EPOLLHUP);
  EXPECT_TRUE(m & EPOLLOUT);  // Linux: a failed connect polls writable (+ERR/HUP)
}

TEST(Readiness, ListenerReadableWithPendingAccepts) {
  SlotSnapshot v;
  v.state = uint32_t(SlotState::kListening);
  EXPECT_EQ(readiness(v, {}), 0u);
  v.accept_ready = 2;
  EXPECT_EQ(readiness(v, {}), uint32_t(EPOLLIN | EPOLLRDNORM));
}

TEST(Readiness, BoundSocketIsOutAndHupLikeLinux) {
  SlotSnapshot v;
  v.state = uint32_t(SlotState::kBound);
  v.tx_writable = 4096;
  EXPECT_EQ(readiness(v, {}) & (EPOLLOUT | EPOLLHUP), uint32_t(EPOLLOUT | EPOLLHUP));
}

TEST(Readiness, LocalShutRdReadsEof) {
  LocalView local;
  local.shut_rd = true;
  uint32_t m = readiness(connected(), local);
  EXPECT_TRUE(m & EPOLLIN);
  EXPECT_TRUE(m & EPOLLRDHUP);
}

TEST(Readiness, DaemonGoneResetsConnectionsNotListeners) {
  LocalView gone;
  gone.daemon_gone = true;
  uint32_t m = readiness(connected(), gone);
  EXPECT_TRUE(m & EPOLLERR);
  EXPECT_TRUE(m & EPOLLHUP);
  SlotSnapshot l;
  l.state = uint32_t(SlotState::kListening);
  EXPECT_TRUE(readiness(l, gone) & EPOLLERR);
  EXPECT_FALSE(readiness(l, gone) & EPOLLIN);
}

// snapshot() reads the ring occupancy of a real slot and clamps a corrupt head.
TEST(Readiness, SnapshotOfARealSlot) {
  test::TestRegion r;
  ASSERT_TRUE(r.create(abi::Layout{1, 2, 4096, 4096}, 1, 0, 0));
  abi::SocketSlot* s = r.slot(1);
  s->state.store(uint32_t(SlotState::kConnected));
  abi::ByteRing rx = r.rx(1), tx = r.tx(1);
  char buf[100] = {};
  rx.write(buf, 100);
  tx.write(buf, 96);
  SlotSnapshot v = snapshot(*s, rx, tx);
  EXPECT_EQ(v.rx_readable, 100u);
  EXPECT_EQ(v.tx_writable, 4000u);
  s->rx.head.value.store(s->rx.tail.value.load() + 1000000);  // corrupt: more than capacity
  EXPECT_EQ(snapshot(*s, rx, tx).rx_readable, 4096u);
  r.destroy();
}

}  // namespace
}  // namespace shunt::preload
