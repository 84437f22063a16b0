// The differential suite's program (integration/differ_test.sh): the same socket
// call sequences, run once on the kernel and once under shunt, each over a veth
// to a kernel peer. It prints one line per step: the call, its return value and
// errno, and, where the socket's state has settled, its poll() readiness. The
// test compares the two traces; only differences its allow-list explains pass.
//   shunt_differ peer              serve the ports below (kernel side), until killed
//   shunt_differ run LOCAL PEER [SEQ...]  run every sequence (or those); LOCAL is this side's address
// What a step prints leaves out what legitimately varies between runs: fd
// numbers ("fd"), ephemeral ports ("eph"), addresses (named "local" and "peer").
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
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <linux/sockios.h>

#include <string>
#include <thread>

namespace {

// The peer's services.
constexpr int kEcho = 7201;        // echoes until EOF, then closes
constexpr int kReset = 7202;       // reads one byte, then resets (SO_LINGER 0)
constexpr int kGreetClose = 7203;  // writes "bye" and closes at once
constexpr int kCallBack = 7204;    // reads a port, connects back to it, writes "hi", closes
constexpr int kUdpEcho = 7206;
constexpr int kClosed = 7209;      // nothing listens, TCP or UDP
constexpr int kWaitMs = 3000;      // every wait is bounded

sockaddr_in addr_of(const char* ip, int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  inet_pton(AF_INET, ip, &a.sin_addr);
  return a;
}
sockaddr* sa(sockaddr_in* a) { return reinterpret_cast<sockaddr*>(a); }

// ---- the peer (kernel side) ----

void echo_conn(int c) {
  char buf[4096];
  for (;;) {
    ssize_t n = read(c, buf, sizeof buf);
    if (n <= 0) break;
    if (write(c, buf, size_t(n)) != n) break;
  }
  close(c);
}

void reset_conn(int c) {
  char b;
  if (read(c, &b, 1) == 1) {
    linger lg{1, 0};
    setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  close(c);
}

void greet_close_conn(int c) {
  if (write(c, "bye", 3) != 3) perror("differ peer: write");
  close(c);
}

void call_back_conn(int c) {
  uint16_t port = 0;
  sockaddr_in from{};
  socklen_t len = sizeof from;
  if (read(c, &port, sizeof port) == ssize_t(sizeof port) &&
      getpeername(c, sa(&from), &len) == 0) {
    from.sin_port = port;  // already in network order
    int b = socket(AF_INET, SOCK_STREAM, 0);
    if (b >= 0 && connect(b, sa(&from), sizeof from) == 0 && write(b, "hi", 2) != 2)
      perror("differ peer: write");
    if (b >= 0) close(b);
  }
  close(c);
}

void serve(int port, void (*conn)(int)) {
  int l = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a = addr_of("0.0.0.0", port);
  if (l < 0 || bind(l, sa(&a), sizeof a) != 0 || listen(l, 64) != 0) {
    perror("differ peer: listen");
    exit(1);
  }
  for (;;) {
    int c = accept(l, nullptr, nullptr);
    if (c < 0) continue;
    timeval tv{10, 0};  // a client that never finishes does not hold a thread for good
    setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::thread(conn, c).detach();
  }
}

void udp_echo() {
  int u = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in a = addr_of("0.0.0.0", kUdpEcho);
  if (u < 0 || bind(u, sa(&a), sizeof a) != 0) {
    perror("differ peer: udp bind");
    exit(1);
  }
  char buf[2048];
  for (;;) {
    sockaddr_in from{};
    socklen_t len = sizeof from;
    ssize_t n = recvfrom(u, buf, sizeof buf, 0, sa(&from), &len);
    if (n >= 0) sendto(u, buf, size_t(n), 0, sa(&from), len);
  }
}

int peer() {
  std::thread(serve, kEcho, echo_conn).detach();
  std::thread(serve, kReset, reset_conn).detach();
  std::thread(serve, kGreetClose, greet_close_conn).detach();
  std::thread(serve, kCallBack, call_back_conn).detach();
  std::thread(udp_echo).detach();
  printf("ready\n");
  fflush(stdout);
  pause();
  return 0;
}

// ---- the traced side ----

const char* g_local = nullptr;
const char* g_peer = nullptr;
const char* g_seq = "";
int g_watch = -1;  // the socket whose readiness settled steps print
volatile sig_atomic_t g_sigpipes = 0;

std::string errno_name(int e) {
  const char* n = strerrorname_np(e);
  if (n != nullptr) return n;
  char buf[24];
  snprintf(buf, sizeof buf, "errno %d", e);
  return buf;
}

std::string events_of(int revents) {
  static const struct {
    int bit;
    const char* name;
  } kNames[] = {{POLLIN, "IN"},   {POLLPRI, "PRI"}, {POLLOUT, "OUT"},
                {POLLERR, "ERR"}, {POLLHUP, "HUP"}, {POLLRDHUP, "RDHUP"}, {POLLNVAL, "NVAL"}};
  std::string s;
  for (auto& n : kNames)
    if ((revents & n.bit) != 0) {
      if (!s.empty()) s += ' ';
      s += n.name;
    }
  return s.empty() ? "-" : s;
}

std::string readiness(int fd) {
  pollfd p{fd, POLLIN | POLLOUT | POLLRDHUP | POLLPRI, 0};
  int n = poll(&p, 1, 0);
  return n < 0 ? "poll " + errno_name(errno) : events_of(p.revents);
}

std::string addr_text(const sockaddr_in& a) {
  char ip[INET_ADDRSTRLEN] = "?";
  inet_ntop(AF_INET, &a.sin_addr, ip, sizeof ip);
  std::string who = strcmp(ip, g_local) == 0 ? "local"
                    : strcmp(ip, g_peer) == 0 ? "peer"
                    : strcmp(ip, "0.0.0.0") == 0 ? "any"
                                                 : "other";
  int port = ntohs(a.sin_port);
  return who + ":" + (port >= 32768 ? std::string("eph") : std::to_string(port));
}

// One line: "SEQ: STEP -> RESULT [| READINESS]". A negative result is its errno.
void line(const char* step, const std::string& result, bool settled) {
  std::string out = std::string(g_seq) + ": " + step + " -> " + result;
  if (settled && g_watch >= 0) out += " | " + readiness(g_watch);
  printf("%s\n", out.c_str());
  fflush(stdout);
}

std::string result_of(long r, int e) {
  return r < 0 ? "-1 " + errno_name(e) : std::to_string(r);
}

// A step whose socket has settled when it returns: its readiness is printed.
void step(const char* what, long r) { line(what, result_of(r, errno), true); }
// A step that leaves something in flight (bytes to the echo, a SYN): no readiness.
void step_in_flight(const char* what, long r) { line(what, result_of(r, errno), false); }
// An fd-returning step: "fd" for any descriptor.
void step_fd(const char* what, int fd) { line(what, fd >= 0 ? "fd" : result_of(fd, errno), true); }

void step_wait(const char* what, int fd, short events) {
  pollfd p{fd, events, 0};
  int n = poll(&p, 1, kWaitMs);
  line(what, n < 0 ? result_of(n, errno) : std::to_string(n) + " " + events_of(p.revents), true);
}

void step_read(const char* what, int fd, size_t want, int flags = 0) {
  char buf[256] = {};
  ssize_t n = recv(fd, buf, std::min(want, sizeof buf), flags);
  int e = errno;
  line(what, n > 0 ? std::to_string(n) + " \"" + std::string(buf, size_t(n)) + "\"" : result_of(n, e),
       true);
}

void step_name(const char* what, int fd, bool peer_side) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  int r = peer_side ? getpeername(fd, sa(&a), &len) : getsockname(fd, sa(&a), &len);
  line(what, r < 0 ? result_of(r, errno) : addr_text(a), true);
}

void step_getint(const char* what, int fd, int level, int name) {
  int v = -1;
  socklen_t len = sizeof v;
  int r = getsockopt(fd, level, name, &v, &len);
  line(what, r < 0 ? result_of(r, errno) : std::to_string(v) + " len " + std::to_string(len), true);
}

void step_setint(const char* what, int fd, int level, int name, int v) {
  step(what, setsockopt(fd, level, name, &v, sizeof v));
}

// Until `bytes` are queued to read (the echo's reply may come in pieces), at most
// kWaitMs: the next step's readiness must not depend on how the peer split it.
void wait_queued(int fd, int bytes) {
  for (int i = 0, n = 0; i < kWaitMs / 10 && (ioctl(fd, FIONREAD, &n) < 0 || n < bytes); ++i)
    poll(nullptr, 0, 10);
}

int tcp_socket(int flags = 0) { return socket(AF_INET, SOCK_STREAM | flags, 0); }

int connect_peer(int fd, int port) {
  sockaddr_in a = addr_of(g_peer, port);
  return connect(fd, sa(&a), sizeof a);
}

int bind_local(int fd, int port) {
  sockaddr_in a = addr_of(g_local, port);
  return bind(fd, sa(&a), sizeof a);
}

void seq_fresh() {
  g_seq = "fresh";
  int s = tcp_socket();
  g_watch = s;
  step_fd("socket", s);
  step_getint("SO_ERROR", s, SOL_SOCKET, SO_ERROR);
  step_getint("SO_TYPE", s, SOL_SOCKET, SO_TYPE);
  step_getint("SO_ACCEPTCONN", s, SOL_SOCKET, SO_ACCEPTCONN);
  step_name("getpeername", s, true);
  step_name("getsockname", s, false);
  char b;
  step("read", read(s, &b, 1));
  step("send nosignal", send(s, "x", 1, MSG_NOSIGNAL));
  step("recv dontwait", recv(s, &b, 1, MSG_DONTWAIT));
  step("shutdown rd", shutdown(s, SHUT_RD));
  step("accept", accept(s, nullptr, nullptr));
  step("close", close(s));
  g_watch = -1;
  step("close again", close(s));
  step("read closed", read(s, &b, 1));
  step("getsockopt closed", getsockopt(s, SOL_SOCKET, SO_ERROR, &b, nullptr));
}

void seq_refused() {
  g_seq = "refused";
  int s = tcp_socket();
  g_watch = s;
  step("connect closed port", connect_peer(s, kClosed));
  step_getint("SO_ERROR", s, SOL_SOCKET, SO_ERROR);
  step("connect again", connect_peer(s, kClosed));
  step("connect echo", connect_peer(s, kEcho));
  step_name("getpeername", s, true);
  step("close", close(s));
  g_watch = -1;
}

void seq_pending() {
  g_seq = "pending";
  int s = tcp_socket(SOCK_NONBLOCK);
  g_watch = s;
  // An address of the subnet nobody holds: ARP goes unanswered, the SYN waits.
  std::string silent = g_peer;
  silent = silent.substr(0, silent.rfind('.')) + ".3";
  sockaddr_in a = addr_of(silent.c_str(), kEcho);
  step("connect silent", connect(s, sa(&a), sizeof a));
  step("connect again", connect(s, sa(&a), sizeof a));
  step_getint("SO_ERROR", s, SOL_SOCKET, SO_ERROR);
  char b;
  step("read", read(s, &b, 1));
  step("write", write(s, "x", 1));
  step("close", close(s));
  g_watch = -1;
}

void seq_echo() {
  g_seq = "echo";
  int s = tcp_socket(SOCK_NONBLOCK);
  g_watch = s;
  step_in_flight("connect", connect_peer(s, kEcho));
  step_wait("wait out", s, POLLOUT);
  step_getint("SO_ERROR", s, SOL_SOCKET, SO_ERROR);
  step("connect again", connect_peer(s, kEcho));
  step("connect third", connect_peer(s, kEcho));
  step_name("getpeername", s, true);
  step_name("getsockname", s, false);
  step_in_flight("write", write(s, "hello", 5));
  step_wait("wait in", s, POLLIN);
  int n = -1;
  step("FIONREAD", ioctl(s, FIONREAD, &n) < 0 ? -1 : n);
  step_read("peek", s, 2, MSG_PEEK);
  step_read("read", s, 64);
  step_read("recv dontwait", s, 1, MSG_DONTWAIT);
  step("FIONREAD empty", ioctl(s, FIONREAD, &n) < 0 ? -1 : n);
  step("SIOCOUTQ", ioctl(s, SIOCOUTQ, &n) < 0 ? -1 : n);
  step_in_flight("writev", [&] {
    iovec v[2] = {{const_cast<char*>("ab"), 2}, {const_cast<char*>("cd"), 2}};
    return long(writev(s, v, 2));
  }());
  step_wait("wait in 2", s, POLLIN);
  wait_queued(s, 4);
  step_read("read waitall", s, 4, MSG_WAITALL);
  step_in_flight("shutdown wr", shutdown(s, SHUT_WR));
  step_wait("wait rdhup", s, POLLRDHUP);
  step_read("read eof", s, 1);
  step("send after both shut", send(s, "x", 1, MSG_NOSIGNAL));
  step("shutdown wr again", shutdown(s, SHUT_WR));
  step("close", close(s));
  g_watch = -1;
}

void seq_reset() {
  g_seq = "reset";
  int s = tcp_socket();
  g_watch = s;
  step_in_flight("connect", connect_peer(s, kReset));
  step_in_flight("write", write(s, "x", 1));
  step_wait("wait err", s, POLLIN);
  step_getint("SO_ERROR", s, SOL_SOCKET, SO_ERROR);
  step_read("read after reset", s, 1);
  step_read("read again", s, 1);
  step("send nosignal", send(s, "x", 1, MSG_NOSIGNAL));
  int before = g_sigpipes;
  step("write (SIGPIPE)", write(s, "x", 1));
  step("SIGPIPEs", g_sigpipes - before);
  step_name("getpeername", s, true);
  step("shutdown", shutdown(s, SHUT_RDWR));
  step("close", close(s));
  g_watch = -1;
}

void seq_peer_closed() {
  g_seq = "peer_closed";
  int s = tcp_socket();
  g_watch = s;
  step_in_flight("connect", connect_peer(s, kGreetClose));
  step_wait("wait rdhup", s, POLLRDHUP);
  step_read("read", s, 64);
  step_read("read eof", s, 1);
  step_in_flight("write into closed", write(s, "x", 1));  // answered with a reset
  step_wait("wait hup", s, POLLHUP);
  step_getint("SO_ERROR", s, SOL_SOCKET, SO_ERROR);
  step("send nosignal", send(s, "x", 1, MSG_NOSIGNAL));
  step_read("read", s, 1);
  step("close", close(s));
  g_watch = -1;
}

void seq_bad_buffers() {
  g_seq = "bad_buffers";
  int s = tcp_socket();
  g_watch = s;
  step("connect", connect_peer(s, kEcho));
  // Unmapped addresses, through a volatile so that the compiler lets them be.
  volatile uintptr_t unmapped = 8;
  void* bad = reinterpret_cast<void*>(unmapped);
  step("write bad buffer", write(s, bad, 10));
  step("send bad buffer", send(s, bad, 10, MSG_NOSIGNAL));
  step_in_flight("write", write(s, "ab", 2));
  step_wait("wait in", s, POLLIN);
  step("read bad buffer", read(s, bad, 10));
  step("recv bad buffer", recv(s, bad, 10, 0));
  step_read("read", s, 64);
  auto* bad_len = reinterpret_cast<socklen_t*>(unmapped + 8);
  step("getsockopt bad optval", getsockopt(s, SOL_SOCKET, SO_ERROR, bad, bad_len));
  step("setsockopt bad optval", setsockopt(s, IPPROTO_TCP, TCP_NODELAY, bad, sizeof(int)));
  step("getpeername bad addr", getpeername(s, static_cast<sockaddr*>(bad), bad_len));
  step("close", close(s));
  g_watch = -1;
}

void seq_invalid() {
  g_seq = "invalid";
  int s = tcp_socket();
  g_watch = s;
  step("bind", bind_local(s, 7301));
  step("bind again", bind_local(s, 7302));
  step_name("getsockname", s, false);
  step("listen", listen(s, 4));
  step_getint("SO_ACCEPTCONN", s, SOL_SOCKET, SO_ACCEPTCONN);
  step("listen again", listen(s, 8));
  step("shutdown how=7", shutdown(s, 7));
  int one = 1;
  step("setsockopt short optlen", setsockopt(s, SOL_SOCKET, SO_RCVBUF, &one, 1));
  step("setsockopt unknown", setsockopt(s, SOL_SOCKET, 9999, &one, sizeof one));
  step_getint("getsockopt unknown", s, SOL_SOCKET, 9999);
  step("connect listener", connect_peer(s, kEcho));
  step("accept4 bad flags", accept4(s, nullptr, nullptr, 0x7ffffff0));
  step("fcntl nonblock", fcntl(s, F_SETFL, O_NONBLOCK));
  step("accept nonblock", accept(s, nullptr, nullptr));
  step("shutdown listener wr", shutdown(s, SHUT_WR));
  step_getint("SO_ACCEPTCONN after wr", s, SOL_SOCKET, SO_ACCEPTCONN);
  step("shutdown listener", shutdown(s, SHUT_RDWR));
  step_getint("SO_ACCEPTCONN after shutdown", s, SOL_SOCKET, SO_ACCEPTCONN);
  step("accept after shutdown", accept(s, nullptr, nullptr));
  step_name("getsockname after shutdown", s, false);
  step("listen again", listen(s, 4));
  step("accept relistened", accept(s, nullptr, nullptr));
  step("close", close(s));
  g_watch = -1;
}

void seq_addr_in_use() {
  g_seq = "addr_in_use";
  int a = tcp_socket(), b = tcp_socket();
  g_watch = a;
  step("bind a", bind_local(a, 7310));
  step("listen a", listen(a, 4));
  step("bind b", bind_local(b, 7310));
  step_setint("b SO_REUSEADDR", b, SOL_SOCKET, SO_REUSEADDR, 1);
  step("bind b reuseaddr", bind_local(b, 7310));
  step("close b", close(b));
  step("close a", close(a));
  g_watch = -1;
  int c = tcp_socket();
  step_setint("c SO_REUSEADDR", c, SOL_SOCKET, SO_REUSEADDR, 1);
  step("bind c", bind_local(c, 7310));
  step("close c", close(c));
}

void seq_accept() {
  g_seq = "accept";
  int l = tcp_socket(SOCK_NONBLOCK);
  g_watch = l;
  step("bind", bind_local(l, 7320));
  step("listen", listen(l, 4));
  step("accept empty", accept(l, nullptr, nullptr));
  int c = tcp_socket();
  step_in_flight("connect call-back", connect_peer(c, kCallBack));
  uint16_t port = htons(7320);
  step_in_flight("ask for a call", write(c, &port, sizeof port));
  step_wait("wait listener", l, POLLIN);
  sockaddr_in from{};
  socklen_t len = sizeof from;
  int a = accept4(l, sa(&from), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
  step_fd("accept4", a);
  line("accepted from", addr_text(from), false);
  step("accept empty again", accept(l, nullptr, nullptr));
  g_watch = a;
  step_wait("wait rdhup", a, POLLRDHUP);  // the peer's "hi" and FIN: settled from here
  step("F_GETFD", fcntl(a, F_GETFD));
  step("F_GETFL nonblock", (fcntl(a, F_GETFL) & O_NONBLOCK) != 0);
  step_name("getsockname", a, false);
  step_read("read", a, 64);
  step_read("read eof", a, 1);
  step("close accepted", close(a));
  g_watch = c;
  step_wait("wait caller rdhup", c, POLLRDHUP);
  step_read("caller read eof", c, 1);
  step("close caller", close(c));
  g_watch = -1;
  step("close listener", close(l));
}

std::string epoll_result(int n, const epoll_event& ev) {
  if (n <= 0) return result_of(n, errno);
  std::string s = std::to_string(n);
  static const struct {
    uint32_t bit;
    const char* name;
  } kNames[] = {{EPOLLIN, "IN"}, {EPOLLOUT, "OUT"}, {EPOLLERR, "ERR"}, {EPOLLHUP, "HUP"}, {EPOLLRDHUP, "RDHUP"}};
  for (auto& k : kNames)
    if ((ev.events & k.bit) != 0) s += std::string(" ") + k.name;
  return s;
}

void step_epoll_wait(const char* what, int ep, int timeout) {
  epoll_event ev{};
  int n = epoll_wait(ep, &ev, 1, timeout);
  line(what, epoll_result(n, ev), true);
}

int epoll_ctl_events(int ep, int op, int fd, uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  return epoll_ctl(ep, op, fd, &ev);
}

void wait_readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  poll(&p, 1, kWaitMs);
}

void seq_epoll() {
  g_seq = "epoll";
  int ep = epoll_create1(EPOLL_CLOEXEC);
  int s = tcp_socket();
  int other = tcp_socket();
  g_watch = s;
  step("connect", connect_peer(s, kEcho));
  step("add", epoll_ctl_events(ep, EPOLL_CTL_ADD, s, EPOLLIN | EPOLLRDHUP));
  step("add again", epoll_ctl_events(ep, EPOLL_CTL_ADD, s, EPOLLIN));
  step("mod absent", epoll_ctl_events(ep, EPOLL_CTL_MOD, other, EPOLLIN));
  step("del absent", epoll_ctl_events(ep, EPOLL_CTL_DEL, other, 0));
  step("add itself", epoll_ctl_events(ep, EPOLL_CTL_ADD, ep, EPOLLIN));
  step("ctl on a socket", epoll_ctl_events(s, EPOLL_CTL_ADD, other, EPOLLIN));
  step_epoll_wait("wait idle", ep, 0);
  step_in_flight("write", write(s, "hi", 2));
  step_epoll_wait("wait data", ep, kWaitMs);
  step_read("read", s, 64);
  step_epoll_wait("wait drained", ep, 0);
  step("mod oneshot", epoll_ctl_events(ep, EPOLL_CTL_MOD, s, EPOLLIN | EPOLLONESHOT));
  step_in_flight("write", write(s, "a", 1));
  step_epoll_wait("wait oneshot", ep, kWaitMs);
  step_in_flight("write more", write(s, "b", 1));
  wait_readable(s);
  wait_queued(s, 2);
  step_epoll_wait("wait disarmed", ep, 0);
  step("mod rearm", epoll_ctl_events(ep, EPOLL_CTL_MOD, s, EPOLLIN));
  step_epoll_wait("wait rearmed", ep, 0);
  step("mod edge", epoll_ctl_events(ep, EPOLL_CTL_MOD, s, EPOLLIN | EPOLLET));
  step_epoll_wait("wait edge", ep, 0);
  step_epoll_wait("wait edge again", ep, 0);
  step_read("read", s, 64);
  step("mod out", epoll_ctl_events(ep, EPOLL_CTL_MOD, s, EPOLLOUT));
  step_epoll_wait("wait out", ep, 0);
  step("close in set", close(s));
  g_watch = -1;
  step_epoll_wait("wait after close", ep, 0);
  step("del closed", epoll_ctl_events(ep, EPOLL_CTL_DEL, s, 0));
  step("close other", close(other));
  step("close epoll", close(ep));
}

void seq_udp() {
  g_seq = "udp";
  int u = socket(AF_INET, SOCK_DGRAM, 0);
  g_watch = u;
  step_fd("socket", u);
  sockaddr_in echo = addr_of(g_peer, kUdpEcho);
  step_in_flight("sendto echo", sendto(u, "ping", 4, 0, sa(&echo), sizeof echo));
  step_wait("wait in", u, POLLIN);
  char buf[64];
  sockaddr_in from{};
  socklen_t len = sizeof from;
  ssize_t n = recvfrom(u, buf, sizeof buf, 0, sa(&from), &len);
  line("recvfrom", n < 0 ? result_of(n, errno) : std::to_string(n) + " " + addr_text(from), true);
  step("recv dontwait", recv(u, buf, sizeof buf, MSG_DONTWAIT));
  volatile uintptr_t unmapped = 8;
  void* bad = reinterpret_cast<void*>(unmapped);
  step("sendto bad buffer", sendto(u, bad, 4, 0, sa(&echo), sizeof echo));
  step_in_flight("sendto echo again", sendto(u, "pong", 4, 0, sa(&echo), sizeof echo));
  step_wait("wait in again", u, POLLIN);
  step("recv bad buffer", recv(u, bad, 4, 0));  // the datagram is dropped
  step("recv dontwait after", recv(u, buf, sizeof buf, MSG_DONTWAIT));
  step_name("getsockname", u, false);
  step_name("getpeername", u, true);
  step("send unconnected", send(u, "x", 1, 0));
  sockaddr_in closed = addr_of(g_peer, kClosed);
  step("connect closed port", connect(u, sa(&closed), sizeof closed));
  step_name("getpeername", u, true);
  step_in_flight("send", send(u, "x", 1, 0));
  step_wait("wait err", u, POLLERR);
  step_getint("SO_ERROR", u, SOL_SOCKET, SO_ERROR);
  step("recv dontwait", recv(u, buf, sizeof buf, MSG_DONTWAIT));
  step_in_flight("send again", send(u, "x", 1, 0));
  step_wait("wait err again", u, POLLERR);
  step("recv after error", recv(u, buf, sizeof buf, MSG_DONTWAIT));
  sockaddr_in unspec{};
  unspec.sin_family = AF_UNSPEC;
  step("disconnect", connect(u, sa(&unspec), sizeof unspec));
  step_name("getpeername", u, true);
  step("close", close(u));
  g_watch = -1;
}

void step_getlinger(const char* what, int fd) {
  linger lg{-1, -1};
  socklen_t len = sizeof lg;
  int r = getsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, &len);
  line(what, r < 0 ? result_of(r, errno) : std::to_string(lg.l_onoff) + "," + std::to_string(lg.l_linger), true);
}

void step_gettimeo(const char* what, int fd, int name) {
  timeval tv{-1, -1};
  socklen_t len = sizeof tv;
  int r = getsockopt(fd, SOL_SOCKET, name, &tv, &len);
  line(what, r < 0 ? result_of(r, errno) : std::to_string(tv.tv_sec) + "." + std::to_string(tv.tv_usec), true);
}

void seq_options() {
  g_seq = "options";
  int s = tcp_socket();
  g_watch = s;
  step_setint("TCP_NODELAY before connect", s, IPPROTO_TCP, TCP_NODELAY, 1);
  step("connect", connect_peer(s, kEcho));
  step_getint("TCP_NODELAY kept", s, IPPROTO_TCP, TCP_NODELAY);
  step_setint("TCP_NODELAY off", s, IPPROTO_TCP, TCP_NODELAY, 0);
  step_getint("TCP_NODELAY", s, IPPROTO_TCP, TCP_NODELAY);
  step_getint("SO_KEEPALIVE", s, SOL_SOCKET, SO_KEEPALIVE);
  step_setint("SO_KEEPALIVE on", s, SOL_SOCKET, SO_KEEPALIVE, 1);
  step_getint("SO_KEEPALIVE", s, SOL_SOCKET, SO_KEEPALIVE);
  step_getint("TCP_KEEPIDLE", s, IPPROTO_TCP, TCP_KEEPIDLE);
  step_setint("TCP_KEEPIDLE 60", s, IPPROTO_TCP, TCP_KEEPIDLE, 60);
  step_getint("TCP_KEEPIDLE", s, IPPROTO_TCP, TCP_KEEPIDLE);
  step_getint("TCP_KEEPINTVL", s, IPPROTO_TCP, TCP_KEEPINTVL);
  step_getint("TCP_KEEPCNT", s, IPPROTO_TCP, TCP_KEEPCNT);
  step_setint("TCP_KEEPIDLE 0", s, IPPROTO_TCP, TCP_KEEPIDLE, 0);
  step_getint("TCP_CORK", s, IPPROTO_TCP, TCP_CORK);
  step_setint("TCP_CORK on", s, IPPROTO_TCP, TCP_CORK, 1);
  step_getint("TCP_CORK", s, IPPROTO_TCP, TCP_CORK);
  step_setint("TCP_CORK off", s, IPPROTO_TCP, TCP_CORK, 0);
  step_getint("TCP_MAXSEG", s, IPPROTO_TCP, TCP_MAXSEG);
  step_getint("IP_TOS", s, IPPROTO_IP, IP_TOS);
  step_setint("IP_TOS 0x10", s, IPPROTO_IP, IP_TOS, 0x10);
  step_getint("IP_TOS", s, IPPROTO_IP, IP_TOS);
  step_getint("IP_TTL", s, IPPROTO_IP, IP_TTL);
  step_setint("IP_TTL 0", s, IPPROTO_IP, IP_TTL, 0);
  step_setint("IP_TTL 33", s, IPPROTO_IP, IP_TTL, 33);
  step_getint("IP_TTL", s, IPPROTO_IP, IP_TTL);
  step_getint("SO_DOMAIN", s, SOL_SOCKET, SO_DOMAIN);
  step_getint("SO_PROTOCOL", s, SOL_SOCKET, SO_PROTOCOL);
  step_getint("SO_REUSEADDR", s, SOL_SOCKET, SO_REUSEADDR);
  step_getlinger("SO_LINGER", s);
  linger lg{1, 5};
  step("SO_LINGER 1,5", setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
  step_getlinger("SO_LINGER", s);
  timeval tv{1, 500000};
  step("SO_RCVTIMEO 1.5", setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
  step_gettimeo("SO_RCVTIMEO", s, SO_RCVTIMEO);
  step_gettimeo("SO_SNDTIMEO", s, SO_SNDTIMEO);
  tcp_info ti{};
  socklen_t len = sizeof ti;
  int r = getsockopt(s, IPPROTO_TCP, TCP_INFO, &ti, &len);
  line("TCP_INFO state", r < 0 ? result_of(r, errno) : std::to_string(ti.tcpi_state), true);
  int small = -1;
  len = 2;
  r = getsockopt(s, SOL_SOCKET, SO_ERROR, &small, &len);
  line("SO_ERROR short optlen", r < 0 ? result_of(r, errno) : "len " + std::to_string(len), true);
  step_setint("SO_SNDBUF 65536", s, SOL_SOCKET, SO_SNDBUF, 65536);
  step_setint("SO_RCVBUF 65536", s, SOL_SOCKET, SO_RCVBUF, 65536);
  lg = {0, 0};
  step("SO_LINGER off", setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg));
  step("close", close(s));
  g_watch = -1;
}

void seq_dup() {
  g_seq = "dup";
  int s = tcp_socket();
  g_watch = s;
  step("connect", connect_peer(s, kEcho));
  int d = dup(s);
  step_fd("dup", d);
  step("close original", close(s));
  g_watch = d;
  step_in_flight("write dup", write(d, "x", 1));
  step_wait("wait in", d, POLLIN);
  step_read("read dup", d, 8);
  step("F_GETFL", fcntl(d, F_GETFL) & (O_ACCMODE | O_NONBLOCK));
  step("F_SETFL nonblock", fcntl(d, F_SETFL, O_NONBLOCK));
  step_read("read nonblock", d, 8);
  step("dup2 onto old number", dup2(d, s) == s);
  step("F_GETFD", fcntl(s, F_GETFD));
  int c = fcntl(s, F_DUPFD_CLOEXEC, 0);
  step_fd("F_DUPFD_CLOEXEC", c);
  step("F_GETFD cloexec", fcntl(c, F_GETFD));
  step("F_GETFL shared", fcntl(c, F_GETFL) & O_NONBLOCK);
  int one = 1;
  step("FIONBIO off", ioctl(c, FIONBIO, &(one = 0)));
  step("F_GETFL after FIONBIO", fcntl(d, F_GETFL) & O_NONBLOCK);
  step("close dup", close(d));
  step("close dupfd", close(c));
  g_watch = s;
  step_name("getpeername survivor", s, true);
  step("close", close(s));
  g_watch = -1;
}

struct Sequence {
  const char* name;
  void (*run)();
};
constexpr Sequence kSequences[] = {
    {"fresh", seq_fresh},         {"refused", seq_refused},         {"pending", seq_pending},
    {"echo", seq_echo},           {"reset", seq_reset},             {"peer_closed", seq_peer_closed},
    {"bad_buffers", seq_bad_buffers}, {"invalid", seq_invalid},     {"addr_in_use", seq_addr_in_use},
    {"accept", seq_accept},       {"epoll", seq_epoll},             {"udp", seq_udp},
    {"options", seq_options},     {"dup", seq_dup},
};

// Every sequence, or only those named (while debugging one).
int run(const char* local, const char* peer_ip, char** only, int n_only) {
  g_local = local;
  g_peer = peer_ip;
  struct sigaction act{};
  act.sa_handler = [](int) { g_sigpipes = g_sigpipes + 1; };
  sigaction(SIGPIPE, &act, nullptr);
  for (const Sequence& q : kSequences) {
    bool chosen = n_only == 0;
    for (int i = 0; i < n_only; ++i) chosen = chosen || strcmp(only[i], q.name) == 0;
    if (chosen) q.run();
  }
  printf("end\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && strcmp(argv[1], "peer") == 0) return peer();
  if (argc >= 4 && strcmp(argv[1], "run") == 0) return run(argv[2], argv[3], argv + 4, argc - 4);
  fprintf(stderr, "usage: shunt_differ peer | shunt_differ run LOCAL_IP PEER_IP [SEQUENCE...]\n");
  return 2;
}
