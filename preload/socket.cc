#include "socket.hh"

#include <fcntl.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/sockios.h>

#include <algorithm>
#include <climits>
#include <cerrno>
#include <cstring>
#include <new>
#include <vector>

#include "dgram.hh"
#include "epoll.hh"
#include "fault_guard.hh"
#include "libc.hh"
#include "log.hh"
#include "route.hh"
#include "shunt/control.h"
#include "stream.hh"

namespace shunt::preload {
namespace {

using abi::SlotState;

constinit NoDestroy<Pool<Socket>> g_pool_storage;
Pool<Socket>& g_pool = g_pool_storage.value;

int64_t timeval_ns(const timeval& tv) { return int64_t(tv.tv_sec) * 1000000000 + tv.tv_usec * 1000; }

void raise_sigpipe() { pthread_kill(pthread_self(), SIGPIPE); }

Runtime& rt() { return Runtime::get(); }

bool gone(const Socket& s) {
  return s.dead.load(std::memory_order_acquire) ||
         (s.region != nullptr && s.region->gone.load(std::memory_order_acquire));
}

SlotSnapshot view(const Socket& s) {
  SlotSnapshot v = snapshot(*s.s, s.rx, s.tx);
  return gone(s) ? apply_daemon_gone(v) : v;
}

// The slot's pending error, reported once (SO_ERROR or a failing call), like
// sock_error() in Linux. The slot's `error` is the daemon's; what was reported is
// remembered here, so the application never writes a daemon-owned field.
int take_error(Socket& s) {
  int32_t e = s.s->error.load(std::memory_order_acquire);
  if (e == 0 && gone(s)) e = ECONNRESET;
  if (e <= 0) return 0;
  int32_t expected = 0;
  return s.error_taken.compare_exchange_strong(expected, e, std::memory_order_acq_rel) ? e : 0;
}

void destroy_socket(FdObject* o);

Socket* new_socket(uint64_t inode, bool nonblock, bool datagram = false) {
  Socket* s = g_pool.take();
  if (s == nullptr) s = new (std::nothrow) Socket;
  if (s == nullptr) return nullptr;
  s->mode.store(Mode::kCandidate, std::memory_order_relaxed);
  s->nonblock.store(nonblock, std::memory_order_relaxed);
  s->listening.store(false, std::memory_order_relaxed);
  s->connect_pending.store(false, std::memory_order_relaxed);
  s->error_taken.store(0, std::memory_order_relaxed);
  s->shut_rd.store(false, std::memory_order_relaxed);
  s->shut_wr.store(false, std::memory_order_relaxed);
  s->dead.store(false, std::memory_order_relaxed);
  s->epoll_refs.store(0, std::memory_order_relaxed);
  s->inode = inode;
  s->datagram = datagram;
  s->dgram_peer.store(0, std::memory_order_relaxed);
  s->error_seq_seen.store(0, std::memory_order_relaxed);
  s->dual_turn.store(0, std::memory_order_relaxed);
  s->user_bound = false;
  s->region = nullptr;
  s->slot = s->ctl_slot = abi::kNoSlot;
  s->s = nullptr;
  s->rx = s->tx = abi::ByteRing();
  s->local = s->peer = sockaddr_in{};
  s->reuseaddr = false;
  s->option_set = 0;
  s->rcvtimeo_ns = s->sndtimeo_ns = 0;
  s->linger_ns = 0;
  return s;
}

void destroy_socket(FdObject* o) {
  auto* s = static_cast<Socket*>(o);
  if (s->shunted() && !s->dead.load(std::memory_order_acquire)) {
    rt().post(make_command(abi::Op::kClose, s->ctl_slot));
    SHUNT_DEBUG("close slot %u", s->ctl_slot);
  }
  if (s->epoll_refs.load(std::memory_order_acquire) != 0) epolls_forget(*s);
  s->mode.store(Mode::kKernel, std::memory_order_release);
  g_pool.give(s);
}

uint64_t inode_of(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 ? uint64_t(st.st_ino) : 0;
}

// Binds the socket to a slot. Called with s.mu held, before mode is published.
bool adopt_slot(Socket& s, const abi::Completion& c) {
  Region* r = rt().region();
  if (r == nullptr || c.slot >= r->slot_count()) return false;
  s.region = r;
  s.slot = s.ctl_slot = c.slot;
  s.s = r->slot(c.slot);
  s.rx = r->rx(c.slot);
  s.tx = r->tx(c.slot);
  s.local = make_sin(c.local_ip, c.local_port);
  s.peer = make_sin(c.remote_ip, c.remote_port);
  s.error_seq_seen.store(s.s->error_seq.load(std::memory_order_acquire), std::memory_order_release);
  s.s->wake_cells.store(0, std::memory_order_relaxed);  // the slot's last user's threads
  s.s->wake_cells_exclusive.store(0, std::memory_order_relaxed);
  return true;
}

// Options go without a round trip: the kernel placeholder has already checked
// the value the way the kernel does, and shuntd accepts what the kernel accepts
// (nginx sets TCP_CORK twice per response: a wait each time would cost more
// than the response).
int set_option(Socket& s, abi::SockOption opt, int64_t value) {
  abi::Command cmd = make_command(abi::Op::kSetOption, s.ctl_slot);
  cmd.arg = int32_t(opt);
  cmd.arg2 = uint64_t(value);
  cmd.flags = abi::kCmdNoReply;
  rt().post(cmd);
  return 0;
}

// Options set before the decision, applied to the fresh slot
// (docs/architecture.md, Which sockets).
void replay_options(Socket& s) {
  for (uint32_t i = 1; i < uint32_t(abi::SockOption::kCount); ++i) {
    if (!(s.option_set & (1u << i))) continue;
    int r = set_option(s, abi::SockOption(i), s.option_value[i]);
    if (r < 0) SHUNT_WARN("replaying option %u on slot %u failed: %s", i, s.ctl_slot, strerror(-r));
  }
}

void publish(Socket& s, Mode m, int fd) {
  s.mode.store(m, std::memory_order_release);
  if (s.epoll_refs.load(std::memory_order_acquire) != 0) epolls_on_decision(s, fd);
}

// The routing decision went to the kernel: this socket is plain from now on.
void forget(Socket& s, int fd) {
  publish(s, Mode::kKernel, fd);
  if (FdObject* o = fd_table().remove(fd)) unref(o);  // the caller still holds a Ref
}

ssize_t kernel_recv(int fd, const iovec* iov, int iovcnt, int flags) {
  msghdr m{};
  m.msg_iov = const_cast<iovec*>(iov);
  m.msg_iovlen = size_t(iovcnt);
  ssize_t r = libc().recvmsg(fd, &m, flags);
  return r < 0 ? -errno : r;
}

ssize_t kernel_send(int fd, const iovec* iov, int iovcnt, int flags) {
  msghdr m{};
  m.msg_iov = const_cast<iovec*>(iov);
  m.msg_iovlen = size_t(iovcnt);
  ssize_t r = libc().sendmsg(fd, &m, flags);
  return r < 0 ? -errno : r;
}

// Tells the daemon the tx ring has new bytes, once per batch (docs/abi.md).
void notify_tx(Socket& s) {
  if (s.s->tx_notice.exchange(1, std::memory_order_acq_rel) == 0)
    rt().post(make_command(abi::Op::kTxReady, s.ctl_slot));
}

void maybe_rx_drained(Socket& s) {
  if ((s.s->flags.load(std::memory_order_acquire) & abi::kFlagWantRxDrain) == 0) return;
  if (s.rx.capacity() - rx_available(s.rx) < s.rx.capacity() / 2) return;
  if (s.s->rx_notice.exchange(1, std::memory_order_acq_rel) == 0)
    rt().post(make_command(abi::Op::kRxDrained, s.ctl_slot));
}

bool connected_or_connecting(uint32_t state) {
  return state == uint32_t(SlotState::kConnected) || state == uint32_t(SlotState::kConnecting);
}

// EPIPE the way the kernel reports it (sk_stream_error): SIGPIPE unless MSG_NOSIGNAL.
ssize_t epipe(int flags) {
  if ((flags & MSG_NOSIGNAL) == 0) raise_sigpipe();
  return -EPIPE;
}

// A connect that failed leaves the socket as Linux's tcp_disconnect does:
// unconnected, so that the application may connect it again (a client that
// retries on the same socket). Its slot goes back to shuntd and it is a
// candidate again, its remembered options kept: the next connect routes anew.
// Not done for a socket bound by the application, or in an epoll set (its
// entries would have to go back to the kernel's set): those keep the failed
// connection, and a second connect reports EISCONN. Called with s.mu held.
void disconnect_failed(Socket& s, int fd) {
  if (s.user_bound || s.epoll_refs.load(std::memory_order_acquire) != 0 || gone(s)) return;
  publish(s, Mode::kCandidate, fd);
  rt().post(make_command(abi::Op::kClose, s.ctl_slot));
  s.slot = s.ctl_slot = abi::kNoSlot;
  s.connect_pending.store(false, std::memory_order_release);
  s.error_taken.store(0, std::memory_order_release);
  s.local = s.peer = sockaddr_in{};
}

// Waits for a blocking connect to finish.
int finish_connect(Socket& s, int fd) {
  auto settled = [&] {
    uint32_t st = view(s).state;
    return st != uint32_t(SlotState::kConnecting) && st != uint32_t(SlotState::kBound);
  };
  const Deadline d = Deadline::after_ns(s.sndtimeo_ns);
  Wake w;
  do {
    w = rt().wait(*s.region, settled, d, -1, s.slot);
  } while (w == Wake::kInterrupted && signal_restarts(d));
  if (w == Wake::kInterrupted) return -EINTR;
  if (w == Wake::kTimeout) return -EINPROGRESS;  // Linux with SO_SNDTIMEO
  s.connect_pending.store(false, std::memory_order_release);
  if (view(s).state == uint32_t(SlotState::kConnected)) return 0;
  int e = take_error(s);
  std::lock_guard<std::mutex> g(s.mu);
  if (s.mode.load(std::memory_order_acquire) == Mode::kShunted) disconnect_failed(s, fd);
  return -(e != 0 ? e : ECONNREFUSED);
}

int put_int(void* val, socklen_t* len, int v) {
  if (val == nullptr || len == nullptr) return -EFAULT;
  int r = 0;
  bool ok = guarded([&] {
    if (int(*len) < 0) {
      r = -EINVAL;
      return;
    }
    socklen_t n = *len < sizeof(int) ? *len : socklen_t(sizeof(int));
    memcpy(val, &v, n);
    *len = n;
  });
  return ok ? r : -EFAULT;
}

}  // namespace

Socket::Socket() : FdObject(FdKind::kSocket, destroy_socket) {}

sockaddr_in make_sin(uint32_t ip, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = ip;
  a.sin_port = port;
  return a;
}

bool sock_adopt_slot(Socket& s, const abi::Completion& c) { return adopt_slot(s, c); }
void sock_publish(Socket& s, Mode m, int fd) { publish(s, m, fd); }
void sock_forget(Socket& s, int fd) { forget(s, fd); }
void sock_notify_tx(Socket& s) { notify_tx(s); }
bool sock_gone(const Socket& s) { return gone(s); }
uint64_t placeholder_inode(int fd) { return inode_of(fd); }

SocketImage sock_image(const Socket& s, uint32_t region_index) {
  SocketImage im;
  im.region = s.region != nullptr ? region_index : SocketImage::kNoRegion;
  im.slot = s.slot;
  im.ctl_slot = s.ctl_slot;
  im.mode = uint8_t(s.mode.load(std::memory_order_acquire));
  im.nonblock = s.nonblock.load();
  im.listening = s.listening.load();
  im.connect_pending = s.connect_pending.load();
  im.shut_rd = s.shut_rd.load();
  im.shut_wr = s.shut_wr.load();
  im.datagram = s.datagram;
  im.user_bound = s.user_bound;
  im.reuseaddr = s.reuseaddr;
  im.error_taken = s.error_taken.load();
  im.error_seq_seen = s.error_seq_seen.load();
  im.dgram_peer = s.dgram_peer.load();
  im.local = s.local;
  im.peer = s.peer;
  im.option_set = s.option_set;
  memcpy(im.option_value, s.option_value, sizeof im.option_value);
  im.rcvtimeo_ns = s.rcvtimeo_ns;
  im.sndtimeo_ns = s.sndtimeo_ns;
  im.linger_ns = s.linger_ns;
  return im;
}

Socket* sock_from_image(const SocketImage& im, Region* r, int fd) {
  Socket* s = new_socket(inode_of(fd), im.nonblock != 0, im.datagram != 0);
  if (s == nullptr) return nullptr;
  s->listening.store(im.listening != 0);
  s->connect_pending.store(im.connect_pending != 0);
  s->shut_rd.store(im.shut_rd != 0);
  s->shut_wr.store(im.shut_wr != 0);
  s->user_bound = im.user_bound != 0;
  s->reuseaddr = im.reuseaddr != 0;
  s->error_taken.store(im.error_taken);
  s->error_seq_seen.store(im.error_seq_seen);
  s->dgram_peer.store(im.dgram_peer);
  s->local = im.local;
  s->peer = im.peer;
  s->option_set = im.option_set;
  memcpy(s->option_value, im.option_value, sizeof s->option_value);
  s->rcvtimeo_ns = im.rcvtimeo_ns;
  s->sndtimeo_ns = im.sndtimeo_ns;
  s->linger_ns = im.linger_ns;
  Mode m = Mode(im.mode);
  if (r != nullptr) {
    s->region = r;
    s->slot = im.slot;
    s->ctl_slot = im.ctl_slot;
    s->s = r->slot(im.slot);
    s->rx = r->rx(im.slot);
    s->tx = r->tx(im.slot);
  } else if (m == Mode::kShunted || m == Mode::kDual) {
    m = Mode::kCandidate;  // cannot happen: exec.cc carries the region of every shunted socket
  }
  s->refs.store(0, std::memory_order_relaxed);
  s->mode.store(m, std::memory_order_release);
  return s;
}

uint32_t Socket::readiness(uint32_t* seq) const {
  if (!shunted()) return 0;
  if (seq != nullptr) *seq = s->event_seq.load(std::memory_order_acquire);
  LocalView lv;
  lv.error_consumed = error_taken.load(std::memory_order_acquire) != 0;
  lv.shut_rd = shut_rd.load(std::memory_order_acquire);
  lv.shut_wr = shut_wr.load(std::memory_order_acquire);
  lv.daemon_gone = gone(*this);
  if (datagram) {
    lv.error_seq_seen = error_seq_seen.load(std::memory_order_acquire);
    return dgram_readiness(snapshot(*s, rx, tx), lv);
  }
  return preload::readiness(snapshot(*s, rx, tx), lv);
}

Ref<Socket> socket_at_slow(int fd) {
  Ref<Socket> s = fd_table().get<Socket>(fd, FdKind::kSocket);
  if (s && !s->ours()) s.reset();
  return s;
}

Ref<Socket> shunted_at_slow(int fd) {
  Ref<Socket> s = fd_table().get<Socket>(fd, FdKind::kSocket);
  if (s && !s->shunted()) s.reset();
  return s;
}

int fill_sockaddr(const sockaddr_in& src, sockaddr* dst, socklen_t* len) {
  if (dst == nullptr) return 0;
  if (len == nullptr) return -EFAULT;
  int r = 0;
  bool ok = guarded([&] {
    if (int(*len) < 0) {
      r = -EINVAL;
      return;
    }
    size_t n = *len < sizeof src ? *len : sizeof src;
    memcpy(dst, &src, n);
    *len = sizeof src;
  });
  return ok ? r : -EFAULT;
}

// ---- creation and the fd table ----

void fd_forget_stale(int fd) {
  if (fd_table().peek(fd) == nullptr) return;
  if (FdObject* o = fd_table().remove(fd)) unref(o);
}

void fd_forget_range(unsigned first, unsigned last) {
  if (first >= unsigned(FdTable::kMaxFds)) return;
  for (int fd = fd_table().next_used(int(first)); fd >= 0 && unsigned(fd) <= last;
       fd = fd_table().next_used(fd + 1))
    fd_forget_stale(fd);
}

int sock_socket(int domain, int type, int protocol) {
  int fd = libc().socket(domain, type, protocol);
  if (fd < 0) return -errno;
  fd_forget_stale(fd);
  bool stream = domain == AF_INET && (type & 0xf) == SOCK_STREAM &&
                (protocol == 0 || protocol == IPPROTO_TCP);
  bool dgram = domain == AF_INET && (type & 0xf) == SOCK_DGRAM &&
               (protocol == 0 || protocol == IPPROTO_UDP);
  if (!(stream || dgram) || !FdTable::in_range(fd) || !rt().ensure_attached()) return fd;
  Socket* s = new_socket(inode_of(fd), (type & SOCK_NONBLOCK) != 0, dgram);
  if (s == nullptr) return fd;  // out of memory: stay with the kernel
  s->refs.store(0, std::memory_order_relaxed);
  if (!fd_table().install(fd, s, nullptr)) destroy_socket(s);
  return fd;
}

namespace {

// SO_LINGER {1, t > 0}, as Linux's: closing the last descriptor of a connection
// blocks until the peer acknowledged every byte written (the tx ring is empty:
// shuntd frees bytes as they are acknowledged), the connection ends, or t passes;
// a signal ends the wait early. The FIN goes after, with kClose. shuntd rings for
// freed room only while a ring is filling up (as Linux's SOCK_NOSPACE), not when
// it empties, so this rare wait looks again every millisecond.
void linger_on_close(Socket& s) {
  if (s.linger_ns <= 0 || s.datagram || s.mode.load(std::memory_order_acquire) != Mode::kShunted ||
      !s.tx.valid() || s.region == nullptr || s.refs.load(std::memory_order_acquire) != 1)
    return;
  auto sent_or_over = [&] {
    SlotSnapshot v = view(s);
    return s.tx.readable() == 0 || (v.flags & abi::kFlagReset) || v.state == uint32_t(SlotState::kClosed);
  };
  const Deadline d = Deadline::after_ns(s.linger_ns);
  while (!sent_or_over() && !d.passed()) {
    Deadline slice{std::min(d.at, Deadline::now() + 1000000)};
    if (rt().wait(*s.region, sent_or_over, slice, -1, s.slot) != Wake::kTimeout) return;
  }
}

}  // namespace

int fd_close(int fd) {
  if (FdObject* o = fd_table().remove(fd)) {
    if (o->kind == FdKind::kSocket) linger_on_close(*static_cast<Socket*>(o));
    unref(o);
  }
  return libc().close(fd) < 0 ? -errno : 0;
}

int fd_dup(int oldfd) {
  FdObject* o = fd_table().acquire(oldfd);
  int fd = libc().dup(oldfd);
  int err = errno;
  if (fd >= 0) {
    fd_forget_stale(fd);
    if (o != nullptr) fd_table().install(fd, o, nullptr);
  }
  if (o != nullptr) unref(o);
  return fd < 0 ? -err : fd;
}

int fd_dup2(int oldfd, int newfd, int flags, bool is_dup3) {
  FdObject* o = fd_table().acquire(oldfd);
  int fd = is_dup3 ? libc().dup3(oldfd, newfd, flags) : libc().dup2(oldfd, newfd);
  int err = errno;
  if (fd >= 0 && oldfd != newfd) {
    FdObject* prev = nullptr;
    if (o != nullptr) {
      fd_table().install(fd, o, &prev);
    } else {
      prev = fd_table().remove(fd);
    }
    if (prev != nullptr) unref(prev);  // the kernel closed newfd's old file
  }
  if (o != nullptr) unref(o);
  return fd < 0 ? -err : fd;
}

// ---- control path ----

int sock_bind(Socket& s, int fd, const sockaddr* addr, socklen_t len) {
  if (s.datagram) return dgram_bind(s, fd, addr, len);
  std::lock_guard<std::mutex> g(s.mu);
  Mode m = s.mode.load(std::memory_order_acquire);
  if (m == Mode::kShunted || m == Mode::kDual || m == Mode::kWildcard) return -EINVAL;
  if (m == Mode::kKernel) return libc().bind(fd, addr, len) < 0 ? -errno : 0;
  if (addr == nullptr || len < socklen_t(sizeof(sockaddr_in)) || addr->sa_family != AF_INET) {
    forget(s, fd);  // the kernel gives the right error (or binds AF_UNSPEC/any)
    return libc().bind(fd, addr, len) < 0 ? -errno : 0;
  }
  sockaddr_in sin;
  memcpy(&sin, addr, sizeof sin);
  switch (route_bind(rt().nic(), sin.sin_addr.s_addr)) {
    case BindRoute::kShunt: {
      abi::Command cmd = make_command(abi::Op::kBind, abi::kNoSlot);
      cmd.ip = sin.sin_addr.s_addr;
      cmd.port = sin.sin_port;
      cmd.arg = s.reuseaddr ? 1 : 0;
      cmd.arg2 = s.inode;
      abi::Completion c;
      int r = rt().call(cmd, &c);
      if (r < 0) return r;
      if (!adopt_slot(s, c)) return -EPROTO;
      s.user_bound = true;
      replay_options(s);
      publish(s, Mode::kShunted, fd);
      return 0;
    }
    case BindRoute::kWildcard:
      if (libc().bind(fd, addr, len) < 0) return -errno;
      s.mode.store(Mode::kWildcard, std::memory_order_release);
      return 0;
    case BindRoute::kKernel:
      break;
  }
  forget(s, fd);
  return libc().bind(fd, addr, len) < 0 ? -errno : 0;
}

int sock_listen(Socket& s, int fd, int backlog) {
  if (s.datagram && s.shunted()) return -EOPNOTSUPP;  // the kernel's answer for UDP
  std::lock_guard<std::mutex> g(s.mu);
  Mode m = s.mode.load(std::memory_order_acquire);
  if (m == Mode::kCandidate || m == Mode::kKernel) {
    // An unbound listen autobinds a kernel port: the kernel's socket.
    if (m == Mode::kCandidate) forget(s, fd);
    return libc().listen(fd, backlog) < 0 ? -errno : 0;
  }
  if (m == Mode::kShunted) {
    uint32_t st = s.s->state.load(std::memory_order_acquire);
    if (st != uint32_t(SlotState::kBound) && st != uint32_t(SlotState::kListening)) return -EINVAL;
    abi::Command cmd = make_command(abi::Op::kListen, s.ctl_slot);
    cmd.arg = backlog;
    abi::Completion c;
    int r = rt().call(cmd, &c);
    if (r < 0) return r;
    s.listening.store(true, std::memory_order_release);
    return 0;
  }
  if (m == Mode::kDual) {
    if (libc().listen(fd, backlog) < 0) return -errno;
    abi::Command cmd = make_command(abi::Op::kListen, s.ctl_slot);
    cmd.arg = backlog;
    abi::Completion c;
    if (rt().call(cmd, &c) >= 0) s.listening.store(true, std::memory_order_release);  // again, after a shutdown
    return 0;
  }
  // kWildcard: listen on the kernel, then on the NIC with the same port.
  if (libc().listen(fd, backlog) < 0) return -errno;
  sockaddr_in bound{};
  socklen_t blen = sizeof bound;
  libc().getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &blen);
  abi::Command cmd = make_command(abi::Op::kBind, abi::kNoSlot);
  cmd.ip = rt().nic().ip;
  cmd.port = bound.sin_port;
  cmd.arg = s.reuseaddr ? 1 : 0;
  cmd.arg2 = s.inode;
  abi::Completion c;
  int r = rt().call(cmd, &c);
  if (r >= 0 && !adopt_slot(s, c)) r = -EPROTO;
  if (r >= 0) {
    abi::Command l = make_command(abi::Op::kListen, s.ctl_slot);
    l.arg = backlog;
    abi::Completion lc;
    r = rt().call(l, &lc);
    if (r < 0) rt().post(make_command(abi::Op::kClose, s.ctl_slot));
  }
  if (r < 0) {
    SHUNT_WARN("0.0.0.0:%u listens on the kernel only (shuntd: %s)", ntohs(bound.sin_port),
               strerror(-r));
    forget(s, fd);
    return 0;
  }
  // The kernel half is polled, never blocked on: accept tries both halves.
  int fl = libc().fcntl(fd, F_GETFL);
  if (fl >= 0) libc().fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  replay_options(s);
  s.listening.store(true, std::memory_order_release);
  publish(s, Mode::kDual, fd);
  return 0;
}

namespace {

// The next connection shuntd handed ahead on listener l (abi::HandedConn), as
// kAccept would have answered it; false when none waits. The listener's rx ring
// has one consumer: l.mu.
bool take_handed(Socket& l, abi::Completion* c, uint32_t* generation) {
  std::lock_guard<std::mutex> g(l.mu);
  if (!l.rx.valid()) return false;
  abi::DgramHeader h;
  if (abi::dgram_front(l.rx, &h) != abi::DgramFront::kOk) return false;
  abi::HandedConn rec{};
  if (abi::dgram_pop(l.rx, h, reinterpret_cast<uint8_t*>(&rec), sizeof rec) != sizeof rec)
    return false;  // not a record shuntd writes: kAccept asks instead
  // A record from before the listener was shut down and listened again names a
  // slot shuntd has taken back (free, or handed out since under a new generation).
  if (rec.slot >= l.region->slot_count()) return false;
  const abi::SocketSlot* slot = l.region->slot(rec.slot);
  if (slot->generation.load(std::memory_order_acquire) != rec.generation ||
      slot->state.load(std::memory_order_acquire) == uint32_t(SlotState::kFree))
    return false;
  c->result = 0;
  c->slot = rec.slot;
  c->local_ip = rt().nic().ip;
  c->local_port = l.local.sin_port;
  c->remote_ip = h.ip;
  c->remote_port = h.port;
  *generation = rec.generation;
  return true;
}

// A connection for listener l with a fresh placeholder: one handed ahead, else a
// kAccept. Returns the new fd, -EAGAIN, or -errno.
int shunt_accept_one(Socket& l, sockaddr* addr, socklen_t* len, int flags) {
  int ph = libc().socket(AF_INET, SOCK_STREAM | flags, 0);
  if (ph < 0) return -errno;
  if (!FdTable::in_range(ph)) {
    libc().close(ph);
    return -EMFILE;
  }
  uint64_t inode = inode_of(ph);
  abi::Completion c{};
  uint32_t generation = 0;
  const bool handed = take_handed(l, &c, &generation);
  int r = 0;
  if (!handed) {
    abi::Command cmd = make_command(abi::Op::kAccept, l.ctl_slot);
    cmd.arg2 = inode;
    r = rt().call(cmd, &c);
  }
  Socket* s = r >= 0 ? new_socket(inode, (flags & SOCK_NONBLOCK) != 0) : nullptr;
  if (s != nullptr && !adopt_slot(*s, c)) {
    destroy_socket(s);  // not installed, mode kCandidate: no kClose for a bogus slot
    s = nullptr;
    r = -EPROTO;
  }
  if (s == nullptr) {
    if (r >= 0) {  // no memory: give the connection back
      rt().post(make_command(abi::Op::kClose, c.slot));
      r = -ENOMEM;
    }
    libc().close(ph);
    return r;
  }
  if (handed) {
    abi::Command claim = make_command(abi::Op::kAccepted, c.slot);
    claim.arg = int32_t(generation);
    claim.arg2 = inode;
    rt().post(claim);
  }
  s->mode.store(Mode::kShunted, std::memory_order_release);
  fd_forget_stale(ph);
  fd_table().install(ph, s, nullptr);
  fill_sockaddr(s->peer, addr, len);
  SHUNT_DEBUG("accept fd %d slot %u%s", ph, s->slot, handed ? " (handed ahead)" : "");
  return ph;
}

bool accept_waiting(const Socket& l) {
  return listener_has_connection(l.s->accept_ready.load(std::memory_order_acquire),
                                 l.rx.valid() ? l.rx.readable() : 0);
}

}  // namespace

int sock_accept(Socket& s, int fd, sockaddr* addr, socklen_t* len, int flags) {
  if (flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)) return -EINVAL;
  if (addr != nullptr && (len == nullptr)) return -EFAULT;
  if (len != nullptr && int(*len) < 0) return -EINVAL;
  if (!s.shunted() || !s.listening.load(std::memory_order_acquire)) {
    int r = libc().accept4(fd, addr, len, flags);
    return r < 0 ? -errno : r;
  }
  const bool dual = s.mode.load(std::memory_order_acquire) == Mode::kDual;
  const Deadline d = Deadline::after_ns(s.rcvtimeo_ns);
  auto listening = [&] { return view(s).state == uint32_t(SlotState::kListening); };
  for (;;) {
    if (!listening()) return -EINVAL;  // shut down, by this process or another holder
    if (!gone(s) && accept_waiting(s)) {
      int r = shunt_accept_one(s, addr, len, flags);
      if (r != -EAGAIN) return r;
    }
    if (dual) {
      int r = libc().accept4(fd, addr, len, flags);
      if (r >= 0) {
        fd_forget_stale(r);
        return r;
      }
      if (errno != EAGAIN && errno != EWOULDBLOCK) return -errno;
    }
    if (s.nonblock.load(std::memory_order_acquire)) return -EAGAIN;
    if (gone(s) && !dual) return -ECONNABORTED;
    auto ready = [&] { return accept_waiting(s) || !listening(); };
    Wake w = rt().wait(*s.region, ready, d, dual ? fd : -1, s.slot, /*exclusive=*/true);
    if (w == Wake::kInterrupted && !signal_restarts(d)) return -EINTR;
    if (w == Wake::kTimeout) return -EAGAIN;
  }
}

int sock_connect(Socket& s, int fd, const sockaddr* addr, socklen_t len) {
  if (s.datagram) return dgram_connect(s, fd, addr, len);
  std::unique_lock<std::mutex> g(s.mu);
  Mode m = s.mode.load(std::memory_order_acquire);
  if (m == Mode::kCandidate) {
    bool shunt = false;
    sockaddr_in sin{};
    if (addr != nullptr && len >= socklen_t(sizeof sin) && addr->sa_family == AF_INET) {
      memcpy(&sin, addr, sizeof sin);
      shunt = route_connect(rt().nic(), sin.sin_addr.s_addr);
    }
    if (!shunt) {
      forget(s, fd);
      g.unlock();
      return libc().connect(fd, addr, len) < 0 ? -errno : 0;
    }
    abi::Command cmd = make_command(abi::Op::kConnect, abi::kNoSlot);
    cmd.ip = sin.sin_addr.s_addr;
    cmd.port = sin.sin_port;
    cmd.arg2 = s.inode;
    abi::Completion c;
    int r = rt().call(cmd, &c);
    if (r < 0) return r;
    if (!adopt_slot(s, c)) return -EPROTO;
    replay_options(s);
    s.connect_pending.store(true, std::memory_order_release);
    publish(s, Mode::kShunted, fd);
  } else if (m == Mode::kShunted) {
    if (s.listening.load(std::memory_order_acquire)) return -EISCONN;
    uint32_t st = view(s).state;
    if (st == uint32_t(SlotState::kConnected)) {
      if (!s.connect_pending.exchange(false)) return -EISCONN;
      return 0;  // the connect reported EINPROGRESS has completed (Linux returns 0 once)
    }
    if (st == uint32_t(SlotState::kConnecting) ||
        (st == uint32_t(SlotState::kBound) && s.connect_pending.load())) {
      if (s.nonblock.load(std::memory_order_acquire)) return -EALREADY;
    } else if (st == uint32_t(SlotState::kClosed)) {
      // The connect reported EINPROGRESS failed: its error now (ECONNABORTED
      // once SO_ERROR took it, as Linux), and the socket is unconnected again.
      const bool failed_connect = s.connect_pending.exchange(false);
      int e = take_error(s);
      if (!failed_connect) return e != 0 ? -e : -EISCONN;
      disconnect_failed(s, fd);
      return e != 0 ? -e : -ECONNABORTED;
    } else if (st == uint32_t(SlotState::kBound)) {
      // Bound to the NIC address: the connection goes through the NIC.
      sockaddr_in sin{};
      if (addr == nullptr || len < socklen_t(sizeof sin)) return -EINVAL;
      memcpy(&sin, addr, sizeof sin);
      if (sin.sin_family != AF_INET) return -EAFNOSUPPORT;
      abi::Command cmd = make_command(abi::Op::kConnect, s.ctl_slot);
      cmd.ip = sin.sin_addr.s_addr;
      cmd.port = sin.sin_port;
      cmd.arg2 = s.inode;
      abi::Completion c;
      int r = rt().call(cmd, &c);
      if (r < 0) return r;
      s.peer = make_sin(c.remote_ip, c.remote_port);
      if (c.local_ip != 0) s.local = make_sin(c.local_ip, c.local_port);
      s.connect_pending.store(true, std::memory_order_release);
    } else {
      return -EINVAL;
    }
  } else {
    if (m == Mode::kWildcard) forget(s, fd);  // bound by the kernel: the kernel connects
    g.unlock();
    return libc().connect(fd, addr, len) < 0 ? -errno : 0;
  }
  g.unlock();
  if (s.nonblock.load(std::memory_order_acquire)) return -EINPROGRESS;
  return finish_connect(s, fd);
}

int sock_shutdown(Socket& s, int fd, int how) {
  if (s.datagram) return dgram_shutdown(s, fd, how);
  if (!s.shunted()) return libc().shutdown(fd, how) < 0 ? -errno : 0;
  if (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR) return -EINVAL;
  std::lock_guard<std::mutex> g(s.mu);
  if (s.mode.load() == Mode::kDual) libc().shutdown(fd, how);
  uint32_t st = view(s).state;
  const bool listening = s.listening.load(std::memory_order_acquire);
  if (!listening && !connected_or_connecting(st)) return -ENOTCONN;
  if (listening && how == SHUT_WR) return 0;  // as Linux: nothing to shut on a listener
  abi::Command cmd = make_command(abi::Op::kShutdown, s.ctl_slot);
  cmd.arg = how;
  abi::Completion c;
  int r = rt().call(cmd, &c);
  if (r < 0) return r;
  if (listening) {
    // No longer listening, still bound (shuntd reset what it had queued): an
    // unconnected socket again, which may listen anew.
    s.listening.store(false, std::memory_order_release);
    return 0;
  }
  if (how != SHUT_WR) s.shut_rd.store(true, std::memory_order_release);
  if (how != SHUT_RD) s.shut_wr.store(true, std::memory_order_release);
  return 0;
}

int sock_getsockname(Socket& s, int fd, sockaddr* addr, socklen_t* len) {
  if (s.mode.load(std::memory_order_acquire) != Mode::kShunted)
    return libc().getsockname(fd, addr, len) < 0 ? -errno : 0;
  if (addr == nullptr) return -EFAULT;
  return fill_sockaddr(s.local, addr, len);
}

int sock_getpeername(Socket& s, int fd, sockaddr* addr, socklen_t* len) {
  if (s.datagram) return dgram_getpeername(s, fd, addr, len);
  if (s.mode.load(std::memory_order_acquire) != Mode::kShunted)
    return libc().getpeername(fd, addr, len) < 0 ? -errno : 0;
  if (s.listening.load() || view(s).state != uint32_t(SlotState::kConnected)) return -ENOTCONN;
  if (addr == nullptr) return -EFAULT;
  return fill_sockaddr(s.peer, addr, len);
}

OptClass classify_option(int level, int name) {
  if (level == SOL_SOCKET) {
    switch (name) {
      case SO_KEEPALIVE:
      case SO_LINGER:
        return OptClass::kReplay;
      case SO_REUSEADDR:
      case SO_RCVTIMEO:
      case SO_SNDTIMEO:
        return OptClass::kLocal;
      case SO_RCVBUF:
      case SO_SNDBUF:
        return OptClass::kReplay;
      case SO_REUSEPORT:
      case SO_BROADCAST:  // UDP: shuntd sends to no broadcast address (ENETUNREACH) anyway
        return OptClass::kHint;
      case SO_TYPE:
      case SO_DOMAIN:
      case SO_PROTOCOL:
      case SO_ERROR:
      case SO_ACCEPTCONN:
        return OptClass::kQuery;
      default:
        return OptClass::kUnsupported;
    }
  }
  if (level == IPPROTO_IP && (name == IP_TOS || name == IP_TTL)) return OptClass::kReplay;
  if (level == IPPROTO_TCP) {
    switch (name) {
      case TCP_NODELAY:
      case TCP_CORK:
      case TCP_QUICKACK:
      case TCP_KEEPIDLE:
      case TCP_KEEPINTVL:
      case TCP_KEEPCNT:
      case TCP_CONGESTION:
        return OptClass::kReplay;
      case TCP_DEFER_ACCEPT:  // nginx "deferred": accept() simply returns earlier
        return OptClass::kHint;
      default:
        return OptClass::kUnsupported;
    }
  }
  return OptClass::kUnsupported;
}

namespace {

// The shuntd option an accepted (level, name, value) means, if any.
bool forwarded_option(int level, int name, const void* val, socklen_t len, abi::SockOption* opt,
                      int32_t* value) {
  int v = 0;
  if (len >= socklen_t(sizeof(int))) memcpy(&v, val, sizeof v);
  *value = v;
  if (level == SOL_SOCKET) {
    if (name == SO_KEEPALIVE) return *opt = abi::SockOption::kKeepAlive, *value = v != 0, true;
    if (name == SO_LINGER && len >= socklen_t(sizeof(linger))) {
      linger l;
      memcpy(&l, val, sizeof l);
      *value = l.l_onoff != 0 && l.l_linger == 0;
      return *opt = abi::SockOption::kLingerZero, true;
    }
    return false;
  }
  if (level != IPPROTO_TCP) return false;
  switch (name) {
    case TCP_NODELAY: *opt = abi::SockOption::kNoDelay; *value = v != 0; return true;
    case TCP_CORK: *opt = abi::SockOption::kCork; *value = v != 0; return true;
    case TCP_QUICKACK: *opt = abi::SockOption::kQuickAck; *value = v != 0; return true;
    case TCP_KEEPIDLE: *opt = abi::SockOption::kKeepIdle; return true;
    case TCP_KEEPINTVL: *opt = abi::SockOption::kKeepIntvl; return true;
    case TCP_KEEPCNT: *opt = abi::SockOption::kKeepCnt; return true;
    case TCP_CONGESTION: {
      // shuntd has "reno" (0), "cubic" (1) and "bbr" (2).
      char algo[16] = {};
      memcpy(algo, val, std::min<size_t>(len, sizeof algo - 1));
      *opt = abi::SockOption::kCongestion;
      *value = strcmp(algo, "reno") == 0 ? 0 : strcmp(algo, "cubic") == 0 ? 1 : strcmp(algo, "bbr") == 0 ? 2 : -1;
      return true;
    }
    default: return false;
  }
}

// Options whose value shuntd takes from the placeholder after it accepted one.
bool kernel_settled_option(int level, int name, abi::SockOption* opt) {
  if (level == SOL_SOCKET && (name == SO_RCVBUF || name == SO_SNDBUF))
    return *opt = name == SO_RCVBUF ? abi::SockOption::kRcvBuf : abi::SockOption::kSndBuf, true;
  if (level == IPPROTO_IP && (name == IP_TOS || name == IP_TTL))
    return *opt = name == IP_TOS ? abi::SockOption::kTos : abi::SockOption::kTtl, true;
  return false;
}

// Options an application may set around every request: on a shunted connection
// they never reach the placeholder (sock_setsockopt), so getsockopt answers them
// from what was remembered. Returns the shuntd option, if (level, name) is one.
bool per_request_option(int level, int name, abi::SockOption* opt) {
  if (level != IPPROTO_TCP || (name != TCP_NODELAY && name != TCP_CORK)) return false;
  *opt = name == TCP_CORK ? abi::SockOption::kCork : abi::SockOption::kNoDelay;
  return true;
}

// Remembers what an option means for us. Called after the kernel accepted it.
void remember_option(Socket& s, int level, int name, const void* val, socklen_t len) {
  int v = 0;
  if (len >= socklen_t(sizeof(int))) memcpy(&v, val, sizeof v);
  if (level == SOL_SOCKET && name == SO_REUSEADDR) s.reuseaddr = v != 0;
  abi::SockOption opt;
  int32_t value;
  if (forwarded_option(level, name, val, len, &opt, &value) && value >= 0) {
    s.option_set |= 1u << uint32_t(opt);
    s.option_value[uint32_t(opt)] = value;
  }
  if (level == SOL_SOCKET && (name == SO_RCVTIMEO || name == SO_SNDTIMEO) &&
      len >= socklen_t(sizeof(timeval))) {
    timeval tv;
    memcpy(&tv, val, sizeof tv);
    (name == SO_RCVTIMEO ? s.rcvtimeo_ns : s.sndtimeo_ns) = timeval_ns(tv);
  }
  if (level == SOL_SOCKET && name == SO_LINGER && len >= socklen_t(sizeof(linger))) {
    linger l;
    memcpy(&l, val, sizeof l);
    s.linger_ns = l.l_onoff != 0 && l.l_linger > 0 ? int64_t(l.l_linger) * 1000000000 : 0;
  }
}

}  // namespace

int sock_setsockopt(Socket& s, int fd, int level, int name, const void* val, socklen_t len) {
  std::lock_guard<std::mutex> g(s.mu);
  OptClass cls = classify_option(level, name);
  if (s.shunted() && (cls == OptClass::kUnsupported || cls == OptClass::kQuery))
    return -ENOPROTOOPT;
  abi::SockOption opt{};
  int32_t value = 0;
  if (s.mode.load(std::memory_order_acquire) == Mode::kShunted && per_request_option(level, name, &opt)) {
    // nginx corks and uncorks around every response: these go to shuntd alone,
    // checked here as the kernel checks them, with no system call (an unmapped
    // pointer is EFAULT through the fault guard).
    if (len < socklen_t(sizeof(int))) return -EINVAL;  // before EFAULT, as Linux
    if (val == nullptr || !guarded([&] { remember_option(s, level, name, val, len); }))
      return -EFAULT;
    return set_option(s, opt, s.option_value[uint32_t(opt)]);
  }
  // A congestion control the kernel knows but shuntd does not: an honest error.
  if (cls == OptClass::kReplay && val != nullptr && forwarded_option(level, name, val, len, &opt, &value) &&
      value < 0)
    return -ENOENT;
  // The placeholder validates the arguments (kernel errno) and mirrors the value
  // for getsockopt; for a dual listener it is the kernel half itself.
  if (libc().setsockopt(fd, level, name, val, len) < 0) return -errno;
  remember_option(s, level, name, val, len);
  if (kernel_settled_option(level, name, &opt)) {
    // What the kernel made of the value (buffer sizes clamped to rmem_max/wmem_max
    // and doubled, IP_TTL -1 the default, a TCP socket's ECN bits kept): shuntd
    // applies that. Its rings hold half a buffer size, as the kernel's window does.
    int kernel = 0;
    socklen_t klen = sizeof kernel;
    if (libc().getsockopt(fd, level, name, &kernel, &klen) < 0 || kernel < 0) return 0;
    bool buffer = opt == abi::SockOption::kRcvBuf || opt == abi::SockOption::kSndBuf;
    int32_t v = buffer ? kernel / 2 : kernel;
    if (buffer && v == 0) return 0;
    s.option_set |= 1u << uint32_t(opt);
    s.option_value[uint32_t(opt)] = v;
    return s.shunted() ? set_option(s, opt, v) : 0;
  }
  if (!s.shunted()) return 0;
  if (cls == OptClass::kHint) {
    SHUNT_DEBUG("option %d/%d on slot %u accepted, not applied by shuntd", level, name,
                s.ctl_slot);
    return 0;
  }
  if (cls != OptClass::kReplay || !forwarded_option(level, name, val, len, &opt, &value)) return 0;
  return set_option(s, opt, value);
}

namespace {

// TCP_INFO and TCP_MAXSEG of a socket shuntd holds: one round trip, as getsockopt
// is a control call. Lengths as Linux's do_tcp_getsockopt: cut to what it has.
int tcp_info_option(Socket& s, int name, void* val, socklen_t* len) {
  if (val == nullptr || len == nullptr) return -EFAULT;
  socklen_t want = 0;
  if (!guarded([&] { want = *len; })) return -EFAULT;
  if (int(want) < 0) return -EINVAL;
  abi::Command cmd = make_command(abi::Op::kTcpInfo, s.ctl_slot);
  abi::Completion c;
  abi::TcpInfo info;
  if (int r = rt().call(cmd, &c, &info); r < 0) return r;
  if (name == TCP_MAXSEG) {
    // A connection's send MSS; before one exists Linux says 536 (TCP_MSS_DEFAULT).
    bool connected = info.state != uint8_t(ctl::LinuxTcpState::kListen) &&
                     info.state != uint8_t(ctl::LinuxTcpState::kClose);
    return put_int(val, len, connected ? int(info.snd_mss) : 536);
  }
  socklen_t n = std::min<socklen_t>(want, sizeof info);
  return guarded([&] {
    memcpy(val, &info, n);
    *len = n;
  }) ? 0 : -EFAULT;
}

}  // namespace

int sock_getsockopt(Socket& s, int fd, int level, int name, void* val, socklen_t* len) {
  if (!s.shunted()) return libc().getsockopt(fd, level, name, val, len) < 0 ? -errno : 0;
  if (level == SOL_SOCKET) {
    switch (name) {
      case SO_ERROR: {
        int e = s.datagram ? dgram_take_error(s) : take_error(s);
        if (e == 0 && s.mode.load() == Mode::kDual)
          return libc().getsockopt(fd, level, name, val, len) < 0 ? -errno : 0;
        return put_int(val, len, e);
      }
      case SO_ACCEPTCONN:
        // The slot's state: another process holding the listener may have shut it down.
        return put_int(val, len, view(s).state == uint32_t(SlotState::kListening) ? 1 : 0);
      // What the rings may hold, doubled as Linux reports its buffers (half of
      // them is bookkeeping there): the size the application set (shuntd applies
      // it after the call returns; Linux's answer is at once), else what they hold
      // now, autotuned. A socket without rings asks its placeholder.
      case SO_RCVBUF:
      case SO_SNDBUF: {
        const bool rcv = name == SO_RCVBUF;
        const abi::ByteRing& ring = rcv ? s.rx : s.tx;
        if (!ring.valid()) break;
        const uint32_t o = uint32_t(rcv ? abi::SockOption::kRcvBuf : abi::SockOption::kSndBuf);
        uint64_t bytes = (s.option_set & (1u << o)) != 0
                             ? std::clamp<uint64_t>(uint64_t(s.option_value[o]), 1, ring.reserved())
                             : ring.capacity();
        return put_int(val, len, int(std::min<uint64_t>(2 * bytes, INT_MAX)));
      }
      default:
        break;
    }
  }
  if (level == IPPROTO_TCP && (name == TCP_INFO || name == TCP_MAXSEG) && !s.datagram &&
      s.ctl_slot != abi::kNoSlot)
    return tcp_info_option(s, name, val, len);
  if (classify_option(level, name) == OptClass::kUnsupported) return -ENOPROTOOPT;
  abi::SockOption opt;
  if (per_request_option(level, name, &opt) && (s.option_set & (1u << uint32_t(opt))) != 0)
    return put_int(val, len, s.option_value[uint32_t(opt)]);
  return libc().getsockopt(fd, level, name, val, len) < 0 ? -errno : 0;
}

int sock_fcntl(Socket& s, int fd, int cmd, unsigned long arg, bool is64) {
  auto real = is64 ? libc().fcntl64 : libc().fcntl;
  switch (cmd) {
    case F_GETFL: {
      int r = real(fd, F_GETFL);
      if (r < 0) return -errno;
      return (r & ~O_NONBLOCK) | (s.nonblock.load() ? O_NONBLOCK : 0);
    }
    case F_SETFL: {
      int flags = int(arg);
      // The kernel half of a dual listener stays nonblocking (accept polls it).
      int real_flags = s.mode.load() == Mode::kDual ? flags | O_NONBLOCK : flags;
      if (real(fd, F_SETFL, real_flags) < 0) return -errno;
      s.nonblock.store((flags & O_NONBLOCK) != 0, std::memory_order_release);
      return 0;
    }
    case F_DUPFD:
    case F_DUPFD_CLOEXEC: {
      int nfd = real(fd, cmd, arg);
      if (nfd < 0) return -errno;
      fd_forget_stale(nfd);
      fd_table().install(nfd, &s, nullptr);
      return nfd;
    }
    default: {
      int r = real(fd, cmd, arg);
      return r < 0 ? -errno : r;
    }
  }
}

int sock_ioctl(Socket& s, int fd, unsigned long req, void* arg) {
  if (req == FIONBIO) {
    if (arg == nullptr) return -EFAULT;
    int on;
    memcpy(&on, arg, sizeof on);
    if (s.mode.load() != Mode::kDual && libc().ioctl(fd, req, arg) < 0) return -errno;
    s.nonblock.store(on != 0, std::memory_order_release);
    return 0;
  }
  if (s.datagram && s.shunted() && (req == FIONREAD || req == TIOCOUTQ))
    return dgram_ioctl(s, fd, req, arg);
  if (s.shunted() && (req == FIONREAD || req == TIOCOUTQ)) {
    if (arg == nullptr) return -EFAULT;
    if (s.listening.load()) return -EINVAL;
    int v = req == FIONREAD ? int(rx_available(s.rx)) : int(s.tx.capacity() - s.tx.writable());
    memcpy(arg, &v, sizeof v);
    return 0;
  }
  return libc().ioctl(fd, req, arg) < 0 ? -errno : 0;
}

// ---- data path ----

namespace {

// The wait step every stream call shares: nothing (more) to do now. Returns true
// with *out set when the call must return (nonblocking, signal, timeout, with
// the bytes moved so far); false when `ready` holds and the caller goes again.
template <typename Ready>
bool wait_or_return(Socket& s, bool nonblock, const Deadline& d, size_t done, Ready&& ready,
                    ssize_t* out) {
  int err = 0;
  if (nonblock) {
    err = EAGAIN;
  } else {
    Wake w = rt().wait(*s.region, ready, d, -1, s.slot);
    if (w == Wake::kInterrupted) {
      if (done == 0 && signal_restarts(d)) return false;  // SA_RESTART
      err = EINTR;
    } else if (w == Wake::kTimeout) {
      err = EAGAIN;
    } else {
      return false;
    }
  }
  *out = done > 0 ? ssize_t(done) : -err;
  return true;
}

bool writable_or_failed(Socket& s) {
  return (s.readiness() & (EPOLLOUT | EPOLLERR | EPOLLHUP)) != 0;
}

// Writing is over (reset, shut down, closed): the result a send returns, with the
// bytes already queued taking precedence. Returns false when writing may go on.
bool write_ended(Socket& s, const SlotSnapshot& v, size_t done, int flags, ssize_t* out) {
  if (!(v.flags & (abi::kFlagReset | abi::kFlagWriteShut)) && !s.shut_wr.load() &&
      v.state != uint32_t(SlotState::kClosed))
    return false;
  if (done > 0) return *out = ssize_t(done), true;
  int e = take_error(s);
  *out = e != 0 ? -e : epipe(flags);
  return true;
}

}  // namespace

ssize_t sock_recv(Socket& s, int fd, const iovec* iov, int iovcnt, int flags) {
  if (s.datagram) {
    msghdr m{};
    m.msg_iov = const_cast<iovec*>(iov);
    m.msg_iovlen = size_t(iovcnt);
    return dgram_recvmsg(s, fd, &m, flags);
  }
  ssize_t total = iov_total(iov, iovcnt);
  if (total < 0) return total;
  if (flags & MSG_OOB) return -EINVAL;     // no urgent data, ever
  if (flags & MSG_ERRQUEUE) return -EAGAIN;  // no error queue
  if (s.listening.load(std::memory_order_acquire)) return kernel_recv(fd, iov, iovcnt, flags);
  const bool peek = flags & MSG_PEEK;
  const bool discard = flags & MSG_TRUNC;
  const bool waitall = (flags & MSG_WAITALL) != 0;
  const bool nb = (flags & MSG_DONTWAIT) || s.nonblock.load(std::memory_order_acquire);
  const Deadline d = Deadline::after_ns(s.rcvtimeo_ns);
  size_t done = 0;
  for (;;) {
    SlotSnapshot v = view(s);  // before the copy: a FIN seen here follows all bytes
    if (peek && waitall && rx_available(s.rx) < size_t(total) &&
        (v.flags & (abi::kFlagPeerFin | abi::kFlagReset)) == 0 && !nb) {
      // MSG_PEEK|MSG_WAITALL: wait for the whole amount, then peek it.
    } else {
      bool fault = false;
      done += rx_to_iov(s.rx, iov, iovcnt, done, size_t(total) - done, 0, peek, discard, &fault);
      if (!peek && done > 0) maybe_rx_drained(s);
      if (fault) return done > 0 ? ssize_t(done) : -EFAULT;
      if (done == size_t(total) || (done > 0 && (!waitall || peek))) return ssize_t(done);
      if (total == 0) return 0;
    }
    if (rx_available(s.rx) == 0) {
      if (v.flags & abi::kFlagReset) {
        if (done > 0) return ssize_t(done);
        int e = take_error(s);
        return e != 0 ? -e : 0;  // reported once, then end of stream like Linux
      }
      if ((v.flags & abi::kFlagPeerFin) || s.shut_rd.load(std::memory_order_acquire))
        return ssize_t(done);
      if (!connected_or_connecting(v.state) && !s.connect_pending.load()) {
        if (done > 0) return ssize_t(done);
        int e = take_error(s);
        if (e != 0) return -e;
        return v.state == uint32_t(SlotState::kClosed) ? 0 : -ENOTCONN;
      }
    }
    auto ready = [&] {
      return (s.readiness() & (EPOLLIN | EPOLLERR | EPOLLHUP)) != 0 &&
             (!peek || !waitall || rx_available(s.rx) >= size_t(total) ||
              (view(s).flags & (abi::kFlagPeerFin | abi::kFlagReset)) != 0);
    };
    if (ssize_t r; wait_or_return(s, nb, d, done, ready, &r)) return r;
  }
}

ssize_t sock_send(Socket& s, int fd, const iovec* iov, int iovcnt, int flags) {
  if (s.datagram) {
    msghdr m{};
    m.msg_iov = const_cast<iovec*>(iov);
    m.msg_iovlen = size_t(iovcnt);
    return dgram_sendmsg(s, fd, &m, flags);
  }
  ssize_t total = iov_total(iov, iovcnt);
  if (total < 0) return total;
  if (flags & MSG_OOB) return -EOPNOTSUPP;  // no urgent data in version 1
  if (s.listening.load(std::memory_order_acquire)) return kernel_send(fd, iov, iovcnt, flags);
  const bool nb = (flags & MSG_DONTWAIT) || s.nonblock.load(std::memory_order_acquire);
  const Deadline d = Deadline::after_ns(s.sndtimeo_ns);
  size_t done = 0;
  for (;;) {
    SlotSnapshot v = view(s);
    if (ssize_t r; write_ended(s, v, done, flags, &r)) return r;
    if (v.state == uint32_t(SlotState::kConnected)) {
      bool fault = false;
      size_t n = iov_to_tx(s.tx, iov, iovcnt, done, size_t(total) - done, &fault);
      if (n > 0) {
        done += n;
        notify_tx(s);
      }
      if (fault) return done > 0 ? ssize_t(done) : -EFAULT;
      if (done == size_t(total)) return ssize_t(done);
    } else if (v.state != uint32_t(SlotState::kConnecting) && !s.connect_pending.load()) {
      return kernel_send(fd, iov, iovcnt, flags);  // never connected: the kernel's answer
    }
    if (ssize_t r; wait_or_return(s, nb, d, done, [&] { return writable_or_failed(s); }, &r))
      return r;
  }
}

ssize_t sock_sendfile(Socket& s, int in_fd, off_t* offset, size_t count) {
  if (s.datagram) return -EINVAL;  // sendfile to a shunted UDP socket: not in this version
  if (shunted_at(in_fd)) return -EINVAL;  // in_fd must be a file
  if (s.listening.load(std::memory_order_acquire)) return epipe(0);
  if (count > size_t(0x7ffff000)) count = 0x7ffff000;  // MAX_RW_COUNT
  const bool nb = s.nonblock.load(std::memory_order_acquire);
  const Deadline d = Deadline::after_ns(s.sndtimeo_ns);
  const Libc& c = libc();
  size_t done = 0;
  for (;;) {
    SlotSnapshot v = view(s);
    if (ssize_t r; write_ended(s, v, done, 0, &r)) return r;
    if (v.state == uint32_t(SlotState::kConnected)) {
      if (count == 0) return 0;
      uint32_t room = s.tx.writable();
      ssize_t n = file_to_tx(s.tx, in_fd, offset, count - done, ::pread, c.read);
      if (n < 0) return done > 0 ? ssize_t(done) : n;
      if (n > 0) {
        done += size_t(n);
        notify_tx(s);
      }
      if (done == count) return ssize_t(done);
      if (size_t(n) < room) return ssize_t(done);  // end of file
    } else if (v.state != uint32_t(SlotState::kConnecting) && !s.connect_pending.load()) {
      return epipe(0);
    }
    if (ssize_t r; wait_or_return(s, nb, d, done, [&] { return writable_or_failed(s); }, &r))
      return r;
  }
}

// ---- fork ----

void sockets_fork_prepare() {
  g_pool.mutex().lock();
  epolls_fork_prepare();
}

void sockets_fork_parent() {
  epolls_fork_parent();
  g_pool.mutex().unlock();
}

void sockets_fork_child_locks() {
  new (&g_pool.mutex()) std::mutex;
  epolls_fork_child();
  // Per-socket locks held by threads that do not exist here are rebuilt too.
  fd_table().for_each([](int, FdObject* o) {
    if (o->kind != FdKind::kSocket) return;
    auto* s = static_cast<Socket*>(o);
    new (&s->mu) std::mutex;
    new (&s->rx_mu) std::mutex;
    new (&s->tx_mu) std::mutex;
  });
}

bool sockets_after_fork(Region* old, Region* fresh) {
  // One entry per inherited shunted socket (dup'ed fds share one).
  struct Item {
    Socket* s;
    int fd;
  };
  std::vector<Item> items;
  fd_table().for_each([&](int fd, FdObject* o) {
    if (o->kind != FdKind::kSocket) return;
    auto* s = static_cast<Socket*>(o);
    if (!s->shunted() || s->dead.load()) return;
    for (const Item& it : items)
      if (it.s == s) return;
    items.push_back({s, fd});
  });
  bool old_in_use = false;
  for (size_t base = 0; base < items.size(); base += ctl::kMaxInherit) {
    uint32_t n = uint32_t(std::min<size_t>(ctl::kMaxInherit, items.size() - base));
    int fds[ctl::kMaxInherit];
    uint32_t parent_slots[ctl::kMaxInherit];
    uint32_t child_slots[ctl::kMaxInherit];
    for (uint32_t i = 0; i < n; ++i) {
      fds[i] = items[base + i].fd;
      parent_slots[i] = items[base + i].s->ctl_slot;
      child_slots[i] = abi::kNoSlot;
    }
    if (fresh != nullptr) rt().inherit(old->id, fds, parent_slots, n, child_slots);
    for (uint32_t i = 0; i < n; ++i) {
      Socket& s = *items[base + i].s;
      if (child_slots[i] == abi::kNoSlot) {
        SHUNT_WARN("fd %d: shuntd did not hand the inherited socket over; it is reset", fds[i]);
        s.dead.store(true, std::memory_order_release);
        if (s.region == old) old_in_use = true;  // still read (flags), never written
        continue;
      }
      s.ctl_slot = child_slots[i];
      uint32_t st = s.s->state.load(std::memory_order_acquire);
      // Datagram sockets keep using the parent's rings too (one socket, one rx ring).
      if (s.region == old && !s.datagram &&
          (s.listening.load() || st == uint32_t(SlotState::kBound))) {
        // Listeners and bound sockets move to the child's slot; connected ones keep
        // their bytes in the parent's slot (docs/abi.md "Fork", a version-1 limit).
        s.region = fresh;
        s.slot = child_slots[i];
        s.s = fresh->slot(s.slot);
        s.rx = fresh->rx(s.slot);
        s.tx = fresh->tx(s.slot);
      }
      if (s.region == old) old_in_use = true;
    }
  }
  return old_in_use;
}

}  // namespace shunt::preload
