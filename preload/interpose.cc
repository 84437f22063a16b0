// The exported symbols: one thin wrapper per entry of SHUNT_LIBC_SYMBOLS (libc.hh).
// Each looks the fd up in the table and calls either libc or one implementation
// function (socket.cc, epoll.cc), which returns a value or -errno; Ret turns that
// into the POSIX contract (-1 + errno) and leaves errno untouched on success.
// No C++ exception can cross these functions (-fno-exceptions).
#include <errno.h>
#include <algorithm>
#include <fcntl.h>
#include <linux/close_range.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <unistd.h>

#include "dgram.hh"
#include "epoll.hh"
#include "exec.hh"
#include "fault_guard.hh"
#include "libc.hh"
#include "socket.hh"

#define SHUNT_EXPORT extern "C" __attribute__((visibility("default")))

extern "C" void __chk_fail(void) __attribute__((noreturn));

using namespace shunt::preload;

namespace {

// Converts an implementation result; errno is restored on success (the kernel
// never writes errno on success; our paths may have made failing libc calls).
class Ret {
 public:
  Ret() : saved_(errno) {}
  template <typename T>
  T operator()(T r) const {
    if (r < 0) {
      errno = int(-r);
      return T(-1);
    }
    errno = saved_;
    return r;
  }

 private:
  int saved_;
};

ssize_t recv_one(Socket& s, int fd, void* buf, size_t len, int flags) {
  iovec v{buf, len};
  return sock_recv(s, fd, &v, 1, flags);
}

ssize_t send_one(Socket& s, int fd, const void* buf, size_t len, int flags) {
  iovec v{const_cast<void*>(buf), len};
  return sock_send(s, fd, &v, 1, flags);
}

}  // namespace

// ---- sockets: setup ----

SHUNT_EXPORT int socket(int domain, int type, int protocol) {
  Ret ret;
  return ret(sock_socket(domain, type, protocol));
}

SHUNT_EXPORT int bind(int fd, const sockaddr* addr, socklen_t len) {
  if (auto s = socket_at(fd)) return Ret()(sock_bind(*s, fd, addr, len));
  return libc().bind(fd, addr, len);
}

SHUNT_EXPORT int listen(int fd, int backlog) {
  if (auto s = socket_at(fd)) return Ret()(sock_listen(*s, fd, backlog));
  return libc().listen(fd, backlog);
}

SHUNT_EXPORT int accept4(int fd, sockaddr* addr, socklen_t* len, int flags) {
  if (auto s = socket_at(fd)) return Ret()(sock_accept(*s, fd, addr, len, flags));
  int r = libc().accept4(fd, addr, len, flags);
  if (r >= 0) fd_forget_stale(r);
  return r;
}

SHUNT_EXPORT int accept(int fd, sockaddr* addr, socklen_t* len) {
  if (auto s = socket_at(fd)) return Ret()(sock_accept(*s, fd, addr, len, 0));
  int r = libc().accept(fd, addr, len);
  if (r >= 0) fd_forget_stale(r);
  return r;
}

SHUNT_EXPORT int connect(int fd, const sockaddr* addr, socklen_t len) {
  if (auto s = socket_at(fd)) return Ret()(sock_connect(*s, fd, addr, len));
  return libc().connect(fd, addr, len);
}

SHUNT_EXPORT int shutdown(int fd, int how) {
  if (auto s = socket_at(fd)) return Ret()(sock_shutdown(*s, fd, how));
  return libc().shutdown(fd, how);
}

SHUNT_EXPORT int close(int fd) {
  if (fd_table().peek(fd) != nullptr) return Ret()(fd_close(fd));
  return libc().close(fd);
}

// Closing without close(): the kernel closes, the table forgets (errno is the
// kernel's; forgetting posts a kClose and leaves it alone).
SHUNT_EXPORT int close_range(unsigned int first, unsigned int last, int flags) {
  int r = libc().close_range(first, last, flags);
  // CLOSE_RANGE_CLOEXEC closes nothing now; CLOSE_RANGE_UNSHARE closes in a table
  // of this thread's own, while the process's (ours) still serves the others.
  if (r == 0 && (flags & (CLOSE_RANGE_UNSHARE | CLOSE_RANGE_CLOEXEC)) == 0) {
    int saved = errno;
    fd_forget_range(first, last);
    errno = saved;
  }
  return r;
}

SHUNT_EXPORT void closefrom(int lowfd) {
  libc().closefrom(lowfd);
  int saved = errno;
  if (lowfd >= 0) fd_forget_range(unsigned(lowfd), ~0u);
  errno = saved;
}

SHUNT_EXPORT int fclose(FILE* f) {
  int fd = f != nullptr ? fileno(f) : -1;
  int r = libc().fclose(f);
  int saved = errno;
  if (fd >= 0 && fd_table().peek(fd) != nullptr) fd_forget_stale(fd);  // fclose closed it, even on error
  errno = saved;
  return r;
}

SHUNT_EXPORT int getsockname(int fd, sockaddr* addr, socklen_t* len) {
  if (auto s = socket_at(fd)) return Ret()(sock_getsockname(*s, fd, addr, len));
  return libc().getsockname(fd, addr, len);
}

SHUNT_EXPORT int getpeername(int fd, sockaddr* addr, socklen_t* len) {
  if (auto s = socket_at(fd)) return Ret()(sock_getpeername(*s, fd, addr, len));
  return libc().getpeername(fd, addr, len);
}

SHUNT_EXPORT int setsockopt(int fd, int level, int name, const void* val, socklen_t len) {
  if (auto s = socket_at(fd)) return Ret()(sock_setsockopt(*s, fd, level, name, val, len));
  return libc().setsockopt(fd, level, name, val, len);
}

SHUNT_EXPORT int getsockopt(int fd, int level, int name, void* val, socklen_t* len) {
  if (auto s = socket_at(fd)) return Ret()(sock_getsockopt(*s, fd, level, name, val, len));
  return libc().getsockopt(fd, level, name, val, len);
}

// fcntl's third argument is an int or a pointer; like glibc, pass it on as a word.
SHUNT_EXPORT int fcntl(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  unsigned long arg = va_arg(ap, unsigned long);
  va_end(ap);
  if (auto s = socket_at(fd)) return Ret()(sock_fcntl(*s, fd, cmd, arg, false));
  return libc().fcntl(fd, cmd, arg);
}

SHUNT_EXPORT int fcntl64(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  unsigned long arg = va_arg(ap, unsigned long);
  va_end(ap);
  if (auto s = socket_at(fd)) return Ret()(sock_fcntl(*s, fd, cmd, arg, true));
  return libc().fcntl64(fd, cmd, arg);
}

SHUNT_EXPORT int ioctl(int fd, unsigned long req, ...) {
  va_list ap;
  va_start(ap, req);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  if (auto s = socket_at(fd)) return Ret()(sock_ioctl(*s, fd, req, arg));
  return libc().ioctl(fd, req, arg);
}

SHUNT_EXPORT int dup(int fd) {
  if (fd_table().peek(fd) != nullptr) return Ret()(fd_dup(fd));
  int r = libc().dup(fd);
  if (r >= 0) fd_forget_stale(r);
  return r;
}

SHUNT_EXPORT int dup2(int oldfd, int newfd) {
  if (fd_table().peek(oldfd) != nullptr || fd_table().peek(newfd) != nullptr)
    return Ret()(fd_dup2(oldfd, newfd, 0, false));
  return libc().dup2(oldfd, newfd);
}

SHUNT_EXPORT int dup3(int oldfd, int newfd, int flags) {
  if (fd_table().peek(oldfd) != nullptr || fd_table().peek(newfd) != nullptr)
    return Ret()(fd_dup2(oldfd, newfd, flags, true));
  return libc().dup3(oldfd, newfd, flags);
}

// ---- sockets: data ----

SHUNT_EXPORT ssize_t read(int fd, void* buf, size_t len) {
  if (auto s = shunted_at(fd)) return Ret()(recv_one(*s, fd, buf, len, 0));
  return libc().read(fd, buf, len);
}

SHUNT_EXPORT ssize_t __read_chk(int fd, void* buf, size_t len, size_t buflen) {
  if (len > buflen) __chk_fail();
  if (auto s = shunted_at(fd)) return Ret()(recv_one(*s, fd, buf, len, 0));
  return libc().__read_chk(fd, buf, len, buflen);
}

SHUNT_EXPORT ssize_t write(int fd, const void* buf, size_t len) {
  if (auto s = shunted_at(fd)) return Ret()(send_one(*s, fd, buf, len, 0));
  return libc().write(fd, buf, len);
}

SHUNT_EXPORT ssize_t readv(int fd, const iovec* iov, int iovcnt) {
  if (auto s = shunted_at(fd)) return Ret()(sock_recv(*s, fd, iov, iovcnt, 0));
  return libc().readv(fd, iov, iovcnt);
}

SHUNT_EXPORT ssize_t writev(int fd, const iovec* iov, int iovcnt) {
  if (auto s = shunted_at(fd)) return Ret()(sock_send(*s, fd, iov, iovcnt, 0));
  return libc().writev(fd, iov, iovcnt);
}

SHUNT_EXPORT ssize_t recv(int fd, void* buf, size_t len, int flags) {
  if (auto s = shunted_at(fd)) return Ret()(recv_one(*s, fd, buf, len, flags));
  return libc().recv(fd, buf, len, flags);
}

SHUNT_EXPORT ssize_t __recv_chk(int fd, void* buf, size_t len, size_t buflen, int flags) {
  if (len > buflen) __chk_fail();
  if (auto s = shunted_at(fd)) return Ret()(recv_one(*s, fd, buf, len, flags));
  return libc().__recv_chk(fd, buf, len, buflen, flags);
}

SHUNT_EXPORT ssize_t send(int fd, const void* buf, size_t len, int flags) {
  if (auto s = shunted_at(fd)) return Ret()(send_one(*s, fd, buf, len, flags));
  return libc().send(fd, buf, len, flags);
}

// A stream socket has no source address per read: Linux stores a length of 0.
SHUNT_EXPORT ssize_t recvfrom(int fd, void* buf, size_t len, int flags, sockaddr* addr,
                              socklen_t* alen) {
  if (auto s = shunted_at(fd)) {
    if (s->datagram) return Ret()(dgram_recvfrom(*s, fd, buf, len, flags, addr, alen));
    ssize_t r = Ret()(recv_one(*s, fd, buf, len, flags));
    if (r >= 0 && addr != nullptr && alen != nullptr) *alen = 0;
    return r;
  }
  return libc().recvfrom(fd, buf, len, flags, addr, alen);
}

SHUNT_EXPORT ssize_t __recvfrom_chk(int fd, void* buf, size_t len, size_t buflen, int flags,
                                    sockaddr* addr, socklen_t* alen) {
  if (len > buflen) __chk_fail();
  if (auto s = shunted_at(fd)) {
    if (s->datagram) return Ret()(dgram_recvfrom(*s, fd, buf, len, flags, addr, alen));
    ssize_t r = Ret()(recv_one(*s, fd, buf, len, flags));
    if (r >= 0 && addr != nullptr && alen != nullptr) *alen = 0;
    return r;
  }
  return libc().__recvfrom_chk(fd, buf, len, buflen, flags, addr, alen);
}

// A connected stream socket ignores the destination (Linux tcp_sendmsg). A
// datagram socket not decided yet is decided here (docs/architecture.md, Which
// sockets).
SHUNT_EXPORT ssize_t sendto(int fd, const void* buf, size_t len, int flags, const sockaddr* addr,
                            socklen_t alen) {
  if (auto s = socket_at(fd)) {
    if (s->datagram) return Ret()(dgram_sendto(*s, fd, buf, len, flags, addr, alen));
    if (s->shunted()) return Ret()(send_one(*s, fd, buf, len, flags));
  }
  return libc().sendto(fd, buf, len, flags, addr, alen);
}

SHUNT_EXPORT ssize_t recvmsg(int fd, msghdr* msg, int flags) {
  if (auto s = shunted_at(fd)) {
    if (msg->msg_iovlen > IOV_MAX) return Ret()(ssize_t(-EMSGSIZE));
    if (s->datagram) return Ret()(dgram_recvmsg(*s, fd, msg, flags));
    ssize_t r = Ret()(sock_recv(*s, fd, msg->msg_iov, int(msg->msg_iovlen), flags));
    if (r >= 0) {
      msg->msg_namelen = 0;
      msg->msg_controllen = 0;
      msg->msg_flags = 0;
    }
    return r;
  }
  return libc().recvmsg(fd, msg, flags);
}

SHUNT_EXPORT ssize_t sendmsg(int fd, const msghdr* msg, int flags) {
  if (auto s = socket_at(fd)) {
    if (s->datagram || s->shunted()) {
      if (msg->msg_iovlen > IOV_MAX) return Ret()(ssize_t(-EMSGSIZE));
      if (s->datagram) return Ret()(dgram_sendmsg(*s, fd, msg, flags));
      return Ret()(sock_send(*s, fd, msg->msg_iov, int(msg->msg_iovlen), flags));
    }
  }
  return libc().sendmsg(fd, msg, flags);
}

SHUNT_EXPORT int sendmmsg(int fd, mmsghdr* vec, unsigned int vlen, int flags) {
  if (auto s = socket_at(fd)) {
    if (s->datagram || s->shunted()) return Ret()(sock_sendmmsg(*s, fd, vec, vlen, flags));
  }
  return libc().sendmmsg(fd, vec, vlen, flags);
}

SHUNT_EXPORT int recvmmsg(int fd, mmsghdr* vec, unsigned int vlen, int flags, timespec* timeout) {
  if (auto s = shunted_at(fd)) return Ret()(sock_recvmmsg(*s, fd, vec, vlen, flags, timeout));
  return libc().recvmmsg(fd, vec, vlen, flags, timeout);
}

SHUNT_EXPORT ssize_t sendfile(int out_fd, int in_fd, off_t* offset, size_t count) {
  if (auto s = shunted_at(out_fd)) return Ret()(sock_sendfile(*s, in_fd, offset, count));
  return libc().sendfile(out_fd, in_fd, offset, count);
}

SHUNT_EXPORT ssize_t sendfile64(int out_fd, int in_fd, off64_t* offset, size_t count) {
  static_assert(sizeof(off64_t) == sizeof(off_t));
  if (auto s = shunted_at(out_fd))
    return Ret()(sock_sendfile(*s, in_fd, reinterpret_cast<off_t*>(offset), count));
  return libc().sendfile64(out_fd, in_fd, offset, count);
}

// ---- readiness ----

SHUNT_EXPORT int epoll_create(int size) {
  int r = libc().epoll_create(size);
  if (r >= 0) {
    fd_forget_stale(r);
    ep_created(r);
  }
  return r;
}

SHUNT_EXPORT int epoll_create1(int flags) {
  int r = libc().epoll_create1(flags);
  if (r >= 0) {
    fd_forget_stale(r);
    ep_created(r);
  }
  return r;
}

SHUNT_EXPORT int epoll_ctl(int epfd, int op, int fd, epoll_event* ev) {
  if (auto s = socket_at(fd)) return Ret()(ep_ctl(*s, epfd, op, fd, ev));
  FdObject* o = fd_table().peek(fd);
  if (o != nullptr && o->kind == FdKind::kEpoll) return Ret()(ep_ctl_nested(epfd, op, fd, ev));
  return libc().epoll_ctl(epfd, op, fd, ev);
}

SHUNT_EXPORT int epoll_wait(int epfd, epoll_event* evs, int max, int timeout) {
  if (!epoll_of_ours(epfd)) return libc().epoll_wait(epfd, evs, max, timeout);
  Ret ret;
  return ret(ep_wait(epfd, evs, max, timeout, nullptr, false));
}

SHUNT_EXPORT int epoll_pwait(int epfd, epoll_event* evs, int max, int timeout,
                             const sigset_t* sigmask) {
  if (!epoll_of_ours(epfd)) return libc().epoll_pwait(epfd, evs, max, timeout, sigmask);
  Ret ret;
  return ret(ep_wait(epfd, evs, max, timeout, sigmask, true));
}

SHUNT_EXPORT int poll(pollfd* fds, nfds_t n, int timeout) {
  if (!polls_ours(fds, n)) return libc().poll(fds, n, timeout);
  Ret ret;
  bool handled = false;
  int r = poll_mixed(fds, n, Deadline::after_ms(timeout < 0 ? -1 : timeout), nullptr, &handled);
  if (!handled) return libc().poll(fds, n, timeout);
  return ret(r);
}

// select writes the time left back (Linux does; pselect does not).
SHUNT_EXPORT int select(int nfds, fd_set* rd, fd_set* wr, fd_set* ex, timeval* tv) {
  Ret ret;
  if (tv != nullptr && (tv->tv_sec < 0 || tv->tv_usec < 0)) return ret(-EINVAL);
  Deadline d = tv == nullptr ? Deadline{}
                             : Deadline{Deadline::now() + int64_t(tv->tv_sec) * 1000000000 +
                                        int64_t(tv->tv_usec) * 1000};
  bool handled = false;
  int r = select_mixed(nfds, rd, wr, ex, d, nullptr, &handled);
  if (!handled) return libc().select(nfds, rd, wr, ex, tv);
  if (tv != nullptr) {
    int64_t left = std::max<int64_t>(0, d.at - Deadline::now());
    tv->tv_sec = left / 1000000000;
    tv->tv_usec = (left % 1000000000) / 1000;
  }
  return ret(r);
}

SHUNT_EXPORT int pselect(int nfds, fd_set* rd, fd_set* wr, fd_set* ex, const timespec* ts,
                         const sigset_t* sigmask) {
  Ret ret;
  if (ts != nullptr && (ts->tv_sec < 0 || ts->tv_nsec < 0 || ts->tv_nsec >= 1000000000))
    return ret(-EINVAL);
  bool handled = false;
  int r = select_mixed(nfds, rd, wr, ex, Deadline::after(ts), sigmask, &handled);
  if (!handled) return libc().pselect(nfds, rd, wr, ex, ts, sigmask);
  return ret(r);
}

// The fortified entries (_FORTIFY_SOURCE): the bounds check, then the call.
SHUNT_EXPORT int __poll_chk(pollfd* fds, nfds_t n, int timeout, size_t fdslen) {
  if (fdslen / sizeof *fds < n) __chk_fail();
  return poll(fds, n, timeout);
}

SHUNT_EXPORT int __ppoll_chk(pollfd* fds, nfds_t n, const timespec* ts, const sigset_t* sigmask,
                             size_t fdslen) {
  if (fdslen / sizeof *fds < n) __chk_fail();
  return ppoll(fds, n, ts, sigmask);
}

SHUNT_EXPORT int epoll_pwait2(int epfd, epoll_event* evs, int max, const timespec* ts,
                              const sigset_t* sigmask) {
  Ret ret;
  return ret(ep_wait2(epfd, evs, max, ts, sigmask));
}

SHUNT_EXPORT int ppoll(pollfd* fds, nfds_t n, const timespec* ts, const sigset_t* sigmask) {
  if (!polls_ours(fds, n)) return libc().ppoll(fds, n, ts, sigmask);
  Ret ret;
  bool handled = false;
  int r = poll_mixed(fds, n, Deadline::after(ts), sigmask, &handled);
  if (!handled) return libc().ppoll(fds, n, ts, sigmask);
  return ret(r);
}

// ---- exec: shunted sockets stay usable in the new image (exec.hh) ----

namespace {

// An execl-style argument list (terminated by a null pointer) as an argv array;
// *envp gets what follows the null when wanted (execle).
std::vector<char*> gather_args(const char* arg0, va_list ap, char* const** envp) {
  std::vector<char*> argv{const_cast<char*>(arg0)};
  while (argv.back() != nullptr) argv.push_back(va_arg(ap, char*));
  if (envp != nullptr) *envp = va_arg(ap, char* const*);
  return argv;
}

}  // namespace

SHUNT_EXPORT int execve(const char* path, char* const argv[], char* const envp[]) {
  return exec_carrying(path, envp, [&](char* const* env) { return libc().execve(path, argv, env); });
}

SHUNT_EXPORT int execvpe(const char* file, char* const argv[], char* const envp[]) {
  char buf[PATH_MAX];
  return exec_carrying(exec_search_path(file, buf, sizeof buf), envp,
                       [&](char* const* env) { return libc().execvpe(file, argv, env); });
}

SHUNT_EXPORT int fexecve(int fd, char* const argv[], char* const envp[]) {
  char path[32];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  return exec_carrying(path, envp, [&](char* const* env) { return libc().fexecve(fd, argv, env); });
}

SHUNT_EXPORT int execv(const char* path, char* const argv[]) { return execve(path, argv, environ); }
SHUNT_EXPORT int execvp(const char* file, char* const argv[]) { return execvpe(file, argv, environ); }

SHUNT_EXPORT int execl(const char* path, const char* arg0, ...) {
  va_list ap;
  va_start(ap, arg0);
  std::vector<char*> argv = gather_args(arg0, ap, nullptr);
  va_end(ap);
  return execve(path, argv.data(), environ);
}

SHUNT_EXPORT int execlp(const char* file, const char* arg0, ...) {
  va_list ap;
  va_start(ap, arg0);
  std::vector<char*> argv = gather_args(arg0, ap, nullptr);
  va_end(ap);
  return execvpe(file, argv.data(), environ);
}

SHUNT_EXPORT int execle(const char* path, const char* arg0, ...) {
  va_list ap;
  va_start(ap, arg0);
  char* const* envp = nullptr;
  std::vector<char*> argv = gather_args(arg0, ap, &envp);
  va_end(ap);
  return execve(path, argv.data(), envp);
}

// SIGSEGV and SIGBUS stay libshunt.so's once it guards copies (fault_guard.hh):
// what the application installs is kept and called for every fault not ours.
SHUNT_EXPORT int sigaction(int sig, const struct sigaction* act, struct sigaction* old) {
  if (!guards_signal(sig)) return libc().sigaction(sig, act, old);
  return guard_sigaction(sig, act, old);
}

SHUNT_EXPORT sighandler_t signal(int sig, sighandler_t handler) {
  if (!guards_signal(sig)) return libc().signal(sig, handler);
  struct sigaction act {}, old {};
  act.sa_handler = handler;
  act.sa_flags = SA_RESTART;  // glibc's signal() has BSD semantics
  sigemptyset(&act.sa_mask);
  sigaddset(&act.sa_mask, sig);
  if (guard_sigaction(sig, &act, &old) != 0) return SIG_ERR;
  return old.sa_handler;
}
