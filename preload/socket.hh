// A socket the interposer knows about: an AF_INET stream or datagram (UDP) socket
// (datagram sockets: dgram.hh) whose fate is not
// decided yet (kCandidate, kWildcard), or one that lives in shuntd (kShunted), or a
// wildcard listener on both the kernel and shuntd (kDual). Sockets routed to the
// kernel become kKernel and every call on them goes straight to libc.
//
// The fd the application holds is always a real kernel socket (the placeholder,
// docs/architecture.md, Which sockets). Its file status flags, close-on-exec flag
// and the options set on it stay the kernel's; O_NONBLOCK is tracked here too because the data path must not
// ask the kernel.
//
// Threads: control operations (bind, listen, connect, options, shutdown) serialise
// on `mu`; the data path reads atomics and the slot only. The shunt-side fields
// (region .. tx) are written before `mode` is published with a release store and
// never change afterwards (except in the fork child, single-threaded).
//
// Every function here returns a value >= 0 or -errno; the extern "C" wrappers turn
// that into -1 + errno.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <mutex>

#include "fd_table.hh"
#include "readiness.hh"
#include "runtime.hh"

namespace shunt::preload {

enum class Mode : uint8_t { kCandidate, kWildcard, kShunted, kDual, kKernel };

struct Socket : FdObject {
  Socket();

  std::mutex mu;
  std::atomic<Mode> mode{Mode::kCandidate};
  std::atomic<bool> nonblock{false};
  std::atomic<bool> listening{false};
  std::atomic<bool> connect_pending{false};  // a connect() returned EINPROGRESS or EINTR
  std::atomic<int32_t> error_taken{0};       // the slot error already reported
  std::atomic<bool> shut_rd{false};
  std::atomic<bool> shut_wr{false};
  std::atomic<bool> dead{false};             // fork child could not inherit it
  std::atomic<uint32_t> epoll_refs{0};       // interest entries naming this socket
  uint64_t inode = 0;
  bool datagram = false;                     // SOCK_DGRAM (UDP): records, not a stream

  // Datagram sockets (dgram.cc).
  std::atomic<uint64_t> dgram_peer{0};       // connected peer: ip << 16 | port (network order); 0 = none
  std::atomic<uint32_t> error_seq_seen{0};   // the slot's error_seq last reported
  std::atomic<uint32_t> dual_turn{0};        // kDual: which half a receive tries first
  bool user_bound = false;                   // bind() chose the address (not an autobind)
  // Several threads may send or receive on one UDP socket at once (memcached's
  // workers share theirs), and a ring has one producer and one consumer: these
  // serialise the application's side of each ring. Never held while waiting.
  std::mutex rx_mu, tx_mu;

  // Shunt side.
  Region* region = nullptr;  // where the slot and rings are
  uint32_t slot = abi::kNoSlot;
  uint32_t ctl_slot = abi::kNoSlot;  // the slot number commands name (differs after fork)
  abi::SocketSlot* s = nullptr;
  abi::ByteRing rx, tx;
  sockaddr_in local{};
  sockaddr_in peer{};

  // Options remembered to replay or to emulate.
  bool reuseaddr = false;
  // Options forwarded to shuntd (kSetOption): bit per abi::SockOption, and the
  // values, remembered before the routing decision and replayed after it.
  uint32_t option_set = 0;
  int32_t option_value[uint32_t(abi::SockOption::kCount)] = {};
  int64_t rcvtimeo_ns = 0, sndtimeo_ns = 0;               // 0: none
  int64_t linger_ns = 0;  // SO_LINGER {1, t > 0}: close waits up to t for the peer's ACK

  bool shunted() const {
    Mode m = mode.load(std::memory_order_acquire);
    return m == Mode::kShunted || m == Mode::kDual;
  }
  bool ours() const { return mode.load(std::memory_order_acquire) != Mode::kKernel; }
  // The socket's readiness as EPOLL* bits; *seq gets event_seq read before it.
  uint32_t readiness(uint32_t* seq = nullptr) const;
};

Ref<Socket> socket_at_slow(int fd);
Ref<Socket> shunted_at_slow(int fd);
// The socket at fd if the table holds one still routed by us (not kKernel).
// Inline up to the miss every kernel fd takes (pass-through calls).
inline Ref<Socket> socket_at(int fd) {
  return fd_table().peek(fd) == nullptr ? Ref<Socket>{} : socket_at_slow(fd);
}
// The socket at fd if it is shunted (kShunted or kDual): the data-path test.
inline Ref<Socket> shunted_at(int fd) {
  return fd_table().peek(fd) == nullptr ? Ref<Socket>{} : shunted_at_slow(fd);
}

// Creation and table maintenance.
int sock_socket(int domain, int type, int protocol);
int fd_close(int fd);
int fd_dup(int oldfd);
int fd_dup2(int oldfd, int newfd, int flags, bool is_dup3);
void fd_forget_stale(int fd);  // a new kernel fd: drop whatever the table remembered there
// The kernel closed [first, last] behind the table (close_range, closefrom, fclose):
// forget what it remembered there, as close() would have.
void fd_forget_range(unsigned first, unsigned last);

// Control path.
int sock_bind(Socket& s, int fd, const sockaddr* addr, socklen_t len);
int sock_listen(Socket& s, int fd, int backlog);
int sock_accept(Socket& s, int fd, sockaddr* addr, socklen_t* len, int flags);
int sock_connect(Socket& s, int fd, const sockaddr* addr, socklen_t len);
int sock_shutdown(Socket& s, int fd, int how);
int sock_getsockname(Socket& s, int fd, sockaddr* addr, socklen_t* len);
int sock_getpeername(Socket& s, int fd, sockaddr* addr, socklen_t* len);
int sock_setsockopt(Socket& s, int fd, int level, int name, const void* val, socklen_t len);
int sock_getsockopt(Socket& s, int fd, int level, int name, void* val, socklen_t* len);
int sock_fcntl(Socket& s, int fd, int cmd, unsigned long arg, bool is64);
int sock_ioctl(Socket& s, int fd, unsigned long req, void* arg);

// Data path (shunted sockets only).
ssize_t sock_recv(Socket& s, int fd, const iovec* iov, int iovcnt, int flags);
ssize_t sock_send(Socket& s, int fd, const iovec* iov, int iovcnt, int flags);
ssize_t sock_sendfile(Socket& s, int in_fd, off_t* offset, size_t count);

// Fills a sockaddr like the kernel: copies min(*len, sizeof src), stores the full size.
int fill_sockaddr(const sockaddr_in& src, sockaddr* dst, socklen_t* len);

// Shared with dgram.cc (socket.cc's internals).
bool sock_adopt_slot(Socket& s, const abi::Completion& c);  // s.mu held, before publishing
void sock_publish(Socket& s, Mode m, int fd);
void sock_forget(Socket& s, int fd);                        // routed to the kernel for good
void sock_notify_tx(Socket& s);
bool sock_gone(const Socket& s);
sockaddr_in make_sin(uint32_t ip, uint16_t port);
uint64_t placeholder_inode(int fd);

// mmsg calls on a socket of ours (stream or datagram).
int sock_sendmmsg(Socket& s, int fd, mmsghdr* vec, unsigned int vlen, int flags);
int sock_recvmmsg(Socket& s, int fd, mmsghdr* vec, unsigned int vlen, int flags, timespec* timeout);

// Options: how a shunted socket treats (level, name).
enum class OptClass {
  kReplay,       // forwarded to shuntd with kSetOption (and set on the placeholder)
  kLocal,        // emulated here (timeouts, SO_REUSEADDR for kBind), set on the placeholder
  kHint,         // accepted and set on the placeholder; shuntd has no knob for it (logged)
  kQuery,        // getsockopt answered by the placeholder (SO_TYPE …)
  kUnsupported,  // ENOPROTOOPT
};
OptClass classify_option(int level, int name);

// exec (exec.cc): a socket as plain data, carried into the new program image, and
// back. `region` indexes the regions carried with it (kNoRegion: not shunted yet).
struct SocketImage {
  static constexpr uint32_t kNoRegion = ~0u;
  uint32_t region = kNoRegion;
  uint32_t slot = abi::kNoSlot, ctl_slot = abi::kNoSlot;
  uint8_t mode = 0;
  uint8_t nonblock = 0, listening = 0, connect_pending = 0, shut_rd = 0, shut_wr = 0;
  uint8_t datagram = 0, user_bound = 0, reuseaddr = 0;
  int32_t error_taken = 0;
  uint32_t error_seq_seen = 0;
  uint64_t dgram_peer = 0;
  sockaddr_in local{}, peer{};
  uint32_t option_set = 0;
  int32_t option_value[uint32_t(abi::SockOption::kCount)] = {};
  int64_t rcvtimeo_ns = 0, sndtimeo_ns = 0, linger_ns = 0;
};
SocketImage sock_image(const Socket& s, uint32_t region_index);
// A socket rebuilt from its image, its rings in r (null when not shunted); its
// inode is the placeholder's at fd. Null when out of memory.
Socket* sock_from_image(const SocketImage& im, Region* r, int fd);

// Fork support (called by Runtime).
void sockets_fork_prepare();
void sockets_fork_parent();
void sockets_fork_child_locks();
// Re-homes inherited sockets onto `fresh` (null: no daemon, reset them). True when
// some socket still uses `old` for its bytes.
bool sockets_after_fork(Region* old, Region* fresh);

}  // namespace shunt::preload
