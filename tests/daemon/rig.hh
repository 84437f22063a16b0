// The daemon without DPDK, for its unit tests and its fuzz target: a Daemon on a
// MemoryPort with a real control socket in a temporary run directory, a remote
// host (a second Engine) on the other end of the in-memory wire, and test
// applications that attach over the control socket and speak the ABI by hand.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "daemon/daemon.hh"
#include "daemon/log.hh"
#include "daemon/memory_port.hh"
#include "shunt/control.h"
#include "shunt/ring.h"
#include "shunt/scm.h"

namespace shunt::test {

inline constexpr uint32_t kNicIp = 0xc6120501;     // 198.18.5.1, the daemon
inline constexpr uint32_t kRemoteIp = 0xc6120502;  // 198.18.5.2, the remote host

// Frames an engine sends, kept until moved across the wire.
class Outbox : public FrameSink {
 public:
  std::span<uint8_t> tx_buffer() override {
    buf_.resize(1514);
    return buf_;
  }
  void tx_commit(size_t len) override { frames.emplace_back(buf_.begin(), buf_.begin() + long(len)); }
  std::vector<std::vector<uint8_t>> frames;

 private:
  std::vector<uint8_t> buf_;
};

// A byte stream's two rings over plain memory, for the remote host's sockets.
struct PlainRings {
  explicit PlainRings(uint32_t cap = 1 << 16) : rx_bytes(cap), tx_bytes(cap) {}
  abi::ByteRing rx() { return {&rx_idx, rx_bytes.data(), uint32_t(rx_bytes.size())}; }
  abi::ByteRing tx() { return {&tx_idx, tx_bytes.data(), uint32_t(tx_bytes.size())}; }
  std::string read() {
    std::string s(rx().readable(), '\0');
    s.resize(rx().read(s.data(), uint32_t(s.size())));
    return s;
  }
  abi::RingIndices rx_idx, tx_idx;
  std::vector<uint8_t> rx_bytes, tx_bytes;
};

// An application as libshunt.so would be, by hand: control connection, mapped
// region, commands on queue pair 0.
class TestApp {
 public:
  TestApp() = default;
  TestApp(const TestApp&) = delete;
  TestApp& operator=(const TestApp&) = delete;
  ~TestApp() { close_all(); }

  // Connects and sends kAttach; the daemon answers in poll_control.
  bool connect_to(const std::string& path) {
    ctl = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
    if (::connect(ctl, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return false;
    ctl::Request req{};
    req.type = uint32_t(ctl::Type::kAttach);
    req.abi_version = abi::kVersion;
    req.pid = getpid();
    return scm::send(ctl, &req, sizeof req, nullptr, 0) == ssize_t(sizeof req);
  }
  // Reads the attach reply (after the daemon polled its control socket).
  int finish_attach() {
    ctl::AttachReply reply{};
    int fds[3], n = 0;
    pollfd p{ctl, POLLIN, 0};
    if (poll(&p, 1, 0) != 1) return -ETIMEDOUT;
    if (scm::recv(ctl, &reply, sizeof reply, fds, 3, &n) != ssize_t(sizeof reply)) return -EPROTO;
    if (reply.status != 0) return reply.status;
    if (n != 3) return -EPROTO;
    memfd = fds[0];
    app_bell = fds[1];
    daemon_bell = fds[2];
    size = reply.region_size;
    base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (base == MAP_FAILED) return -errno;
    hdr = abi::header(base);
    if (!abi::region_fits(*hdr, size)) return -EPROTO;
    layout = abi::layout_of(*hdr);
    hdr->queue_pairs_claimed.store(1);
    return 0;
  }

  // From the layout read at attach, as libshunt.so does: the tests scribble over
  // the header.
  abi::QueuePair* qp(uint32_t i = 0) const { return abi::queue_pair(base, layout, i); }
  abi::SocketSlot* slot(uint32_t i) const { return abi::slot(base, layout, i); }
  abi::ByteRing rx(uint32_t i) const {
    return abi::ByteRing(&slot(i)->rx, abi::rx_bytes(base, layout, i), layout.rx_ring_size);
  }
  abi::ByteRing tx(uint32_t i) const {
    return abi::ByteRing(&slot(i)->tx, abi::tx_bytes(base, layout, i), layout.tx_ring_size);
  }

  bool push(const abi::Command& c, uint32_t q = 0) {
    abi::EntryRing<abi::Command> sq(&qp(q)->sq_idx, qp(q)->sq, abi::kQueueDepth);
    return sq.push(c);
  }
  bool pop(abi::Completion* out, uint32_t q = 0) {
    abi::EntryRing<abi::Completion> cq(&qp(q)->cq_idx, qp(q)->cq, abi::kQueueDepth);
    return cq.pop(out);
  }
  uint32_t completions_waiting(uint32_t q = 0) {
    abi::EntryRing<abi::Completion> cq(&qp(q)->cq_idx, qp(q)->cq, abi::kQueueDepth);
    return cq.available();
  }
  // True once the daemon hung up on us.
  bool hung_up() const {
    pollfd p{ctl, POLLIN | POLLRDHUP, 0};
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLRDHUP));
  }
  void close_ctl() {
    if (ctl >= 0) ::close(ctl);
    ctl = -1;
  }
  void close_all() {
    close_ctl();
    if (base != nullptr && base != MAP_FAILED) munmap(base, size);
    base = nullptr;
    for (int* fd : {&memfd, &app_bell, &daemon_bell})
      if (*fd >= 0) {
        ::close(*fd);
        *fd = -1;
      }
  }

  int ctl = -1, memfd = -1, app_bell = -1, daemon_bell = -1;
  void* base = nullptr;
  uint64_t size = 0;
  abi::RegionHeader* hdr = nullptr;
  abi::Layout layout{};
};

inline abi::Command command(abi::Op op, uint32_t slot = abi::kNoSlot, uint64_t cookie = 0) {
  abi::Command c{};
  c.op = uint16_t(op);
  c.slot = slot;
  c.cookie = cookie;
  return c;
}

class DaemonRig {
 public:
  // small: regions of 16 slots and 16 KiB rings; else shuntd's own defaults.
  // shares_core: as on two CPUs (shuntd spins only while an application waits).
  explicit DaemonRig(uint32_t max_apps = 4, bool small = true, bool shares_core = false) {
    if (g_log_level > 0) g_log_level = 0;  // attach/detach lines would drown the test's output
    char dir[] = "/tmp/shunt-daemon-test.XXXXXX";
    rundir = mkdtemp(dir);
    cfg.rundir = rundir;
    cfg.ip = kNicIp;
    cfg.prefix_len = 24;
    cfg.max_apps = max_apps;
    if (small) {
      cfg.slots_per_app = 16;
      cfg.ring_size = 1 << 14;
      cfg.queue_pairs = 2;
    }
    cfg.mode = PollMode::kBusy;
    cfg.spin_while_apps_run = !shares_core;
    EngineConfig ec;
    ec.mac = port.mac();
    ec.ip = kNicIp;
    ec.staging_size = std::min<uint32_t>(cfg.ring_size, 1 << 16);
    ec.staging_buffers = 32;
    ec.max_connections = 256;
    engine = std::make_unique<Engine>(ec, port);
    daemon = std::make_unique<Daemon>(cfg, port, *engine);
    EngineConfig rc;
    rc.mac = {0x02, 0, 0, 0, 0, 2};
    rc.ip = kRemoteIp;
    rc.max_connections = 256;
    rc.staging_buffers = 32;
    remote = std::make_unique<Engine>(rc, remote_out);
    std::string err;
    started = daemon->start(&err);
    start_error = err;
  }
  ~DaemonRig() {
    daemon.reset();  // removes the control socket
    rmdir(rundir.c_str());
  }

  // One turn of the daemon and of the wire, both ways.
  void turn() {
    Time now = Daemon::now_us();
    daemon->step(now);
    for (auto& f : port.take_sent()) remote->input(f, now);
    remote->poll(now);
    remote->flush(now);
    for (auto& f : remote_out.frames) port.deliver(std::move(f));
    remote_out.frames.clear();
  }
  void turns(int n) {
    for (int i = 0; i < n; ++i) turn();
  }
  // Attaches an application over the control socket.
  std::unique_ptr<TestApp> attach() {
    auto app = std::make_unique<TestApp>();
    if (!app->connect_to(daemon->socket_path())) return nullptr;
    for (int i = 0; i < 100; ++i) {
      daemon->poll_control(i == 0 ? 0 : 1000);
      if (app->finish_attach() != -ETIMEDOUT) break;
    }
    return app->hdr ? std::move(app) : nullptr;
  }
  // Sends cmd and turns until its completion arrives (bounded).
  abi::Completion call(TestApp& app, abi::Command cmd, uint32_t q = 0) {
    cmd.cookie = ++cookie_;
    abi::Completion c{};
    c.result = -ETIMEDOUT;
    if (!app.push(cmd, q)) return c;
    for (int i = 0; i < 1000; ++i) {
      turn();
      abi::Completion got;
      while (app.pop(&got, q))
        if (got.cookie == cmd.cookie) return got;
    }
    return c;
  }
  uint64_t stat(const std::string& name) {
    std::string text = daemon->stats_text();
    size_t at = text.find("\n" + name + " ");
    return at == std::string::npos ? ~0ull : std::strtoull(text.c_str() + at + name.size() + 2, nullptr, 10);
  }

  std::string rundir;
  DaemonConfig cfg;
  MemoryPort port;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<Daemon> daemon;
  Outbox remote_out;
  std::unique_ptr<Engine> remote;
  bool started = false;
  std::string start_error;

 private:
  uint64_t cookie_ = 0;
};

}  // namespace shunt::test
