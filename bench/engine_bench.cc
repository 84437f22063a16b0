// Protocol engine alone, two engines in one process over an in-memory wire, next to
// the same workloads over kernel loopback TCP in the same run (report ratios).
//
//   build/bin/engine_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
//
// Counters: transactions (or bytes) per second of wall time, and TSC cycles per
// transaction. The kernel runs client and server in two threads (one core each at
// best on this machine); the engines run in one thread, so the engine figure is
// the cost of both ends of the connection on one core.
#include <arpa/inet.h>
#include <benchmark/benchmark.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>
#include <x86intrin.h>

#include <array>
#include <cstring>
#include <thread>
#include <vector>

#include "engine/engine.hh"

namespace shunt {
namespace {

constexpr uint32_t kServerIp = 0xc6120001;  // 198.18.0.1
constexpr uint32_t kClientIp = 0xc6120002;  // 198.18.0.2
constexpr uint32_t kRingSize = 1 << 18;

// Frames handed from one engine to the other, without allocation after start.
class Wire : public FrameSink {
 public:
  Wire() : frames_(512) {}
  std::span<uint8_t> tx_buffer() override {
    if (count_ == frames_.size()) return {};
    return {frames_[count_].bytes.data(), frames_[count_].bytes.size()};
  }
  void tx_commit(size_t len) override { frames_[count_++].len = len; }
  // Delivers every frame to `to`; returns how many.
  size_t deliver(Engine& to, Time now) {
    size_t n = count_;
    for (size_t i = 0; i < n; ++i) to.input({frames_[i].bytes.data(), frames_[i].len}, now);
    count_ = 0;
    return n;
  }

 private:
  struct Frame {
    std::array<uint8_t, 1600> bytes;
    size_t len = 0;
  };
  std::vector<Frame> frames_;
  size_t count_ = 0;
};

struct AppRings {
  abi::RingIndices rx_idx, tx_idx;
  std::vector<uint8_t> rx_bytes = std::vector<uint8_t>(kRingSize);
  std::vector<uint8_t> tx_bytes = std::vector<uint8_t>(kRingSize);
  abi::ByteRing rx() { return {&rx_idx, rx_bytes.data(), kRingSize}; }
  abi::ByteRing tx() { return {&tx_idx, tx_bytes.data(), kRingSize}; }
};

// Two engines with one established connection between them.
struct Pair {
  Wire to_client, to_server;
  Engine server, client;
  AppRings srv_rings, cli_rings;
  ConnId srv = kInvalidId, cli = kInvalidId;
  Time now = 1;

  static EngineConfig config(uint32_t ip, uint8_t last) {
    EngineConfig c;
    c.ip = ip;
    c.mac = {2, 0, 0, 0, 0, last};
    c.max_connections = 64;
    c.staging_buffers = 8;
    return c;
  }
  Pair() : server(config(kServerIp, 1), to_client), client(config(kClientIp, 2), to_server) {
    ListenerId l;
    server.listen(80, 16, 1, &l);
    client.connect(40000, kServerIp, 80, abi::ProducerEnd(cli_rings.rx()),
                   abi::ConsumerEnd(cli_rings.tx()), 2, now, &cli);
    for (int i = 0; i < 20 && srv == kInvalidId; ++i) {
      step();
      srv = server.accept(l);
    }
    server.attach(srv, abi::ProducerEnd(srv_rings.rx()), abi::ConsumerEnd(srv_rings.tx()), 3);
    step();
  }
  // One batch on each side, as the daemon's loop does it.
  size_t step() {
    now += 1;
    client.flush(now);
    size_t n = to_server.deliver(server, now);
    server.flush(now);
    n += to_client.deliver(client, now);
    client.flush(now);
    n += to_server.deliver(server, now);
    server.drain_events([](uint64_t, uint32_t) {});
    client.drain_events([](uint64_t, uint32_t) {});
    return n;
  }
};

void BM_EngineRequestResponse64(benchmark::State& state) {
  Pair p;
  uint8_t msg[64] = {};
  uint8_t buf[64];
  uint64_t cycles = 0, txns = 0;
  for (auto _ : state) {
    uint64_t t0 = __rdtsc();
    p.cli_rings.tx().write(msg, sizeof(msg));
    p.client.tx_ready(p.cli);
    p.step();
    abi::ByteRing srx = p.srv_rings.rx();
    if (srx.read(buf, sizeof(buf)) != sizeof(buf)) state.SkipWithError("request lost");
    p.srv_rings.tx().write(buf, sizeof(buf));
    p.server.tx_ready(p.srv);
    p.step();
    if (p.cli_rings.rx().read(buf, sizeof(buf)) != sizeof(buf)) state.SkipWithError("reply lost");
    cycles += __rdtsc() - t0;
    ++txns;
  }
  state.counters["txn/s"] = benchmark::Counter(double(txns), benchmark::Counter::kIsRate);
  state.counters["cycles/txn"] = double(cycles) / double(txns ? txns : 1);
}
BENCHMARK(BM_EngineRequestResponse64);

void BM_EngineBulk(benchmark::State& state) {
  Pair p;
  std::vector<uint8_t> chunk(64 * 1024, 0x5a);
  std::vector<uint8_t> sink(kRingSize);
  uint64_t bytes = 0;
  for (auto _ : state) {
    uint32_t w = p.cli_rings.tx().write(chunk.data(), uint32_t(chunk.size()));
    p.client.tx_ready(p.cli);
    uint32_t got = 0;
    for (int i = 0; i < 1000 && got < w; ++i) {
      p.step();
      uint32_t n = p.srv_rings.rx().read(sink.data(), uint32_t(sink.size()));
      if (n) p.server.rx_drained(p.srv);
      got += n;
    }
    if (got != w) state.SkipWithError("bulk transfer stalled");
    bytes += got;
  }
  state.SetBytesProcessed(int64_t(bytes));
}
BENCHMARK(BM_EngineBulk);

// ---- Kernel loopback TCP, same workloads ----

struct KernelPair {
  int listener = -1, client = -1, server = -1;
  KernelPair() {
    listener = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    socklen_t len = sizeof(a);
    getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len);
    listen(listener, 1);
    client = socket(AF_INET, SOCK_STREAM, 0);
    connect(client, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    server = accept(listener, nullptr, nullptr);
    int one = 1;
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  ~KernelPair() {
    close(client);
    close(server);
    close(listener);
  }
};

bool read_full(int fd, uint8_t* buf, size_t len) {
  for (size_t got = 0; got < len;) {
    ssize_t n = read(fd, buf + got, len - got);
    if (n <= 0) return false;
    got += size_t(n);
  }
  return true;
}

void BM_KernelLoopbackRequestResponse64(benchmark::State& state) {
  KernelPair k;
  std::thread echo([&] {
    uint8_t buf[64];
    while (read_full(k.server, buf, sizeof(buf)))
      if (write(k.server, buf, sizeof(buf)) != ssize_t(sizeof(buf))) break;
  });
  uint8_t msg[64] = {};
  uint64_t cycles = 0, txns = 0;
  for (auto _ : state) {
    uint64_t t0 = __rdtsc();
    if (write(k.client, msg, sizeof(msg)) != ssize_t(sizeof(msg)) ||
        !read_full(k.client, msg, sizeof(msg)))
      state.SkipWithError("kernel transaction failed");
    cycles += __rdtsc() - t0;
    ++txns;
  }
  shutdown(k.client, SHUT_WR);
  echo.join();
  state.counters["txn/s"] = benchmark::Counter(double(txns), benchmark::Counter::kIsRate);
  state.counters["cycles/txn"] = double(cycles) / double(txns ? txns : 1);
}
BENCHMARK(BM_KernelLoopbackRequestResponse64)->UseRealTime();

void BM_KernelLoopbackBulk(benchmark::State& state) {
  KernelPair k;
  std::thread drain([&] {
    std::vector<uint8_t> buf(1 << 18);
    while (read(k.server, buf.data(), buf.size()) > 0) {
    }
  });
  std::vector<uint8_t> chunk(64 * 1024, 0x5a);
  uint64_t bytes = 0;
  for (auto _ : state) {
    size_t off = 0;
    while (off < chunk.size()) {
      ssize_t n = write(k.client, chunk.data() + off, chunk.size() - off);
      if (n <= 0) {
        state.SkipWithError("kernel write failed");
        break;
      }
      off += size_t(n);
    }
    bytes += off;
  }
  shutdown(k.client, SHUT_WR);
  drain.join();
  state.SetBytesProcessed(int64_t(bytes));
}
BENCHMARK(BM_KernelLoopbackBulk)->UseRealTime();

}  // namespace
}  // namespace shunt

BENCHMARK_MAIN();
