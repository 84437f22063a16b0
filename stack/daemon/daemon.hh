// shuntd: the poll loop that joins the device, the protocol engine and the
// applications' shared-memory regions, plus the control socket.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "daemon/config.hh"
#include "engine/engine.hh"
#include "shunt/abi.h"
#include "shunt/control.h"
#include "shunt/ring.h"

namespace shunt {

class Device;

struct DaemonCounters {
  uint64_t apps_attached = 0;
  uint64_t apps_detached = 0;
  uint64_t apps_killed = 0;  // violated the shared-memory contract
  uint64_t commands = 0;
  uint64_t doorbells_rung = 0;
  uint64_t sleeps = 0;
  uint64_t accepts = 0;
  uint64_t connects = 0;
  uint64_t inherits = 0;
  uint64_t option_errors = 0;  // kSetOption without reply that failed
};

class Daemon {
 public:
  Daemon(const DaemonConfig& cfg, Device& dev, Engine& engine);
  ~Daemon();

  // Creates the control socket. Fails (naming SHUNT_RUNDIR) if it cannot, or if
  // another daemon already answers there.
  bool start(std::string* error);
  void run();
  void stop() { running_ = false; }

 private:
  static constexpr uint32_t kNone = ~0u;

  enum class Kind : uint8_t { kFree, kBound, kListener, kConn, kUdp };
  struct Holder {
    uint32_t app;
    uint32_t slot;
  };
  // A socket as the daemon knows it; the applications' slots refer to it.
  // Several slots (in several processes, after fork) may hold one socket.
  struct Socket {
    Kind kind = Kind::kFree;
    uint16_t port = 0;   // local port (host order)
    bool owns_port = false;
    bool linger_zero = false;
    // Options the application set (kSetOption), replayed on the connection when
    // it exists, and passed from a listener to what it accepts.
    uint32_t option_set = 0;  // bit per abi::SockOption
    uint32_t option_value[uint32_t(abi::SockOption::kCount)] = {};
    uint64_t inode = 0;  // the kernel placeholder's inode: identity across fork
    ListenerId listener = kInvalidId;
    ConnId conn = kInvalidId;
    UdpId udp = kNoUdp;  // kUdp: the engine's socket
    Holder rings{kNone, kNone};  // the slot whose rings the engine uses
    std::vector<Holder> holders;
  };
  struct SlotInfo {
    uint32_t socket = kNone;
    bool used = false;
    bool zombie = false;  // closed by the app; the engine still drains its tx ring
  };
  struct App {
    bool active = false;   // attached and alive
    bool in_use = false;   // region still mapped (alive, or zombies remain)
    int ctl_fd = -1;
    int memfd = -1;
    int app_doorbell = -1;
    int daemon_doorbell = -1;
    int pid = 0;
    void* base = nullptr;
    uint64_t size = 0;
    abi::RegionHeader* hdr = nullptr;
    std::vector<SlotInfo> slots;
    std::vector<uint32_t> free_slots;
    uint32_t zombies = 0;
    bool dirty = false;
  };

  // ---- Loop steps ----
  uint32_t poll_apps(Time now);
  uint32_t process_commands(uint32_t app_id, abi::QueuePair* qp, Time now);
  void publish_events();
  void ring_doorbells();
  void poll_control(Time timeout_us);
  void sleep_until_work();

  // ---- Commands ----
  abi::Completion handle(uint32_t app_id, const abi::Command& cmd, Time now, bool* reply);
  int do_bind(uint32_t app_id, const abi::Command& cmd, abi::Completion* out);
  int do_listen(uint32_t app_id, uint32_t slot, int backlog);
  int do_connect(uint32_t app_id, const abi::Command& cmd, Time now, abi::Completion* out);
  int do_accept(uint32_t app_id, const abi::Command& cmd, abi::Completion* out);
  void do_close(uint32_t app_id, uint32_t slot, Time now);
  int set_option(uint32_t socket, abi::SockOption opt, uint64_t value);
  void apply_options(uint32_t socket);

  // ---- UDP sockets (udp_sockets.cc) ----
  abi::Completion handle_udp(uint32_t app_id, const abi::Command& cmd);
  int do_udp_bind(uint32_t app_id, const abi::Command& cmd, abi::Completion* out);
  int do_udp_connect(uint32_t app_id, const abi::Command& cmd, abi::Completion* out);
  void udp_tx_ready(uint32_t socket, Time now);
  void publish_udp_events();
  uint16_t pick_udp_port();
  std::string udp_stats_text() const;  // "udp.* N" lines for stats_text()

  // ---- Sockets and slots ----
  uint32_t alloc_socket();
  void free_socket(uint32_t s);
  uint32_t alloc_slot(uint32_t app_id, uint32_t socket);
  void free_slot(uint32_t app_id, uint32_t slot);
  void reset_slot(abi::SocketSlot* slot, abi::SlotState state);
  abi::SocketSlot* slot_of(uint32_t app_id, uint32_t slot);
  abi::ByteRing rx_ring(uint32_t app_id, uint32_t slot);
  abi::ByteRing tx_ring(uint32_t app_id, uint32_t slot);
  bool valid_slot(uint32_t app_id, uint32_t slot) const;
  uint16_t pick_ephemeral_port();
  void publish_conn(uint32_t socket);
  void publish_listener(uint32_t socket);
  void touch(uint32_t app_id, abi::SocketSlot* slot);

  // ---- Control plane ----
  void accept_control();
  void control_message(int fd);
  void attach_app(int fd, const ctl::Request& req);
  void inherit(int fd, uint32_t app_id, const ctl::Request& req, int* fds, int nfds);
  std::string stats_text();
  void detach_app(uint32_t app_id, const char* why);
  void release_region(uint32_t app_id);

  const DaemonConfig& cfg_;
  Device& dev_;
  Engine& engine_;
  DaemonCounters ctr_;
  bool running_ = true;
  Time nap_ = 50;  // current adaptive sleep, microseconds
  int listen_fd_ = -1;
  int epoll_fd_ = -1;
  std::string socket_path_;
  abi::Layout layout_;

  std::vector<App> apps_;
  std::vector<uint32_t> active_ids_;  // attached applications: what the loop polls
  std::unordered_map<int, uint32_t> ctl_conns_;  // control fd -> app id (kNone before attach)
  std::vector<Socket> sockets_;
  std::vector<uint32_t> free_sockets_;
  std::vector<uint32_t> port_owner_;  // port -> socket + 1, 0 = free
  uint16_t next_ephemeral_ = 32768;
  uint16_t next_udp_ephemeral_ = 32768;
  std::vector<uint8_t> udp_scratch_;  // one datagram that wraps around a tx ring's end
};

}  // namespace shunt
