// A plain socket program that process_test.cc runs under LD_PRELOAD=libshunt.so,
// with no daemon or with the fake one. Each scenario checks what a Linux kernel
// would do; a failed check prints its line and errno and exits 1.
//   preload_probe SCENARIO
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "probe_wait.hh"

using probe::wait_asleep;

#define CHECK(cond)                                                                  \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      fprintf(stderr, "probe: check failed at line %d: %s (errno %d %s)\n", __LINE__, \
              #cond, errno, strerror(errno));                                        \
      exit(1);                                                                       \
    }                                                                                \
  } while (0)

namespace {

const char* kNic = "198.18.250.1";
volatile sig_atomic_t g_sigpipes = 0;
volatile sig_atomic_t g_alarms = 0;

sockaddr_in addr_of(const char* ip, int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  inet_pton(AF_INET, ip, &a.sin_addr);
  return a;
}
sockaddr* sa(sockaddr_in* a) { return reinterpret_cast<sockaddr*>(a); }

int listener(const char* ip, int port, int flags = 0) {
  int l = socket(AF_INET, SOCK_STREAM | flags, 0);
  CHECK(l >= 0);
  int one = 1;
  CHECK(setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0);
  sockaddr_in a = addr_of(ip, port);
  CHECK(bind(l, sa(&a), sizeof a) == 0);
  CHECK(listen(l, 16) == 0);
  return l;
}

int connect_to(const char* ip, int port, int flags = 0) {
  int c = socket(AF_INET, SOCK_STREAM | flags, 0);
  CHECK(c >= 0);
  sockaddr_in a = addr_of(ip, port);
  int r = connect(c, sa(&a), sizeof a);
  CHECK(r == 0 || ((flags & SOCK_NONBLOCK) && errno == EINPROGRESS));
  return c;
}

void write_all(int fd, const void* buf, size_t len) {
  const char* p = static_cast<const char*>(buf);
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    CHECK(n > 0);
    p += n;
    len -= size_t(n);
  }
}

std::string read_n(int fd, size_t len) {
  std::string s(len, '\0');
  size_t got = 0;
  while (got < len) {
    ssize_t n = read(fd, &s[got], len - got);
    CHECK(n > 0);
    got += size_t(n);
  }
  return s;
}

int64_t now_ms() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

std::string pattern(size_t n, unsigned seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = char((i * 131 + seed) & 0xff);
  return s;
}

void on_sigpipe(int) { g_sigpipes = g_sigpipes + 1; }
void on_alarm(int) { g_alarms = g_alarms + 1; }

// Arms a one-shot SIGALRM (no SA_RESTART) after `ms`.
void alarm_in_ms(int ms) {
  struct sigaction act{};
  act.sa_handler = on_alarm;
  sigaction(SIGALRM, &act, nullptr);
  itimerval it{};
  it.it_value.tv_usec = ms * 1000;
  setitimer(ITIMER_REAL, &it, nullptr);
}

// From another thread: waits until thread `tid` sleeps, signals it with SIGALRM,
// waits for the handler to have run, then runs `then`.
template <typename F>
std::thread signal_when_asleep(pid_t tid, pthread_t th, F then) {
  return std::thread([tid, th, then] {
    int before = g_alarms;
    wait_asleep(tid);
    pthread_kill(th, SIGALRM);
    for (int i = 0; i < 5000 && g_alarms == before; ++i) usleep(1000);
    then();
  });
}

void on_alarm_with(int flags) {
  struct sigaction act{};
  act.sa_handler = on_alarm;
  act.sa_flags = flags;
  CHECK(sigaction(SIGALRM, &act, nullptr) == 0);
}

// ---- scenarios ----

// Kernel sockets, pipes and socketpairs behave as without the library.
void passthrough() {
  int sp[2];
  CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sp) == 0);
  write_all(sp[0], "ping", 4);
  CHECK(read_n(sp[1], 4) == "ping");
  int l = listener("127.0.0.1", 0);
  sockaddr_in a{};
  socklen_t len = sizeof a;
  CHECK(getsockname(l, sa(&a), &len) == 0);
  int c = connect_to("127.0.0.1", ntohs(a.sin_port));
  int s = accept(l, nullptr, nullptr);
  CHECK(s >= 0);
  std::string data = pattern(200000, 3);
  std::thread t([&] { write_all(c, data.data(), data.size()); });
  CHECK(read_n(s, data.size()) == data);
  t.join();
  int ep = epoll_create1(0);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = s;
  CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev) == 0);
  CHECK(epoll_wait(ep, &ev, 1, 0) == 0);
  write_all(c, "x", 1);
  CHECK(epoll_wait(ep, &ev, 1, 1000) == 1 && ev.data.fd == s);
  pollfd p{s, POLLIN, 0};
  CHECK(poll(&p, 1, 1000) == 1 && (p.revents & POLLIN));
  char ch;
  CHECK(recv(s, &ch, 1, 0) == 1 && ch == 'x');
  CHECK(recv(s, &ch, 1, MSG_DONTWAIT) == -1 && errno == EAGAIN);
  CHECK(close(12345) == -1 && errno == EBADF);
  CHECK(read(-1, &ch, 1) == -1 && errno == EBADF);
  close(c);
  CHECK(read(s, &ch, 1) == 0);
  close(s);
  close(l);
  close(ep);
  close(sp[0]);
  close(sp[1]);
}

void basic() {
  int l = listener(kNic, 7001);
  sockaddr_in la{};
  socklen_t len = sizeof la;
  CHECK(getsockname(l, sa(&la), &len) == 0 && len == sizeof la);
  CHECK(la.sin_addr.s_addr == addr_of(kNic, 0).sin_addr.s_addr && ntohs(la.sin_port) == 7001);
  int acc = 0;
  socklen_t alen = sizeof acc;
  CHECK(getsockopt(l, SOL_SOCKET, SO_ACCEPTCONN, &acc, &alen) == 0 && acc == 1);
  int c = connect_to(kNic, 7001);
  sockaddr_in peer{};
  socklen_t plen = sizeof peer;
  int s = accept(l, sa(&peer), &plen);
  CHECK(s >= 0);
  CHECK(plen == sizeof peer && peer.sin_family == AF_INET);
  sockaddr_in cl{};
  len = sizeof cl;
  CHECK(getsockname(c, sa(&cl), &len) == 0);
  CHECK(cl.sin_port == peer.sin_port);  // the server sees the client's port
  sockaddr_in cp{};
  len = sizeof cp;
  CHECK(getpeername(c, sa(&cp), &len) == 0 && ntohs(cp.sin_port) == 7001);
  // Truncated address: copies what fits, reports the full length.
  char small[4];
  len = sizeof small;
  CHECK(getpeername(c, reinterpret_cast<sockaddr*>(small), &len) == 0 && len == sizeof(sockaddr_in));
  CHECK(getpeername(l, sa(&cp), &len) == -1 && errno == ENOTCONN);

  write_all(c, "hello", 5);
  CHECK(read_n(s, 5) == "hello");
  iovec iov[2] = {{const_cast<char*>("ab"), 2}, {const_cast<char*>("cdef"), 4}};
  CHECK(writev(s, iov, 2) == 6);
  char buf[16];
  iovec riov[2] = {{buf, 1}, {buf + 1, 15}};
  size_t got = 0;
  while (got < 6) {
    ssize_t n = readv(c, riov, 2);
    CHECK(n > 0);
    got += size_t(n);
    riov[0].iov_base = buf + got;
    riov[0].iov_len = 0;
    riov[1].iov_base = buf + got;
  }
  CHECK(memcmp(buf, "abcdef", 6) == 0);
  CHECK(send(c, "z", 1, MSG_NOSIGNAL) == 1);
  sockaddr_in from{};
  socklen_t flen = sizeof from;
  CHECK(recvfrom(s, buf, sizeof buf, 0, sa(&from), &flen) == 1 && flen == 0);
  CHECK(shutdown(c, SHUT_WR) == 0);
  CHECK(read(s, buf, sizeof buf) == 0);  // EOF after the peer's FIN
  CHECK(read(s, buf, sizeof buf) == 0);
  write_all(s, "bye", 3);  // half-closed: the other direction still works
  CHECK(read_n(c, 3) == "bye");
  CHECK(close(s) == 0);
  CHECK(read(c, buf, sizeof buf) == 0);
  CHECK(close(c) == 0);
  CHECK(close(l) == 0);
}

// Nonblocking connect + edge-triggered epoll driving a 1 MiB echo through 16 KiB rings.
void epoll_echo() {
  int l = listener(kNic, 7002, SOCK_NONBLOCK);
  int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  sockaddr_in a = addr_of(kNic, 7002);
  CHECK(connect(c, sa(&a), sizeof a) == -1 && errno == EINPROGRESS);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = l;
  CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev) == 0);
  CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev) == -1 && errno == EEXIST);
  ev.events = EPOLLOUT | EPOLLIN | EPOLLET | EPOLLRDHUP;
  ev.data.fd = c;
  CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev) == 0);
  int s = -1;
  bool connected = false;
  while (s < 0 || !connected) {
    epoll_event evs[8];
    int n = epoll_wait(ep, evs, 8, 2000);
    CHECK(n > 0);
    for (int i = 0; i < n; ++i) {
      if (evs[i].data.fd == l) {
        s = accept4(l, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        CHECK(s >= 0);
        CHECK(fcntl(s, F_GETFL) & O_NONBLOCK);
        CHECK(fcntl(s, F_GETFD) & FD_CLOEXEC);
      } else if (evs[i].data.fd == c && (evs[i].events & EPOLLOUT)) {
        int err = -1;
        socklen_t len = sizeof err;
        CHECK(getsockopt(c, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0);
        connected = true;
      }
    }
  }
  CHECK(connect(c, sa(&a), sizeof a) == 0);  // completes the EINPROGRESS connect once
  CHECK(connect(c, sa(&a), sizeof a) == -1 && errno == EISCONN);
  ev.events = EPOLLIN | EPOLLOUT | EPOLLET;
  ev.data.fd = s;
  CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev) == 0);
  const std::string data = pattern(1 << 20, 7);
  std::string echoed, pending;
  size_t sent = 0;
  char buf[8192];
  int64_t deadline = now_ms() + 20000;
  while (echoed.size() < data.size()) {
    CHECK(now_ms() < deadline);
    // Drain everything possible (edge-triggered: until EAGAIN), then wait.
    bool progress = true;
    while (progress) {
      progress = false;
      if (sent < data.size()) {
        ssize_t n = send(c, data.data() + sent, std::min<size_t>(data.size() - sent, 50000), 0);
        if (n > 0) sent += size_t(n), progress = true;
        else CHECK(errno == EAGAIN);
      }
      ssize_t n = recv(s, buf, sizeof buf, 0);
      if (n > 0) pending.append(buf, size_t(n)), progress = true;
      else CHECK(n < 0 && errno == EAGAIN);
      if (!pending.empty()) {
        ssize_t w = write(s, pending.data(), pending.size());
        if (w > 0) pending.erase(0, size_t(w)), progress = true;
        else CHECK(errno == EAGAIN);
      }
      n = read(c, buf, sizeof buf);
      if (n > 0) echoed.append(buf, size_t(n)), progress = true;
      else CHECK(n < 0 && errno == EAGAIN);
    }
    if (echoed.size() < data.size()) {
      epoll_event evs[8];
      CHECK(epoll_wait(ep, evs, 8, 2000) > 0);
    }
  }
  CHECK(echoed == data);
  // Peer close: EPOLLRDHUP and EOF.
  close(s);
  epoll_event evs[4];
  bool rdhup = false;
  for (int tries = 0; tries < 20 && !rdhup; ++tries) {
    int n = epoll_wait(ep, evs, 4, 500);
    for (int i = 0; i < n; ++i)
      if (evs[i].data.fd == c && (evs[i].events & EPOLLRDHUP)) rdhup = true;
  }
  CHECK(rdhup);
  CHECK(read(c, buf, sizeof buf) == 0);
  // Closing an fd removes its interest: no events for it afterwards.
  close(c);
  CHECK(epoll_wait(ep, evs, 4, 50) == 0);
  CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, l, nullptr) == 0);
  CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, l, nullptr) == -1 && errno == ENOENT);
  close(ep);
  close(l);
}


void errors() {
  // Refused, blocking.
  int c = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in nobody = addr_of(kNic, 7999);
  CHECK(connect(c, sa(&nobody), sizeof nobody) == -1 && errno == ECONNREFUSED);
  close(c);
  // Refused, nonblocking: EINPROGRESS, then POLLERR and SO_ERROR once. (A second
  // connect meanwhile gives EALREADY or, once the refusal is in, ECONNREFUSED:
  // which one is a race, so it is not asked here.)
  c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  CHECK(connect(c, sa(&nobody), sizeof nobody) == -1 && errno == EINPROGRESS);
  {
    pollfd p{c, POLLOUT, 0};
    CHECK(poll(&p, 1, 2000) == 1 && (p.revents & POLLERR));
    int err = 0;
    socklen_t len = sizeof err;
    CHECK(getsockopt(c, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == ECONNREFUSED);
    CHECK(getsockopt(c, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0);
  }
  close(c);

  int l = listener(kNic, 7003);
  // Options on a shunted socket: forwarded where shuntd has them (and checked
  // like the kernel checks them), honest about what is not supported.
  int idle = 30;
  CHECK(setsockopt(l, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle) == 0);
  int bad_idle = 0;
  CHECK(setsockopt(l, IPPROTO_TCP, TCP_KEEPIDLE, &bad_idle, sizeof bad_idle) == -1 &&
        errno == EINVAL);
  CHECK(setsockopt(l, IPPROTO_TCP, TCP_CONGESTION, "reno", 4) == 0);
  CHECK(setsockopt(l, IPPROTO_TCP, TCP_INFO, &idle, sizeof idle) == -1);
  int one = 1;
  CHECK(setsockopt(l, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0);
  CHECK(setsockopt(l, SOL_SOCKET, 9999, &one, sizeof one) == -1);
  c = connect_to(kNic, 7003);
  int s = accept(l, nullptr, nullptr);
  CHECK(s >= 0);
  int v = 0;
  socklen_t vlen = sizeof v;
  CHECK(getsockopt(s, SOL_SOCKET, SO_RCVBUF, &v, &vlen) == 0 && v > 0 && v % 2 == 0);
  int rcvbuf = 8192;  // sizes the ring; read back doubled at once, as Linux reports it
  CHECK(setsockopt(s, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) == 0);
  vlen = sizeof v;
  CHECK(getsockopt(s, SOL_SOCKET, SO_RCVBUF, &v, &vlen) == 0 && v == 2 * rcvbuf);
  CHECK(setsockopt(c, IPPROTO_TCP, TCP_CORK, &one, sizeof one) == 0);  // nginx tcp_nopush
  vlen = sizeof v;
  CHECK(getsockopt(c, IPPROTO_TCP, TCP_NODELAY, &v, &vlen) == 0 && v == 0);
  CHECK(setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0);
  vlen = sizeof v;
  CHECK(getsockopt(c, IPPROTO_TCP, TCP_NODELAY, &v, &vlen) == 0 && v == 1);
  // Cork and nodelay go to shuntd alone (no system call), with the kernel's checks.
  vlen = sizeof v;
  CHECK(getsockopt(c, IPPROTO_TCP, TCP_CORK, &v, &vlen) == 0 && v == 1);
  int zero = 0;
  CHECK(setsockopt(c, IPPROTO_TCP, TCP_CORK, &zero, sizeof zero) == 0);
  vlen = sizeof v;
  CHECK(getsockopt(c, IPPROTO_TCP, TCP_CORK, &v, &vlen) == 0 && v == 0);
  CHECK(setsockopt(c, IPPROTO_TCP, TCP_CORK, &one, 2) == -1 && errno == EINVAL);
  CHECK(setsockopt(c, IPPROTO_TCP, TCP_NODELAY, nullptr, sizeof one) == -1 && errno == EFAULT);
  CHECK(setsockopt(c, SOL_SOCKET, SO_RCVBUF, nullptr, 4) == -1 && errno == EFAULT);
  vlen = sizeof v;
  CHECK(getsockopt(c, SOL_SOCKET, SO_TYPE, &v, &vlen) == 0 && v == SOCK_STREAM);
  // TCP_INFO and TCP_MAXSEG come from shuntd, cut to the caller's length as Linux's.
  tcp_info ti{};
  socklen_t tlen = sizeof ti;
  CHECK(getsockopt(c, IPPROTO_TCP, TCP_INFO, &ti, &tlen) == 0 && ti.tcpi_state == TCP_ESTABLISHED &&
        tlen == std::min<socklen_t>(sizeof ti, 232) && ti.tcpi_snd_mss > 0);
  tlen = 1;
  CHECK(getsockopt(c, IPPROTO_TCP, TCP_INFO, &ti, &tlen) == 0 && tlen == 1);
  tlen = socklen_t(-1);
  CHECK(getsockopt(c, IPPROTO_TCP, TCP_INFO, &ti, &tlen) == -1 && errno == EINVAL);
  tlen = sizeof ti;
  CHECK(getsockopt(l, IPPROTO_TCP, TCP_INFO, &ti, &tlen) == 0 && ti.tcpi_state == TCP_LISTEN);
  vlen = sizeof v;
  CHECK(getsockopt(c, IPPROTO_TCP, TCP_MAXSEG, &v, &vlen) == 0 && v == 1448);
  vlen = sizeof v;
  CHECK(getsockopt(l, IPPROTO_TCP, TCP_MAXSEG, &v, &vlen) == 0 && v == 536);
  CHECK(setsockopt(c, IPPROTO_TCP, TCP_MAXSEG, &one, sizeof one) == -1 && errno == ENOPROTOOPT);

  // Receive timeout.
  timeval tv{0, 100000};
  CHECK(setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
  char buf[64];
  int64_t t0 = now_ms();
  CHECK(read(s, buf, sizeof buf) == -1 && errno == EAGAIN);
  int64_t waited = now_ms() - t0;
  CHECK(waited >= 90 && waited < 2000);
  CHECK(recv(s, buf, sizeof buf, MSG_DONTWAIT) == -1 && errno == EAGAIN);

  // MSG_PEEK, FIONREAD, MSG_WAITALL.
  write_all(c, "abcdef", 6);
  int avail = 0;
  for (int i = 0; i < 200 && avail < 6; ++i) {
    CHECK(ioctl(s, FIONREAD, &avail) == 0);
    if (avail < 6) usleep(1000);
  }
  CHECK(avail == 6);
  CHECK(recv(s, buf, 3, MSG_PEEK) == 3 && memcmp(buf, "abc", 3) == 0);
  CHECK(recv(s, buf, 2, 0) == 2 && memcmp(buf, "ab", 2) == 0);
  // The rest comes once the reader sleeps in recv: MSG_WAITALL must have blocked.
  std::thread late([&, reader = pid_t(gettid())] {
    wait_asleep(reader);
    write_all(c, "ghij", 4);
  });
  CHECK(recv(s, buf, 8, MSG_WAITALL) == 8 && memcmp(buf, "cdefghij", 8) == 0);
  late.join();

  // F_GETFL/F_SETFL and FIONBIO track O_NONBLOCK.
  CHECK((fcntl(s, F_GETFL) & O_NONBLOCK) == 0);
  CHECK(fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK) == 0);
  CHECK(fcntl(s, F_GETFL) & O_NONBLOCK);
  CHECK(read(s, buf, sizeof buf) == -1 && errno == EAGAIN);
  int off = 0;
  CHECK(ioctl(s, FIONBIO, &off) == 0);
  CHECK((fcntl(s, F_GETFL) & O_NONBLOCK) == 0);

  // Reset: SO_LINGER {1,0} close → peer read ECONNRESET once, then EOF; writes EPIPE + SIGPIPE.
  signal(SIGPIPE, on_sigpipe);
  linger lg{1, 0};
  CHECK(setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0);
  CHECK(close(s) == 0);
  int rr = -1;
  for (int i = 0; i < 2000; ++i) {
    rr = int(recv(c, buf, sizeof buf, MSG_DONTWAIT));
    if (!(rr == -1 && errno == EAGAIN)) break;
    usleep(1000);
  }
  CHECK(rr == -1 && errno == ECONNRESET);
  CHECK(read(c, buf, sizeof buf) == 0);
  CHECK(send(c, "x", 1, MSG_NOSIGNAL) == -1 && errno == EPIPE);
  CHECK(g_sigpipes == 0);
  CHECK(write(c, "x", 1) == -1 && errno == EPIPE);
  CHECK(g_sigpipes == 1);
  close(c);

  // EINTR: a signal interrupts a blocking read (no SA_RESTART semantics here).
  c = connect_to(kNic, 7003);
  s = accept(l, nullptr, nullptr);
  alarm_in_ms(100);
  CHECK(read(s, buf, sizeof buf) == -1 && errno == EINTR);
  CHECK(g_alarms == 1);
  // epoll_wait and poll over a shunted socket are interrupted too.
  int ep = epoll_create1(0);
  epoll_event ev{};
  ev.events = EPOLLIN;
  CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev) == 0);
  alarm_in_ms(50);
  CHECK(epoll_wait(ep, &ev, 1, 5000) == -1 && errno == EINTR);
  pollfd pf{s, POLLIN, 0};
  alarm_in_ms(50);
  CHECK(poll(&pf, 1, 5000) == -1 && errno == EINTR);
  CHECK(g_alarms == 3);
  close(ep);
  close(c);
  close(s);
  close(l);
}

void dups() {
  int l = listener(kNic, 7004);
  int c = connect_to(kNic, 7004);
  int s = accept(l, nullptr, nullptr);
  int d = dup(c);
  CHECK(d >= 0 && d != c);
  CHECK(close(c) == 0);  // the socket lives on through d
  write_all(d, "via dup", 7);
  CHECK(read_n(s, 7) == "via dup");
  int target = 100;
  CHECK(dup2(d, target) == target);
  int d3 = fcntl(target, F_DUPFD_CLOEXEC, 200);
  CHECK(d3 >= 200);
  close(d);
  close(target);
  write_all(d3, "!", 1);
  CHECK(read_n(s, 1) == "!");
  // dup2 over a shunted fd closes that socket's reference like close().
  int p[2];
  CHECK(pipe(p) == 0);
  CHECK(dup2(p[0], d3) == d3);
  char buf[8];
  CHECK(read(s, buf, sizeof buf) == 0);  // the last reference went: FIN
  write_all(p[1], "p", 1);
  CHECK(read(d3, buf, 1) == 1 && buf[0] == 'p');  // d3 is a pipe now
  close(d3);
  close(p[0]);
  close(p[1]);
  close(s);
  close(l);
}

// glibc's fortified entries (_FORTIFY_SOURCE builds call these), epoll_pwait2,
// and fds the kernel closes without close(): close_range, closefrom, fclose.
extern "C" int __poll_chk(pollfd*, nfds_t, int, size_t);
extern "C" int __ppoll_chk(pollfd*, nfds_t, const timespec*, const sigset_t*, size_t);
extern "C" ssize_t __read_chk(int, void*, size_t, size_t);
extern "C" ssize_t __recv_chk(int, void*, size_t, size_t, int);
extern "C" ssize_t __recvfrom_chk(int, void*, size_t, size_t, int, sockaddr*, socklen_t*);

void other_entries() {
  int l = listener(kNic, 7005);
  int c = connect_to(kNic, 7005);
  int s = accept(l, nullptr, nullptr);
  CHECK(s >= 0);
  write_all(c, "abcd", 4);
  pollfd p{s, POLLIN, 0};
  CHECK(__poll_chk(&p, 1, 2000, sizeof p) == 1 && (p.revents & POLLIN));
  p.revents = 0;
  timespec two{2, 0}, zero{0, 0}, bad{0, 1000000000};
  CHECK(__ppoll_chk(&p, 1, &two, nullptr, sizeof p) == 1 && (p.revents & POLLIN));
  int ep = epoll_create1(0);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = s;
  CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev) == 0);
  epoll_event out[2];
  CHECK(epoll_pwait2(ep, out, 2, &two, nullptr) == 1 && out[0].data.fd == s);
  char buf[8];
  CHECK(__read_chk(s, buf, 1, sizeof buf) == 1 && buf[0] == 'a');
  CHECK(__recv_chk(s, buf, 1, sizeof buf, 0) == 1 && buf[0] == 'b');
  CHECK(__recvfrom_chk(s, buf, 2, sizeof buf, 0, nullptr, nullptr) == 2 && memcmp(buf, "cd", 2) == 0);
  CHECK(epoll_pwait2(ep, out, 2, &zero, nullptr) == 0);  // drained
  CHECK(epoll_pwait2(ep, out, 2, &bad, nullptr) == -1 && errno == EINVAL);
  int64_t t0 = now_ms();
  timespec short_wait{0, 50 * 1000000};
  CHECK(epoll_pwait2(ep, out, 2, &short_wait, nullptr) == 0 && now_ms() - t0 >= 49);
  close(ep);

  // Each way of closing: the peer sees the FIN, and the number is no socket any
  // more (a stale entry would take the write as the old socket's).
  // The write comes first: a call that blocks may make libshunt.so open a
  // descriptor of its own (a thread's doorbell waiter), which takes the lowest
  // free number.
  auto closed_behind = [&](int fd, int peer) {
    CHECK(write(fd, "x", 1) == -1 && errno == EBADF);
    CHECK(read(peer, buf, 1) == 0);
  };
  CHECK(close_range(unsigned(c), unsigned(c), 0) == 0);
  closed_behind(c, s);
  close(s);

  c = connect_to(kNic, 7005);
  s = accept(l, nullptr, nullptr);
  FILE* f = fdopen(c, "r+");
  CHECK(f != nullptr);
  CHECK(fclose(f) == 0);
  closed_behind(c, s);
  close(s);

  c = connect_to(kNic, 7005);
  s = accept(l, nullptr, nullptr);
  CHECK(dup2(c, 900) == 900);
  close(c);
  closefrom(900);
  closed_behind(900, s);
  close(s);
  close(l);
}

// SO_LINGER {1, t}: close waits for what was written to be taken, at most t.
// SA_RESTART (signal(7)): a blocking read, accept or connect interrupted by a
// handler installed with SA_RESTART goes on and returns what came later; without
// SA_RESTART, or with SO_RCVTIMEO set, it fails with EINTR.
void restart() {
  signal(SIGPIPE, SIG_IGN);
  const pid_t me = pid_t(gettid());
  const pthread_t self = pthread_self();
  int l = listener(kNic, 7009);
  int c = connect_to(kNic, 7009);
  int s = accept(l, nullptr, nullptr);
  CHECK(s >= 0);
  char buf[8];

  // A crash handler without SA_RESTART (as ASan's, or a crash reporter's) changes
  // nothing: a fault never interrupts a call that sleeps.
  struct sigaction crash{};
  crash.sa_handler = [](int) { _exit(3); };
  CHECK(sigaction(SIGSEGV, &crash, nullptr) == 0);
  on_alarm_with(SA_RESTART);
  std::thread t = signal_when_asleep(me, self, [c] { write_all(c, "a", 1); });
  ssize_t n = read(s, buf, sizeof buf);
  t.join();
  CHECK(n == 1 && buf[0] == 'a');  // restarted, not EINTR
  CHECK(g_alarms == 1);

  on_alarm_with(0);
  t = signal_when_asleep(me, self, [] {});
  CHECK(read(s, buf, sizeof buf) == -1 && errno == EINTR);
  t.join();
  CHECK(g_alarms == 2);

  on_alarm_with(SA_RESTART);
  timeval tv{5, 0};
  CHECK(setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
  t = signal_when_asleep(me, self, [] {});
  CHECK(read(s, buf, sizeof buf) == -1 && errno == EINTR);  // a timeout: never restarted
  t.join();
  CHECK(g_alarms == 3);

  // accept, restarted: the connection that came after the signal.
  int c2 = -1;
  t = signal_when_asleep(me, self, [&c2] { c2 = connect_to(kNic, 7009); });
  int s2 = accept(l, nullptr, nullptr);
  t.join();
  CHECK(s2 >= 0 && c2 >= 0);
  CHECK(g_alarms == 4);
  close(s2);
  close(c2);
  close(c);
  close(s);
  close(l);
  signal(SIGALRM, SIG_DFL);
}

// An epoll fd holding a shunted socket, inside another epoll and in poll/select:
// readable while the socket is, reported once with the pipe it also holds, woken
// from sleep, edge-triggered reporting once, and gone from the outer set once
// closed (the kernel takes a closed fd out of every epoll).
void nested_epoll() {
  int l = listener(kNic, 7011);
  int c = connect_to(kNic, 7011);
  int s = accept(l, nullptr, nullptr);
  CHECK(s >= 0);
  int inner = epoll_create1(0), outer = epoll_create1(0);
  CHECK(inner >= 0 && outer >= 0);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = 1;
  CHECK(epoll_ctl(inner, EPOLL_CTL_ADD, s, &ev) == 0);
  int p[2];
  CHECK(pipe(p) == 0);
  ev.data.u64 = 2;
  CHECK(epoll_ctl(inner, EPOLL_CTL_ADD, p[0], &ev) == 0);
  ev.data.u64 = 42;
  CHECK(epoll_ctl(outer, EPOLL_CTL_ADD, inner, &ev) == 0);
  CHECK(epoll_ctl(outer, EPOLL_CTL_ADD, inner, &ev) == -1 && errno == EEXIST);
  CHECK(epoll_ctl(inner, EPOLL_CTL_ADD, outer, &ev) == -1 && errno == ELOOP);
  epoll_event out[4];
  CHECK(epoll_wait(outer, out, 4, 0) == 0);
  pollfd pf{inner, POLLIN, 0};
  CHECK(poll(&pf, 1, 0) == 0);

  // A sleeping epoll_wait on the outer set wakes when the socket gets a byte.
  const pid_t me = pid_t(gettid());
  std::thread t([me, c] {
    wait_asleep(me);
    write_all(c, "x", 1);
  });
  int n = epoll_wait(outer, out, 4, 5000);
  t.join();
  CHECK(n == 1 && out[0].data.u64 == 42 && (out[0].events & EPOLLIN));
  CHECK(poll(&pf, 1, 0) == 1 && (pf.revents & POLLIN));
  fd_set rd;
  FD_ZERO(&rd);
  FD_SET(inner, &rd);
  timeval zero{0, 0};
  CHECK(select(inner + 1, &rd, nullptr, nullptr, &zero) == 1 && FD_ISSET(inner, &rd));
  CHECK(epoll_wait(inner, out, 4, 0) == 1 && out[0].data.u64 == 1);

  // The pipe too: still one event for the inner set, not one per half.
  write_all(p[1], "y", 1);
  CHECK(epoll_wait(outer, out, 4, 0) == 1 && out[0].data.u64 == 42);
  char buf[4];
  CHECK(read(s, buf, sizeof buf) == 1);
  CHECK(read(p[0], buf, sizeof buf) == 1);
  CHECK(epoll_wait(outer, out, 4, 0) == 0);

  // Edge-triggered: reported once while it stays readable.
  ev.events = EPOLLIN | EPOLLET;
  CHECK(epoll_ctl(outer, EPOLL_CTL_MOD, inner, &ev) == 0);
  write_all(c, "z", 1);
  for (int i = 0; i < 5000 && epoll_wait(inner, out, 4, 0) == 0; ++i) usleep(1000);
  CHECK(epoll_wait(outer, out, 4, 1000) == 1);
  CHECK(epoll_wait(outer, out, 4, 0) == 0);

  // Closed: out of the outer set, readable members or not.
  close(inner);
  CHECK(epoll_wait(outer, out, 4, 0) == 0);
  CHECK(epoll_ctl(outer, EPOLL_CTL_DEL, inner, nullptr) == -1 && errno == EBADF);
  close(outer);
  close(p[0]);
  close(p[1]);
  close(c);
  close(s);
  close(l);
}

void linger_close() {
  int l = listener(kNic, 7006);
  int c = connect_to(kNic, 7006);
  int s = accept(l, nullptr, nullptr);
  CHECK(s >= 0);
  CHECK(fcntl(c, F_SETFL, O_NONBLOCK) == 0);  // Linux lingers for a nonblocking socket too
  char chunk[4096] = {};
  size_t queued = 0;
  // Fill both rings: write until the socket stays unwritable for 100 ms.
  pollfd out{c, POLLOUT, 0};
  for (int i = 0; i < 10000 && poll(&out, 1, 100) == 1; ++i) {
    ssize_t n = write(c, chunk, sizeof chunk);
    if (n > 0) queued += size_t(n);
  }
  CHECK(queued > 0 && poll(&out, 1, 0) == 0);
  linger lg{1, 1};
  CHECK(setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0);
  int64_t t0 = now_ms();
  CHECK(close(c) == 0);
  int64_t waited = now_ms() - t0;
  CHECK(waited >= 900 && waited < 5000);  // nobody read: the whole second
  close(s);

  c = connect_to(kNic, 7006);
  s = accept(l, nullptr, nullptr);
  lg = {1, 5};
  CHECK(setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0);
  write_all(c, "bye", 3);
  CHECK(read_n(s, 3) == "bye");
  t0 = now_ms();
  CHECK(close(c) == 0);
  CHECK(now_ms() - t0 < 1000);  // all taken: no wait
  char buf[4];
  CHECK(read(s, buf, sizeof buf) == 0);
  close(s);
  close(l);
}

void sendfile_test() {
  int l = listener(kNic, 7005);
  int c = connect_to(kNic, 7005);
  int s = accept(l, nullptr, nullptr);
  int f = memfd_create("probe-file", 0);
  const std::string content = pattern(100000, 11);
  write_all(f, content.data(), content.size());
  off_t off = 1000;
  std::string got;
  std::thread reader([&] { got = read_n(c, 50000); });
  CHECK(sendfile(s, f, &off, 50000) == 50000);  // blocking: all of it, through a 16 KiB ring
  reader.join();
  CHECK(off == 51000);
  CHECK(got == content.substr(1000, 50000));
  CHECK(lseek(f, 0, SEEK_CUR) == off_t(content.size()));  // file position untouched
  // Without an offset: the file position moves. Past the end: short count.
  CHECK(lseek(f, 99990, SEEK_SET) == 99990);
  CHECK(sendfile(s, f, nullptr, 100) == 10);
  CHECK(lseek(f, 0, SEEK_CUR) == 100000);
  CHECK(read_n(c, 10) == content.substr(99990));
  CHECK(sendfile(s, c, nullptr, 10) == -1 && errno == EINVAL);  // in_fd must be a file
  close(f);
  close(c);
  close(s);
  close(l);
}

// 0.0.0.0 listener: kernel clients over loopback and shunt clients both get in.
void wildcard() {
  int l = listener("0.0.0.0", 7006, SOCK_NONBLOCK);
  int ep = epoll_create1(0);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = 0xabcdef;
  CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev) == 0);
  int k = connect_to("127.0.0.1", 7006);
  int sh = connect_to(kNic, 7006);
  int accepted = 0;
  bool saw_loopback = false, saw_nic = false;
  int64_t deadline = now_ms() + 5000;
  while (accepted < 2) {
    CHECK(now_ms() < deadline);
    epoll_event evs[4];
    int n = epoll_wait(ep, evs, 4, 1000);
    CHECK(n >= 0);
    for (int i = 0; i < n; ++i) CHECK(evs[i].data.u64 == 0xabcdef);
    for (;;) {
      sockaddr_in peer{};
      socklen_t len = sizeof peer;
      int s = accept4(l, sa(&peer), &len, SOCK_NONBLOCK);
      if (s < 0) {
        CHECK(errno == EAGAIN);
        break;
      }
      ++accepted;
      sockaddr_in me{};
      len = sizeof me;
      CHECK(getsockname(s, sa(&me), &len) == 0);
      if (me.sin_addr.s_addr == htonl(INADDR_LOOPBACK)) saw_loopback = true;
      if (me.sin_addr.s_addr == addr_of(kNic, 0).sin_addr.s_addr) saw_nic = true;
      close(s);
    }
  }
  CHECK(saw_loopback && saw_nic);
  // The listener is still nonblocking in the application's eyes only if it asked.
  CHECK(fcntl(l, F_GETFL) & O_NONBLOCK);
  CHECK(fcntl(l, F_SETFL, 0) == 0);
  CHECK((fcntl(l, F_GETFL) & O_NONBLOCK) == 0);
  // Blocking accept waits on both halves: a late kernel client, then a late shunt one.
  for (const char* ip : {"127.0.0.1", kNic}) {
    int late = -1;
    std::atomic<bool> connecting{false};
    std::thread t([&, acceptor = pid_t(gettid())] {
      wait_asleep(acceptor);
      connecting = true;
      late = connect_to(ip, 7006);
    });
    int s = accept(l, nullptr, nullptr);
    CHECK(s >= 0);
    CHECK(connecting);  // accept waited for the client
    t.join();
    close(s);
    close(late);
  }
  close(k);
  close(sh);
  close(ep);
  close(l);
}

// poll over a pipe and shunted sockets, with timeouts.
void poll_mixed() {
  int l = listener(kNic, 7007);
  int c = connect_to(kNic, 7007);
  int s = accept(l, nullptr, nullptr);
  int p[2];
  CHECK(pipe(p) == 0);
  pollfd fds[3] = {{p[0], POLLIN, 0}, {s, POLLIN, 0}, {c, POLLOUT, 0}};
  CHECK(poll(fds, 3, 0) == 1 && fds[2].revents == POLLOUT && fds[0].revents == 0);
  fds[2].events = POLLIN;
  int64_t t0 = now_ms();
  CHECK(poll(fds, 3, 100) == 0);
  CHECK(now_ms() - t0 >= 90);
  const pid_t me = pid_t(gettid());
  std::thread w([&] {
    wait_asleep(me);
    write_all(c, "q", 1);
  });
  CHECK(poll(fds, 3, 2000) == 1 && (fds[1].revents & POLLIN));
  w.join();
  std::thread w2([&] {
    wait_asleep(me);
    write_all(p[1], "k", 1);
  });
  char b;
  CHECK(read(s, &b, 1) == 1);
  CHECK(poll(fds, 3, 2000) == 1 && (fds[0].revents & POLLIN));
  w2.join();
  CHECK(read(p[0], &b, 1) == 1);
  // More descriptors than poll and select keep on the stack (kInlinePollFds):
  // 36 pipes and the shunted socket, two of them readable.
  constexpr int kPipes = 36;
  int many[kPipes][2];
  std::vector<pollfd> big;
  for (auto& m : many) {
    CHECK(pipe(m) == 0);
    big.push_back({m[0], POLLIN, 0});
  }
  big.push_back({s, POLLIN, 0});
  write_all(many[30][1], "x", 1);
  write_all(c, "y", 1);
  for (int64_t until = now_ms() + 5000; now_ms() < until;) {  // until the byte reached s
    int n = poll(big.data(), nfds_t(big.size()), 2000);
    CHECK(n >= 1);
    if (n == 2) break;
  }
  for (size_t i = 0; i < big.size(); ++i)
    CHECK(((big[i].revents & POLLIN) != 0) == (i == 30 || i == kPipes));
  fd_set rd;
  FD_ZERO(&rd);
  int maxfd = s;
  for (const pollfd& e : big) {
    FD_SET(e.fd, &rd);
    maxfd = std::max(maxfd, e.fd);
  }
  timeval tv{2, 0};
  CHECK(select(maxfd + 1, &rd, nullptr, nullptr, &tv) == 2);
  CHECK(FD_ISSET(many[30][0], &rd) && FD_ISSET(s, &rd) && !FD_ISSET(many[0][0], &rd));
  for (auto& m : many) {
    close(m[0]);
    close(m[1]);
  }
  CHECK(read(s, &b, 1) == 1 && b == 'y');
  close(c);
  fds[0].fd = -1;
  CHECK(poll(fds, 2, 2000) == 1 && (fds[1].revents & POLLIN));
  CHECK(read(s, &b, 1) == 1 && b == 'q' ? true : read(s, &b, 1) == 0);
  close(s);
  close(l);
  close(p[0]);
  close(p[1]);
}

// The parent listens; a forked child accepts and echoes; the parent connects.
void fork_accept() {
  int l = listener(kNic, 7008);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    int s = accept(l, nullptr, nullptr);
    if (s < 0) _exit(2);
    char buf[64];
    ssize_t n = read(s, buf, sizeof buf);
    if (n <= 0 || write(s, buf, size_t(n)) != n) _exit(3);
    close(s);
    _exit(0);
  }
  close(l);  // the child keeps the listener
  int c = connect_to(kNic, 7008);
  write_all(c, "forked", 6);
  CHECK(read_n(c, 6) == "forked");
  int st = 0;
  CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
  close(c);
}

// EPOLLEXCLUSIVE across processes sharing a listener (nginx's workers): each
// connection wakes one of the processes asleep on it, as on Linux (which wakes
// "one or more"). Three children wait in epolls of their own with an exclusive
// entry for the listener; for each of four connections one wakes and accepts it.
// Waking all would be twelve wake-ups. Real daemon only (the fake wakes all).
void exclusive_accept() {
  constexpr int kChildren = 3, kConns = 4;
  int l = listener(kNic, 7012, SOCK_NONBLOCK);
  int report[2];
  CHECK(pipe2(report, O_NONBLOCK) == 0);
  pid_t kids[kChildren];
  for (int k = 0; k < kChildren; ++k) {
    kids[k] = fork();
    CHECK(kids[k] >= 0);
    if (kids[k] == 0) {
      close(report[0]);
      int ep = epoll_create1(0);
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLEXCLUSIVE;
      if (epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev) != 0) _exit(2);
      for (;;) {  // until the parent kills it
        if (epoll_wait(ep, &ev, 1, -1) != 1) _exit(3);
        char w = 'w';
        if (write(report[1], &w, 1) != 1) _exit(4);
        int s = accept(l, nullptr, nullptr);
        if (s >= 0) {
          char a = 'a';
          if (write(report[1], &a, 1) != 1) _exit(5);
          close(s);
        }
      }
    }
  }
  close(report[1]);
  close(l);  // the children hold it
  auto all_asleep = [&] {
    for (pid_t k : kids) wait_asleep(k, k);
  };
  all_asleep();
  int wakes = 0, accepts = 0;
  for (int i = 0; i < kConns; ++i) {
    int c = connect_to(kNic, 7012);
    for (int t = 0; t < 5000 && accepts == i; ++t) {  // one child takes it
      char b;
      while (read(report[0], &b, 1) == 1) (b == 'a' ? accepts : wakes) += 1;
      if (accepts == i) usleep(1000);
    }
    CHECK(accepts == i + 1);
    all_asleep();  // and then every child sleeps again
    char b;
    while (read(report[0], &b, 1) == 1) (b == 'a' ? accepts : wakes) += 1;
    close(c);
  }
  for (pid_t k : kids) kill(k, SIGKILL);
  for (pid_t k : kids) waitpid(k, nullptr, 0);
  if (wakes > kConns + 1) fprintf(stderr, "probe: %d wake-ups for %d connections\n", wakes, kConns);
  CHECK(accepts == kConns);
  CHECK(wakes <= kConns + 1);
  close(report[0]);
}

// EPOLLEXCLUSIVE within one process: two threads wait in epolls of their own
// with an exclusive entry for one listener, and each keeps the connection it
// accepts (a thread per connection). Two connections at once: each thread wakes
// for one, where one wake-up for both would leave the second unaccepted while
// the first thread is busy with its own.
void exclusive_threads() {
  int l = listener(kNic, 7013, SOCK_NONBLOCK);
  std::atomic<int> accepted{0};
  std::atomic<pid_t> tids[2];
  std::vector<std::thread> ts;
  for (int t = 0; t < 2; ++t) {
    tids[t].store(0);
    ts.emplace_back([&, t] {
      tids[t].store(pid_t(gettid()));
      int ep = epoll_create1(0);
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLEXCLUSIVE;
      CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev) == 0);
      int s = -1;
      for (int i = 0; i < 100 && s < 0; ++i) {  // a wake-up for a connection the other took: again
        CHECK(epoll_wait(ep, &ev, 1, 10000) == 1);
        s = accept(l, nullptr, nullptr);
        CHECK(s >= 0 || errno == EAGAIN);
      }
      CHECK(s >= 0);
      accepted.fetch_add(1);
      char b;
      CHECK(read(s, &b, 1) == 0);  // held until the client closes
      close(s);
      close(ep);
    });
  }
  for (auto& t : tids) {
    for (int i = 0; i < 5000 && t.load() == 0; ++i) usleep(1000);
    wait_asleep(t.load());
  }
  int c1 = connect_to(kNic, 7013, SOCK_NONBLOCK);
  int c2 = connect_to(kNic, 7013, SOCK_NONBLOCK);
  for (int i = 0; i < 5000 && accepted.load() < 2; ++i) usleep(1000);
  CHECK(accepted.load() == 2);
  close(c1);
  close(c2);
  for (auto& t : ts) t.join();
  close(l);
}

// Threads: each gets its own queue pair; blocking reads wake on the doorbell.
void threads() {
  int l = listener(kNic, 7009);
  std::vector<std::thread> ts;
  std::atomic<int> ok{0};
  for (int t = 0; t < 6; ++t) {  // more threads than the fake's 4 queue pairs
    ts.emplace_back([&, t] {
      int c = connect_to(kNic, 7009);
      std::string msg = pattern(3000, unsigned(t));
      write_all(c, msg.data(), msg.size());
      if (read_n(c, msg.size()) == msg) ok.fetch_add(1);
      close(c);
    });
  }
  std::vector<std::thread> servers;
  for (int t = 0; t < 6; ++t) {
    int s = accept(l, nullptr, nullptr);
    CHECK(s >= 0);
    servers.emplace_back([s] {
      std::string got = read_n(s, 3000);
      write_all(s, got.data(), got.size());
      char b;
      CHECK(read(s, &b, 1) == 0);
      close(s);
    });
  }
  for (auto& t : ts) t.join();
  for (auto& t : servers) t.join();
  CHECK(ok.load() == 6);
  close(l);
}

// shutdown(SHUT_RDWR) of a listener wakes the thread blocked in accept() on it
// with EINVAL, as Linux's inet_shutdown disconnects a listener; the socket stays
// bound, listens again, and accepts what arrives then.
void shutdown_listener() {
  int l = listener(kNic, 7016);
  int early = connect_to(kNic, 7016);  // queued, never accepted
  std::atomic<pid_t> tid{0};
  std::atomic<int> result{0}, error{0};
  std::thread t([&] {
    tid.store(pid_t(gettid()));
    int a = accept(l, nullptr, nullptr);
    if (a >= 0) {  // the queued one, taken before the shutdown: wait again
      close(a);
      a = accept(l, nullptr, nullptr);
    }
    error.store(errno);
    result.store(a);
  });
  for (int i = 0; i < 5000 && tid.load() == 0; ++i) usleep(1000);
  wait_asleep(tid.load());
  CHECK(shutdown(l, SHUT_WR) == 0);  // nothing to shut for writing on a listener
  CHECK(shutdown(l, SHUT_RDWR) == 0);
  t.join();
  CHECK(result.load() == -1 && error.load() == EINVAL);
  int v = -1;
  socklen_t vl = sizeof v;
  CHECK(getsockopt(l, SOL_SOCKET, SO_ACCEPTCONN, &v, &vl) == 0 && v == 0);
  CHECK(accept(l, nullptr, nullptr) == -1 && errno == EINVAL);
  pollfd p{l, POLLIN | POLLOUT, 0};
  CHECK(poll(&p, 1, 0) == 1 && p.revents == (POLLOUT | POLLHUP));
  CHECK(listen(l, 4) == 0);
  int c = connect_to(kNic, 7016);
  int a = accept(l, nullptr, nullptr);
  CHECK(a >= 0);
  CHECK(write(c, "x", 1) == 1);
  char b;
  CHECK(read(a, &b, 1) == 1 && b == 'x');
  close(a);
  close(c);
  close(early);
  close(l);
}

// Voluntary context switches of thread tid so far (each a sleep it woke from).
long voluntary_switches(pid_t tid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/task/%d/status", int(tid));
  FILE* f = fopen(path, "r");
  CHECK(f != nullptr);
  char line[256];
  long n = -1;
  while (fgets(line, sizeof line, f) != nullptr)
    if (sscanf(line, "voluntary_ctxt_switches: %ld", &n) == 1) break;
  fclose(f);
  CHECK(n >= 0);
  return n;
}

// Traffic on one connection wakes the thread that waits for it and no other, as
// on Linux: four threads sleep on idle connections of their own (two in read, two
// in an epoll of their own) while two others make 2000 round trips on a fifth.
// shuntd rings only the bells of the threads that wait for a slot that changed
// (docs/abi.md, Wake cells); one doorbell for every sleeping thread would wake
// each idle thread about once a round trip. Real daemon only: the fake one wakes
// every sleeping thread.
void wake_targets() {
  constexpr int kIdle = 4, kRounds = 2000;
  int l = listener(kNic, 7011);
  int cs[kIdle + 1], ss[kIdle + 1];
  for (int i = 0; i <= kIdle; ++i) {
    cs[i] = connect_to(kNic, 7011);
    ss[i] = accept(l, nullptr, nullptr);
    CHECK(ss[i] >= 0);
  }
  std::atomic<pid_t> tids[kIdle];
  std::vector<std::thread> idle;
  for (int t = 0; t < kIdle; ++t) {
    tids[t].store(0);
    idle.emplace_back([&, t] {
      tids[t].store(pid_t(gettid()));
      char b;
      if (t >= 2) {
        int ep = epoll_create1(0);
        epoll_event ev{};
        ev.events = EPOLLIN;
        CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, ss[t], &ev) == 0);
        CHECK(epoll_wait(ep, &ev, 1, 60000) == 1);
        close(ep);
      }
      CHECK(read(ss[t], &b, 1) == 0);  // the peer's close ends it
    });
  }
  long before[kIdle];
  for (int t = 0; t < kIdle; ++t) {
    for (int i = 0; i < 5000 && tids[t].load() == 0; ++i) usleep(1000);
    wait_asleep(tids[t].load());
    before[t] = voluntary_switches(tids[t].load());
  }
  std::thread echo([&] {
    char b;
    for (int i = 0; i < kRounds; ++i) {
      CHECK(read(ss[kIdle], &b, 1) == 1);
      CHECK(write(ss[kIdle], &b, 1) == 1);
    }
  });
  for (int i = 0; i < kRounds; ++i) {
    char b = char(i);
    CHECK(write(cs[kIdle], &b, 1) == 1);
    CHECK(read(cs[kIdle], &b, 1) == 1 && b == char(i));
  }
  echo.join();
  for (int t = 0; t < kIdle; ++t) {
    long woke = voluntary_switches(tids[t].load()) - before[t];
    if (woke >= kRounds / 20) fprintf(stderr, "probe: idle thread %d woke %ld times\n", t, woke);
    CHECK(woke < kRounds / 20);
  }
  for (int i = 0; i <= kIdle; ++i) close(cs[i]);
  for (auto& t : idle) t.join();
  for (int i = 0; i <= kIdle; ++i) close(ss[i]);
  close(l);
}

// Threads blocked in accept() on one listener: each connection wakes one of them,
// as Linux's accept waits exclusively (a thread per connection: the one that took
// it keeps it). A wake-up for every blocked thread would wake each that is left
// once per connection, to find nothing and sleep again. Real daemon only: the fake
// one wakes every sleeping thread. The first connection is not counted: until
// shuntd has a thread's bell (registered at its first sleep, unanswered) it rings
// the doorbell every thread hears for that thread's cell (docs/abi.md, Wake cells).
void accept_wakes_one() {
  constexpr int kThreads = 5, kConns = kThreads - 1;
  int l = listener(kNic, 7014);
  std::atomic<pid_t> tids[kThreads];
  std::atomic<bool> took[kThreads];
  std::atomic<int> accepted{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    tids[t].store(0);
    took[t].store(false);
    ts.emplace_back([&, t] {
      tids[t].store(pid_t(gettid()));
      int s = accept(l, nullptr, nullptr);
      CHECK(s >= 0);
      took[t].store(true);
      accepted.fetch_add(1);
      char b;
      CHECK(read(s, &b, 1) == 0);  // held until the client closes
      close(s);
    });
  }
  auto all_asleep = [&] {
    for (auto& t : tids) {
      for (int i = 0; i < 5000 && t.load() == 0; ++i) usleep(1000);
      wait_asleep(t.load());
    }
  };
  all_asleep();
  int cs[kConns];
  long idle_wakes = 0;
  for (int i = 0; i < kConns; ++i) {
    long before[kThreads];
    for (int t = 0; t < kThreads; ++t) before[t] = took[t].load() ? 0 : voluntary_switches(tids[t].load());
    cs[i] = connect_to(kNic, 7014);
    for (int k = 0; k < 5000 && accepted.load() == i; ++k) usleep(1000);
    CHECK(accepted.load() == i + 1);
    all_asleep();
    long woke = 0;
    for (int t = 0; t < kThreads; ++t)
      if (!took[t].load()) woke += voluntary_switches(tids[t].load()) - before[t];
    if (i == 0) continue;
    if (woke > 0) fprintf(stderr, "probe: connection %d woke threads left in accept %ld times\n", i, woke);
    idle_wakes += woke;
  }
  if (idle_wakes > 1) fprintf(stderr, "probe: threads left in accept woke %ld times\n", idle_wakes);
  CHECK(idle_wakes <= 1);
  int last = connect_to(kNic, 7014);  // for the thread still in accept
  for (int k = 0; k < 5000 && accepted.load() == kConns; ++k) usleep(1000);
  close(last);
  for (int i = 0; i < kConns; ++i) close(cs[i]);
  for (auto& t : ts) t.join();
  close(l);
}

// Sockets that never touch the NIC: loopback, other addresses, IPv6, UDP.
void kernel_routes() {
  int l = listener("127.0.0.1", 0);
  sockaddr_in a{};
  socklen_t len = sizeof a;
  CHECK(getsockname(l, sa(&a), &len) == 0);
  int c = connect_to("127.0.0.1", ntohs(a.sin_port));
  int s = accept(l, nullptr, nullptr);
  write_all(c, "k", 1);
  CHECK(read_n(s, 1) == "k");
  int u = socket(AF_INET, SOCK_DGRAM, 0);
  CHECK(u >= 0);
  sockaddr_in ua = addr_of("127.0.0.1", 0);
  CHECK(bind(u, sa(&ua), sizeof ua) == 0);
  close(u);
  close(c);
  close(s);
  close(l);
}

// The daemon goes away (the test stops it after "ready"): a blocked read fails with
// ECONNRESET, and sockets created afterwards are plain kernel sockets.
void daemon_gone() {
  signal(SIGPIPE, SIG_IGN);
  int l = listener(kNic, 7010);
  int c = connect_to(kNic, 7010);
  int s = accept(l, nullptr, nullptr);
  CHECK(s >= 0);
  printf("ready\n");
  fflush(stdout);
  char buf[8];
  int64_t t0 = now_ms();
  CHECK(read(s, buf, sizeof buf) == -1 && errno == ECONNRESET);
  CHECK(now_ms() - t0 < 10000);
  CHECK(write(c, "x", 1) == -1 && (errno == ECONNRESET || errno == EPIPE));
  close(c);
  close(s);
  close(l);
  kernel_routes();
  int w = listener("0.0.0.0", 0);  // would be dual with a daemon; kernel only now
  sockaddr_in a{};
  socklen_t len = sizeof a;
  CHECK(getsockname(w, sa(&a), &len) == 0);
  int k = connect_to("127.0.0.1", ntohs(a.sin_port));
  int ks = accept(w, nullptr, nullptr);
  CHECK(ks >= 0);
  close(ks);
  close(k);
  close(w);
}

// Many sockets created while the daemon is unreachable.
void failopen() {
  for (int i = 0; i < 5; ++i) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(s >= 0);
    close(s);
  }
  passthrough();
}

}  // namespace

// Connections shuntd hands ahead on a listener (accept() without a round trip)
// are the kernel's queue seen from the process: each accept returns a connection
// with its own peer and its own bytes; and those a process never took, when it
// closes its listener, stay for another process holding it, as the kernel's queue
// outlives one holder. probe_test.sh checks that shuntd handed and took back.
void accept_handed() {
  constexpr int kConns = 8;
  auto peer_of = [](int fd) {
    sockaddr_in a{};
    socklen_t n = sizeof a;
    CHECK(getpeername(fd, sa(&a), &n) == 0);
    return a;
  };
  auto local_of = [](int fd) {
    sockaddr_in a{};
    socklen_t n = sizeof a;
    CHECK(getsockname(fd, sa(&a), &n) == 0);
    return a;
  };
  // One process: every connection accepted with the right peer and bytes.
  int l = listener(kNic, 7014);
  int clients[kConns];
  for (int i = 0; i < kConns; ++i) {
    clients[i] = connect_to(kNic, 7014);
    char b = char(i);
    write_all(clients[i], &b, 1);
  }
  bool seen[kConns] = {};
  for (int i = 0; i < kConns; ++i) {
    sockaddr_in from{};
    socklen_t n = sizeof from;
    int a = accept(l, sa(&from), &n);
    CHECK(a >= 0);
    char b = -1;
    CHECK(read(a, &b, 1) == 1);
    CHECK(b >= 0 && b < kConns && !seen[int(b)]);
    seen[int(b)] = true;
    sockaddr_in want = local_of(clients[int(b)]), got = peer_of(a);
    CHECK(from.sin_port == want.sin_port && from.sin_addr.s_addr == want.sin_addr.s_addr);
    CHECK(got.sin_port == want.sin_port && got.sin_addr.s_addr == want.sin_addr.s_addr);
    CHECK(local_of(a).sin_port == htons(7014));
    CHECK(write(a, &b, 1) == 1);  // and the connection works both ways
    char e = -1;
    CHECK(read(clients[int(b)], &e, 1) == 1 && e == b);
    close(a);
  }
  for (int c : clients) close(c);
  close(l);

  // Two processes: the parent takes one and closes its listener; the child takes
  // the rest, bytes included.
  l = listener(kNic, 7015);
  int go[2], report[2];
  CHECK(pipe(go) == 0 && pipe(report) == 0);
  pid_t kid = fork();
  CHECK(kid >= 0);
  if (kid == 0) {
    close(go[1]);
    close(report[0]);
    char g;
    if (read(go[0], &g, 1) != 1) _exit(2);
    int fl = fcntl(l, F_GETFL);
    fcntl(l, F_SETFL, fl | O_NONBLOCK);
    int got = 0, mask = 0;
    for (int t = 0; t < 5000 && got < kConns - 1; ++t) {
      int a = accept(l, nullptr, nullptr);
      if (a < 0) {
        if (errno != EAGAIN) _exit(3);
        pollfd p{l, POLLIN, 0};
        poll(&p, 1, 1);
        continue;
      }
      char b = -1;
      if (read(a, &b, 1) != 1 || b < 0 || b >= kConns) _exit(4);
      mask |= 1 << b;
      ++got;
      close(a);
    }
    char out[2] = {char(got), char(mask)};
    _exit(write(report[1], out, 2) == 2 ? 0 : 5);
  }
  close(go[0]);
  close(report[1]);
  for (int i = 0; i < kConns; ++i) {
    clients[i] = connect_to(kNic, 7015);
    char b = char(i);
    write_all(clients[i], &b, 1);
  }
  int a = accept(l, nullptr, nullptr);
  CHECK(a >= 0);
  char first = -1;
  CHECK(read(a, &first, 1) == 1 && first >= 0 && first < kConns);
  close(l);
  CHECK(write(go[1], "g", 1) == 1);
  char out[2] = {};
  CHECK(read(report[0], out, 2) == 2);
  int status = 0;
  CHECK(waitpid(kid, &status, 0) == kid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
  CHECK(out[0] == kConns - 1);
  CHECK((uint8_t(out[1]) | (1 << first)) == (1 << kConns) - 1);
  close(a);
  for (int c : clients) close(c);
  close(go[1]);
  close(report[0]);
}

bool run_udp_scenario(const std::string& what);  // udp_probe.cc

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  std::string what = argv[1];
  struct {
    const char* name;
    void (*fn)();
  } const scenarios[] = {{"passthrough", passthrough}, {"basic", basic},
                         {"epoll", epoll_echo},        {"errors", errors},
                         {"dup", dups},                {"sendfile", sendfile_test},
                         {"wildcard", wildcard},       {"poll", poll_mixed},
                         {"fork", fork_accept},        {"threads", threads},
                         {"kernel_routes", kernel_routes}, {"failopen", failopen},
                         {"daemon_gone", daemon_gone}, {"other_entries", other_entries},
                         {"linger", linger_close},     {"restart", restart},
                         {"nested_epoll", nested_epoll}, {"wake_targets", wake_targets},
                         {"shutdown_listener", shutdown_listener},
                         {"exclusive_accept", exclusive_accept},
                         {"exclusive_threads", exclusive_threads},
                         {"accept_wakes_one", accept_wakes_one},
                         {"accept_handed", accept_handed}};
  for (const auto& s : scenarios) {
    if (what == s.name) {
      s.fn();
      printf("ok %s\n", s.name);
      return 0;
    }
  }
  if (run_udp_scenario(what)) return 0;
  fprintf(stderr, "unknown scenario %s\n", what.c_str());
  return 2;
}
