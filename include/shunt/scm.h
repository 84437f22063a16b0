// One message with file descriptors over a unix socket (SCM_RIGHTS): the control
// socket's way to hand over a region's memfd and doorbells, a fork child's
// placeholder sockets, or a capture file. Used by shuntd, libshunt.so, the shunt
// tool and the tests. The system calls are parameters so that libshunt.so can pass
// libc's own (it must not go through its interposed sendmsg/recvmsg).
#pragma once

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>

namespace shunt::scm {

inline constexpr int kMaxFds = 64;  // per message; the kernel's SCM_MAX_FD is 253

using SendmsgFn = ssize_t (*)(int, const msghdr*, int);
using RecvmsgFn = ssize_t (*)(int, msghdr*, int);

// Sends buf with up to kMaxFds descriptors, retrying on EINTR. Returns the bytes
// sent, or -errno.
inline ssize_t send(int sock, const void* buf, size_t len, const int* fds, int nfds,
                    SendmsgFn sendmsg_fn = ::sendmsg) {
  if (nfds < 0 || nfds > kMaxFds) return -EINVAL;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  iovec iov{const_cast<void*>(buf), len};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  if (nfds > 0) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * size_t(nfds));
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * size_t(nfds));
    std::memcpy(CMSG_DATA(c), fds, sizeof(int) * size_t(nfds));
  }
  ssize_t n;
  do {
    n = sendmsg_fn(sock, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  return n < 0 ? -errno : n;
}

// Receives one message into buf and up to max_fds descriptors (close-on-exec;
// flags: MSG_DONTWAIT or 0);
// descriptors beyond max_fds are closed. Returns the bytes received (0: hang-up),
// or -errno (-EAGAIN on a non-blocking socket with nothing queued, -EPROTO when the
// message or its descriptors were truncated).
inline ssize_t recv(int sock, void* buf, size_t len, int* fds, int max_fds, int* nfds,
                    int flags = 0, RecvmsgFn recvmsg_fn = ::recvmsg,
                    int (*close_fn)(int) = ::close) {
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
  iovec iov{buf, len};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = recvmsg_fn(sock, &msg, MSG_CMSG_CLOEXEC | flags);
  } while (n < 0 && errno == EINTR);
  *nfds = 0;
  if (n < 0) return -errno;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      if (*nfds < max_fds) {
        fds[(*nfds)++] = fd;
      } else {
        close_fn(fd);
      }
    }
  }
  if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) return -EPROTO;
  return n;
}

}  // namespace shunt::scm
