#include "daemon/daemon.hh"

#include <arpa/inet.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "daemon/device.hh"
#include "daemon/log.hh"

namespace shunt {

namespace {
constexpr uint64_t kTagListen = 1ull << 40;
constexpr uint64_t kTagControl = 2ull << 40;
constexpr uint64_t kTagDoorbell = 3ull << 40;
constexpr uint64_t kTagMask = 0xffull << 40;
constexpr uint32_t kCommandBatch = 64;     // per queue pair per loop turn
constexpr Time kIdleBeforeSleep = 200;     // µs without work before adaptive sleep
// The virtual ports (AF_XDP, AF_PACKET) raise no rx interrupt in DPDK 22.11, so
// an idle daemon sleeps in short naps, growing from kMinNap to kMaxNap: sparse
// traffic waits tens of microseconds, a silent port costs ~1000 wake-ups/s.
constexpr Time kMinNap = 50;
constexpr Time kMaxNap = 1000;
constexpr uint32_t kControlEvery = 1024;   // loop turns between control-socket checks

Time now_us() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return Time(ts.tv_sec) * 1000000 + Time(ts.tv_nsec) / 1000;
}

// Sends one message with optional fds (SCM_RIGHTS).
bool send_msg(int fd, const void* data, size_t len, const int* fds, int nfds) {
  iovec iov{const_cast<void*>(data), len};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char buf[CMSG_SPACE(sizeof(int) * 8)];
  if (nfds > 0) {
    msg.msg_control = buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    std::memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  return sendmsg(fd, &msg, MSG_NOSIGNAL) == ssize_t(len);
}
}  // namespace

Daemon::Daemon(const DaemonConfig& cfg, Device& dev, Engine& engine)
    : cfg_(cfg),
      dev_(dev),
      engine_(engine),
      layout_{cfg.queue_pairs, cfg.slots_per_app, cfg.ring_size, cfg.ring_size},
      apps_(cfg.max_apps),
      port_owner_(65536, 0) {
  sockets_.reserve(cfg.max_apps * 64);
}

Daemon::~Daemon() {
  for (uint32_t a = 0; a < apps_.size(); ++a)
    if (apps_[a].in_use) {
      if (apps_[a].active) detach_app(a, "daemon exit");
      release_region(a);
    }
  if (listen_fd_ >= 0) {
    ::close(listen_fd_);
    unlink(socket_path_.c_str());
  }
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
}

bool Daemon::start(std::string* error) {
  mkdir(cfg_.rundir.c_str(), 0755);
  socket_path_ = cfg_.rundir + "/" + ctl::kSocketName;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path_.size() >= sizeof(addr.sun_path)) {
    *error = "SHUNT_RUNDIR=" + cfg_.rundir + ": path too long for a unix socket";
    return false;
  }
  std::strcpy(addr.sun_path, socket_path_.c_str());
  listen_fd_ = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  // A socket file that nobody answers on is left over from a dead daemon.
  int probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    ::close(probe);
    *error = "SHUNT_RUNDIR=" + cfg_.rundir + ": a shuntd already runs there";
    return false;
  }
  ::close(probe);
  unlink(socket_path_.c_str());
  if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(listen_fd_, 64) != 0) {
    *error = "SHUNT_RUNDIR=" + cfg_.rundir + ": cannot create " + socket_path_ + ": " +
             std::strerror(errno);
    return false;
  }
  // Applications attach before they drop privileges, but a process started as
  // another user may attach too: the socket is as open as the kernel stack.
  chmod(socket_path_.c_str(), 0666);
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kTagListen;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev);
  return true;
}

// ---- The loop ----

void Daemon::run() {
  Time last_work = now_us();
  uint32_t turn = 0;
  engine_.announce();
  dev_.flush();
  while (running_) {
    Time now = now_us();
    uint32_t work = dev_.receive([&](std::span<const uint8_t> frame) { engine_.input(frame, now); });
    work += poll_apps(now);
    engine_.poll(now);
    engine_.flush(now);
    publish_events();
    dev_.flush();
    ring_doorbells();
    if (work != 0) last_work = now;
    if (++turn % kControlEvery == 0) poll_control(0);
    if (work != 0) nap_ = kMinNap;
    if (work == 0 && cfg_.mode == PollMode::kAdaptive && now - last_work > kIdleBeforeSleep) {
      sleep_until_work();
      nap_ = std::min(nap_ * 2, kMaxNap);
    }
  }
}

void Daemon::sleep_until_work() {
  // Dekker with the applications: announce sleep, re-check queues, then block.
  for (uint32_t id : active_ids_) apps_[id].hdr->daemon_sleeping.store(1, std::memory_order_seq_cst);
  bool pending = false;
  for (uint32_t id : active_ids_) {
    App& a = apps_[id];
    uint32_t n = std::min(a.hdr->queue_pairs_claimed.load(std::memory_order_acquire),
                          a.hdr->queue_pair_count);
    for (uint32_t q = 0; q < n && !pending; ++q) {
      auto* qp = abi::queue_pair(a.base, *a.hdr, q);
      pending = qp->sq_idx.head.value.load(std::memory_order_seq_cst) !=
                qp->sq_idx.tail.value.load(std::memory_order_relaxed);
    }
  }
  if (!pending) {
    ++ctr_.sleeps;
    poll_control(nap_);
  }
  for (uint32_t id : active_ids_) apps_[id].hdr->daemon_sleeping.store(0, std::memory_order_relaxed);
}

uint32_t Daemon::poll_apps(Time now) {
  uint32_t work = 0;
  // By index: a command may detach its application (and shrink the list).
  for (size_t i = 0; i < active_ids_.size(); ++i) {
    uint32_t a = active_ids_[i];
    App& app = apps_[a];
    uint32_t n = std::min(app.hdr->queue_pairs_claimed.load(std::memory_order_acquire),
                          app.hdr->queue_pair_count);
    for (uint32_t q = 0; q < n && app.active; ++q)
      work += process_commands(a, abi::queue_pair(app.base, *app.hdr, q), now);
  }
  return work;
}

uint32_t Daemon::process_commands(uint32_t app_id, abi::QueuePair* qp, Time now) {
  abi::EntryRing<abi::Command> sq(&qp->sq_idx, qp->sq, abi::kQueueDepth);
  abi::EntryRing<abi::Completion> cq(&qp->cq_idx, qp->cq, abi::kQueueDepth);
  if (!sq.sane()) {
    ++ctr_.apps_killed;
    detach_app(app_id, "corrupt command queue indices");
    return 0;
  }
  uint32_t done = 0;
  abi::Command cmd;
  while (done < kCommandBatch && sq.pop(&cmd)) {
    ++done;
    ++ctr_.commands;
    bool reply = false;
    abi::Completion c = handle(app_id, cmd, now, &reply);
    if (!apps_[app_id].active) return done;
    if (reply && !cq.push(c)) {
      // The application has more requests outstanding than its queue holds.
      ++ctr_.apps_killed;
      detach_app(app_id, "completion queue overflow");
      return done;
    }
    if (reply) apps_[app_id].dirty = true;
  }
  return done;
}

void Daemon::publish_events() {
  publish_udp_events();  // udp_sockets.cc
  engine_.drain_events([&](uint64_t user, uint32_t ev) {
    uint32_t s = uint32_t(user - 1);
    if (s >= sockets_.size()) return;
    Socket& sock = sockets_[s];
    if (sock.kind == Kind::kListener) {
      publish_listener(s);
      return;
    }
    if (sock.kind != Kind::kConn) return;
    Holder h = sock.rings;
    if (ev & kEvDetached) {
      // The engine is done with the rings: a closed slot can go back to its app.
      if (h.app != kNone && apps_[h.app].slots[h.slot].zombie) {
        free_slot(h.app, h.slot);
        sock.rings = {kNone, kNone};
      }
      if (sock.holders.empty()) free_socket(s);
      return;
    }
    if (h.app == kNone || apps_[h.app].slots[h.slot].zombie) return;
    if (ev & kEvWindowLow) {
      abi::SocketSlot* slot = slot_of(h.app, h.slot);
      slot->flags.fetch_or(abi::kFlagWantRxDrain, std::memory_order_seq_cst);
      // The app may have drained before it could see the flag: check ourselves.
      abi::ByteRing rx = rx_ring(h.app, h.slot);
      if (rx.writable() >= rx.capacity() / 2) {
        slot->flags.fetch_and(~abi::kFlagWantRxDrain, std::memory_order_relaxed);
        engine_.rx_drained(sock.conn);
      }
    }
    publish_conn(s);
  });
}

void Daemon::ring_doorbells() {
  for (uint32_t id : active_ids_) {
    App& a = apps_[id];
    if (!a.dirty) continue;
    a.dirty = false;
    // Pairs with the app's seq_cst app_waiters increment before it re-checks.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (a.hdr->app_waiters.load(std::memory_order_seq_cst) != 0) {
      uint64_t one = 1;
      if (write(a.app_doorbell, &one, sizeof(one)) == sizeof(one)) ++ctr_.doorbells_rung;
    }
  }
}

void Daemon::touch(uint32_t app_id, abi::SocketSlot* slot) {
  slot->event_seq.fetch_add(1, std::memory_order_release);
  apps_[app_id].dirty = true;
}

void Daemon::publish_conn(uint32_t s) {
  Socket& sock = sockets_[s];
  Holder h = sock.rings;
  if (h.app == kNone || !apps_[h.app].active) return;
  const Tcb& t = engine_.tcb(sock.conn);
  abi::SocketSlot* slot = slot_of(h.app, h.slot);
  abi::SlotState st = abi::SlotState::kConnected;
  if (t.state == TcpState::kSynSent || t.state == TcpState::kSynReceived)
    st = abi::SlotState::kConnecting;
  else if (t.state == TcpState::kClosed)
    st = abi::SlotState::kClosed;
  uint32_t flags = slot->flags.load(std::memory_order_relaxed) & abi::kFlagWantRxDrain;
  if (t.peer_fin) flags |= abi::kFlagPeerFin;
  if (t.error != 0) flags |= abi::kFlagReset;
  if (t.fin_queued) flags |= abi::kFlagWriteShut;
  if (t.error != 0) slot->error.store(t.error, std::memory_order_relaxed);
  slot->flags.store(flags, std::memory_order_release);
  slot->state.store(uint32_t(st), std::memory_order_release);
  touch(h.app, slot);
}

void Daemon::publish_listener(uint32_t s) {
  Socket& sock = sockets_[s];
  uint32_t n = engine_.accept_queue_len(sock.listener);
  for (auto& h : sock.holders) {
    if (!apps_[h.app].active) continue;
    abi::SocketSlot* slot = slot_of(h.app, h.slot);
    slot->accept_ready.store(n, std::memory_order_release);
    touch(h.app, slot);
  }
}

// ---- Commands ----

abi::Completion Daemon::handle(uint32_t app_id, const abi::Command& cmd, Time now, bool* reply) {
  abi::Completion c{};
  c.cookie = cmd.cookie;
  c.slot = cmd.slot;
  *reply = true;
  auto op = static_cast<abi::Op>(cmd.op);
  if (op == abi::Op::kUdpBind || op == abi::Op::kUdpConnect) return handle_udp(app_id, cmd);
  bool needs_slot = op != abi::Op::kBind && op != abi::Op::kNop &&
                    !(op == abi::Op::kConnect && cmd.slot == abi::kNoSlot);
  if (needs_slot && !valid_slot(app_id, cmd.slot)) {
    *reply = op != abi::Op::kClose && op != abi::Op::kTxReady && op != abi::Op::kRxDrained &&
             !(cmd.flags & abi::kCmdNoReply);
    c.result = -EBADF;
    return c;
  }
  Socket* sock = needs_slot ? &sockets_[apps_[app_id].slots[cmd.slot].socket] : nullptr;
  switch (op) {
    case abi::Op::kNop: c.result = 0; break;
    case abi::Op::kBind: c.result = do_bind(app_id, cmd, &c); break;
    case abi::Op::kListen: c.result = do_listen(app_id, cmd.slot, cmd.arg); break;
    case abi::Op::kConnect: c.result = do_connect(app_id, cmd, now, &c); break;
    case abi::Op::kAccept: c.result = do_accept(app_id, cmd, &c); break;
    case abi::Op::kClose:
      *reply = false;
      do_close(app_id, cmd.slot, now);
      break;
    case abi::Op::kShutdown:
      if (sock->kind != Kind::kConn) {
        c.result = -ENOTCONN;
      } else {
        if (cmd.arg == SHUT_WR || cmd.arg == SHUT_RDWR) engine_.shutdown_write(sock->conn);
        c.result = 0;
        publish_conn(apps_[app_id].slots[cmd.slot].socket);
      }
      break;
    case abi::Op::kTxReady:
      *reply = false;
      slot_of(app_id, cmd.slot)->tx_notice.store(0, std::memory_order_seq_cst);
      if (sock->kind == Kind::kConn && sock->rings.app == app_id) engine_.tx_ready(sock->conn);
      if (sock->kind == Kind::kUdp) udp_tx_ready(apps_[app_id].slots[cmd.slot].socket, now);
      break;
    case abi::Op::kRxDrained: {
      *reply = false;
      abi::SocketSlot* slot = slot_of(app_id, cmd.slot);
      slot->rx_notice.store(0, std::memory_order_seq_cst);
      slot->flags.fetch_and(~abi::kFlagWantRxDrain, std::memory_order_seq_cst);
      if (sock->kind == Kind::kConn && sock->rings.app == app_id) engine_.rx_drained(sock->conn);
      break;
    }
    case abi::Op::kSetOption:
      c.result = set_option(apps_[app_id].slots[cmd.slot].socket,
                            static_cast<abi::SockOption>(cmd.arg), cmd.arg2);
      // The application validated it against its kernel placeholder already
      // and does not wait (nginx corks and uncorks every response).
      if (cmd.flags & abi::kCmdNoReply) {
        *reply = false;
        if (c.result != 0) ++ctr_.option_errors;
      }
      break;
    default:
      c.result = -EINVAL;
      break;
  }
  return c;
}

uint16_t Daemon::pick_ephemeral_port() {
  // Linux's default ip_local_port_range.
  for (uint32_t i = 0; i < 61000 - 32768; ++i) {
    uint16_t p = next_ephemeral_;
    next_ephemeral_ = next_ephemeral_ >= 60999 ? 32768 : uint16_t(next_ephemeral_ + 1);
    if (port_owner_[p] == 0 && !engine_.port_in_use(p)) return p;
  }
  return 0;
}

int Daemon::do_bind(uint32_t app_id, const abi::Command& cmd, abi::Completion* out) {
  uint32_t ip = ntohl(cmd.ip);
  if (ip != 0 && ip != cfg_.ip) return -EADDRNOTAVAIL;
  uint16_t port = ntohs(cmd.port);
  if (port == 0) port = pick_ephemeral_port();
  if (port == 0) return -EADDRINUSE;
  if (port_owner_[port] != 0 || engine_.port_in_use(port)) return -EADDRINUSE;
  uint32_t s = alloc_socket();
  uint32_t slot = alloc_slot(app_id, s);
  if (slot == kNone) {
    free_socket(s);
    return -ENOBUFS;
  }
  Socket& sock = sockets_[s];
  sock.kind = Kind::kBound;
  sock.port = port;
  sock.owns_port = true;
  sock.inode = cmd.arg2;
  port_owner_[port] = s + 1;
  reset_slot(slot_of(app_id, slot), abi::SlotState::kBound);
  out->slot = slot;
  out->local_ip = htonl(cfg_.ip);
  out->local_port = htons(port);
  return 0;
}

int Daemon::do_listen(uint32_t app_id, uint32_t slot, int backlog) {
  uint32_t s = apps_[app_id].slots[slot].socket;
  Socket& sock = sockets_[s];
  if (sock.kind == Kind::kListener) return 0;
  if (sock.kind != Kind::kBound) return -EINVAL;
  // Linux caps the backlog at somaxconn (4096) and takes <= 0 as a small queue.
  uint32_t bl = backlog <= 0 ? 1 : std::min(backlog, 4096);
  ListenerId l;
  int rc = engine_.listen(sock.port, bl, uint64_t(s) + 1, &l);
  if (rc != 0) return rc;
  sock.kind = Kind::kListener;
  sock.listener = l;
  abi::SocketSlot* sl = slot_of(app_id, slot);
  sl->state.store(uint32_t(abi::SlotState::kListening), std::memory_order_release);
  touch(app_id, sl);
  return 0;
}

int Daemon::do_connect(uint32_t app_id, const abi::Command& cmd, Time now, abi::Completion* out) {
  uint32_t dst = ntohl(cmd.ip);
  uint16_t dport = ntohs(cmd.port);
  if (dst == 0 || dport == 0) return -ECONNREFUSED;
  // Loopback through the stack itself is not in this version.
  if (dst == cfg_.ip) return -ENETUNREACH;
  uint32_t slot = cmd.slot;
  uint32_t s;
  if (slot == abi::kNoSlot) {
    abi::Command bind_cmd = cmd;
    bind_cmd.ip = 0;
    bind_cmd.port = 0;
    abi::Completion tmp{};
    if (int rc = do_bind(app_id, bind_cmd, &tmp); rc != 0) return rc;
    slot = tmp.slot;
  }
  s = apps_[app_id].slots[slot].socket;
  Socket& sock = sockets_[s];
  if (sock.kind == Kind::kConn) return -EISCONN;
  if (sock.kind != Kind::kBound) return -EINVAL;
  abi::SocketSlot* sl = slot_of(app_id, slot);
  reset_slot(sl, abi::SlotState::kConnecting);
  ConnId c;
  int rc = engine_.connect(sock.port, dst, dport, rx_ring(app_id, slot), tx_ring(app_id, slot),
                           uint64_t(s) + 1, now, &c);
  if (rc != 0) {
    reset_slot(sl, abi::SlotState::kBound);
    return rc;
  }
  ++ctr_.connects;
  sock.kind = Kind::kConn;
  sock.conn = c;
  sock.rings = {app_id, slot};
  apply_options(s);
  out->slot = slot;
  out->local_ip = htonl(cfg_.ip);
  out->local_port = htons(sock.port);
  out->remote_ip = cmd.ip;
  out->remote_port = cmd.port;
  return 0;
}

int Daemon::do_accept(uint32_t app_id, const abi::Command& cmd, abi::Completion* out) {
  uint32_t ls = apps_[app_id].slots[cmd.slot].socket;
  if (sockets_[ls].kind != Kind::kListener) return -EINVAL;
  if (engine_.accept_queue_len(sockets_[ls].listener) == 0) return -EAGAIN;
  if (apps_[app_id].free_slots.empty()) return -ENFILE;
  ConnId c = engine_.accept(sockets_[ls].listener);
  if (c == kInvalidId) return -EAGAIN;
  uint32_t s = alloc_socket();  // may grow sockets_: no references held across it
  uint32_t slot = alloc_slot(app_id, s);
  Socket& sock = sockets_[s];
  sock.kind = Kind::kConn;
  sock.conn = c;
  sock.inode = cmd.arg2;
  sock.port = engine_.tcb(c).local_port;
  sock.rings = {app_id, slot};
  // Linux: an accepted socket starts with its listener's options.
  sock.option_set = sockets_[ls].option_set;
  std::copy(std::begin(sockets_[ls].option_value), std::end(sockets_[ls].option_value),
            std::begin(sock.option_value));
  sock.linger_zero = sockets_[ls].linger_zero;
  reset_slot(slot_of(app_id, slot), abi::SlotState::kConnected);
  engine_.attach(c, rx_ring(app_id, slot), tx_ring(app_id, slot), uint64_t(s) + 1);
  apply_options(s);
  publish_conn(s);
  publish_listener(ls);
  ++ctr_.accepts;
  const Tcb& t = engine_.tcb(c);
  out->slot = slot;
  out->local_ip = htonl(cfg_.ip);
  out->local_port = htons(t.local_port);
  out->remote_ip = htonl(t.remote_ip);
  out->remote_port = htons(t.remote_port);
  return 0;
}

// close(2) of one holder. The socket goes when its last holder does.
void Daemon::do_close(uint32_t app_id, uint32_t slot, Time now) {
  uint32_t s = apps_[app_id].slots[slot].socket;
  Socket& sock = sockets_[s];
  for (size_t i = 0; i < sock.holders.size(); ++i) {
    if (sock.holders[i].app == app_id && sock.holders[i].slot == slot) {
      sock.holders.erase(sock.holders.begin() + long(i));
      break;
    }
  }
  bool ring_owner = sock.rings.app == app_id && sock.rings.slot == slot;
  if (!sock.holders.empty()) {
    // Another process still holds it (fork). Rings stay put until it ends.
    if (ring_owner) {
      apps_[app_id].slots[slot].zombie = true;
      ++apps_[app_id].zombies;
    } else {
      free_slot(app_id, slot);
    }
    return;
  }
  switch (sock.kind) {
    case Kind::kListener:
      engine_.unlisten(sock.listener);
      [[fallthrough]];
    case Kind::kUdp:
      if (sock.kind == Kind::kUdp) engine_.udp().close(sock.udp);
      [[fallthrough]];
    case Kind::kBound:
    case Kind::kFree:
      free_slot(app_id, slot);
      if (sock.rings.app != kNone && sock.rings.app != app_id) free_slot(sock.rings.app, sock.rings.slot);
      free_socket(s);
      break;
    case Kind::kConn: {
      Holder rings = sock.rings;
      if (!ring_owner && rings.app != kNone) {
        // The ring owner closed earlier (fork); its slot is a zombie already.
        free_slot(app_id, slot);
      } else {
        apps_[app_id].slots[slot].zombie = true;
        ++apps_[app_id].zombies;
      }
      if (engine_.close(sock.conn, sock.linger_zero, now)) {
        if (rings.app != kNone) free_slot(rings.app, rings.slot);
        free_socket(s);
      }
      break;
    }
  }
}

namespace {
// The engine's name for each option the application can set (kLingerZero is
// the daemon's own: it decides how close() ends the connection).
bool engine_option(abi::SockOption o, TcpOption* out) {
  switch (o) {
    case abi::SockOption::kNoDelay: *out = TcpOption::kNoDelay; return true;
    case abi::SockOption::kKeepAlive: *out = TcpOption::kKeepAlive; return true;
    case abi::SockOption::kCork: *out = TcpOption::kCork; return true;
    case abi::SockOption::kQuickAck: *out = TcpOption::kQuickAck; return true;
    case abi::SockOption::kKeepIdle: *out = TcpOption::kKeepIdle; return true;
    case abi::SockOption::kKeepIntvl: *out = TcpOption::kKeepIntvl; return true;
    case abi::SockOption::kKeepCnt: *out = TcpOption::kKeepCnt; return true;
    case abi::SockOption::kCongestion: *out = TcpOption::kCongestion; return true;
    default: return false;
  }
}
}  // namespace

int Daemon::set_option(uint32_t s, abi::SockOption opt, uint64_t value) {
  Socket& sock = sockets_[s];
  uint32_t index = uint32_t(opt);
  if (index == 0 || index >= uint32_t(abi::SockOption::kCount)) return -ENOPROTOOPT;
  if (value > 0xffffffffu) return -EINVAL;
  if (opt == abi::SockOption::kLingerZero) {
    sock.linger_zero = value != 0;
    return 0;
  }
  TcpOption eo;
  if (!engine_option(opt, &eo)) return -ENOPROTOOPT;
  // Validate like Linux even before a connection exists.
  if ((opt == abi::SockOption::kKeepIdle || opt == abi::SockOption::kKeepIntvl) &&
      (value < 1 || value > 32767))
    return -EINVAL;
  if (opt == abi::SockOption::kKeepCnt && (value < 1 || value > 127)) return -EINVAL;
  if (opt == abi::SockOption::kCongestion && value > uint32_t(CcAlgorithm::kCubic)) return -ENOENT;
  if (sock.kind == Kind::kConn) {
    if (int rc = engine_.set_option(sock.conn, eo, uint32_t(value)); rc != 0) return rc;
  }
  sock.option_set |= 1u << index;
  sock.option_value[index] = uint32_t(value);
  return 0;
}

void Daemon::apply_options(uint32_t s) {
  Socket& sock = sockets_[s];
  if (sock.kind != Kind::kConn) return;
  for (uint32_t i = 1; i < uint32_t(abi::SockOption::kCount); ++i) {
    TcpOption eo;
    if ((sock.option_set & (1u << i)) && engine_option(abi::SockOption(i), &eo))
      (void)engine_.set_option(sock.conn, eo, sock.option_value[i]);  // validated when set
  }
}

// ---- Sockets and slots ----

uint32_t Daemon::alloc_socket() {
  uint32_t s;
  if (!free_sockets_.empty()) {
    s = free_sockets_.back();
    free_sockets_.pop_back();
  } else {
    s = uint32_t(sockets_.size());
    sockets_.emplace_back();
  }
  sockets_[s] = Socket{};
  return s;
}

void Daemon::free_socket(uint32_t s) {
  Socket& sock = sockets_[s];
  if (sock.kind == Kind::kFree) return;
  if (sock.owns_port && port_owner_[sock.port] == s + 1) port_owner_[sock.port] = 0;
  sock = Socket{};
  free_sockets_.push_back(s);
}

uint32_t Daemon::alloc_slot(uint32_t app_id, uint32_t socket) {
  App& app = apps_[app_id];
  if (app.free_slots.empty()) return kNone;
  uint32_t slot = app.free_slots.back();
  app.free_slots.pop_back();
  app.slots[slot] = SlotInfo{socket, true, false};
  sockets_[socket].holders.push_back({app_id, slot});
  return slot;
}

void Daemon::free_slot(uint32_t app_id, uint32_t slot) {
  App& app = apps_[app_id];
  SlotInfo& si = app.slots[slot];
  if (!si.used) return;
  if (si.zombie) --app.zombies;
  si = SlotInfo{};
  if (app.active) {
    slot_of(app_id, slot)->state.store(uint32_t(abi::SlotState::kFree), std::memory_order_release);
  }
  app.free_slots.push_back(slot);
  if (!app.active && app.zombies == 0) release_region(app_id);
}

void Daemon::reset_slot(abi::SocketSlot* slot, abi::SlotState state) {
  slot->flags.store(0, std::memory_order_relaxed);
  slot->error.store(0, std::memory_order_relaxed);
  slot->accept_ready.store(0, std::memory_order_relaxed);
  slot->tx_notice.store(0, std::memory_order_relaxed);
  slot->rx_notice.store(0, std::memory_order_relaxed);
  for (abi::RingIndices* r : {&slot->rx, &slot->tx}) {
    r->head.value.store(0, std::memory_order_relaxed);
    r->tail.value.store(0, std::memory_order_relaxed);
  }
  slot->generation.fetch_add(1, std::memory_order_relaxed);
  slot->state.store(uint32_t(state), std::memory_order_release);
  slot->event_seq.fetch_add(1, std::memory_order_release);
}

bool Daemon::valid_slot(uint32_t app_id, uint32_t slot) const {
  const App& app = apps_[app_id];
  return slot < app.slots.size() && app.slots[slot].used && !app.slots[slot].zombie;
}

abi::SocketSlot* Daemon::slot_of(uint32_t app_id, uint32_t slot) {
  return abi::slot(apps_[app_id].base, *apps_[app_id].hdr, slot);
}

abi::ByteRing Daemon::rx_ring(uint32_t app_id, uint32_t slot) {
  App& a = apps_[app_id];
  return abi::ByteRing(&slot_of(app_id, slot)->rx, abi::rx_bytes(a.base, *a.hdr, slot),
                       a.hdr->rx_ring_size);
}

abi::ByteRing Daemon::tx_ring(uint32_t app_id, uint32_t slot) {
  App& a = apps_[app_id];
  return abi::ByteRing(&slot_of(app_id, slot)->tx, abi::tx_bytes(a.base, *a.hdr, slot),
                       a.hdr->tx_ring_size);
}

// ---- Control plane ----

void Daemon::poll_control(Time timeout_us) {
  epoll_event evs[16];
  timespec ts{time_t(timeout_us / 1000000), long(timeout_us % 1000000) * 1000};
  int n = epoll_pwait2(epoll_fd_, evs, 16, &ts, nullptr);
  for (int i = 0; i < n; ++i) {
    uint64_t tag = evs[i].data.u64 & kTagMask;
    uint32_t val = uint32_t(evs[i].data.u64 & 0xffffffffu);
    if (tag == kTagListen) {
      accept_control();
    } else if (tag == kTagControl) {
      control_message(int(val));
    } else if (tag == kTagDoorbell) {
      uint64_t v;
      if (val < apps_.size() && apps_[val].active)
        while (read(apps_[val].daemon_doorbell, &v, sizeof(v)) > 0) {
        }
    }
  }
}

void Daemon::accept_control() {
  for (int i = 0; i < 16; ++i) {
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    ctl_conns_[fd] = kNone;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = kTagControl | uint32_t(fd);
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
  }
}

void Daemon::control_message(int fd) {
  auto it = ctl_conns_.find(fd);
  if (it == ctl_conns_.end()) return;
  uint32_t app_id = it->second;
  ctl::Request req{};
  iovec iov{&req, sizeof(req)};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * ctl::kMaxInherit)];
  msg.msg_control = cbuf;
  msg.msg_controllen = sizeof(cbuf);
  ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
  int fds[ctl::kMaxInherit];
  int nfds = 0;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      int k = int((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
      for (int j = 0; j < k && nfds < int(ctl::kMaxInherit); ++j)
        std::memcpy(&fds[nfds++], CMSG_DATA(c) + j * sizeof(int), sizeof(int));
    }
  }
  if (n <= 0) {
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    // Hang-up: the process is gone (or exec'd without us).
    for (int i = 0; i < nfds; ++i) ::close(fds[i]);
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
    ctl_conns_.erase(fd);
    if (app_id != kNone) {
      apps_[app_id].ctl_fd = -1;
      detach_app(app_id, "hang-up");
    }
    ::close(fd);
    return;
  }
  switch (static_cast<ctl::Type>(req.type)) {
    case ctl::Type::kAttach:
      if (app_id == kNone) attach_app(fd, req);
      break;
    case ctl::Type::kInherit:
      if (app_id != kNone) inherit(fd, app_id, req, fds, nfds);
      break;
    case ctl::Type::kStats: {
      std::string text = stats_text();
      if (text.size() > ctl::kStatsMax) text.resize(ctl::kStatsMax);
      send_msg(fd, text.data(), text.size(), nullptr, 0);
      break;
    }
    case ctl::Type::kStop: {
      const char ok[] = "stopping";
      send_msg(fd, ok, sizeof(ok) - 1, nullptr, 0);
      running_ = false;
      break;
    }
    default:
      break;
  }
  for (int i = 0; i < nfds; ++i) ::close(fds[i]);
}

void Daemon::attach_app(int fd, const ctl::Request& req) {
  ctl::AttachReply reply{};
  if (req.abi_version != abi::kVersion) {
    reply.status = -EPROTO;
    send_msg(fd, &reply, sizeof(reply), nullptr, 0);
    return;
  }
  uint32_t id = kNone;
  for (uint32_t a = 0; a < apps_.size(); ++a)
    if (!apps_[a].in_use) {
      id = a;
      break;
    }
  if (id == kNone) {
    reply.status = -EUSERS;
    send_msg(fd, &reply, sizeof(reply), nullptr, 0);
    return;
  }
  App& app = apps_[id];
  uint64_t size = layout_.size();
  app.memfd = memfd_create("shunt-region", MFD_CLOEXEC);
  if (app.memfd < 0 || ftruncate(app.memfd, off_t(size)) != 0) {
    reply.status = -errno;
    if (app.memfd >= 0) ::close(app.memfd);
    app.memfd = -1;
    send_msg(fd, &reply, sizeof(reply), nullptr, 0);
    return;
  }
  app.base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, app.memfd, 0);
  if (app.base == MAP_FAILED) {
    reply.status = -errno;
    ::close(app.memfd);
    app.memfd = -1;
    app.base = nullptr;
    send_msg(fd, &reply, sizeof(reply), nullptr, 0);
    return;
  }
  app.size = size;
  app.hdr = abi::header(app.base);
  auto* h = app.hdr;
  h->magic = abi::kMagic;
  h->version = abi::kVersion;
  h->size = size;
  h->region_id = id;
  h->queue_pair_count = layout_.queue_pair_count;
  h->slot_count = layout_.slot_count;
  h->rx_ring_size = layout_.rx_ring_size;
  h->tx_ring_size = layout_.tx_ring_size;
  h->nic_ip = htonl(cfg_.ip);
  h->nic_prefix_len = cfg_.prefix_len;
  h->gateway_ip = htonl(cfg_.gateway);
  h->queues_offset = layout_.queues_offset();
  h->slots_offset = layout_.slots_offset();
  h->rings_offset = layout_.rings_offset();
  app.app_doorbell = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  app.daemon_doorbell = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  app.slots.assign(layout_.slot_count, SlotInfo{});
  app.free_slots.clear();
  for (uint32_t s = layout_.slot_count; s-- > 0;) app.free_slots.push_back(s);
  app.ctl_fd = fd;
  app.pid = req.pid;
  app.zombies = 0;
  app.active = app.in_use = true;
  active_ids_.push_back(id);
  ctl_conns_[fd] = id;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kTagDoorbell | id;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, app.daemon_doorbell, &ev);
  reply.status = 0;
  reply.region_id = id;
  reply.region_size = size;
  int fds[3] = {app.memfd, app.app_doorbell, app.daemon_doorbell};
  send_msg(fd, &reply, sizeof(reply), fds, 3);
  ++ctr_.apps_attached;
  log_info("attached pid %d as region %u", req.pid, id);
}

// After fork the child asks for its own slots on the sockets it inherited. Each
// claim is checked: the fd it sends must be the placeholder registered for the
// parent's slot (same inode), so a process can only claim sockets it holds.
void Daemon::inherit(int fd, uint32_t app_id, const ctl::Request& req, int* fds, int nfds) {
  ctl::InheritReply reply{};
  uint32_t count = std::min<uint32_t>({req.count, uint32_t(nfds), ctl::kMaxInherit});
  reply.count = count;
  uint32_t parent = req.parent_region;
  for (uint32_t i = 0; i < count; ++i) {
    reply.slots[i] = abi::kNoSlot;
    struct stat st;
    if (parent >= apps_.size() || !apps_[parent].in_use || fstat(fds[i], &st) != 0) continue;
    uint32_t ps = req.parent_slots[i];
    if (ps >= apps_[parent].slots.size() || !apps_[parent].slots[ps].used) continue;
    uint32_t s = apps_[parent].slots[ps].socket;
    if (sockets_[s].inode != uint64_t(st.st_ino)) continue;
    uint32_t slot = alloc_slot(app_id, s);
    if (slot == kNone) continue;
    ++ctr_.inherits;
    Socket& sock = sockets_[s];
    abi::SocketSlot* sl = slot_of(app_id, slot);
    abi::SlotState state = sock.kind == Kind::kListener ? abi::SlotState::kListening
                           : sock.kind == Kind::kConn   ? abi::SlotState::kConnected
                                                        : abi::SlotState::kBound;
    reset_slot(sl, state);
    if (sock.kind == Kind::kListener)
      sl->accept_ready.store(engine_.accept_queue_len(sock.listener), std::memory_order_release);
    reply.slots[i] = slot;
  }
  reply.status = 0;
  send_msg(fd, &reply, sizeof(reply), nullptr, 0);
}

// The process is gone: close its sockets as the kernel closes a dead process's
// fds. Connections still sending keep their slot (and the region) until done.
void Daemon::detach_app(uint32_t app_id, const char* why) {
  App& app = apps_[app_id];
  if (!app.active) return;
  Time now = now_us();
  for (uint32_t s = 0; s < app.slots.size(); ++s)
    if (app.slots[s].used && !app.slots[s].zombie) do_close(app_id, s, now);
  app.active = false;
  active_ids_.erase(std::find(active_ids_.begin(), active_ids_.end(), app_id));
  ++ctr_.apps_detached;
  log_info("detached region %u (pid %d): %s", app_id, app.pid, why);
  if (app.daemon_doorbell >= 0) epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, app.daemon_doorbell, nullptr);
  if (app.ctl_fd >= 0) {
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, app.ctl_fd, nullptr);
    ctl_conns_.erase(app.ctl_fd);
    ::close(app.ctl_fd);
    app.ctl_fd = -1;
  }
  engine_.flush(now);
  if (app.zombies == 0) release_region(app_id);
}

void Daemon::release_region(uint32_t app_id) {
  App& app = apps_[app_id];
  if (!app.in_use) return;
  if (app.base) munmap(app.base, app.size);
  for (int* fd : {&app.memfd, &app.app_doorbell, &app.daemon_doorbell})
    if (*fd >= 0) {
      ::close(*fd);
      *fd = -1;
    }
  app.base = nullptr;
  app.hdr = nullptr;
  app.in_use = false;
  app.slots.clear();
  app.free_slots.clear();
}

std::string Daemon::stats_text() {
  std::ostringstream o;
  DeviceStats d = dev_.stats();
  const EngineCounters& e = engine_.counters();
  o << "port.driver " << dev_.driver() << "\n";
  o << "port.rx_packets " << d.rx_packets << "\nport.tx_packets " << d.tx_packets
    << "\nport.rx_bytes " << d.rx_bytes << "\nport.tx_bytes " << d.tx_bytes
    << "\nport.rx_missed " << d.rx_missed << "\nport.rx_errors " << d.rx_errors
    << "\nport.tx_errors " << d.tx_errors << "\nport.rx_nombuf " << d.rx_nombuf
    << "\nport.tx_dropped " << d.tx_dropped << "\n";
  o << "engine.rx_frames " << e.rx_frames << "\nengine.tx_frames " << e.tx_frames
    << "\narp.requests_sent " << e.arp_requests_sent << "\narp.replies_sent "
    << e.arp_replies_sent << "\nicmp.echo_replies " << e.icmp_echo_replies
    << "\ntcp.segments_in " << e.tcp_segments_in << "\ntcp.segments_out "
    << e.tcp_segments_out << "\ntcp.passive_opens " << e.tcp_passive_opens
    << "\ntcp.active_opens " << e.tcp_active_opens << "\ntcp.established "
    << e.tcp_established << "\ntcp.connections_accepted " << ctr_.accepts
    << "\ntcp.resets_sent " << e.tcp_resets_sent << "\ntcp.resets_received "
    << e.tcp_resets_received << "\ntcp.retransmits " << e.tcp_retransmits
    << "\ntcp.timeouts " << e.tcp_timeouts << "\ntcp.time_wait_recycled "
    << e.tcp_time_wait_recycled << "\ntcp.live_connections " << engine_.live_connections()
    << "\ntcp.fast_retransmits " << e.tcp_fast_retransmits << "\ntcp.recoveries "
    << e.tcp_recoveries << "\ntcp.sack_retransmits " << e.tcp_sack_retransmits
    << "\ntcp.ooo_queued " << e.tcp_ooo_queued << "\ntcp.dsacks_sent " << e.tcp_dsacks_sent
    << "\ntcp.dsacks_received " << e.tcp_dsacks_received << "\ntcp.challenge_acks "
    << e.tcp_challenge_acks << "\ntcp.syn_cookies_sent " << e.tcp_syn_cookies_sent
    << "\ntcp.syn_cookies_accepted " << e.tcp_syn_cookies_accepted
    << "\ntcp.keepalive_probes " << e.tcp_keepalive_probes << "\ntcp.delayed_acks "
    << e.tcp_delayed_acks << "\ntcp.fast_path " << e.tcp_fast_path
    << "\ntcp.tail_loss_probes " << e.tcp_tail_loss_probes << "\ntcp.rto_expired "
    << e.tcp_rto_expired
    << "\nicmp.errors_received " << e.icmp_errors_received << "\nip.pmtu_updates "
    << e.pmtu_updates << "\n";
  o << udp_stats_text();
  for (size_t i = 1; i < size_t(Drop::kCount); ++i)
    o << "drop." << drop_name(static_cast<Drop>(i)) << " " << e.drops[i] << "\n";
  for (auto [dir, f] : {std::pair{"rx", &d.rx_fault}, std::pair{"tx", &d.tx_fault}})
    o << "fault." << dir << "_frames " << f->frames << "\nfault." << dir << "_dropped "
      << f->dropped << "\nfault." << dir << "_duplicated " << f->duplicated << "\nfault."
      << dir << "_dup_failed " << f->dup_failed << "\nfault." << dir << "_corrupted "
      << f->corrupted << "\nfault." << dir << "_reordered " << f->reordered << "\nfault."
      << dir << "_delayed " << f->delayed << "\nfault." << dir << "_delay_overflow "
      << f->delay_overflow << "\n";
  uint32_t active = 0;
  for (auto& a : apps_) active += a.active;
  o << "apps.active " << active << "\napps.attached " << ctr_.apps_attached
    << "\napps.detached " << ctr_.apps_detached << "\napps.killed " << ctr_.apps_killed
    << "\ndaemon.commands " << ctr_.commands << "\ndaemon.doorbells " << ctr_.doorbells_rung
    << "\ndaemon.sleeps " << ctr_.sleeps << "\ndaemon.inherits " << ctr_.inherits
    << "\ndaemon.option_errors " << ctr_.option_errors << "\n";
  return o.str();
}

}  // namespace shunt
