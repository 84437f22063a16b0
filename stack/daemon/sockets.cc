#include "daemon/sockets.hh"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

namespace shunt {

namespace {
// Linux's default ip_local_port_range.
constexpr uint16_t kEphemeralFirst = 32768;
constexpr uint16_t kEphemeralLast = 60999;
constexpr uint32_t kEphemeralCount = kEphemeralLast - kEphemeralFirst + 1;

bool ephemeral(uint16_t port) { return port >= kEphemeralFirst && port <= kEphemeralLast; }

// The next port of the ephemeral range, from *cursor on, that in_use says is free;
// 0 when none is.
template <typename InUse>
uint16_t next_free_port(uint16_t* cursor, InUse in_use) {
  for (uint32_t i = 0; i < kEphemeralCount; ++i) {
    uint16_t p = *cursor;
    *cursor = p >= kEphemeralLast ? kEphemeralFirst : uint16_t(p + 1);
    if (!in_use(p)) return p;
  }
  return 0;
}

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
    case abi::SockOption::kRcvBuf: *out = TcpOption::kRcvBuf; return true;
    case abi::SockOption::kSndBuf: *out = TcpOption::kSndBuf; return true;
    case abi::SockOption::kTos: *out = TcpOption::kTos; return true;
    case abi::SockOption::kTtl: *out = TcpOption::kTtl; return true;
    default: return false;
  }
}

ctl::LinuxTcpState linux_state(TcpState s) {
  using L = ctl::LinuxTcpState;
  switch (s) {
    case TcpState::kClosed: return L::kClose;
    case TcpState::kListen: return L::kListen;
    case TcpState::kSynSent: return L::kSynSent;
    case TcpState::kSynReceived: return L::kSynRecv;
    case TcpState::kEstablished: return L::kEstablished;
    case TcpState::kFinWait1: return L::kFinWait1;
    case TcpState::kFinWait2: return L::kFinWait2;
    case TcpState::kCloseWait: return L::kCloseWait;
    case TcpState::kClosing: return L::kClosing;
    case TcpState::kLastAck: return L::kLastAck;
    case TcpState::kTimeWait: return L::kTimeWait;
  }
  return L::kClose;
}
}  // namespace

SocketTable::SocketTable(AppRegistry& apps, Engine& engine, const NicAddress& nic,
                         DaemonCounters& ctr)
    : apps_(apps), engine_(engine), nic_(nic), ctr_(ctr), port_owner_(65536, 0) {
  sockets_.reserve(size_t(apps.capacity()) * 64);
  exclusive_due_.reserve(256);  // grows only past 256 listeners with arrivals in one turn
}

// ---- Commands ----

abi::Completion SocketTable::handle(uint32_t app, const abi::Command& cmd, Time now,
                                    bool* reply, abi::TcpInfo* info) {
  using abi::Op;
  abi::Completion c{};
  c.cookie = cmd.cookie;
  c.slot = cmd.slot;
  const auto op = static_cast<Op>(cmd.op);
  *reply = op != Op::kClose && op != Op::kTxReady && op != Op::kRxDrained &&
           op != Op::kAccepted && !(op == Op::kSetOption && (cmd.flags & abi::kCmdNoReply));
  // A command on a socket names a slot of this application, one it was handed and
  // has not closed; anything else is answered like a bad fd.
  const bool names_slot =
      op == Op::kListen || op == Op::kAccept || op == Op::kClose || op == Op::kShutdown ||
      op == Op::kTxReady || op == Op::kRxDrained || op == Op::kSetOption || op == Op::kTcpInfo ||
      op == Op::kAccepted ||
      ((op == Op::kConnect || op == Op::kUdpConnect) && cmd.slot != abi::kNoSlot);
  if (names_slot && !apps_.valid_slot(app, cmd.slot)) {
    ++ctr_.bad_commands;
    c.result = -EBADF;
    return c;
  }
  switch (op) {
    case Op::kNop: c.result = 0; break;
    case Op::kBind: c.result = do_bind(app, cmd, &c); break;
    case Op::kUdpBind: c.result = do_udp_bind(app, cmd, &c); break;
    case Op::kConnect: c.result = do_connect(app, cmd, now, &c); break;
    case Op::kUdpConnect: c.result = do_udp_connect(app, cmd, &c); break;
    case Op::kListen: c.result = do_listen(app, cmd.slot, cmd.arg); break;
    case Op::kAccept: c.result = do_accept(app, cmd, &c); break;
    case Op::kAccepted: do_accepted(app, cmd); break;
    case Op::kClose: do_close(app, cmd.slot, now); break;
    case Op::kShutdown: c.result = do_shutdown(app, cmd.slot, cmd.arg, now); break;
    case Op::kTxReady: do_tx_ready(app, cmd.slot, now); break;
    case Op::kRxDrained: do_rx_drained(app, cmd.slot); break;
    case Op::kTcpInfo: c.result = do_tcp_info(app, cmd.slot, now, info); break;
    case Op::kSetOption:
      c.result = set_option(socket_of(app, cmd.slot), static_cast<abi::SockOption>(cmd.arg),
                            cmd.arg2);
      // The application validated it against its kernel placeholder already and
      // does not wait (nginx corks and uncorks every response).
      if (!*reply && c.result != 0) ++ctr_.option_errors;
      break;
    default:
      ++ctr_.bad_commands;
      c.result = -EINVAL;
      break;
  }
  return c;
}

uint16_t SocketTable::pick_ephemeral_port() {
  if (ephemeral_owned_ >= kEphemeralCount) return 0;  // all taken: no scan
  return next_free_port(&next_ephemeral_,
                        [&](uint16_t p) { return port_owner_[p] != 0 || engine_.port_in_use(p); });
}

uint16_t SocketTable::pick_udp_port() {
  // UDP ports are a space of their own.
  return next_free_port(&next_udp_ephemeral_,
                        [&](uint16_t p) { return engine_.udp().port_in_use(p); });
}

int SocketTable::do_bind(uint32_t app, const abi::Command& cmd, abi::Completion* out) {
  uint32_t ip = ntohl(cmd.ip);
  if (ip != 0 && ip != nic_.ip) return -EADDRNOTAVAIL;
  uint16_t port = ntohs(cmd.port);
  if (port == 0) port = pick_ephemeral_port();
  if (port == 0) return -EADDRINUSE;
  if (port_owner_[port] != 0 || engine_.port_in_use(port)) return -EADDRINUSE;
  uint32_t s = alloc_socket();
  uint32_t slot = add_holder(app, s);
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
  if (ephemeral(port)) ++ephemeral_owned_;
  apps_.app(app).region.reset_slot(slot, abi::SlotState::kBound);
  out->slot = slot;
  out->local_ip = htonl(nic_.ip);
  out->local_port = htons(port);
  return 0;
}

int SocketTable::do_listen(uint32_t app, uint32_t slot, int backlog) {
  uint32_t s = socket_of(app, slot);
  Socket& sock = sockets_[s];
  if (sock.kind == Kind::kListener) return 0;
  if (sock.kind != Kind::kBound) return -EINVAL;
  // As Linux: the backlog capped at somaxconn (4096), a negative one (unsigned
  // there) is somaxconn, and 0 still queues one connection (accept_queue_full).
  uint32_t bl = backlog < 0 ? 4096 : uint32_t(std::min(backlog, 4096));
  ListenerId l;
  int rc = engine_.listen(sock.port, bl, uint64_t(s) + 1, &l);
  if (rc != 0) return rc;
  sock.kind = Kind::kListener;
  sock.listener = l;
  apps_.app(app).region.set_state(slot, abi::SlotState::kListening);
  touch(app, slot);
  return 0;
}

int SocketTable::do_connect(uint32_t app, const abi::Command& cmd, Time now,
                            abi::Completion* out) {
  uint32_t dst = ntohl(cmd.ip);
  uint16_t dport = ntohs(cmd.port);
  if (dst == 0 || dport == 0) return -ECONNREFUSED;
  int rc = 0;
  uint32_t slot = slot_to_connect(app, cmd, /*udp=*/false, &rc);
  if (rc != 0) return rc;
  uint32_t s = socket_of(app, slot);
  Socket& sock = sockets_[s];
  if (sock.kind == Kind::kConn) return -EISCONN;
  if (sock.kind != Kind::kBound) return -EINVAL;
  AppRegion& region = apps_.app(app).region;
  region.reset_slot(slot, abi::SlotState::kConnecting);
  ConnId c;
  rc = engine_.connect(sock.port, dst, dport, region.rx_end(slot), region.tx_end(slot),
                       uint64_t(s) + 1, now, &c);
  if (rc != 0) {
    region.reset_slot(slot, abi::SlotState::kBound);
    return rc;
  }
  ++ctr_.connects;
  sock.kind = Kind::kConn;
  sock.conn = c;
  sock.rings = {app, slot};
  apply_options(s);
  out->slot = slot;
  out->local_ip = htonl(nic_.ip);
  out->local_port = htons(sock.port);
  out->remote_ip = cmd.ip;
  out->remote_port = cmd.port;
  return 0;
}

// The slot a connect names, or (kNoSlot: connect without bind) a fresh one bound
// to an ephemeral port, as the kernel autobinds.
uint32_t SocketTable::slot_to_connect(uint32_t app, const abi::Command& cmd, bool udp, int* rc) {
  if (cmd.slot != abi::kNoSlot) return cmd.slot;
  abi::Command bind_cmd = cmd;
  bind_cmd.ip = 0;
  bind_cmd.port = 0;
  abi::Completion tmp{};
  *rc = udp ? do_udp_bind(app, bind_cmd, &tmp) : do_bind(app, bind_cmd, &tmp);
  return tmp.slot;
}

int SocketTable::do_accept(uint32_t app, const abi::Command& cmd, abi::Completion* out) {
  uint32_t ls = socket_of(app, cmd.slot);
  if (sockets_[ls].kind != Kind::kListener) return -EINVAL;
  if (engine_.accept_queue_len(sockets_[ls].listener) == 0) return -EAGAIN;
  if (apps_.app(app).free_slots.empty()) return -ENFILE;
  ConnId c = engine_.accept(sockets_[ls].listener);
  if (c == kInvalidId) return -EAGAIN;
  uint32_t slot = accept_into(app, ls, c, cmd.arg2);
  const Tcb& t = engine_.tcb(c);
  out->slot = slot;
  out->local_ip = htonl(nic_.ip);
  out->local_port = htons(t.local_port);
  out->remote_ip = htonl(t.remote_ip);
  out->remote_port = htons(t.remote_port);
  hand_ahead(app, cmd.slot, ls);
  return 0;
}

// A connection the engine accepted, given a slot of `app` (which has one free).
// Returns the slot.
uint32_t SocketTable::accept_into(uint32_t app, uint32_t ls, ConnId c, uint64_t inode) {
  uint32_t s = alloc_socket();  // may grow sockets_: no references held across it
  uint32_t slot = add_holder(app, s);
  Socket& sock = sockets_[s];
  Socket& lsock = sockets_[ls];
  sock.kind = Kind::kConn;
  sock.conn = c;
  sock.inode = inode;
  sock.port = engine_.tcb(c).local_port;
  sock.rings = {app, slot};
  // Linux: an accepted socket starts with its listener's options.
  sock.option_set = lsock.option_set;
  std::copy(std::begin(lsock.option_value), std::end(lsock.option_value),
            std::begin(sock.option_value));
  sock.linger_zero = lsock.linger_zero;
  AppRegion& region = apps_.app(app).region;
  region.reset_slot(slot, abi::SlotState::kConnected);
  engine_.attach(c, region.rx_end(slot), region.tx_end(slot), uint64_t(s) + 1);
  apply_options(s);
  publish_conn(s);
  publish_listener(ls);
  ++ctr_.accepts;
  return slot;
}

// ---- Connections handed ahead (abi::HandedConn) ----
//
// A process that asks for a connection while more wait is handed a few more at
// once, so its next accept() calls make no round trip (a loaded daemon's turn is
// what an accept waited for, and nginx accepts one connection per pass of its
// event loop). At most kHandAhead a call and kMostUnclaimed unclaimed.
namespace {
constexpr uint32_t kHandAhead = 16;
constexpr size_t kMostUnclaimed = 64;
}  // namespace

void SocketTable::hand_ahead(uint32_t app, uint32_t lslot, uint32_t ls) {
  const Holder to{app, lslot};
  auto& hs = sockets_[ls].handouts;
  size_t i = 0;
  while (i < hs.size() && !(hs[i].to == to)) ++i;
  if (i == hs.size()) hs.push_back({to, apps_.app(app).region.rx_end(lslot), {}});
  for (uint32_t n = 0; n < kHandAhead; ++n) {
    Socket::Handout& h = sockets_[ls].handouts[i];  // again: accept_into may move sockets_
    if (h.unclaimed.size() >= kMostUnclaimed || h.ring.writable() < abi::kHandedRecord) break;
    if (engine_.accept_queue_len(sockets_[ls].listener) == 0) break;
    if (apps_.app(app).free_slots.empty()) break;
    ConnId c = engine_.accept(sockets_[ls].listener);
    if (c == kInvalidId) break;
    uint32_t slot = accept_into(app, ls, c, 0);
    uint32_t s = socket_of(app, slot);
    sockets_[s].handed_by = ls;
    Socket::Handout& ho = sockets_[ls].handouts[i];
    ho.unclaimed.push_back(s);
    const Tcb& t = engine_.tcb(c);
    const abi::HandedConn rec{slot, apps_.app(app).region.generation(slot)};
    abi::dgram_push(ho.ring, htonl(t.remote_ip), htons(t.remote_port),
                    reinterpret_cast<const uint8_t*>(&rec), sizeof rec);
    ++ctr_.accepts_handed;
    ++ho.due;
    list_exclusive(ls);
  }
  touch(app, lslot);
}

// kAccepted: the process took a handed connection's record and made it an fd.
void SocketTable::do_accepted(uint32_t app, const abi::Command& cmd) {
  uint32_t s = socket_of(app, cmd.slot);
  if (sockets_[s].handed_by == kNone) return;  // claimed already (a fork child's kInherit)
  if (apps_.app(app).region.generation(cmd.slot) != uint32_t(cmd.arg)) {
    ++ctr_.bad_commands;  // a record of an earlier use of the slot
    return;
  }
  claim(s, cmd.arg2);
}

void SocketTable::claim(uint32_t s, uint64_t inode) {
  unhand(s);
  sockets_[s].inode = inode;
}

void SocketTable::unhand(uint32_t s) {
  const uint32_t ls = sockets_[s].handed_by;
  sockets_[s].handed_by = kNone;
  if (ls >= sockets_.size()) return;
  for (Socket::Handout& h : sockets_[ls].handouts) {
    auto it = std::find(h.unclaimed.begin(), h.unclaimed.end(), s);
    if (it != h.unclaimed.end()) {
      h.unclaimed.erase(it);
      return;
    }
  }
}

// `from` gives the listener up (close, or its process ends): what it was handed
// and has not claimed goes back to the listener's queue while another process
// holds the listener; else it is reset, as the kernel resets what a closing
// listener queued.
void SocketTable::take_back_handed(uint32_t ls, Holder from, Time now) {
  auto& hs = sockets_[ls].handouts;
  auto it = std::find_if(hs.begin(), hs.end(), [&](const Socket::Handout& h) { return h.to == from; });
  if (it == hs.end()) return;
  std::vector<uint32_t> conns = std::move(it->unclaimed);
  hs.erase(it);
  const bool others = sockets_[ls].holders.size() > 1;
  for (uint32_t c : conns) {
    Socket& cs = sockets_[c];
    cs.handed_by = kNone;
    if (cs.kind != Kind::kConn) continue;
    const Holder r = cs.rings;
    if (others && engine_.requeue(cs.conn, sockets_[ls].listener)) {
      drop_holder(c, r.app, r.slot);
      apps_.free_slot(r.app, r.slot);
      free_socket(c);
      ++ctr_.accepts_requeued;
    } else {
      cs.linger_zero = true;
      do_close(r.app, r.slot, now);
    }
  }
  if (sockets_[ls].kind == Kind::kListener) publish_listener(ls);
}

// close(2) of one holder. The socket goes when its last holder does.
void SocketTable::do_close(uint32_t app, uint32_t slot, Time now) {
  uint32_t s = socket_of(app, slot);
  if (sockets_[s].kind == Kind::kListener) take_back_handed(s, {app, slot}, now);
  if (sockets_[s].handed_by != kNone) unhand(s);
  Socket& sock = sockets_[s];
  drop_holder(s, app, slot);
  const bool ring_owner = sock.rings == Holder{app, slot};
  if (!sock.holders.empty()) {
    // Another process still holds it (fork): the rings stay until it ends.
    if (ring_owner) apps_.make_zombie(app, slot);
    else apps_.free_slot(app, slot);
    return;
  }
  const Holder rings = sock.rings;
  switch (sock.kind) {
    case Kind::kConn:
      // The slot whose rings the engine drains stays (a zombie) until it is done;
      // any other (the ring owner closed earlier and is a zombie already, or the
      // rings are gone) goes now.
      if (ring_owner) apps_.make_zombie(app, slot);
      else apps_.free_slot(app, slot);
      if (engine_.close(sock.conn, sock.linger_zero, now)) {
        if (rings.app != kNone) apps_.free_slot(rings.app, rings.slot);
        free_socket(s);
      }
      return;
    case Kind::kListener: engine_.unlisten(sock.listener); break;
    case Kind::kUdp: engine_.udp().close(sock.udp); break;
    case Kind::kBound:
    case Kind::kDead:
    case Kind::kFree: break;
  }
  apps_.free_slot(app, slot);
  if (rings.app != kNone && !ring_owner) apps_.free_slot(rings.app, rings.slot);
  free_socket(s);
}

int SocketTable::do_shutdown(uint32_t app, uint32_t slot, int how, Time now) {
  uint32_t s = socket_of(app, slot);
  Socket& sock = sockets_[s];
  if (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR) return -EINVAL;
  if (sock.kind == Kind::kListener) return how == SHUT_WR ? 0 : unlisten(s, now);
  if (sock.kind != Kind::kConn) return -ENOTCONN;
  if (how != SHUT_RD) engine_.shutdown_write(sock.conn);
  publish_conn(s);
  return 0;
}

// shutdown(SHUT_RD) of a listener, as Linux's inet_shutdown: it stops listening
// and stays bound to its port (it may listen again). Connections queued or
// handed ahead and not taken are reset, and every thread waiting to accept on
// it, in every process holding it, wakes to find it no longer listening.
int SocketTable::unlisten(uint32_t s, Time now) {
  const std::vector<Holder> holders = sockets_[s].holders;  // a control call: a copy is fine
  for (const Holder& h : holders) take_back_handed(s, h, now);
  Socket& sock = sockets_[s];
  if (sock.kind != Kind::kListener) return 0;
  engine_.unlisten(sock.listener);
  sock.kind = Kind::kBound;
  sock.accept_published = 0;
  for (const Holder& h : sock.holders) {
    App& a = apps_.app(h.app);
    if (!a.active) continue;
    a.region.set_accept_ready(h.slot, 0);
    a.region.set_state(h.slot, abi::SlotState::kBound);
    apps_.mark_dirty(h.app, a.region.wake_cells_exclusive(h.slot));  // left out of slot changes
    touch(h.app, h.slot);
  }
  return 0;
}

void SocketTable::do_tx_ready(uint32_t app, uint32_t slot, Time now) {
  uint32_t s = socket_of(app, slot);
  Socket& sock = sockets_[s];
  // The notice was raised on the slot whose rings carry the bytes (after fork,
  // the ring owner's, whichever holder wrote).
  const Holder h = sock.rings;
  if (h.app == kNone || !apps_.app(h.app).in_use) return;
  if (sock.kind == Kind::kUdp) {
    udp_tx_ready(s, now);
    return;
  }
  apps_.app(h.app).region.clear_tx_notice(h.slot);
  if (sock.kind == Kind::kConn) engine_.tx_ready(sock.conn);
}

void SocketTable::do_rx_drained(uint32_t app, uint32_t slot) {
  uint32_t s = socket_of(app, slot);
  Socket& sock = sockets_[s];
  const Holder h = sock.rings;
  if (sock.kind != Kind::kConn || h.app == kNone || !apps_.app(h.app).in_use) return;
  AppRegion& region = apps_.app(h.app).region;
  region.clear_rx_notice(h.slot);
  region.want_rx_drain(h.slot, false);
  engine_.rx_drained(sock.conn);
}

int SocketTable::set_option(uint32_t s, abi::SockOption opt, uint64_t value) {
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
  if (opt == abi::SockOption::kCongestion && value > uint32_t(kLastCcAlgorithm)) return -ENOENT;
  if ((opt == abi::SockOption::kRcvBuf || opt == abi::SockOption::kSndBuf) && value == 0) return -EINVAL;
  if ((opt == abi::SockOption::kTos && value > 255) || (opt == abi::SockOption::kTtl && (value < 1 || value > 255)))
    return -EINVAL;
  if (sock.kind == Kind::kConn) {
    if (int rc = engine_.set_option(sock.conn, eo, uint32_t(value)); rc != 0) return rc;
  } else if (sock.kind == Kind::kUdp && (opt == abi::SockOption::kTos || opt == abi::SockOption::kTtl)) {
    UdpSocket& u = engine_.udp().socket(sock.udp);  // a datagram keeps its ECN bits, as Linux's
    (opt == abi::SockOption::kTos ? u.tos : u.ttl) = uint8_t(value);
  }
  sock.option_set |= 1u << index;
  sock.option_value[index] = uint32_t(value);
  return 0;
}

void SocketTable::apply_options(uint32_t s) {
  Socket& sock = sockets_[s];
  if (sock.kind != Kind::kConn) return;
  for (uint32_t i = 1; i < uint32_t(abi::SockOption::kCount); ++i) {
    TcpOption eo;
    if ((sock.option_set & (1u << i)) && engine_option(abi::SockOption(i), &eo))
      (void)engine_.set_option(sock.conn, eo, sock.option_value[i]);  // validated when set
  }
}

// ---- An application goes ----

void SocketTable::close_all(uint32_t app, Ending how, Time now) {
  App& a = apps_.app(app);
  if (!a.in_use) return;
  // Listeners first: what they were handed and never saw goes back to the queue
  // (another process may hold the listener) before it is closed as this
  // process's own.
  if (how == Ending::kAsKernel)
    for (uint32_t slot = 0; slot < a.slots.size(); ++slot) {
      const SlotInfo si = a.slots[slot];
      if (si.used && !si.zombie && sockets_[si.socket].kind == Kind::kListener)
        take_back_handed(si.socket, {app, slot}, now);
    }
  for (uint32_t slot = 0; slot < a.slots.size(); ++slot) {
    const SlotInfo si = a.slots[slot];
    if (!si.used) continue;
    Socket& sock = sockets_[si.socket];
    // Cut off: nothing may use this region after this, so what runs on its rings
    // (its connections, zombies included, and those it shares with a fork child)
    // ends now. A socket it only shares through another holder's rings just
    // loses this holder, as with close().
    if (how == Ending::kReset && sock.rings.app == app && sock.kind != Kind::kDead)
      kill_socket(si.socket, now);
    // Zombies of a live socket go on draining, as orphans do.
    if (!si.zombie || sock.kind == Kind::kDead) do_close(app, slot, now);
  }
}

void SocketTable::kill_socket(uint32_t s, Time now) {
  Socket& sock = sockets_[s];
  const Holder rings = sock.rings;
  switch (sock.kind) {
    case Kind::kConn: (void)engine_.close(sock.conn, /*abort=*/true, now); break;  // RST
    case Kind::kUdp: engine_.udp().close(sock.udp); break;
    case Kind::kListener: engine_.unlisten(sock.listener); break;
    default: break;
  }
  // Holders in other processes read the ring owner's slot: tell them there.
  if (rings.app != kNone && apps_.app(rings.app).in_use) {
    apps_.app(rings.app).region.publish_conn(
        rings.slot, abi::SlotState::kClosed, abi::kFlagReset | abi::kFlagPeerFin, ECONNRESET);
    touch_holders(sock);
  }
  release_port(s);
  sock.kind = Kind::kDead;
  sock.conn = kInvalidId;
  sock.listener = kInvalidId;
  sock.udp = kNoUdp;
  sock.rings = {kNone, kNone};
}

void SocketTable::shutdown_all() {
  for (Socket& sock : sockets_)
    if (sock.kind == Kind::kConn) engine_.shutdown_write(sock.conn);
}

// ---- Engine events to slots ----

void SocketTable::publish_events() {
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
    const Holder h = sock.rings;
    if (ev & kEvDetached) {
      // The engine is done with the rings: a closed slot can go back to its app.
      if (h.app != kNone && apps_.app(h.app).slots[h.slot].zombie) {
        apps_.free_slot(h.app, h.slot);
        sock.rings = {kNone, kNone};
      }
      if (sock.holders.empty()) free_socket(s);
      return;
    }
    // A closed ring owner's slot still tells the other holders (a fork child
    // serving a connection its parent closed or left by exiting).
    if (h.app == kNone || (apps_.app(h.app).slots[h.slot].zombie && sock.holders.empty())) return;
    if (ev & kEvWindowLow) {
      AppRegion& region = apps_.app(h.app).region;
      region.want_rx_drain(h.slot, true);
      // The application may have drained before it could see the flag.
      const abi::ProducerEnd& rx = engine_.tcb(sock.conn).rx;
      if (rx.valid() && rx.writable() >= rx.capacity() / 2) {
        region.want_rx_drain(h.slot, false);
        engine_.rx_drained(sock.conn);
      }
    }
    publish_conn(s);
  });
}

void SocketTable::publish_conn(uint32_t s) {
  Socket& sock = sockets_[s];
  const Holder h = sock.rings;
  if (h.app == kNone || !apps_.app(h.app).in_use) return;  // in use: see publish_events
  const Tcb& t = engine_.tcb(sock.conn);
  abi::SlotState st = abi::SlotState::kConnected;
  if (t.state == TcpState::kSynSent || t.state == TcpState::kSynReceived)
    st = abi::SlotState::kConnecting;
  else if (t.state == TcpState::kClosed || t.state == TcpState::kTimeWait)
    st = abi::SlotState::kClosed;  // as Linux: a socket in TIME-WAIT is closed to its user
  uint32_t flags = 0;
  if (t.peer_fin) flags |= abi::kFlagPeerFin;
  if (t.error != 0) flags |= abi::kFlagReset;
  if (t.fin_queued) flags |= abi::kFlagWriteShut;
  apps_.app(h.app).region.publish_conn(h.slot, st, flags, t.error);
  touch_holders(sock);
}

void SocketTable::publish_listener(uint32_t s) {
  Socket& sock = sockets_[s];
  uint32_t n = engine_.accept_queue_len(sock.listener);
  if (n > sock.accept_published) {
    list_exclusive(s);
    sock.exclusive_due += n - sock.accept_published;
  }
  sock.accept_published = n;
  for (const Holder& h : sock.holders) {
    if (!apps_.app(h.app).active) continue;
    apps_.app(h.app).region.set_accept_ready(h.slot, n);
    touch(h.app, h.slot);
  }
}

// The cells of holder h asleep through an exclusive entry on its slot that may be
// woken for one more connection: not those woken already this round (App::wake),
// nor one woken for an earlier connection and not asleep again since (as Linux
// passes over an epoll whose waiter it already woke).
uint64_t SocketTable::exclusive_sleepers(const Holder& h) const {
  const App& a = apps_.app(h.app);
  if (!a.active) return 0;
  uint64_t asleep = a.region.wake_cells_exclusive(h.slot) & a.region.cells_sleeping() & ~a.wake;
  for (uint64_t w = asleep & a.exclusive_woken; w != 0; w &= w - 1) {
    const uint32_t c = uint32_t(__builtin_ctzll(w));
    if (a.region.sleep_seq(c) == a.exclusive_seq[c]) asleep &= ~(uint64_t{1} << c);
  }
  return asleep;
}

bool SocketTable::wake_one_exclusive(const Holder& h) {
  const uint64_t asleep = exclusive_sleepers(h);
  if (asleep == 0) return false;
  const uint64_t pick = asleep & (~asleep + 1);  // its lowest such cell
  const uint32_t c = uint32_t(__builtin_ctzll(pick));
  App& a = apps_.app(h.app);
  a.exclusive_woken |= pick;
  a.exclusive_seq[c] = a.region.sleep_seq(c);
  apps_.mark_dirty(h.app, pick);
  return true;
}

void SocketTable::wake_exclusive() {
  for (uint32_t s : exclusive_due_) {
    Socket& sock = sockets_[s];
    uint32_t due = sock.exclusive_due;
    sock.exclusive_due = 0;
    sock.exclusive_listed = false;
    // Connections handed ahead to a process: one of its own sleeping exclusive
    // waiters each (the thread that asked is awake; the others would not hear of
    // them, as the queue they wait for never showed them).
    for (Socket::Handout& ho : sock.handouts) {
      while (ho.due > 0 && wake_one_exclusive(ho.to)) --ho.due;
      ho.due = 0;
    }
    const size_t n = sock.holders.size();
    if (sock.kind != Kind::kListener || n == 0) continue;
    // One sleeping exclusive waiter a connection, the holders taking turns from
    // the one after the last woken; a holder with none to wake is passed over: its
    // waiters find the connection queued when they next look, awake. Each pass
    // over the holders wakes one more thread or ends the loop.
    for (bool woke = true; due > 0 && woke;) {
      woke = false;
      const size_t start = sock.exclusive_turn;
      for (size_t k = 0; k < n && due > 0; ++k) {
        const size_t i = (start + k) % n;
        if (!wake_one_exclusive(sock.holders[i])) continue;
        sock.exclusive_turn = uint32_t((i + 1) % n);
        --due;
        woke = true;
      }
    }
  }
  exclusive_due_.clear();
}

// ---- Fork ----

uint32_t SocketTable::inherit(uint32_t child, uint32_t parent, uint32_t parent_slot,
                              uint64_t inode) {
  if (parent >= apps_.capacity() || !apps_.app(parent).in_use) return abi::kNoSlot;
  const App& p = apps_.app(parent);
  if (parent_slot >= p.slots.size() || !p.slots[parent_slot].used) return abi::kNoSlot;
  uint32_t s = p.slots[parent_slot].socket;
  // Handed to the parent, and forked before its kAccepted arrived.
  if (sockets_[s].handed_by != kNone && sockets_[s].inode == 0) claim(s, inode);
  if (sockets_[s].inode != inode || sockets_[s].kind == Kind::kFree) return abi::kNoSlot;
  uint32_t slot = add_holder(child, s);
  if (slot == kNone) return abi::kNoSlot;
  Socket& sock = sockets_[s];
  AppRegion& region = apps_.app(child).region;
  abi::SlotState state = sock.kind == Kind::kListener ? abi::SlotState::kListening
                         : sock.kind == Kind::kConn   ? abi::SlotState::kConnected
                                                      : abi::SlotState::kBound;
  region.reset_slot(slot, state);
  if (sock.kind == Kind::kListener)
    region.set_accept_ready(slot, engine_.accept_queue_len(sock.listener));
  return slot;
}

// ---- Bookkeeping ----

uint32_t SocketTable::alloc_socket() {
  uint32_t s;
  if (!free_.empty()) {
    s = free_.back();
    free_.pop_back();
  } else {
    s = uint32_t(sockets_.size());
    sockets_.emplace_back();
  }
  sockets_[s] = Socket{};
  sockets_[s].kind = Kind::kBound;  // in use; the caller sets what it is
  return s;
}

void SocketTable::release_port(uint32_t s) {
  Socket& sock = sockets_[s];
  if (sock.owns_port && port_owner_[sock.port] == s + 1) {
    port_owner_[sock.port] = 0;
    if (ephemeral(sock.port)) --ephemeral_owned_;
  }
  sock.owns_port = false;
}

void SocketTable::free_socket(uint32_t s) {
  Socket& sock = sockets_[s];
  if (sock.kind == Kind::kFree) return;
  if (sock.handed_by != kNone) unhand(s);
  for (const Socket::Handout& h : sock.handouts)
    for (uint32_t c : h.unclaimed) sockets_[c].handed_by = kNone;
  release_port(s);
  sock = Socket{};
  free_.push_back(s);
}

uint32_t SocketTable::add_holder(uint32_t app, uint32_t s) {
  uint32_t slot = apps_.alloc_slot(app, s);
  if (slot != kNone) sockets_[s].holders.push_back({app, slot});
  return slot;
}

void SocketTable::drop_holder(uint32_t s, uint32_t app, uint32_t slot) {
  auto& hs = sockets_[s].holders;
  auto it = std::find(hs.begin(), hs.end(), Holder{app, slot});
  if (it != hs.end()) hs.erase(it);
}

bool SocketTable::reachable(uint32_t dst) const {
  uint32_t mask = nic_.prefix_len == 0 ? 0 : ~uint32_t{0} << (32 - nic_.prefix_len);
  return (dst & mask) == (nic_.ip & mask) || nic_.gateway != 0;
}

// ---- shunt ss ----

// getsockopt(TCP_INFO): a connection's from the engine; a bound or listening
// socket's is its state alone, as Linux's is before a connection exists.
int SocketTable::do_tcp_info(uint32_t app, uint32_t slot, Time now, abi::TcpInfo* out) {
  const Socket& sock = sockets_[socket_of(app, slot)];
  *out = abi::TcpInfo{};
  out->state = uint8_t(ctl::LinuxTcpState::kClose);
  switch (sock.kind) {
    case Kind::kConn:
      engine_.tcp_info(sock.conn, now, out);
      out->state = uint8_t(linux_state(engine_.tcb(sock.conn).state));
      return 0;
    case Kind::kListener:
      out->state = uint8_t(ctl::LinuxTcpState::kListen);
      return 0;
    case Kind::kBound:
    case Kind::kDead:
      return 0;
    default:
      return -ENOPROTOOPT;  // a UDP slot: Linux has no TCP_INFO there either
  }
}

void SocketTable::list(std::vector<ctl::SocketInfo>* out) const {
  auto holder_of = [&](uint64_t user, ctl::SocketInfo* si) {
    uint32_t s = uint32_t(user - 1);
    if (user == 0 || s >= sockets_.size() || sockets_[s].kind == Kind::kFree) return;
    const Socket& sock = sockets_[s];
    if (sock.kind == Kind::kDead) return;
    si->holders = uint32_t(sock.holders.size());
    si->inode = sock.inode;
    const Holder h = !sock.holders.empty() ? sock.holders.front() : sock.rings;
    if (h.app != kNone && apps_.app(h.app).in_use) si->pid = apps_.app(h.app).cred.pid;
  };
  engine_.for_each_listener([&](uint16_t port, uint32_t backlog, uint32_t queued, uint64_t user) {
    ctl::SocketInfo si{};
    si.proto = uint8_t(ctl::Proto::kTcp);
    si.state = uint8_t(ctl::LinuxTcpState::kListen);
    si.local_ip = htonl(nic_.ip);
    si.local_port = htons(port);
    si.rx_queue = queued;
    si.tx_queue = backlog;
    holder_of(user, &si);
    out->push_back(si);
  });
  engine_.for_each_connection([&](ConnId, const Tcb& t) {
    ctl::SocketInfo si{};
    si.proto = uint8_t(ctl::Proto::kTcp);
    si.state = uint8_t(linux_state(t.state));
    si.local_ip = htonl(nic_.ip);
    si.local_port = htons(t.local_port);
    si.remote_ip = htonl(t.remote_ip);
    si.remote_port = htons(t.remote_port);
    si.rx_queue = t.rx.valid() && !t.staged ? t.rx.used() : 0;
    si.tx_queue = t.tx.valid() && !t.staged ? t.tx.readable() : uint32_t(t.snd.max - t.snd.una);
    si.snd_wscale = t.snd_wscale;
    si.rcv_wscale = t.rcv_wscale;
    si.cwnd = t.cwnd;
    si.ssthresh = t.ssthresh;
    si.srtt_us = uint32_t(t.srtt);
    si.rttvar_us = uint32_t(t.rttvar);
    si.rto_us = uint32_t(std::min<Time>(t.rto << std::min<uint32_t>(t.backoff, 12), 120 * kSecond));
    si.mss = t.snd.mss;
    si.snd_wnd = t.snd.wnd;
    si.rcv_wnd = t.rcv.adv_wnd;
    si.retransmits = t.retransmits;
    si.backoff = t.backoff;
    si.bytes_acked = t.bytes_acked;
    si.bytes_received = t.bytes_received;
    si.congestion = uint8_t(t.cc.algorithm);
    holder_of(t.user, &si);
    out->push_back(si);
  });
  for (uint32_t s = 0; s < sockets_.size(); ++s) {
    const Socket& sock = sockets_[s];
    if (sock.kind != Kind::kUdp || !engine_.udp().valid(sock.udp)) continue;
    const UdpSocket& u = engine_.udp().socket(sock.udp);
    ctl::SocketInfo si{};
    si.proto = uint8_t(ctl::Proto::kUdp);
    si.state = uint8_t(u.connected() ? ctl::LinuxTcpState::kEstablished : ctl::LinuxTcpState::kClose);
    si.local_ip = htonl(nic_.ip);
    si.local_port = htons(u.local_port);
    si.remote_ip = htonl(u.remote_ip);
    si.remote_port = htons(u.remote_port);
    si.rx_queue = u.rx.valid() ? u.rx.used() : 0;
    holder_of(uint64_t(s) + 1, &si);
    out->push_back(si);
  }
}

}  // namespace shunt
