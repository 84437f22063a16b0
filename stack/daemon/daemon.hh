// shuntd: the poll loop that joins the port, the protocol engine and the
// applications' shared-memory regions, and the control socket that attaches them
// (docs/architecture.md). One turn of the loop (step):
//
//   port rx burst -> engine input -> application commands -> engine timers ->
//   engine output -> events to slots -> port tx burst -> cut off applications that
//   broke the contract -> doorbells
//
// then, when idle in adaptive mode, a sleep on the port's wake-up descriptors,
// the doorbells and the control socket until the next engine timer.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "daemon/apps.hh"
#include "daemon/config.hh"
#include "daemon/counters.hh"
#include "daemon/port.hh"
#include "daemon/region.hh"
#include "daemon/sockets.hh"
#include "daemon/spin.hh"
#include "daemon/stats_snapshot.hh"
#include "engine/engine.hh"
#include "shunt/control.h"

namespace shunt {

class Daemon {
 public:
  Daemon(const DaemonConfig& cfg, Port& port, Engine& engine);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Creates the control socket (mode and group from SHUNT_ALLOW). Fails, naming
  // SHUNT_RUNDIR, if it cannot, or if another daemon already answers there.
  bool start(std::string* error);
  // Until stop(): then FIN on every connection, up to kStopGrace for them to be
  // acknowledged, and every application is let go.
  void run();
  // Async-signal-safe.
  void stop() { stop_requested_.store(true, std::memory_order_relaxed); }
  void set_stats_snapshot(StatsSnapshot* s) { snapshot_ = s; }

  // ---- The pieces of run(), for tests ----
  static Time now_us();
  uint32_t step(Time now);           // one turn of the loop
  // Adaptive mode, idle: whether to yield the core to an application woken since
  // the last yield (once per wake-up; only when sharing a core).
  bool yield_to_woken();
  // Adaptive mode: how long to poll without work before sleeping
  // (DaemonConfig::idle_spin_us, longer while frames arrive at a steady gap:
  // ArrivalGaps); sharing a core, only while an application thread waits.
  Time spin_budget() const;
  void poll_control(Time timeout_us);  // control socket and doorbells, up to timeout
  std::string stats_text();
  const DaemonCounters& counters() const { return ctr_; }
  uint64_t violations(Violation v) const { return violations_[size_t(v)]; }
  AppRegistry& apps() { return apps_; }
  SocketTable& sockets() { return sockets_; }
  const std::string& socket_path() const { return socket_path_; }

 private:
  static constexpr Time kStopGrace = 2 * kSecond;

  // ---- The loop (daemon.cc) ----
  uint32_t serve_apps(Time now);
  uint32_t serve_app(uint32_t id, Time now);
  void serve_last_commands(uint32_t id, Time now);
  void cut_off_faulty();
  void check_headers();
  uint32_t ring_doorbells();  // how many were rung
  void sleep_until_work(Time now);
  void begin_stop(Time now);
  bool stop_done(Time now) const;
  void detach(uint32_t id, Ending how, const char* why);
  void publish_snapshot(Time now);

  // ---- Control socket (control.cc) ----
  void accept_control();
  void control_message(int fd);
  void hang_up(int fd);
  void attach_app(int fd, const ctl::Request& req);
  void inherit(int fd, uint32_t app, const ctl::Request& req, const int* fds, int nfds);
  void send_sockets(int fd);
  void start_capture(int fd, const ctl::Request& req, const int* fds, int nfds);
  void service_capture();
  bool privileged(int fd) const;  // root or the daemon's own user

  const DaemonConfig& cfg_;
  Port& port_;
  Engine& engine_;
  DaemonCounters ctr_;
  uint64_t violations_[size_t(Violation::kCount)] = {};
  AppRegistry apps_;
  SocketTable sockets_;
  std::atomic<bool> stop_requested_{false};
  bool stopping_ = false;
  Time stop_deadline_ = 0;
  Time started_at_ = 0;
  Time nap_ = 0;  // current adaptive nap when the port has no wake-up descriptors
  bool woke_app_ = false;  // a doorbell was rung since the daemon last yielded
  uint32_t rx_frames_ = 0;  // frames the last turn received
  ArrivalGaps rx_gaps_;     // from the last work to the next frames, after idle turns
  Time next_snapshot_ = 0;
  StatsSnapshot* snapshot_ = nullptr;
  uint32_t turn_ = 0;
  bool bell_pending_ = false;  // a sleeping cell had no bell: read the control socket
  int listen_fd_ = -1;
  int epoll_fd_ = -1;
  int capture_client_ = -1;  // control connection that asked for the running capture
  std::string socket_path_;
  std::unordered_map<int, uint32_t> ctl_conns_;  // control fd -> app id (kNone: not an app)
};

}  // namespace shunt
