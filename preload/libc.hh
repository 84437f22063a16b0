// The real libc entry points, resolved once with dlsym(RTLD_NEXT).
//
// SHUNT_LIBC_SYMBOLS is the one list of interposed symbols (docs/architecture.md,
// Conventions): the table of real functions below and the wrappers in interpose.cc are both written from it.
// Entries: X(return type, name, parameter types).
#pragma once

#include <atomic>

#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#define SHUNT_LIBC_SYMBOLS(X)                                                              \
  X(int, socket, (int, int, int))                                                          \
  X(int, bind, (int, const sockaddr*, socklen_t))                                          \
  X(int, listen, (int, int))                                                               \
  X(int, accept, (int, sockaddr*, socklen_t*))                                             \
  X(int, accept4, (int, sockaddr*, socklen_t*, int))                                       \
  X(int, connect, (int, const sockaddr*, socklen_t))                                       \
  X(ssize_t, read, (int, void*, size_t))                                                   \
  X(ssize_t, write, (int, const void*, size_t))                                            \
  X(ssize_t, readv, (int, const iovec*, int))                                              \
  X(ssize_t, writev, (int, const iovec*, int))                                             \
  X(ssize_t, recv, (int, void*, size_t, int))                                              \
  X(ssize_t, send, (int, const void*, size_t, int))                                        \
  X(ssize_t, recvfrom, (int, void*, size_t, int, sockaddr*, socklen_t*))                   \
  X(ssize_t, sendto, (int, const void*, size_t, int, const sockaddr*, socklen_t))          \
  X(ssize_t, recvmsg, (int, msghdr*, int))                                                 \
  X(ssize_t, sendmsg, (int, const msghdr*, int))                                           \
  X(int, recvmmsg, (int, mmsghdr*, unsigned int, int, timespec*))                          \
  X(int, sendmmsg, (int, mmsghdr*, unsigned int, int))                                     \
  X(int, close, (int))                                                                     \
  X(int, shutdown, (int, int))                                                             \
  X(int, getsockname, (int, sockaddr*, socklen_t*))                                        \
  X(int, getpeername, (int, sockaddr*, socklen_t*))                                        \
  X(int, setsockopt, (int, int, int, const void*, socklen_t))                              \
  X(int, getsockopt, (int, int, int, void*, socklen_t*))                                   \
  X(int, fcntl, (int, int, ...))                                                           \
  X(int, fcntl64, (int, int, ...))                                                         \
  X(int, ioctl, (int, unsigned long, ...))                                                 \
  X(ssize_t, sendfile, (int, int, off_t*, size_t))                                         \
  X(ssize_t, sendfile64, (int, int, off64_t*, size_t))                                     \
  X(int, dup, (int))                                                                       \
  X(int, dup2, (int, int))                                                                 \
  X(int, dup3, (int, int, int))                                                            \
  X(int, epoll_create, (int))                                                              \
  X(int, epoll_create1, (int))                                                             \
  X(int, epoll_ctl, (int, int, int, epoll_event*))                                         \
  X(int, epoll_wait, (int, epoll_event*, int, int))                                        \
  X(int, epoll_pwait, (int, epoll_event*, int, int, const sigset_t*))                      \
  X(int, poll, (pollfd*, nfds_t, int))                                                     \
  X(int, ppoll, (pollfd*, nfds_t, const timespec*, const sigset_t*))                       \
  X(int, select, (int, fd_set*, fd_set*, fd_set*, timeval*))                               \
  X(int, pselect, (int, fd_set*, fd_set*, fd_set*, const timespec*, const sigset_t*))      \
  X(ssize_t, __read_chk, (int, void*, size_t, size_t))                                     \
  X(ssize_t, __recv_chk, (int, void*, size_t, size_t, int))                                \
  X(ssize_t, __recvfrom_chk, (int, void*, size_t, size_t, int, sockaddr*, socklen_t*))     \
  X(int, __poll_chk, (pollfd*, nfds_t, int, size_t))                                       \
  X(int, __ppoll_chk, (pollfd*, nfds_t, const timespec*, const sigset_t*, size_t))         \
  X(int, epoll_pwait2, (int, epoll_event*, int, const timespec*, const sigset_t*))         \
  X(int, close_range, (unsigned int, unsigned int, int))                                   \
  X(void, closefrom, (int))                                                                \
  X(int, fclose, (FILE*))                                                                  \
  X(int, execve, (const char*, char* const*, char* const*))                                \
  X(int, execvpe, (const char*, char* const*, char* const*))                               \
  X(int, fexecve, (int, char* const*, char* const*))                                       \
  X(int, execv, (const char*, char* const*))                                               \
  X(int, execvp, (const char*, char* const*))                                              \
  X(int, execl, (const char*, const char*, ...))                                           \
  X(int, execlp, (const char*, const char*, ...))                                          \
  X(int, execle, (const char*, const char*, ...))                                         \
  X(int, sigaction, (int, const struct sigaction*, struct sigaction*))                     \
  X(sighandler_t, signal, (int, sighandler_t))

namespace shunt::preload {

struct Libc {
#define SHUNT_LIBC_POINTER(ret, name, params) ret(*name) params = nullptr;
  SHUNT_LIBC_SYMBOLS(SHUNT_LIBC_POINTER)
#undef SHUNT_LIBC_POINTER
};

// The real functions. Resolved on first use (wrappers may run before any
// constructor, from another library's constructor), then a plain load, inline:
// every pass-through call pays it.
extern Libc g_libc;
extern std::atomic<bool> g_libc_resolved;
void resolve_libc();
inline const Libc& libc() {
  if (!g_libc_resolved.load(std::memory_order_acquire)) [[unlikely]] resolve_libc();
  return g_libc;
}

}  // namespace shunt::preload
