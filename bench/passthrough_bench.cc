// The interposer's cost on calls it passes to libc: calls on kernel descriptors (a
// pipe, /dev/null, /dev/zero, a unix socket pair, an epoll set), each timed two ways
// in the same process, in random interleaved order:
//
//   BM_<call>/interposed   through the symbol the program links: libshunt.so's
//                          wrapper when it is preloaded, libc's function otherwise
//   BM_<call>/libc         libc's own function (dlsym on libc.so.6): no wrapper
//
// Under `shunt run` the difference is what libshunt.so adds to a call it does not
// take; without it the two are the same function and the difference is the
// measurement's noise (bench/run.sh, workload passthrough, runs both).
//
//   build/bin/passthrough_bench --benchmark_repetitions=5 --benchmark_enable_random_interleaving=true
//
// With BENCH_ATTACH_IP=ADDR in the environment it first binds and listens a TCP
// socket on ADDR (the NIC's address under `shunt run`: a shunted socket, so the
// library is attached to a live daemon, as in an application that uses it) and says
// in the benchmark context whether that worked ("attach": "bound" or the error).
#include <arpa/inet.h>
#include <benchmark/benchmark.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

struct Calls {
  decltype(&::read) read;
  decltype(&::write) write;
  decltype(&::recv) recv;
  decltype(&::send) send;
  int (*fcntl)(int, int, ...);
  decltype(&::getsockopt) getsockopt;
  decltype(&::poll) poll;
  decltype(&::epoll_wait) epoll_wait;
  decltype(&::dup) dup;
  decltype(&::close) close;
};

// The linked symbols (resolved by the dynamic linker: the preloaded wrapper first).
Calls g_interposed = {&::read, &::write, &::recv, &::send, &::fcntl, &::getsockopt,
                      &::poll, &::epoll_wait, &::dup, &::close};
Calls g_libc{};

bool load_libc(std::string* why) {
  void* h = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
  if (!h) {
    *why = dlerror();
    return false;
  }
  auto get = [&](const char* name) {
    void* p = dlsym(h, name);
    if (!p) *why += std::string(" no ") + name;
    return p;
  };
  g_libc.read = reinterpret_cast<decltype(g_libc.read)>(get("read"));
  g_libc.write = reinterpret_cast<decltype(g_libc.write)>(get("write"));
  g_libc.recv = reinterpret_cast<decltype(g_libc.recv)>(get("recv"));
  g_libc.send = reinterpret_cast<decltype(g_libc.send)>(get("send"));
  g_libc.fcntl = reinterpret_cast<decltype(g_libc.fcntl)>(get("fcntl"));
  g_libc.getsockopt = reinterpret_cast<decltype(g_libc.getsockopt)>(get("getsockopt"));
  g_libc.poll = reinterpret_cast<decltype(g_libc.poll)>(get("poll"));
  g_libc.epoll_wait = reinterpret_cast<decltype(g_libc.epoll_wait)>(get("epoll_wait"));
  g_libc.dup = reinterpret_cast<decltype(g_libc.dup)>(get("dup"));
  g_libc.close = reinterpret_cast<decltype(g_libc.close)>(get("close"));
  return why->empty();
}

struct Fds {
  int pipe_r = -1, pipe_w = -1, null_w = -1, zero_r = -1, unix_a = -1, unix_b = -1, ep = -1;
  Fds() {
    int p[2];
    if (pipe2(p, O_NONBLOCK) == 0) pipe_r = p[0], pipe_w = p[1];
    null_w = open("/dev/null", O_WRONLY);
    zero_r = open("/dev/zero", O_RDONLY);
    int s[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, s) == 0) unix_a = s[0], unix_b = s[1];
    ep = epoll_create1(0);
    epoll_event ev{};
    ev.events = EPOLLIN;
    epoll_ctl(ep, EPOLL_CTL_ADD, pipe_r, &ev);
  }
};

Fds& fds() {
  static Fds f;
  return f;
}

void BM_read_devzero(benchmark::State& state, const Calls* c) {
  char b;
  for (auto _ : state) benchmark::DoNotOptimize(c->read(fds().zero_r, &b, 1));
}
void BM_write_devnull(benchmark::State& state, const Calls* c) {
  char b = 'x';
  for (auto _ : state) benchmark::DoNotOptimize(c->write(fds().null_w, &b, 1));
}
void BM_recv_unix_eagain(benchmark::State& state, const Calls* c) {
  char b;
  for (auto _ : state) benchmark::DoNotOptimize(c->recv(fds().unix_a, &b, 1, MSG_DONTWAIT));
}
// Two calls per iteration (report.py divides by two).
void BM_send_recv_unix(benchmark::State& state, const Calls* c) {
  char b = 'x';
  for (auto _ : state) {
    benchmark::DoNotOptimize(c->send(fds().unix_a, &b, 1, 0));
    benchmark::DoNotOptimize(c->recv(fds().unix_b, &b, 1, 0));
  }
}
void BM_fcntl_getfl(benchmark::State& state, const Calls* c) {
  for (auto _ : state) benchmark::DoNotOptimize(c->fcntl(fds().pipe_r, F_GETFL));
}
void BM_getsockopt_unix(benchmark::State& state, const Calls* c) {
  int type = 0;
  socklen_t len = sizeof type;
  for (auto _ : state) {
    len = sizeof type;
    benchmark::DoNotOptimize(c->getsockopt(fds().unix_a, SOL_SOCKET, SO_TYPE, &type, &len));
  }
}
void BM_poll_pipe(benchmark::State& state, const Calls* c) {
  pollfd p{fds().pipe_r, POLLIN, 0};
  for (auto _ : state) benchmark::DoNotOptimize(c->poll(&p, 1, 0));
}
void BM_epoll_wait_empty(benchmark::State& state, const Calls* c) {
  epoll_event ev[4];
  for (auto _ : state) benchmark::DoNotOptimize(c->epoll_wait(fds().ep, ev, 4, 0));
}
// Two calls per iteration (report.py divides by two).
void BM_dup_close(benchmark::State& state, const Calls* c) {
  for (auto _ : state) {
    int d = c->dup(fds().pipe_r);
    benchmark::DoNotOptimize(d);
    c->close(d);
  }
}

#define SHUNT_PASSTHROUGH(fn)                        \
  BENCHMARK_CAPTURE(fn, interposed, &g_interposed); \
  BENCHMARK_CAPTURE(fn, libc, &g_libc)
SHUNT_PASSTHROUGH(BM_read_devzero);
SHUNT_PASSTHROUGH(BM_write_devnull);
SHUNT_PASSTHROUGH(BM_recv_unix_eagain);
SHUNT_PASSTHROUGH(BM_send_recv_unix);
SHUNT_PASSTHROUGH(BM_fcntl_getfl);
SHUNT_PASSTHROUGH(BM_getsockopt_unix);
SHUNT_PASSTHROUGH(BM_poll_pipe);
SHUNT_PASSTHROUGH(BM_epoll_wait_empty);
SHUNT_PASSTHROUGH(BM_dup_close);

// A shunted listener held for the whole run, when BENCH_ATTACH_IP names the NIC.
std::string attach() {
  const char* ip = std::getenv("BENCH_ATTACH_IP");
  if (!ip || !*ip) return "not asked";
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0) return std::string("socket: ") + std::strerror(errno);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) return std::string("bad address ") + ip;
  if (bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
    return std::string("bind: ") + std::strerror(errno);
  if (listen(s, 1) != 0) return std::string("listen: ") + std::strerror(errno);
  return "bound";
}

}  // namespace

int main(int argc, char** argv) {
  std::string why;
  if (!load_libc(&why)) {
    std::fprintf(stderr, "passthrough_bench: libc's functions: %s\n", why.c_str());
    return 1;
  }
  benchmark::AddCustomContext("attach", attach());
  const char* pre = std::getenv("LD_PRELOAD");
  benchmark::AddCustomContext("ld_preload", pre ? pre : "");
  benchmark::AddCustomContext("read_is_libc", g_interposed.read == g_libc.read ? "yes" : "no");
  fds();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
