// Connections to the engine's own address: both ends live in the engine, their
// segments loop back inside it and never reach the NIC (the kernel's loopback).
#include <gtest/gtest.h>

#include <cerrno>

#include "harness.hh"

namespace shunt::test {
namespace {

constexpr uint16_t kServerPort = 80;
constexpr uint16_t kClientPort = 40000;
constexpr uint64_t kListenUser = 1, kClientUser = 2, kServerUser = 3;

class Loopback : public EngineTest {
 protected:
  void SetUp() override { ASSERT_EQ(eng().listen(kServerPort, 4, kListenUser, &l_), 0); }

  // Connects, accepts, attaches the server's rings; both ends ESTABLISHED.
  void open_pair(uint32_t ring) {
    client_ = std::make_unique<AppRings>(ring, ring);
    server_ = std::make_unique<AppRings>(ring, ring);
    ASSERT_EQ(eng().connect(kClientPort, kLocalIp, kServerPort, client_->erx(), client_->etx(),
                            kClientUser, now_, &c_),
              0);
    eng().flush(now_);
    ASSERT_EQ(eng().tcb(c_).state, TcpState::kEstablished);
    s_ = eng().accept(l_);
    ASSERT_NE(s_, kInvalidId);
    eng().attach(s_, server_->erx(), server_->etx(), kServerUser);
    ASSERT_EQ(eng().tcb(s_).state, TcpState::kEstablished);
    EXPECT_EQ(eng().tcb(s_).remote_port, kClientPort);
  }

  // Moves n bytes of pattern from `from`'s tx ring into `to`'s rx ring, the reader
  // taking what arrives after each turn, within a bounded number of turns.
  std::string stream(AppRings& from, ConnId fc, AppRings& to, ConnId tc, size_t n) {
    const std::string data = pattern(n);
    std::string got;
    size_t sent = 0;
    for (int turn = 0; turn < 20000 && got.size() < n; ++turn) {
      if (sent < n) {
        sent += from.write(std::string_view(data).substr(sent));
        eng().tx_ready(fc);
      }
      eng().flush(now_);
      std::string part = to.read();
      if (!part.empty()) {
        got += part;
        eng().rx_drained(tc);
      }
      now_ += 10;  // 10 us a turn: timers stay quiet
      eng().poll(now_);
    }
    EXPECT_EQ(got.size(), n);
    EXPECT_TRUE(got == data) << "bytes differ";
    return got;
  }

  ListenerId l_ = kInvalidId;
  ConnId c_ = kInvalidId, s_ = kInvalidId;
  std::unique_ptr<AppRings> client_, server_;
};

TEST_F(Loopback, AConnectionToOurOwnAddressNeverReachesTheNic) {
  ASSERT_NO_FATAL_FAILURE(open_pair(4096));
  EXPECT_EQ(client_->write("ping"), 4u);
  eng().tx_ready(c_);
  eng().flush(now_);
  EXPECT_EQ(server_->read(), "ping");
  EXPECT_EQ(server_->write("pong"), 4u);
  eng().tx_ready(s_);
  eng().flush(now_);
  EXPECT_EQ(client_->read(), "pong");
  EXPECT_TRUE(sink_.frames.empty()) << "nothing left for the NIC";
  EXPECT_GT(eng().counters().looped_frames, 0u);

  // Orderly close from the client: FIN both ways, the client waits in TIME_WAIT.
  eng().shutdown_write(c_);
  eng().flush(now_);
  EXPECT_TRUE(eng().tcb(s_).peer_fin);
  eng().shutdown_write(s_);
  eng().flush(now_);
  EXPECT_EQ(eng().tcb(c_).state, TcpState::kTimeWait);
  EXPECT_TRUE(sink_.frames.empty());
}

TEST_F(Loopback, BulkBothWaysIsExactAndNeverDropsAtTheLoop) {
  ASSERT_NO_FATAL_FAILURE(open_pair(1 << 20));
  stream(*client_, c_, *server_, s_, 8 << 20);
  stream(*server_, s_, *client_, c_, 8 << 20);
  const auto& k = eng().counters();
  EXPECT_EQ(k.drops[size_t(Drop::kLoopbackFull)], 0u);
  EXPECT_EQ(k.tcp_retransmits, 0u) << "a full loop holds senders back, it loses nothing";
  EXPECT_GT(k.loop_waits, 0u) << "a 1 MiB window outgrows the loop: senders waited";
  EXPECT_TRUE(sink_.frames.empty());
}

TEST_F(Loopback, NoListenerRefusesWithAReset) {
  AppRings rings;
  ConnId c;
  ASSERT_EQ(eng().connect(kClientPort, kLocalIp, kServerPort + 1, rings.erx(), rings.etx(), kClientUser,
                          now_, &c),
            0);
  eng().flush(now_);
  EXPECT_EQ(eng().tcb(c).state, TcpState::kClosed);
  EXPECT_EQ(eng().tcb(c).error, ECONNREFUSED);
  EXPECT_TRUE(sink_.frames.empty());
}

}  // namespace
}  // namespace shunt::test
