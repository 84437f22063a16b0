#include "dgram.hh"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/sockios.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "epoll.hh"
#include "fault_guard.hh"
#include "libc.hh"
#include "log.hh"
#include "route.hh"
#include "stream.hh"

namespace shunt::preload {
namespace {

using abi::SlotState;

Runtime& rt() { return Runtime::get(); }

uint64_t pack_peer(uint32_t ip_be, uint16_t port_be) { return uint64_t(ip_be) << 16 | port_be; }
sockaddr_in unpack_peer(uint64_t p) { return make_sin(uint32_t(p >> 16), uint16_t(p & 0xffff)); }

bool nic_routes(uint32_t ip_be) { return route_connect(rt().nic(), ip_be); }

ssize_t kernel_sendmsg(int fd, const msghdr* msg, int flags) {
  ssize_t r = libc().sendmsg(fd, msg, flags);
  return r < 0 ? -errno : r;
}

ssize_t kernel_recvmsg(int fd, msghdr* msg, int flags) {
  ssize_t r = libc().recvmsg(fd, msg, flags);
  return r < 0 ? -errno : r;
}

bool error_pending(const Socket& s) {
  return s.s->error_seq.load(std::memory_order_acquire) !=
         s.error_seq_seen.load(std::memory_order_acquire);
}

// The destination named by a send call, if any. AF_UNSPEC counts as AF_INET, as
// in Linux's udp_sendmsg.
int dest_of(const msghdr* msg, sockaddr_in* out, bool* given) {
  *given = false;
  if (msg->msg_name == nullptr || msg->msg_namelen == 0) return 0;
  if (msg->msg_namelen < sizeof(sockaddr_in)) return -EINVAL;
  memcpy(out, msg->msg_name, sizeof *out);
  if (out->sin_family != AF_INET && out->sin_family != AF_UNSPEC) return -EAFNOSUPPORT;
  *given = true;
  return 0;
}

// Makes the kernel half of a dual socket nonblocking (receives poll it).
void kernel_half_nonblocking(int fd) {
  int fl = libc().fcntl(fd, F_GETFL);
  if (fl >= 0) libc().fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

// s.mu held. kUdpBind to the NIC address; adopts the slot (not yet published).
int shunt_bind(Socket& s, uint32_t ip_be, uint16_t port_be) {
  abi::Command cmd = make_command(abi::Op::kUdpBind, abi::kNoSlot);
  cmd.ip = ip_be;
  cmd.port = port_be;
  cmd.arg2 = s.inode;
  abi::Completion c;
  int r = rt().call(cmd, &c);
  if (r < 0) return r;
  if (!sock_adopt_slot(s, c)) {
    rt().post(make_command(abi::Op::kClose, c.slot));
    return -EPROTO;
  }
  s.dgram_peer.store(0, std::memory_order_release);
  return 0;
}

// s.mu held. kUdpConnect on the socket's slot (kNoSlot: the daemon binds first).
int shunt_connect(Socket& s, uint32_t slot, uint32_t ip_be, uint16_t port_be, abi::Completion* c) {
  abi::Command cmd = make_command(abi::Op::kUdpConnect, slot);
  cmd.ip = ip_be;
  cmd.port = port_be;
  cmd.arg2 = s.inode;
  return rt().call(cmd, c);
}

// The first send of an undecided socket decides it (docs/architecture.md, Which
// sockets). s.mu held.
int decide_on_send(Socket& s, int fd, const sockaddr_in& dst) {
  if (s.mode.load(std::memory_order_acquire) != Mode::kCandidate) return 0;
  if (!nic_routes(dst.sin_addr.s_addr)) {
    sock_forget(s, fd);
    return 0;
  }
  // Linux autobinds to 0.0.0.0:ephemeral; ours is the NIC's address, reported as
  // the wildcard until a connect fixes it.
  if (int r = shunt_bind(s, rt().nic().ip, 0); r < 0) return r;
  s.local.sin_addr.s_addr = 0;
  sock_publish(s, Mode::kShunted, fd);
  return 0;
}

// A dual socket gives up one half: connect() chose. s.mu held.
void end_dual(Socket& s, int fd, bool keep_shunt) {
  if (keep_shunt) {
    s.mode.store(Mode::kShunted, std::memory_order_release);
    if (s.epoll_refs.load(std::memory_order_acquire) != 0) epolls_dual_end(s, fd);
    return;
  }
  rt().post(make_command(abi::Op::kClose, s.ctl_slot));
  s.mode.store(Mode::kKernel, std::memory_order_release);
  if (s.epoll_refs.load(std::memory_order_acquire) != 0) epolls_dual_end(s, fd);
  sock_forget(s, fd);
}

// A send through the kernel half of a dual socket, which is nonblocking: a
// blocking caller waits for room there (rare for UDP: the send buffer is full).
ssize_t dual_kernel_send(Socket& s, int fd, const msghdr* msg, int flags) {
  const bool nb = (flags & MSG_DONTWAIT) || s.nonblock.load(std::memory_order_acquire);
  const Deadline d = Deadline::after_ns(s.sndtimeo_ns);
  for (;;) {
    ssize_t r = kernel_sendmsg(fd, msg, flags | MSG_DONTWAIT);
    if (r != -EAGAIN || nb) return r;
    pollfd p{fd, POLLOUT, 0};
    int k = libc().poll(&p, 1, d.remaining_ms());
    if (k < 0 && errno == EINTR && !signal_restarts(d)) return -EINTR;
    if (k == 0) return -EAGAIN;
  }
}

// One datagram from the shunt half into msg, or -EAGAIN.
ssize_t shunt_take(Socket& s, msghdr* msg, int flags, size_t total) {
  std::lock_guard<std::mutex> g(s.rx_mu);
  abi::DgramHeader h;
  switch (abi::dgram_front(s.rx, &h)) {
    case abi::DgramFront::kEmpty:
      return -EAGAIN;
    case abi::DgramFront::kCorrupt:
      // The daemon wrote it: a bug there, not the application's fault. Drop what
      // the ring holds rather than read past a record.
      SHUNT_WARN("slot %u: corrupt datagram ring, %u bytes dropped", s.slot, s.rx.readable());
      s.rx.consume(std::min(s.rx.readable(), s.rx.capacity()));
      return -EAGAIN;
    case abi::DgramFront::kOk:
      break;
  }
  bool fault = false;
  size_t copied = dgram_read_iov(s.rx, h, msg->msg_iov, int(msg->msg_iovlen), &fault);
  // As Linux's udp_recvmsg: a datagram that could not be copied out is dropped.
  if (!(flags & MSG_PEEK)) s.rx.consume(abi::dgram_record_size(h.len));
  if (fault) return -EFAULT;
  if (msg->msg_name != nullptr) {
    socklen_t n = msg->msg_namelen;
    fill_sockaddr(make_sin(h.ip, h.port), static_cast<sockaddr*>(msg->msg_name), &n);
    msg->msg_namelen = n;
  } else {
    msg->msg_namelen = 0;
  }
  msg->msg_controllen = 0;
  msg->msg_flags = h.len > total ? MSG_TRUNC : 0;
  return (flags & MSG_TRUNC) ? ssize_t(h.len) : ssize_t(copied);
}

bool shunt_readable(const Socket& s) {
  return std::min(s.rx.readable(), s.rx.capacity()) >= sizeof(abi::DgramHeader);
}

}  // namespace

// ---- ring helpers ----

bool dgram_write_iov(abi::ByteRing& tx, uint32_t ip_be, uint16_t port_be, const iovec* iov,
                     int iovcnt, uint32_t len) {
  uint32_t head = tx.indices()->head.value.load(std::memory_order_relaxed);
  abi::DgramHeader h{uint16_t(len), port_be, ip_be};
  tx.copy_in(head, reinterpret_cast<const uint8_t*>(&h), sizeof h);
  uint32_t pos = head + uint32_t(sizeof h);
  uint32_t left = len;
  for (int i = 0; i < iovcnt && left > 0; ++i) {
    uint32_t n = uint32_t(std::min<size_t>(iov[i].iov_len, left));
    if (n == 0) continue;
    const uint8_t* from = static_cast<const uint8_t*>(iov[i].iov_base);
    if (!guarded([&] { tx.copy_in(pos, from, n); })) return false;  // nothing produced
    pos += n;
    left -= n;
  }
  uint32_t size = abi::dgram_record_size(len);
  static constexpr uint8_t kPad[4] = {};
  if (size > sizeof h + len) tx.copy_in(pos, kPad, size - uint32_t(sizeof h) - len);
  tx.produce(size);  // release: the daemon sees the whole record first
  return true;
}

size_t dgram_read_iov(const abi::ByteRing& rx, const abi::DgramHeader& h, const iovec* iov,
                      int iovcnt, bool* fault) {
  uint32_t pos = rx.indices()->tail.value.load(std::memory_order_relaxed) +
                 uint32_t(sizeof(abi::DgramHeader));
  size_t left = h.len, done = 0;
  for (int i = 0; i < iovcnt && left > 0; ++i) {
    size_t n = std::min(iov[i].iov_len, left);
    if (n == 0) continue;
    uint8_t* to = static_cast<uint8_t*>(iov[i].iov_base);
    if (!guarded([&] { rx.copy_out(pos, to, uint32_t(n)); })) {
      if (fault != nullptr) *fault = true;
      break;
    }
    pos += uint32_t(n);
    left -= n;
    done += n;
  }
  return done;
}

// ---- control path ----

int dgram_bind(Socket& s, int fd, const sockaddr* addr, socklen_t len) {
  std::lock_guard<std::mutex> g(s.mu);
  Mode m = s.mode.load(std::memory_order_acquire);
  if (m == Mode::kShunted || m == Mode::kDual) return -EINVAL;  // bound already
  if (m == Mode::kKernel) return libc().bind(fd, addr, len) < 0 ? -errno : 0;
  if (addr == nullptr || len < socklen_t(sizeof(sockaddr_in)) || addr->sa_family != AF_INET) {
    sock_forget(s, fd);  // the kernel gives the right error
    return libc().bind(fd, addr, len) < 0 ? -errno : 0;
  }
  sockaddr_in sin;
  memcpy(&sin, addr, sizeof sin);
  switch (route_bind(rt().nic(), sin.sin_addr.s_addr)) {
    case BindRoute::kShunt: {
      if (int r = shunt_bind(s, sin.sin_addr.s_addr, sin.sin_port); r < 0) return r;
      s.user_bound = true;
      sock_publish(s, Mode::kShunted, fd);
      return 0;
    }
    case BindRoute::kWildcard: {
      // Both halves on one port: the kernel picks it (or checks the one asked
      // for), then the NIC takes the same.
      if (libc().bind(fd, addr, len) < 0) return -errno;
      sockaddr_in bound{};
      socklen_t blen = sizeof bound;
      libc().getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &blen);
      if (int r = shunt_bind(s, rt().nic().ip, bound.sin_port); r < 0) {
        SHUNT_WARN("udp 0.0.0.0:%u receives on the kernel only (shuntd: %s)",
                   ntohs(bound.sin_port), strerror(-r));
        sock_forget(s, fd);
        return 0;
      }
      s.local = bound;
      s.user_bound = true;
      kernel_half_nonblocking(fd);
      sock_publish(s, Mode::kDual, fd);
      return 0;
    }
    case BindRoute::kKernel:
      break;
  }
  sock_forget(s, fd);
  return libc().bind(fd, addr, len) < 0 ? -errno : 0;
}

int dgram_connect(Socket& s, int fd, const sockaddr* addr, socklen_t len) {
  std::unique_lock<std::mutex> g(s.mu);
  Mode m = s.mode.load(std::memory_order_acquire);
  auto kernel = [&] {
    g.unlock();
    return libc().connect(fd, addr, len) < 0 ? -errno : 0;
  };
  if (m == Mode::kKernel || addr == nullptr || len < socklen_t(sizeof(sa_family_t)))
    return kernel();
  if (addr->sa_family == AF_UNSPEC) {
    // Dissolves the association (Linux __udp_disconnect): any source again; an
    // address the socket did not bind itself is forgotten too.
    if (m == Mode::kCandidate) return kernel();
    if (m == Mode::kDual) return kernel();  // the shunt half was never connected
    abi::Completion c;
    if (int r = shunt_connect(s, s.ctl_slot, 0, 0, &c); r < 0) return r;
    s.dgram_peer.store(0, std::memory_order_release);
    s.peer = sockaddr_in{};
    if (!s.user_bound) s.local.sin_addr.s_addr = 0;
    return 0;
  }
  if (addr->sa_family != AF_INET) {
    if (m == Mode::kCandidate) return kernel();
    return -EAFNOSUPPORT;
  }
  if (len < socklen_t(sizeof(sockaddr_in))) return -EINVAL;
  sockaddr_in sin;
  memcpy(&sin, addr, sizeof sin);
  const bool nic = nic_routes(sin.sin_addr.s_addr);
  abi::Completion c;
  switch (m) {
    case Mode::kCandidate: {
      if (!nic) {
        sock_forget(s, fd);
        return kernel();
      }
      if (int r = shunt_connect(s, abi::kNoSlot, sin.sin_addr.s_addr, sin.sin_port, &c); r < 0)
        return r;
      if (!sock_adopt_slot(s, c)) {
        rt().post(make_command(abi::Op::kClose, c.slot));
        return -EPROTO;
      }
      break;
    }
    case Mode::kShunted:
      // Bound to the NIC: it reaches what the NIC reaches (Linux would route a
      // socket bound to an interface's address out of another one; we cannot).
      if (!nic) return -ENETUNREACH;
      if (int r = shunt_connect(s, s.ctl_slot, sin.sin_addr.s_addr, sin.sin_port, &c); r < 0)
        return r;
      break;
    case Mode::kDual:
      if (!nic) {  // the kernel half is the socket from now on
        end_dual(s, fd, false);
        return kernel();
      }
      if (int r = shunt_connect(s, s.ctl_slot, sin.sin_addr.s_addr, sin.sin_port, &c); r < 0)
        return r;
      end_dual(s, fd, true);
      break;
    default:
      return kernel();
  }
  s.local = make_sin(c.local_ip, c.local_port);
  s.peer = make_sin(c.remote_ip, c.remote_port);
  s.dgram_peer.store(pack_peer(c.remote_ip, c.remote_port), std::memory_order_release);
  if (m == Mode::kCandidate) sock_publish(s, Mode::kShunted, fd);
  return 0;
}

int dgram_shutdown(Socket& s, int fd, int how) {
  if (!s.shunted()) return libc().shutdown(fd, how) < 0 ? -errno : 0;
  if (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR) return -EINVAL;
  std::lock_guard<std::mutex> g(s.mu);
  if (s.mode.load() == Mode::kDual) libc().shutdown(fd, how);
  if (how != SHUT_WR) s.shut_rd.store(true, std::memory_order_release);
  if (how != SHUT_RD) s.shut_wr.store(true, std::memory_order_release);
  // Wake this process's threads blocked on the socket (Linux wakes them too).
  if (s.region != nullptr) s.region->wake_all();
  // Linux marks an unconnected socket shut down too, and still says ENOTCONN.
  return s.dgram_peer.load(std::memory_order_acquire) != 0 ? 0 : -ENOTCONN;
}

int dgram_getpeername(Socket& s, int fd, sockaddr* addr, socklen_t* len) {
  if (!s.shunted()) return libc().getpeername(fd, addr, len) < 0 ? -errno : 0;
  uint64_t p = s.dgram_peer.load(std::memory_order_acquire);
  if (p == 0) return -ENOTCONN;
  if (addr == nullptr) return -EFAULT;
  return fill_sockaddr(unpack_peer(p), addr, len);
}

int dgram_take_error(Socket& s) {
  if (!s.shunted() || s.s == nullptr) return 0;
  uint32_t seq = s.s->error_seq.load(std::memory_order_acquire);
  uint32_t seen = s.error_seq_seen.load(std::memory_order_acquire);
  if (seq == seen || !s.error_seq_seen.compare_exchange_strong(seen, seq)) return 0;
  return s.s->error.load(std::memory_order_acquire);
}

int dgram_ioctl(Socket& s, int fd, unsigned long req, void* arg) {
  if (arg == nullptr) return -EFAULT;
  int v = 0;
  if (req == FIONREAD) {
    // Linux: the size of the next datagram's payload (0 when none).
    std::lock_guard<std::mutex> g(s.rx_mu);
    abi::DgramHeader h;
    if (abi::dgram_front(s.rx, &h) == abi::DgramFront::kOk) {
      v = h.len;
    } else if (s.mode.load() == Mode::kDual) {
      return libc().ioctl(fd, req, arg) < 0 ? -errno : 0;
    }
  } else {  // SIOCOUTQ: bytes queued to send
    v = int(s.tx.capacity() - s.tx.writable());
  }
  memcpy(arg, &v, sizeof v);
  return 0;
}

// ---- data path ----

ssize_t dgram_sendmsg(Socket& s, int fd, const msghdr* msg, int flags) {
  ssize_t total = iov_total(msg->msg_iov, int(msg->msg_iovlen));
  if (total < 0) return total;
  sockaddr_in dst{};
  bool given = false;
  Mode m = s.mode.load(std::memory_order_acquire);
  if (m == Mode::kCandidate) {
    if (dest_of(msg, &dst, &given) < 0 || !given) return kernel_sendmsg(fd, msg, flags);
    std::lock_guard<std::mutex> g(s.mu);
    if (int r = decide_on_send(s, fd, dst); r < 0) return r;
    m = s.mode.load(std::memory_order_acquire);
  }
  if (m == Mode::kKernel) return kernel_sendmsg(fd, msg, flags);
  if (int r = dest_of(msg, &dst, &given); r < 0) return r;
  if (m == Mode::kDual && (!given || !nic_routes(dst.sin_addr.s_addr)))
    return dual_kernel_send(s, fd, msg, flags);
  if (!given) {
    uint64_t p = s.dgram_peer.load(std::memory_order_acquire);
    if (p == 0) return -EDESTADDRREQ;
    dst = unpack_peer(p);
  }
  if (flags & MSG_OOB) return -EOPNOTSUPP;
  if (flags & MSG_MORE) return -EOPNOTSUPP;  // UDP corking: not in this version
  if (dst.sin_port == 0) return -EINVAL;     // Linux udp_sendmsg
  if (!nic_routes(dst.sin_addr.s_addr)) return -ENETUNREACH;
  if (s.shut_wr.load(std::memory_order_acquire)) return -EPIPE;  // no SIGPIPE for UDP
  if (int e = dgram_take_error(s)) return -e;
  if (sock_gone(s)) return -ENETDOWN;
  if (size_t(total) > abi::kMaxDatagram) return -EMSGSIZE;
  const uint32_t need = abi::dgram_record_size(uint32_t(total));
  if (need > s.tx.capacity()) return -EMSGSIZE;  // rings smaller than 64 KiB limit datagrams
  const bool nb = (flags & MSG_DONTWAIT) || s.nonblock.load(std::memory_order_acquire);
  const Deadline d = Deadline::after_ns(s.sndtimeo_ns);
  for (;;) {
    {
      std::lock_guard<std::mutex> g(s.tx_mu);
      if (s.tx.writable() >= need) {
        if (!dgram_write_iov(s.tx, dst.sin_addr.s_addr, dst.sin_port, msg->msg_iov,
                             int(msg->msg_iovlen), uint32_t(total)))
          return -EFAULT;
        sock_notify_tx(s);
        return total;
      }
    }
    if (nb) return -EAGAIN;
    auto ready = [&] { return s.tx.writable() >= need || error_pending(s) || sock_gone(s); };
    Wake w = rt().wait(*s.region, ready, d, -1, s.slot);
    if (w == Wake::kInterrupted && !signal_restarts(d)) return -EINTR;
    if (w == Wake::kTimeout) return -EAGAIN;
    if (sock_gone(s)) return -ENETDOWN;
    if (int e = dgram_take_error(s)) return -e;
  }
}

ssize_t dgram_recvmsg(Socket& s, int fd, msghdr* msg, int flags) {
  ssize_t total = iov_total(msg->msg_iov, int(msg->msg_iovlen));
  if (total < 0) return total;
  Mode m = s.mode.load(std::memory_order_acquire);
  if (m == Mode::kCandidate || m == Mode::kKernel) return kernel_recvmsg(fd, msg, flags);
  if (flags & MSG_ERRQUEUE) return -EAGAIN;  // no error queue (IP_RECVERR) here
  if (flags & MSG_OOB) return -EINVAL;
  const bool dual = m == Mode::kDual;
  const bool nb = (flags & MSG_DONTWAIT) || s.nonblock.load(std::memory_order_acquire);
  const Deadline d = Deadline::after_ns(s.rcvtimeo_ns);
  const int kflags = flags | MSG_DONTWAIT;
  for (;;) {
    // Linux checks the pending error before the queue (__skb_try_recv_datagram).
    if (int e = dgram_take_error(s)) return -e;
    const bool gone = sock_gone(s);
    if (gone && !dual) return -ENETDOWN;
    // A dual socket alternates which half goes first, so neither starves.
    const bool kernel_first = dual && (gone || (s.dual_turn.fetch_add(1) & 1) != 0);
    if (kernel_first) {
      if (ssize_t r = kernel_recvmsg(fd, msg, kflags); r != -EAGAIN) return r;
    }
    if (!gone) {
      if (ssize_t r = shunt_take(s, msg, flags, size_t(total)); r != -EAGAIN) return r;
    }
    if (dual && !kernel_first) {
      if (ssize_t r = kernel_recvmsg(fd, msg, kflags); r != -EAGAIN) return r;
    }
    if (s.shut_rd.load(std::memory_order_acquire)) {
      msg->msg_namelen = 0;
      msg->msg_controllen = 0;
      msg->msg_flags = 0;
      return 0;
    }
    if (nb) return -EAGAIN;
    if (gone) {  // dual, daemon gone: the kernel half alone
      pollfd p{fd, POLLIN, 0};
      int k = libc().poll(&p, 1, d.remaining_ms());
      if (k < 0 && errno == EINTR && !signal_restarts(d)) return -EINTR;
      if (k == 0) return -EAGAIN;
      continue;
    }
    auto ready = [&] {
      return shunt_readable(s) || error_pending(s) || s.shut_rd.load(std::memory_order_acquire) ||
             sock_gone(s);
    };
    Wake w = rt().wait(*s.region, ready, d, dual ? fd : -1, s.slot);
    if (w == Wake::kInterrupted && !signal_restarts(d)) return -EINTR;
    if (w == Wake::kTimeout) return -EAGAIN;
  }
}

ssize_t dgram_recvfrom(Socket& s, int fd, void* buf, size_t len, int flags, sockaddr* addr,
                       socklen_t* alen) {
  iovec v{buf, len};
  msghdr m{};
  m.msg_iov = &v;
  m.msg_iovlen = 1;
  if (addr != nullptr && alen != nullptr) {
    if (int(*alen) < 0) return -EINVAL;
    m.msg_name = addr;
    m.msg_namelen = *alen;
  }
  ssize_t r = dgram_recvmsg(s, fd, &m, flags);
  if (r >= 0 && addr != nullptr && alen != nullptr) *alen = m.msg_namelen;
  return r;
}

ssize_t dgram_sendto(Socket& s, int fd, const void* buf, size_t len, int flags,
                     const sockaddr* addr, socklen_t alen) {
  iovec v{const_cast<void*>(buf), len};
  msghdr m{};
  m.msg_iov = &v;
  m.msg_iovlen = 1;
  m.msg_name = const_cast<sockaddr*>(addr);
  m.msg_namelen = addr != nullptr ? alen : 0;
  return dgram_sendmsg(s, fd, &m, flags);
}

// ---- mmsg (datagram and stream sockets of ours) ----

int sock_sendmmsg(Socket& s, int fd, mmsghdr* vec, unsigned int vlen, int flags) {
  if (vlen > UIO_MAXIOV) vlen = UIO_MAXIOV;  // Linux clamps
  unsigned int i = 0;
  for (; i < vlen; ++i) {
    msghdr* m = &vec[i].msg_hdr;
    ssize_t r;
    if (m->msg_iovlen > IOV_MAX) {
      r = -EMSGSIZE;
    } else if (s.datagram) {
      r = dgram_sendmsg(s, fd, m, flags);
    } else if (s.shunted()) {
      r = sock_send(s, fd, m->msg_iov, int(m->msg_iovlen), flags);
    } else {
      r = kernel_sendmsg(fd, m, flags);
    }
    if (r < 0) return i > 0 ? int(i) : int(r);  // like Linux: the count, once any went
    vec[i].msg_len = unsigned(r);
  }
  return int(i);
}

int sock_recvmmsg(Socket& s, int fd, mmsghdr* vec, unsigned int vlen, int flags,
                  timespec* timeout) {
  Deadline end;
  if (timeout != nullptr) {
    if (timeout->tv_sec < 0 || timeout->tv_nsec < 0 || timeout->tv_nsec >= 1000000000)
      return -EINVAL;
    end = Deadline{Deadline::now() + int64_t(timeout->tv_sec) * 1000000000 + timeout->tv_nsec};
  }
  if (vlen > UIO_MAXIOV) vlen = UIO_MAXIOV;
  unsigned int i = 0;
  while (i < vlen) {
    int f = flags & ~MSG_WAITFORONE;
    if (i > 0 && (flags & MSG_WAITFORONE)) f |= MSG_DONTWAIT;
    msghdr* m = &vec[i].msg_hdr;
    ssize_t r;
    if (m->msg_iovlen > IOV_MAX) {
      r = -EMSGSIZE;
    } else if (s.datagram) {
      r = dgram_recvmsg(s, fd, m, f);
    } else {
      r = sock_recv(s, fd, m->msg_iov, int(m->msg_iovlen), f);
      if (r >= 0) {
        m->msg_namelen = 0;
        m->msg_controllen = 0;
        m->msg_flags = 0;
      }
    }
    if (r < 0) {
      if (i > 0) break;  // Linux returns what it has; the error shows on the next call
      return int(r);
    }
    vec[i++].msg_len = unsigned(r);
    if (!s.datagram && r == 0) break;  // end of stream
    // Linux looks at the timeout only after each datagram.
    if (timeout != nullptr && end.passed()) break;
  }
  if (timeout != nullptr) {  // Linux writes back the time left
    int64_t left = std::max<int64_t>(0, end.at - Deadline::now());
    timeout->tv_sec = left / 1000000000;
    timeout->tv_nsec = left % 1000000000;
  }
  return int(i);
}

}  // namespace shunt::preload
