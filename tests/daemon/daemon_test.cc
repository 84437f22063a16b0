// shuntd's command handling and its trust boundary, on an in-memory port (no
// DPDK): applications attach over the real control socket, speak the ABI by hand,
// and misbehave; a second engine plays the remote host.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>

#include <random>

#include "daemon/access.hh"
#include "daemon/instance.hh"
#include "rig.hh"

namespace shunt::test {
namespace {

constexpr uint16_t kPort = 80;

class DaemonTest : public ::testing::Test {
 protected:
  explicit DaemonTest(bool shares_core = false) : rig_(4, true, shares_core) {}
  void SetUp() override { ASSERT_TRUE(rig_.started) << rig_.start_error; }

  // bind + listen on the NIC address: the listener's slot.
  uint32_t listen_on(TestApp& app, uint16_t port = kPort) {
    abi::Command b = command(abi::Op::kBind);
    b.ip = htonl(kNicIp);
    b.port = htons(port);
    abi::Completion c = rig_.call(app, b);
    EXPECT_EQ(c.result, 0);
    abi::Command l = command(abi::Op::kListen, c.slot);
    l.arg = 16;
    EXPECT_EQ(rig_.call(app, l).result, 0);
    return c.slot;
  }
  // The remote host connects to port; the app accepts. Returns the app's slot.
  uint32_t accept_one(TestApp& app, uint32_t listener, PlainRings& rings, ConnId* remote_conn,
                      uint16_t remote_port = 40000, uint16_t port = kPort, uint64_t inode = 0) {
    Time now = Daemon::now_us();
    EXPECT_EQ(rig_.remote->connect(remote_port, kNicIp, port, abi::ProducerEnd(rings.rx()),
                                   abi::ConsumerEnd(rings.tx()), 7, now, remote_conn),
              0);
    for (int i = 0; i < 200 && app.slot(listener)->accept_ready.load() == 0; ++i) rig_.turn();
    EXPECT_EQ(app.slot(listener)->accept_ready.load(), 1u);
    abi::Command a = command(abi::Op::kAccept, listener);
    a.arg2 = inode;  // the placeholder's, which a fork child proves it holds
    abi::Completion c = rig_.call(app, a);
    EXPECT_EQ(c.result, 0);
    EXPECT_EQ(ntohl(c.remote_ip), kRemoteIp);
    return c.slot;
  }
  TcpState remote_state(ConnId c) const { return rig_.remote->tcb(c).state; }

  // As a fork child claims a socket of its parent's by sending its fd (the
  // placeholder): the child's slot, or kNoSlot.
  uint32_t inherit(TestApp& child, const TestApp& parent, uint32_t parent_slot, int fd) {
    ctl::Request req{};
    req.type = uint32_t(ctl::Type::kInherit);
    req.abi_version = abi::kVersion;
    req.count = 1;
    req.parent_region = parent.hdr->region_id;
    req.parent_slots[0] = parent_slot;
    EXPECT_EQ(scm::send(child.ctl, &req, sizeof req, &fd, 1), ssize_t(sizeof req));
    rig_.daemon->poll_control(1000);
    ctl::InheritReply reply{};
    int nfds = 0;
    EXPECT_EQ(scm::recv(child.ctl, &reply, sizeof reply, nullptr, 0, &nfds), ssize_t(sizeof reply));
    return reply.slots[0];
  }

  // An application serving one connection from the remote host.
  struct Served {
    std::unique_ptr<TestApp> app;
    uint32_t listener = 0, slot = 0;
    PlainRings rings;
    ConnId remote = kInvalidId;
  };
  std::unique_ptr<Served> serve_one() {
    auto s = std::make_unique<Served>();
    s->app = rig_.attach();
    EXPECT_TRUE(s->app);
    if (!s->app) return s;
    s->listener = listen_on(*s->app);
    s->slot = accept_one(*s->app, s->listener, s->rings, &s->remote);
    return s;
  }
  // A parent serving one connection from the remote host and a fork child that
  // inherited it (the ring owner stays the parent). child is null on failure.
  struct Forked {
    std::unique_ptr<TestApp> parent, child;
    uint32_t pslot = 0, cslot = 0;
    PlainRings rings;
    ConnId remote = kInvalidId;
    int placeholder = -1;
    ~Forked() {
      if (placeholder >= 0) close(placeholder);
    }
  };
  std::unique_ptr<Forked> fork_one() {
    auto f = std::make_unique<Forked>();
    f->parent = rig_.attach();
    if (!f->parent) return f;
    uint32_t l = listen_on(*f->parent);
    f->placeholder = socket(AF_INET, SOCK_STREAM, 0);
    struct stat st;
    if (fstat(f->placeholder, &st) != 0) return f;
    f->pslot = accept_one(*f->parent, l, f->rings, &f->remote, 40000, kPort, st.st_ino);
    auto child = rig_.attach();
    if (!child) return f;
    f->cslot = inherit(*child, *f->parent, f->pslot, f->placeholder);
    if (f->cslot != abi::kNoSlot) f->child = std::move(child);
    return f;
  }

  // The remote host sends text; true once the application's rx ring holds it all.
  bool remote_sends(Served& s, const std::string& text) {
    uint32_t before = s.app->rx(s.slot).readable();
    s.rings.tx().write(text.data(), uint32_t(text.size()));
    rig_.remote->tx_ready(s.remote);
    for (int i = 0; i < 50 && s.app->rx(s.slot).readable() < before + text.size(); ++i)
      rig_.turn();
    return s.app->rx(s.slot).readable() == before + text.size();
  }

  // Whether shuntd, idle right after the remote host's bytes reached a waiting
  // application, would yield its core to it.
  bool yields_after_waking() {
    auto srv = serve_one();
    if (!srv->app) return false;
    srv->app->hdr->app_waiters.store(1);  // a thread blocked on the app doorbell
    EXPECT_FALSE(rig_.daemon->yield_to_woken()) << "nobody woken yet";
    uint64_t rung = rig_.stat("daemon.doorbells");
    EXPECT_TRUE(remote_sends(*srv, "hello"));
    EXPECT_GT(rig_.stat("daemon.doorbells"), rung);
    bool yields = rig_.daemon->yield_to_woken();
    EXPECT_FALSE(rig_.daemon->yield_to_woken()) << "once per wake-up";
    return yields;
  }

  DaemonRig rig_;
};

// As on two CPUs: shuntd shares a core with the applications.
class SharedCore : public DaemonTest {
 protected:
  SharedCore() : DaemonTest(true) {}
};

// Sharing a core, a daemon spinning on after it woke an application may keep the
// application from running: it yields the core once. With a core to spare it spins.
TEST_F(SharedCore, AfterWakingAnApplicationTheDaemonYieldsItsCore) {
  EXPECT_TRUE(yields_after_waking());
}
TEST_F(DaemonTest, WithACoreToSpareTheDaemonSpinsOnAfterWakingAnApplication) {
  EXPECT_FALSE(yields_after_waking());
}

// Sharing a core, the daemon polls before it sleeps only while a thread of an
// application waits for it, whether on the app doorbell or on a bell of its own
// (a wake cell, what every thread has since ABI version 5).
TEST_F(SharedCore, TheDaemonSpinsWhileAThreadWaitsOnEitherBell) {
  auto app = rig_.attach();
  ASSERT_TRUE(app);
  EXPECT_EQ(rig_.daemon->spin_budget(), 0u) << "nobody waits: sleep at once";
  app->hdr->cells_sleeping.store(uint64_t{1} << 3);
  const Time on_cell = rig_.daemon->spin_budget();
  EXPECT_GT(on_cell, 0u) << "a thread asleep on its own bell";
  app->hdr->cells_sleeping.store(0);
  app->hdr->app_waiters.store(1);
  EXPECT_EQ(rig_.daemon->spin_budget(), on_cell) << "one asleep on the app doorbell";
  app->hdr->app_waiters.store(0);
  EXPECT_EQ(rig_.daemon->spin_budget(), 0u);
}

TEST_F(DaemonTest, AttachHandsOverASealedRegionLaidOut) {
  auto app = rig_.attach();
  ASSERT_TRUE(app);
  EXPECT_EQ(app->hdr->slot_count, 16u);
  EXPECT_EQ(app->hdr->nic_ip, htonl(kNicIp));
  int seals = fcntl(app->memfd, F_GET_SEALS);
  EXPECT_EQ(seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL),
            F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
  EXPECT_EQ(ftruncate(app->memfd, 0), -1);
  EXPECT_EQ(errno, EPERM) << "no application may pull pages from under the daemon";
  EXPECT_EQ(ftruncate(app->memfd, off_t(app->size) * 2), -1);
  EXPECT_EQ(fcntl(app->memfd, F_ADD_SEALS, F_SEAL_WRITE), -1) << "and the seals stay";
  EXPECT_EQ(rig_.stat("apps.active"), 1u);
  EXPECT_EQ(rig_.stat("apps.attached"), 1u);
}

TEST_F(DaemonTest, ListenAcceptAndMoveBytesBothWays) {
  auto srv = serve_one();
  ASSERT_TRUE(srv->app);
  TestApp* app = srv->app.get();
  uint32_t s = srv->slot;
  PlainRings& rings = srv->rings;
  EXPECT_EQ(app->slot(s)->state.load(), uint32_t(abi::SlotState::kConnected));
  ASSERT_TRUE(remote_sends(*srv, "hello"));
  char buf[16] = {};
  ASSERT_EQ(app->rx(s).read(buf, sizeof buf), 5u);
  EXPECT_STREQ(buf, "hello");
  // App -> remote, announced with kTxReady.
  app->tx(s).write("world", 5);
  app->slot(s)->tx_notice.store(1);
  app->push(command(abi::Op::kTxReady, s));
  std::string got;
  for (int i = 0; i < 50 && got.size() < 5; ++i) {
    rig_.turn();
    got += rings.read();
  }
  EXPECT_EQ(got, "world");
  EXPECT_EQ(app->slot(s)->tx_notice.load(), 0u) << "the daemon clears the notice it acted on";
  EXPECT_EQ(rig_.stat("tcp.connections_accepted"), 1u);
}

TEST_F(DaemonTest, BadSlotsAndOpsAreAnsweredNotFatal) {
  auto app = rig_.attach();
  ASSERT_TRUE(app);
  EXPECT_EQ(rig_.call(*app, command(abi::Op::kListen, 9999)).result, -EBADF);
  EXPECT_EQ(rig_.call(*app, command(abi::Op::kAccept, 3)).result, -EBADF) << "never handed out";
  EXPECT_EQ(rig_.call(*app, command(abi::Op(77), 0)).result, -EINVAL);
  abi::Command b = command(abi::Op::kBind);
  b.ip = htonl(0x01020304);
  EXPECT_EQ(rig_.call(*app, b).result, -EADDRNOTAVAIL);
  abi::Command sh = command(abi::Op::kShutdown, 0);
  EXPECT_EQ(rig_.call(*app, sh).result, -EBADF);
  EXPECT_EQ(rig_.stat("apps.active"), 1u);
  EXPECT_EQ(rig_.stat("apps.cut_off"), 0u);
  EXPECT_EQ(rig_.stat("daemon.bad_commands"), 4u) << "EBADF three times, EINVAL once";
}

TEST_F(DaemonTest, CorruptQueueHeadCutsOffThatApplicationOnly) {
  auto srv = serve_one();
  auto bad = rig_.attach();
  ASSERT_TRUE(srv->app && bad);
  TestApp* good = srv->app.get();
  uint32_t bl = listen_on(*bad, 8080);
  (void)bl;
  bad->qp()->sq_idx.head.value.store(bad->qp()->sq_idx.tail.value.load() + 100000);
  rig_.turns(3);
  EXPECT_TRUE(bad->hung_up()) << "the daemon hangs up on the offender";
  EXPECT_EQ(rig_.stat("apps.cut_off"), 1u);
  EXPECT_EQ(rig_.stat("violation.command_queue_head"), 1u);
  EXPECT_EQ(rig_.stat("apps.active"), 1u);
  EXPECT_EQ(rig_.stat("apps.regions"), 1u) << "its region is released at once";
  EXPECT_TRUE(remote_sends(*srv, "ping")) << "the other application's connection still works";
  // And the offender's port is free again.
  abi::Command b = command(abi::Op::kBind);
  b.ip = htonl(kNicIp);
  b.port = htons(8080);
  EXPECT_EQ(rig_.call(*good, b).result, 0);
}

TEST_F(DaemonTest, OverwrittenHeaderIsFound) {
  auto app = rig_.attach();
  ASSERT_TRUE(app);
  app->hdr->slots_offset = 12345;  // the daemon must not follow it anywhere
  app->hdr->rx_ring_size = 1u << 31;
  rig_.turns(1100);  // the header is checked every 1024 turns
  EXPECT_TRUE(app->hung_up());
  EXPECT_EQ(rig_.stat("violation.region_header"), 1u);
}

TEST_F(DaemonTest, RingIndexOutOfRangeResetsTheConnections) {
  auto srv = serve_one();
  ASSERT_TRUE(srv->app);
  TestApp* app = srv->app.get();
  uint32_t s = srv->slot;
  ConnId rc = srv->remote;
  rig_.turns(5);
  ASSERT_EQ(remote_state(rc), TcpState::kEstablished);
  // A tx head a million bytes past the tail in a 16 KiB ring.
  app->slot(s)->tx.head.value.store(app->slot(s)->tx.tail.value.load() + 1000000);
  app->slot(s)->tx_notice.store(1);
  app->push(command(abi::Op::kTxReady, s));
  rig_.turns(5);
  EXPECT_TRUE(app->hung_up());
  EXPECT_EQ(rig_.stat("violation.ring_indices"), 1u);
  EXPECT_EQ(remote_state(rc), TcpState::kClosed) << "its connections are reset";
  EXPECT_EQ(rig_.remote->tcb(rc).error, ECONNRESET);
  EXPECT_EQ(rig_.stat("daemon.sockets"), 0u);
}

TEST_F(DaemonTest, RxTailAheadOfHeadIsAFault) {
  auto srv = serve_one();
  ASSERT_TRUE(srv->app);
  srv->app->slot(srv->slot)->rx.tail.value.store(777);  // consumed bytes that never came
  EXPECT_FALSE(remote_sends(*srv, "x"));
  EXPECT_TRUE(srv->app->hung_up());
  EXPECT_EQ(rig_.stat("violation.ring_indices"), 1u);
}

TEST_F(DaemonTest, CompletionQueueOverflowIsAViolation) {
  auto app = rig_.attach();
  ASSERT_TRUE(app);
  // 256 answered commands fill the completion queue nobody reads; one more overflows.
  for (int round = 0; round < 3 && !app->hung_up(); ++round) {
    for (uint32_t i = 0; i < abi::kQueueDepth && app->push(command(abi::Op::kNop)); ++i) {
    }
    rig_.turns(4);
  }
  EXPECT_TRUE(app->hung_up());
  EXPECT_EQ(rig_.stat("violation.completion_queue_overflow"), 1u);
}

TEST_F(DaemonTest, OneApplicationsFloodDoesNotStarveAnother) {
  auto flood = rig_.attach();
  auto quiet = rig_.attach();
  ASSERT_TRUE(flood && quiet);
  flood->hdr->queue_pairs_claimed.store(2);
  for (uint32_t q = 0; q < 2; ++q)
    for (uint32_t i = 0; i < abi::kQueueDepth; ++i) {
      abi::Command c = command(abi::Op::kSetOption, 0);
      c.flags = abi::kCmdNoReply;  // cheap and unanswered: a queue that refills forever
      flood->push(c, q);
    }
  quiet->push(command(abi::Op::kNop, abi::kNoSlot, 42));
  rig_.turn();
  abi::Completion c;
  ASSERT_TRUE(quiet->pop(&c)) << "served in the same turn as the flood";
  EXPECT_EQ(c.cookie, 42u);
  uint32_t left = 0;
  for (uint32_t q = 0; q < 2; ++q)
    left += flood->qp(q)->sq_idx.head.value.load() - flood->qp(q)->sq_idx.tail.value.load();
  EXPECT_EQ(left, 2 * abi::kQueueDepth - 128) << "at most 128 commands per application per turn";
}

TEST_F(DaemonTest, DeadApplicationsConnectionsEndAsTheKernelEndsThem) {
  auto app = rig_.attach();
  ASSERT_TRUE(app);
  uint32_t l = listen_on(*app);
  PlainRings r1, r2;
  ConnId c1, c2;
  uint32_t s1 = accept_one(*app, l, r1, &c1, 40001);
  uint32_t s2 = accept_one(*app, l, r2, &c2, 40002);
  (void)s1;
  r2.tx().write("unread", 6);  // s2 will hold bytes the application never read
  rig_.remote->tx_ready(c2);
  for (int i = 0; i < 50 && app->rx(s2).readable() < 6; ++i) rig_.turn();
  ASSERT_EQ(app->rx(s2).readable(), 6u);
  app->close_ctl();  // the process is gone
  rig_.daemon->poll_control(1000);
  rig_.turns(10);
  EXPECT_EQ(remote_state(c1), TcpState::kCloseWait) << "FIN for the clean one";
  EXPECT_EQ(remote_state(c2), TcpState::kClosed) << "RST where data was left unread";
  EXPECT_EQ(rig_.remote->tcb(c2).error, ECONNRESET);
  EXPECT_EQ(rig_.stat("apps.active"), 0u);
  // The listening port can be bound again at once, by another process.
  auto next = rig_.attach();
  ASSERT_TRUE(next);
  abi::Command b = command(abi::Op::kBind);
  b.ip = htonl(kNicIp);
  b.port = htons(kPort);
  EXPECT_EQ(rig_.call(*next, b).result, 0);
  // Once the peer closes its side too, everything the dead one held is back.
  rig_.remote->close(c1, false, Daemon::now_us());
  rig_.turns(20);
  EXPECT_EQ(rig_.stat("apps.regions"), 1u) << "only the new application's";
  EXPECT_EQ(rig_.stat("daemon.sockets"), 1u) << "only the new bind";
  EXPECT_EQ(rig_.stat("daemon.zombie_slots"), 0u);
}

// A process that writes and exits at once has its bytes sent, as the kernel sends
// what a process wrote before it exited, even when its hang-up reaches shuntd
// before its last commands were served. A fork child writing on its parent's
// connection (`printf … >&3` in a shell) is where that matters: the parent
// still holds the socket, and a lost kTxReady would leave the slot's notice
// raised for good, so no later write would ever be sent either.
TEST_F(DaemonTest, WhatAForkChildWroteBeforeItExitedIsSent) {
  auto f = fork_one();
  ASSERT_TRUE(f->child);
  TestApp* parent = f->parent.get();
  TestApp* child = f->child.get();
  const uint32_t pslot = f->pslot, cslot = f->cslot;
  PlainRings& rings = f->rings;
  const ConnId remote = f->remote;
  auto write_and_notify = [&](TestApp& writer, uint32_t slot, const std::string& text) {
    // The bytes go into the ring owner's (the parent's) ring, as after fork.
    ASSERT_EQ(parent->tx(pslot).write(text.data(), uint32_t(text.size())), text.size());
    if (parent->slot(pslot)->tx_notice.exchange(1) == 0) {
      ASSERT_TRUE(writer.push(command(abi::Op::kTxReady, slot)));
    }
  };
  auto remote_gets = [&](size_t n) {  // up to a second: Nagle waits for the ACK
    std::string got;
    for (int i = 0; i < 2000 && got.size() < n; ++i) {
      rig_.turn();
      got += rings.read();
      if (got.size() < n) usleep(500);
    }
    return got;
  };
  write_and_notify(*child, cslot, "GET / HTTP/1.0\r\n\r\n");
  child->close_ctl();               // gone before the daemon's next turn
  rig_.daemon->poll_control(1000);  // the hang-up is seen first
  EXPECT_EQ(remote_gets(18), "GET / HTTP/1.0\r\n\r\n");
  write_and_notify(*parent, pslot, "more");
  EXPECT_EQ(remote_gets(4), "more") << "the parent's own writes go on";
  EXPECT_EQ(remote_state(remote), TcpState::kEstablished) << "the parent still holds it";
}

// A fork child serving a connection its parent closed (accept, fork, close: the
// classic forking server) or left by exiting reads the rings in the parent's
// region: what the peer does still reaches the ring owner's slot, and the child
// is woken where it sleeps: on the parent's doorbell in a blocking call on those
// rings, on its own in poll, select or epoll.
enum class ParentGoes { kCloses, kExits };
enum class ChildWaits { kInACall, kInPoll };
class ForkChildAlone : public DaemonTest,
                       public ::testing::WithParamInterface<std::tuple<ParentGoes, ChildWaits>> {};

TEST_P(ForkChildAlone, StillHearsThePeer) {
  const auto [goes, waits] = GetParam();
  auto f = fork_one();
  ASSERT_TRUE(f->child);
  TestApp* parent = f->parent.get();
  TestApp* child = f->child.get();
  const uint32_t pslot = f->pslot;
  PlainRings& rings = f->rings;
  const ConnId remote = f->remote;
  if (goes == ParentGoes::kExits) {
    parent->close_ctl();
    rig_.daemon->poll_control(1000);
    ASSERT_EQ(rig_.stat("apps.active"), 1u);
  } else {
    ASSERT_TRUE(parent->push(command(abi::Op::kClose, pslot)));  // posted, no completion
  }
  rig_.turns(5);
  TestApp& sleeps_on = waits == ChildWaits::kInACall ? *parent : *child;
  sleeps_on.hdr->app_waiters.store(1);
  uint64_t count = 0;
  while (read(sleeps_on.app_bell, &count, sizeof count) > 0) {
  }  // earlier rings
  rings.tx().write("bye", 3);
  rig_.remote->tx_ready(remote);
  rig_.remote->close(remote, false, Daemon::now_us());
  for (int i = 0; i < 50 && (parent->slot(pslot)->flags.load() & abi::kFlagPeerFin) == 0; ++i)
    rig_.turn();
  EXPECT_EQ(parent->rx(pslot).readable(), 3u);
  EXPECT_NE(parent->slot(pslot)->flags.load() & abi::kFlagPeerFin, 0u) << "the FIN is published";
  EXPECT_EQ(read(sleeps_on.app_bell, &count, sizeof count), ssize_t(sizeof count))
      << "the doorbell the child sleeps on rang";
}
INSTANTIATE_TEST_SUITE_P(
    ParentClosesOrExits, ForkChildAlone,
    ::testing::Combine(::testing::Values(ParentGoes::kCloses, ParentGoes::kExits),
                       ::testing::Values(ChildWaits::kInACall, ChildWaits::kInPoll)),
    [](const auto& info) {
      return std::string(std::get<0>(info.param) == ParentGoes::kExits ? "ParentExits" : "ParentCloses") +
             (std::get<1>(info.param) == ChildWaits::kInPoll ? "ChildPolls" : "ChildReads");
    });

TEST_F(DaemonTest, InheritNeedsThePlaceholdersInode) {
  auto parent = rig_.attach();
  auto child = rig_.attach();
  ASSERT_TRUE(parent && child);
  int placeholder = socket(AF_INET, SOCK_STREAM, 0);
  struct stat st;
  ASSERT_EQ(fstat(placeholder, &st), 0);
  abi::Command b = command(abi::Op::kBind);
  b.ip = htonl(kNicIp);
  b.port = htons(kPort);
  b.arg2 = st.st_ino;
  abi::Completion bc = rig_.call(*parent, b);
  ASSERT_EQ(bc.result, 0);
  auto claim = [&](int fd) { return inherit(*child, *parent, bc.slot, fd); };
  int other = socket(AF_INET, SOCK_STREAM, 0);
  EXPECT_EQ(claim(other), abi::kNoSlot) << "a socket it does not hold";
  uint32_t mine = claim(placeholder);
  EXPECT_NE(mine, abi::kNoSlot);
  EXPECT_EQ(child->slot(mine)->state.load(), uint32_t(abi::SlotState::kBound));
  close(other);
  close(placeholder);
}

// Whatever an application writes into its region and its queues, the daemon
// stays up and keeps serving the others (the fuzz target does this at length).
TEST_F(DaemonTest, RandomRegionContentsNeverHurtTheDaemon) {
  auto srv = serve_one();
  ASSERT_TRUE(srv->app);
  std::mt19937_64 rng(7);
  for (int round = 0; round < 20; ++round) {
    auto bad = rig_.attach();
    ASSERT_TRUE(bad) << "round " << round;
    listen_on(*bad, uint16_t(9000 + round));
    auto* bytes = static_cast<uint8_t*>(bad->base);
    for (int k = 0; k < 2000; ++k) bytes[rng() % bad->size] = uint8_t(rng());
    for (int k = 0; k < 64; ++k) {
      abi::Command c{};
      for (size_t i = 0; i < sizeof c; ++i) reinterpret_cast<uint8_t*>(&c)[i] = uint8_t(rng());
      c.op = uint16_t(rng() % 13);
      bad->push(c, 0);
    }
    rig_.turns(1100);
  }
  EXPECT_TRUE(remote_sends(*srv, "still"));
  EXPECT_FALSE(srv->app->hung_up());
}

// 64 applications at once, each with a region of the size shuntd really uses
// (4096 sockets, 256 KiB rings each way: sparse memfds), each answered.
TEST(DaemonScale, SixtyFourApplicationsAtOnce) {
  DaemonRig rig(64, /*small=*/false);
  ASSERT_TRUE(rig.started);
  EXPECT_EQ(rig.cfg.slots_per_app, 4096u);
  std::vector<std::unique_ptr<TestApp>> apps;
  for (int i = 0; i < 64; ++i) {
    apps.push_back(rig.attach());
    ASSERT_TRUE(apps.back()) << "application " << i;
  }
  EXPECT_EQ(rig.stat("apps.active"), 64u);
  auto one_more = std::make_unique<TestApp>();
  ASSERT_TRUE(one_more->connect_to(rig.daemon->socket_path()));
  int r = -ETIMEDOUT;
  for (int i = 0; i < 10 && r == -ETIMEDOUT; ++i) {
    rig.daemon->poll_control(1000);
    r = one_more->finish_attach();
  }
  EXPECT_EQ(r, -EUSERS) << "the 65th is refused, and says why";
  for (int i = 0; i < 64; ++i) EXPECT_EQ(rig.call(*apps[size_t(i)], command(abi::Op::kNop)).result, 0);
  apps.clear();
  for (int i = 0; i < 20 && rig.stat("apps.active") != 0; ++i) rig.daemon->poll_control(1000);
  rig.turns(2);
  EXPECT_EQ(rig.stat("apps.active"), 0u);
  EXPECT_EQ(rig.stat("apps.regions"), 0u);
}

// ---- Who may attach (SHUNT_ALLOW) ----

TEST(Allow, ParsesUsersGroupsAndAny) {
  AccessPolicy p;
  std::string err;
  ASSERT_TRUE(parse_allow("user:root,group:0,user:1234,group:5678", &p, &err)) << err;
  EXPECT_EQ(p.uids, (std::vector<uid_t>{0, 1234}));
  EXPECT_EQ(p.gids, (std::vector<gid_t>{0, 5678}));
  EXPECT_FALSE(p.anyone);
  ASSERT_TRUE(parse_allow("any", &p, &err));
  EXPECT_TRUE(p.anyone);
  ASSERT_TRUE(parse_allow("", &p, &err));
  EXPECT_TRUE(p.uids.empty() && p.gids.empty() && !p.anyone);
  for (const char* bad : {"nobody", "user:", "user:no-such-user-shunt", "group:no-such-group-shunt",
                          "uid:5", "any,users:x"}) {
    EXPECT_FALSE(parse_allow(bad, &p, &err)) << bad;
    EXPECT_NE(err.find("SHUNT_ALLOW"), std::string::npos) << err;
  }
}

TEST(Allow, AdmitsRootItsOwnUserAndWhoIsListed) {
  AccessPolicy none, users, groups;
  std::string err;
  ASSERT_TRUE(parse_allow("user:1000", &users, &err));
  ASSERT_TRUE(parse_allow("group:50", &groups, &err));
  Peer root{1, 0, 0, {}}, daemon_user{2, 500, 500, {}}, other{3, 1000, 1000, {}},
      member{4, 1001, 1001, {50}}, primary{5, 1002, 50, {}};
  EXPECT_TRUE(admits(none, 500, root));
  EXPECT_TRUE(admits(none, 500, daemon_user));
  EXPECT_FALSE(admits(none, 500, other));
  EXPECT_TRUE(admits(users, 500, other));
  EXPECT_FALSE(admits(users, 500, member));
  EXPECT_TRUE(admits(groups, 500, member)) << "a supplementary group";
  EXPECT_TRUE(admits(groups, 500, primary)) << "the primary group";
  EXPECT_EQ(socket_access(none).mode, 0600u);
  EXPECT_EQ(socket_access(groups).mode, 0660u);
  EXPECT_EQ(socket_access(groups).gid, 50u);
  EXPECT_EQ(socket_access(users).mode, 0666u);
}

TEST(NicKey, NamesTheInterfaceWhateverTheSpec) {
  EXPECT_EQ(nic_key("vA"), "vA");
  EXPECT_EQ(nic_key("net_af_xdp0,iface=vA"), "vA");
  EXPECT_EQ(nic_key("net_af_packet1,iface=eth1,blocksz=4096"), "eth1");
  EXPECT_EQ(nic_key("0000:03:00.0"), "0000_03_00.0");
  EXPECT_EQ(nic_key("net_memif0,role=server"), "net_memif0");
}

}  // namespace
}  // namespace shunt::test
