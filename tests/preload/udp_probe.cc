// UDP scenarios of preload_probe (probe.cc runs them by name): plain socket code
// that checks, under LD_PRELOAD=libshunt.so against the fake shuntd, what a Linux
// kernel would answer. The fake's NIC is 198.18.250.1/24 (no traffic leaves the process).
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "probe_wait.hh"

#define CHECK(cond)                                                                      \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      fprintf(stderr, "udp probe: check failed at line %d: %s (errno %d %s)\n", __LINE__, \
              #cond, errno, strerror(errno));                                            \
      exit(1);                                                                           \
    }                                                                                    \
  } while (0)

namespace {

const char* kNic = "198.18.250.1";

sockaddr_in addr_of(const char* ip, int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  inet_pton(AF_INET, ip, &a.sin_addr);
  return a;
}
sockaddr* sa(sockaddr_in* a) { return reinterpret_cast<sockaddr*>(a); }

int udp_socket(int flags = 0) {
  int s = socket(AF_INET, SOCK_DGRAM | flags, 0);
  CHECK(s >= 0);
  return s;
}

int bound(const char* ip, int port, int flags = 0) {
  int s = udp_socket(flags);
  sockaddr_in a = addr_of(ip, port);
  CHECK(bind(s, sa(&a), sizeof a) == 0);
  return s;
}

sockaddr_in name_of(int s) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  CHECK(getsockname(s, sa(&a), &len) == 0);
  CHECK(len == sizeof a);
  return a;
}

void send_to(int s, const std::string& data, sockaddr_in to) {
  CHECK(sendto(s, data.data(), data.size(), 0, sa(&to), sizeof to) == ssize_t(data.size()));
}

// One datagram (blocking unless the socket is not), with its source.
std::string recv_from(int s, sockaddr_in* from = nullptr, int flags = 0) {
  char buf[2048];
  sockaddr_in f{};
  socklen_t len = sizeof f;
  ssize_t n = recvfrom(s, buf, sizeof buf, flags, sa(&f), &len);
  CHECK(n >= 0);
  CHECK(len == sizeof f);
  if (from != nullptr) *from = f;
  return std::string(buf, size_t(n));
}

bool same(const sockaddr_in& a, const sockaddr_in& b) {
  return a.sin_family == b.sin_family && a.sin_port == b.sin_port &&
         a.sin_addr.s_addr == b.sin_addr.s_addr;
}

// Nothing arrives within `ms`.
void expect_nothing(int s, int ms = 50) {
  pollfd p{s, POLLIN, 0};
  CHECK(poll(&p, 1, ms) == 0);
  char c;
  CHECK(recv(s, &c, 1, MSG_DONTWAIT) == -1 && errno == EAGAIN);
}

std::string pattern(size_t n, unsigned seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = char((i * 131 + seed) & 0xff);
  return s;
}

// ---- scenarios ----

void udp_basic() {
  int srv = bound(kNic, 7000);
  sockaddr_in srv_addr = addr_of(kNic, 7000);
  CHECK(same(name_of(srv), srv_addr));
  int cli = udp_socket();
  send_to(cli, "hello", srv_addr);  // the first sendto decides and autobinds
  sockaddr_in cli_name = name_of(cli);
  CHECK(cli_name.sin_addr.s_addr == 0 && cli_name.sin_port != 0);  // Linux: 0.0.0.0:ephemeral
  sockaddr_in from{};
  CHECK(recv_from(srv, &from) == "hello");
  CHECK(from.sin_port == cli_name.sin_port && from.sin_addr.s_addr == srv_addr.sin_addr.s_addr);
  send_to(srv, "world!", from);
  sockaddr_in back{};
  CHECK(recv_from(cli, &back) == "world!");
  CHECK(same(back, srv_addr));

  // Empty datagrams are datagrams.
  send_to(cli, "", srv_addr);
  CHECK(recv_from(srv) == "");

  // MSG_PEEK, FIONREAD, truncation (recvmsg's MSG_TRUNC flag, recv's MSG_TRUNC).
  send_to(cli, "abcdefgh", srv_addr);
  char buf[16];
  for (int i = 0; i < 200 && recv(srv, buf, 3, MSG_PEEK | MSG_DONTWAIT) < 0; ++i) usleep(1000);
  CHECK(recv(srv, buf, 3, MSG_PEEK) == 3 && memcmp(buf, "abc", 3) == 0);
  int avail = -1;
  CHECK(ioctl(srv, FIONREAD, &avail) == 0 && avail == 8);
  iovec iov{buf, 3};
  sockaddr_in name{};
  msghdr m{};
  m.msg_name = &name;
  m.msg_namelen = sizeof name;
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  CHECK(recvmsg(srv, &m, 0) == 3);
  CHECK((m.msg_flags & MSG_TRUNC) != 0 && m.msg_namelen == sizeof name);
  CHECK(name.sin_port == cli_name.sin_port);
  CHECK(recv(srv, buf, sizeof buf, MSG_DONTWAIT) == -1 && errno == EAGAIN);  // the rest is gone
  CHECK(ioctl(srv, FIONREAD, &avail) == 0 && avail == 0);
  send_to(cli, "12345678", srv_addr);
  CHECK(recv(srv, buf, 3, MSG_TRUNC) == 8);  // the real length

  // Errors the kernel gives.
  CHECK(write(srv, "x", 1) == -1 && errno == EDESTADDRREQ);
  CHECK(send(srv, "x", 1, 0) == -1 && errno == EDESTADDRREQ);
  sockaddr_in zero_port = addr_of(kNic, 0);
  CHECK(sendto(srv, "x", 1, 0, sa(&zero_port), sizeof zero_port) == -1 && errno == EINVAL);
  CHECK(sendto(srv, "x", 1, 0, sa(&srv_addr), 8) == -1 && errno == EINVAL);
  std::string huge(65508, 'h');
  CHECK(sendto(cli, huge.data(), huge.size(), 0, sa(&srv_addr), sizeof srv_addr) == -1 &&
        errno == EMSGSIZE);
  sockaddr_in peer{};
  socklen_t plen = sizeof peer;
  CHECK(getpeername(srv, sa(&peer), &plen) == -1 && errno == ENOTCONN);
  CHECK(listen(srv, 1) == -1 && errno == EOPNOTSUPP);
  CHECK(bind(srv, sa(&srv_addr), sizeof srv_addr) == -1 && errno == EINVAL);
  int dup_port = udp_socket();
  CHECK(bind(dup_port, sa(&srv_addr), sizeof srv_addr) == -1 && errno == EADDRINUSE);
  close(dup_port);

  // connect: a peer, a fixed local address, and only the peer is heard.
  CHECK(connect(cli, sa(&srv_addr), sizeof srv_addr) == 0);
  plen = sizeof peer;
  CHECK(getpeername(cli, sa(&peer), &plen) == 0 && same(peer, srv_addr));
  sockaddr_in cli_conn = name_of(cli);
  CHECK(cli_conn.sin_port == cli_name.sin_port);
  CHECK(cli_conn.sin_addr.s_addr == srv_addr.sin_addr.s_addr);
  CHECK(send(cli, "c1", 2, 0) == 2);
  CHECK(write(cli, "c2", 2) == 2);
  CHECK(recv_from(srv) == "c1");
  CHECK(recv_from(srv) == "c2");
  int other = udp_socket();
  send_to(other, "intruder", cli_conn);
  send_to(srv, "reply", cli_conn);
  CHECK(read(cli, buf, sizeof buf) == 5 && memcmp(buf, "reply", 5) == 0);
  expect_nothing(cli);

  // connect(AF_UNSPEC) dissolves it.
  sockaddr unspec{};
  unspec.sa_family = AF_UNSPEC;
  CHECK(connect(cli, &unspec, sizeof unspec) == 0);
  plen = sizeof peer;
  CHECK(getpeername(cli, sa(&peer), &plen) == -1 && errno == ENOTCONN);
  CHECK(send(cli, "x", 1, 0) == -1 && errno == EDESTADDRREQ);
  sockaddr_in other_name = name_of(other);
  send_to(other, "anyone", cli_conn);
  sockaddr_in src{};
  CHECK(recv_from(cli, &src) == "anyone");
  CHECK(src.sin_port == other_name.sin_port);

  // A port nobody has: a connected socket hears ECONNREFUSED once, like Linux.
  int lone = udp_socket();
  sockaddr_in closed = addr_of(kNic, 7999);
  CHECK(connect(lone, sa(&closed), sizeof closed) == 0);
  CHECK(send(lone, "x", 1, 0) == 1);
  CHECK(recv(lone, buf, sizeof buf, 0) == -1 && errno == ECONNREFUSED);
  CHECK(send(lone, "x", 1, 0) == 1);
  int err = 0;
  socklen_t elen = sizeof err;
  for (int i = 0; i < 200 && err == 0; ++i) {
    usleep(1000);
    CHECK(getsockopt(lone, SOL_SOCKET, SO_ERROR, &err, &elen) == 0);
  }
  CHECK(err == ECONNREFUSED);
  CHECK(getsockopt(lone, SOL_SOCKET, SO_ERROR, &err, &elen) == 0 && err == 0);  // once

  // shutdown: SHUT_RD makes reads return 0; on an unconnected socket Linux still
  // says ENOTCONN.
  CHECK(shutdown(srv, SHUT_RD) == -1 && errno == ENOTCONN);
  CHECK(recv(srv, buf, sizeof buf, 0) == 0);
  CHECK(shutdown(cli, 99) == -1 && errno == EINVAL);
  close(lone);
  close(other);
  close(cli);
  close(srv);
}

void udp_mmsg() {
  int srv = bound(kNic, 7010);
  sockaddr_in srv_addr = addr_of(kNic, 7010);
  int cli = udp_socket();
  CHECK(connect(cli, sa(&srv_addr), sizeof srv_addr) == 0);
  sockaddr_in cli_addr = name_of(cli);
  constexpr int kN = 8;
  std::string payload[kN];
  iovec out_iov[kN];
  mmsghdr out[kN]{};
  for (int i = 0; i < kN; ++i) {
    payload[i] = pattern(size_t(i) * 10, unsigned(i));
    payload[i].insert(0, 1, char('0' + i));
    out_iov[i] = iovec{payload[i].data(), payload[i].size()};
    out[i].msg_hdr.msg_iov = &out_iov[i];
    out[i].msg_hdr.msg_iovlen = 1;
  }
  CHECK(sendmmsg(cli, out, kN, 0) == kN);
  for (int i = 0; i < kN; ++i) CHECK(out[i].msg_len == payload[i].size());

  char bufs[16][256];
  iovec in_iov[16];
  sockaddr_in names[16];
  mmsghdr in[16]{};
  int got = 0;
  for (int round = 0; round < 100 && got < kN; ++round) {
    for (int i = 0; i < 16; ++i) {
      in_iov[i] = iovec{bufs[i], sizeof bufs[i]};
      in[i].msg_hdr = msghdr{};
      in[i].msg_hdr.msg_iov = &in_iov[i];
      in[i].msg_hdr.msg_iovlen = 1;
      in[i].msg_hdr.msg_name = &names[i];
      in[i].msg_hdr.msg_namelen = sizeof names[i];
    }
    int n = recvmmsg(srv, in, 16, MSG_WAITFORONE, nullptr);
    CHECK(n >= 1);
    for (int i = 0; i < n; ++i, ++got) {
      CHECK(got < kN);
      CHECK(std::string(bufs[i], in[i].msg_len) == payload[got]);
      CHECK(in[i].msg_hdr.msg_namelen == sizeof names[i] && names[i].sin_port == cli_addr.sin_port);
    }
  }
  CHECK(got == kN);
  timespec ts{0, 1000000};
  CHECK(recvmmsg(srv, in, 4, MSG_DONTWAIT, &ts) == -1 && errno == EAGAIN);
  ts = timespec{0, -1};
  CHECK(recvmmsg(srv, in, 4, 0, &ts) == -1 && errno == EINVAL);

  // Per-message destinations from an unconnected socket.
  sockaddr_in dest = cli_addr;
  dest.sin_addr = srv_addr.sin_addr;
  for (int i = 0; i < 3; ++i) {
    out[i].msg_hdr.msg_name = &dest;
    out[i].msg_hdr.msg_namelen = sizeof dest;
  }
  CHECK(sendmmsg(srv, out, 3, 0) == 3);
  for (int i = 0; i < 3; ++i) CHECK(recv_from(cli) == payload[i]);
  close(cli);
  close(srv);
}

void udp_epoll() {
  int srv = bound(kNic, 7020, SOCK_NONBLOCK);
  sockaddr_in srv_addr = addr_of(kNic, 7020);
  int cli = udp_socket();
  int ep = epoll_create1(EPOLL_CLOEXEC);
  CHECK(ep >= 0);
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT;
  ev.data.u64 = 42;
  CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, srv, &ev) == 0);
  epoll_event got[4];
  CHECK(epoll_wait(ep, got, 4, 0) == 1);
  CHECK(got[0].data.u64 == 42 && got[0].events == EPOLLOUT);
  ev.events = EPOLLIN;  // EPOLLOUT is always there: watch for input alone
  CHECK(epoll_ctl(ep, EPOLL_CTL_MOD, srv, &ev) == 0);
  CHECK(epoll_wait(ep, got, 4, 20) == 0);
  send_to(cli, "x", srv_addr);
  CHECK(epoll_wait(ep, got, 4, 2000) == 1 && got[0].events == EPOLLIN);
  char buf[64];
  CHECK(recv(srv, buf, sizeof buf, 0) == 1);
  CHECK(recv(srv, buf, sizeof buf, 0) == -1 && errno == EAGAIN);
  CHECK(epoll_wait(ep, got, 4, 0) == 0);

  // Edge-triggered: one report per arrival, whether or not what came before was read.
  ev.events = EPOLLIN | EPOLLET;
  CHECK(epoll_ctl(ep, EPOLL_CTL_MOD, srv, &ev) == 0);
  send_to(cli, "a", srv_addr);
  CHECK(epoll_wait(ep, got, 4, 2000) == 1 && (got[0].events & EPOLLIN));
  CHECK(epoll_wait(ep, got, 4, 20) == 0);  // reported once, "a" still unread
  send_to(cli, "b", srv_addr);
  CHECK(epoll_wait(ep, got, 4, 2000) == 1 && (got[0].events & EPOLLIN));
  CHECK(recv(srv, buf, sizeof buf, 0) == 1);
  CHECK(epoll_wait(ep, got, 4, 20) == 0);  // a read is no arrival
  send_to(cli, "c", srv_addr);
  CHECK(epoll_wait(ep, got, 4, 2000) == 1);
  CHECK(recv(srv, buf, sizeof buf, 0) == 1);
  CHECK(recv(srv, buf, sizeof buf, 0) == 1);
  close(ep);

  // poll: a timeout, then a datagram from another thread wakes it.
  pollfd p{srv, POLLIN, 0};
  CHECK(poll(&p, 1, 30) == 0);
  const pid_t me = gettid();
  std::thread t([&] {
    probe::wait_asleep(me);
    send_to(cli, "late", srv_addr);
  });
  CHECK(poll(&p, 1, 5000) == 1 && (p.revents & POLLIN));
  t.join();
  CHECK(recv(srv, buf, sizeof buf, 0) == 4);

  // select and pselect, mixing a kernel fd (a pipe) and the shunted socket.
  int pp[2];
  CHECK(pipe(pp) == 0);
  fd_set rd, wr;
  FD_ZERO(&rd);
  FD_ZERO(&wr);
  FD_SET(srv, &rd);
  FD_SET(pp[0], &rd);
  FD_SET(srv, &wr);
  int nfds = std::max(srv, pp[0]) + 1;
  timeval stv{0, 20000};
  CHECK(select(nfds, &rd, &wr, nullptr, &stv) == 1);
  CHECK(!FD_ISSET(srv, &rd) && !FD_ISSET(pp[0], &rd) && FD_ISSET(srv, &wr));
  CHECK(stv.tv_sec == 0 && stv.tv_usec <= 20000);
  std::thread t3([&] {
    probe::wait_asleep(me);
    send_to(cli, "sel", srv_addr);
  });
  FD_ZERO(&rd);
  FD_SET(srv, &rd);
  FD_SET(pp[0], &rd);
  CHECK(select(nfds, &rd, nullptr, nullptr, nullptr) == 1 && FD_ISSET(srv, &rd) &&
        !FD_ISSET(pp[0], &rd));
  t3.join();
  CHECK(recv(srv, buf, sizeof buf, 0) == 3);
  CHECK(write(pp[1], "p", 1) == 1);
  FD_ZERO(&rd);
  FD_SET(srv, &rd);
  FD_SET(pp[0], &rd);
  timespec pts{1, 0};
  CHECK(pselect(nfds, &rd, nullptr, nullptr, &pts, nullptr) == 1 && FD_ISSET(pp[0], &rd));
  close(pp[0]);
  close(pp[1]);

  // A blocking receive sleeps until a datagram comes; SO_RCVTIMEO bounds it.
  int blk = bound(kNic, 7021);
  sockaddr_in blk_addr = addr_of(kNic, 7021);
  std::thread t2([&] {
    probe::wait_asleep(me);
    send_to(cli, "wake", blk_addr);
  });
  CHECK(recv_from(blk) == "wake");
  t2.join();
  timeval tv{0, 100000};
  CHECK(setsockopt(blk, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) == 0);
  timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  CHECK(recv(blk, buf, sizeof buf, 0) == -1 && errno == EAGAIN);
  clock_gettime(CLOCK_MONOTONIC, &b);
  int64_t ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
  CHECK(ms >= 90 && ms < 2000);
  close(blk);
  close(cli);
  close(srv);
}

// Wildcard bind: the kernel half (loopback clients) and the NIC half both work.
void udp_wildcard() {
  int w = bound("0.0.0.0", 7100);
  sockaddr_in wname = name_of(w);
  CHECK(wname.sin_addr.s_addr == 0 && ntohs(wname.sin_port) == 7100);
  sockaddr_in via_lo = addr_of("127.0.0.1", 7100), via_nic = addr_of(kNic, 7100);
  int k = udp_socket();
  int n = udp_socket();
  send_to(k, "from-kernel", via_lo);
  sockaddr_in kfrom{};
  CHECK(recv_from(w, &kfrom) == "from-kernel");
  CHECK(kfrom.sin_addr.s_addr == htonl(INADDR_LOOPBACK));
  send_to(n, "from-nic", via_nic);
  sockaddr_in nfrom{};
  CHECK(recv_from(w, &nfrom) == "from-nic");
  CHECK(nfrom.sin_addr.s_addr == via_nic.sin_addr.s_addr);
  send_to(w, "to-kernel", kfrom);
  CHECK(recv_from(k) == "to-kernel");
  send_to(w, "to-nic", nfrom);
  CHECK(recv_from(n) == "to-nic");

  // epoll and poll see both halves.
  int ep = epoll_create1(0);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = w;
  CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, w, &ev) == 0);
  epoll_event got[2];
  CHECK(epoll_wait(ep, got, 2, 0) == 0);
  send_to(k, "k2", via_lo);
  CHECK(epoll_wait(ep, got, 2, 2000) == 1 && got[0].data.fd == w && (got[0].events & EPOLLIN));
  CHECK(recv_from(w) == "k2");
  send_to(n, "n2", via_nic);
  CHECK(epoll_wait(ep, got, 2, 2000) == 1 && got[0].data.fd == w);
  CHECK(recv_from(w) == "n2");
  pollfd p{w, POLLIN, 0};
  CHECK(poll(&p, 1, 0) == 0);
  send_to(k, "k3", via_lo);
  CHECK(poll(&p, 1, 2000) == 1 && (p.revents & POLLIN));
  CHECK(recv_from(w) == "k3");

  // connect to a NIC peer: the socket is the NIC half alone from then on.
  CHECK(connect(w, sa(&nfrom), sizeof nfrom) == 0);
  send_to(k, "ignored", via_lo);
  send_to(n, "n3", via_nic);
  CHECK(epoll_wait(ep, got, 2, 2000) == 1);
  CHECK(recv_from(w) == "n3");
  expect_nothing(w);
  CHECK(epoll_wait(ep, got, 2, 0) == 0);
  close(ep);
  close(k);
  close(n);
  close(w);

  // Connecting a wildcard socket to a kernel destination keeps the kernel half.
  int w2 = bound("0.0.0.0", 0);
  int k2 = bound("127.0.0.1", 0);
  sockaddr_in k2name = name_of(k2);
  CHECK(connect(w2, sa(&k2name), sizeof k2name) == 0);
  CHECK(send(w2, "kk", 2, 0) == 2);
  CHECK(recv_from(k2) == "kk");
  close(k2);
  close(w2);
}

void udp_threads() {
  int srv = bound(kNic, 7200);
  sockaddr_in srv_addr = addr_of(kNic, 7200);
  int cli = udp_socket();
  CHECK(connect(cli, sa(&srv_addr), sizeof srv_addr) == 0);
  constexpr int kThreads = 4, kEach = 500;
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        std::string m = std::to_string(t) + ":" + std::to_string(i) + ":" + pattern(100, unsigned(i));
        CHECK(send(cli, m.data(), m.size(), 0) == ssize_t(m.size()));
      }
    });
  // Two receivers share the server socket: every datagram reaches exactly one.
  std::atomic<int> total{0};
  std::vector<int> next(kThreads, 0);
  std::atomic<bool> bad{false};
  std::vector<std::vector<std::pair<int, int>>> seen(2);
  std::vector<std::thread> rs;
  for (int r = 0; r < 2; ++r)
    rs.emplace_back([&, r] {
      char buf[512];
      for (;;) {
        ssize_t n = recv(srv, buf, sizeof buf, 0);
        if (n <= 0) return;
        std::string m(buf, size_t(n));
        if (m == "stop") return;
        int t = 0, i = 0;
        if (sscanf(m.c_str(), "%d:%d:", &t, &i) != 2 || t < 0 || t >= kThreads) {
          bad = true;
          continue;
        }
        std::string want = std::to_string(t) + ":" + std::to_string(i) + ":" + pattern(100, unsigned(i));
        if (m != want) bad = true;
        seen[size_t(r)].push_back({t, i});
        ++total;
      }
    });
  for (auto& t : ts) t.join();
  for (int i = 0; i < 2000 && total.load() < kThreads * kEach; ++i) usleep(5000);
  CHECK(total.load() == kThreads * kEach);
  send_to(cli, "stop", srv_addr);
  send_to(cli, "stop", srv_addr);
  for (auto& r : rs) r.join();
  CHECK(!bad.load());
  // Each sender's datagrams arrive in its order (one ring, FIFO) at each receiver.
  for (auto& v : seen) {
    std::vector<int> last(kThreads, -1);
    for (auto [t, i] : v) {
      CHECK(i > last[size_t(t)]);
      last[size_t(t)] = i;
    }
  }
  close(cli);
  close(srv);
}

void udp_big() {
  int srv = bound(kNic, 7300);
  sockaddr_in srv_addr = addr_of(kNic, 7300);
  int cli = udp_socket();
  for (size_t size : {size_t(60000), size_t(65507), size_t(1)}) {
    std::string d = pattern(size, unsigned(size));
    CHECK(sendto(cli, d.data(), d.size(), 0, sa(&srv_addr), sizeof srv_addr) == ssize_t(size));
    std::string got(70000, '\0');
    CHECK(recv(srv, got.data(), got.size(), 0) == ssize_t(size));
    got.resize(size);
    CHECK(got == d);
  }
  close(cli);
  close(srv);
}

// A bound socket inherited by a child: the child answers on it.
void udp_fork() {
  int srv = bound(kNic, 7400);
  sockaddr_in srv_addr = addr_of(kNic, 7400);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    sockaddr_in from{};
    std::string m = recv_from(srv, &from);
    send_to(srv, "pong:" + m, from);
    _exit(0);
  }
  int cli = udp_socket();
  send_to(cli, "ping", srv_addr);
  CHECK(recv_from(cli) == "pong:ping");
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
  send_to(cli, "again", srv_addr);
  CHECK(recv_from(srv) == "again");
  close(cli);
  close(srv);
}

// Loopback and other non-NIC addresses stay with the kernel.
void udp_kernel_routes() {
  int srv = bound("127.0.0.1", 0);
  sockaddr_in srv_addr = name_of(srv);
  int a = udp_socket();
  send_to(a, "a", srv_addr);
  CHECK(recv_from(srv) == "a");
  int b = udp_socket();
  CHECK(connect(b, sa(&srv_addr), sizeof srv_addr) == 0);
  CHECK(send(b, "b", 1, 0) == 1);
  CHECK(recv_from(srv) == "b");
  close(a);
  close(b);
  close(srv);
}

}  // namespace

bool run_udp_scenario(const std::string& what) {
  struct {
    const char* name;
    void (*fn)();
  } const scenarios[] = {{"udp_basic", udp_basic},       {"udp_mmsg", udp_mmsg},
                         {"udp_epoll", udp_epoll},       {"udp_wildcard", udp_wildcard},
                         {"udp_threads", udp_threads},   {"udp_big", udp_big},
                         {"udp_fork", udp_fork},         {"udp_kernel_routes", udp_kernel_routes}};
  for (const auto& s : scenarios) {
    if (what == s.name) {
      s.fn();
      printf("ok %s\n", s.name);
      return true;
    }
  }
  return false;
}
