#include "daemon/daemon.hh"

#include <sched.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "daemon/log.hh"

namespace shunt {

namespace {
constexpr uint32_t kCommandsPerApp = 128;  // per loop turn: no application starves the others
constexpr uint32_t kCommandBatch = 64;     // copied out of one queue pair at a time
// Without wake-up descriptors (a port that raises nothing) an idle daemon sleeps
// in naps growing from kMinNap to kMaxNap: sparse traffic waits up to a nap.
constexpr Time kMinNap = 50;
constexpr Time kMaxNap = 1000;
// With them, it sleeps until the next engine timer, at most this long.
constexpr Time kMaxSleep = 1 * kSecond;
constexpr uint32_t kControlEvery = 1024;   // loop turns between control-socket checks
constexpr Time kSnapshotEvery = 250 * kMillisecond;
}  // namespace

Time Daemon::now_us() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return Time(ts.tv_sec) * 1000000 + Time(ts.tv_nsec) / 1000;
}

Daemon::Daemon(const DaemonConfig& cfg, Port& port, Engine& engine)
    : cfg_(cfg),
      port_(port),
      engine_(engine),
      apps_(cfg.max_apps,
            abi::Layout{cfg.queue_pairs, cfg.slots_per_app, cfg.ring_max, cfg.ring_max}, cfg.ring_size),
      sockets_(apps_, engine, NicAddress{cfg.ip, cfg.prefix_len, cfg.gateway}, ctr_),
      nap_(kMinNap) {
  started_at_ = now_us();
}

void Daemon::run() {
  Time last_work = now_us();
  bool idle = false;  // the last turn did nothing
  engine_.announce();
  port_.flush();
  for (;;) {
    Time now = now_us();
    uint32_t work = step(now);
    if (stop_requested_.load(std::memory_order_relaxed) && !stopping_) begin_stop(now);
    if (stopping_) {
      sockets_.shutdown_all();  // connections opened meanwhile get their FIN too
      if (stop_done(now)) break;
    }
    if (work != 0) {
      if (idle && rx_frames_ != 0) rx_gaps_.sample(now - last_work);
      idle = false;
      // From the end of the turn: a turn's transmit kick can itself take longer
      // than the spin budget (on a veth the peer's receive runs inside it), and
      // counting from its start slept at once after every answer sent.
      last_work = now_us();
      nap_ = kMinNap;
      continue;
    }
    idle = true;
    if (cfg_.mode == PollMode::kAdaptive && yield_to_woken()) {
      sched_yield();
    } else if (cfg_.mode == PollMode::kAdaptive && now - last_work >= spin_budget()) {
      sleep_until_work(now);
    }
  }
}

uint32_t Daemon::step(Time now) {
  rx_frames_ = port_.receive(engine_, now);
  uint32_t work = rx_frames_;
  work += serve_apps(now);
  engine_.poll(now);
  engine_.flush(now);
  work += engine_.looped_pending();  // frames to our own address: no sleep yet
  sockets_.publish_events();
  port_.flush();
  cut_off_faulty();
  if (ring_doorbells() != 0) woke_app_ = true;
  if (capture_client_ >= 0) service_capture();
  if (snapshot_ != nullptr && now >= next_snapshot_) publish_snapshot(now);
  // A thread's bell waiting on the control socket is read at the next turn: until
  // then each wake-up of that thread wakes every sleeping thread of its process.
  if (++turn_ % kControlEvery == 0 || bell_pending_) {
    bell_pending_ = false;
    poll_control(0);
    check_headers();  // found at the next turn's cut_off_faulty
  }
  return work;
}

uint32_t Daemon::serve_apps(Time now) {
  // Commands never end an application here: a violation is acted on at the end
  // of the turn (cut_off_faulty), so the active list holds still.
  uint32_t work = 0;
  for (uint32_t id : apps_.active()) work += serve_app(id, now);
  return work;
}

// At most kCommandsPerApp commands of one application per turn, from its queue
// pairs in turn (the first one served moves each turn), so that a flood from one
// thread or one process delays the others by at most one batch.
uint32_t Daemon::serve_app(uint32_t id, Time now) {
  App& app = apps_.app(id);
  AppRegion& region = app.region;
  const uint32_t pairs = region.queue_pairs();
  uint32_t done = 0;
  abi::Command cmds[kCommandBatch];
  for (uint32_t k = 0; k < pairs && done < kCommandsPerApp; ++k) {
    const uint32_t q = (turn_ + k) % pairs;
    uint32_t n = region.take_commands(q, cmds, std::min(kCommandBatch, kCommandsPerApp - done));
    for (uint32_t i = 0; i < n; ++i) {
      bool reply = false;
      abi::TcpInfo info;
      abi::Completion c = sockets_.handle(id, cmds[i], now, &reply, &info);
      if (cmds[i].op == uint16_t(abi::Op::kTcpInfo) && c.result == 0) region.write_reply(q, info);
      if (reply) {
        if (!region.complete(q, c)) break;  // a violation: cut off at the end of the turn
        apps_.mark_dirty(id, q < abi::kWakeCells ? uint64_t{1} << q : 0);
      }
    }
    done += n;
    if (region.violation() != Violation::kNone) break;
  }
  ctr_.commands += done;
  app.commands += done;
  return done;
}

// What a process posted before it went still counts, as the kernel sends what a
// process wrote before it exited: its hang-up can reach us before its last
// commands were served, and a fork child's kTxReady on its parent's connection,
// lost, would leave that slot's notice raised for good (no later write sent).
void Daemon::serve_last_commands(uint32_t id, Time now) {
  const uint32_t most = apps_.app(id).region.queue_pairs() * abi::kQueueDepth;
  for (uint32_t done = 0; done < most;) {
    uint32_t n = serve_app(id, now);
    if (n == 0 || apps_.app(id).region.violation() != Violation::kNone) break;
    done += n;
  }
}

void Daemon::cut_off_faulty() {
  for (size_t i = 0; i < apps_.active().size();) {
    uint32_t id = apps_.active()[i];
    Violation v = apps_.app(id).region.violation();
    if (v == Violation::kNone) {
      ++i;
      continue;
    }
    ++violations_[size_t(v)];
    ++ctr_.apps_cut_off;
    detach(id, Ending::kReset, violation_name(v));  // leaves the active list
  }
}

void Daemon::check_headers() {
  for (uint32_t id : apps_.active()) apps_.app(id).region.check_header();
}

uint32_t Daemon::ring_doorbells() {
  uint32_t rung = 0;
  // Pairs with the applications' seq_cst stores before they re-check their
  // condition and sleep: the slot they watch (wake_cells), then their cell's bit
  // or app_waiters (docs/abi.md "Wake cells"). What was published before this
  // fence, they see, or they are seen asleep here.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  sockets_.wake_exclusive();
  apps_.take_dirty([&](uint32_t id) {
    App& a = apps_.app(id);
    uint64_t cells = a.wake;
    a.wake = 0;
    for (uint32_t s : a.touched) {
      if (s >= a.slots.size()) continue;  // released this turn
      a.slots[s].touched = false;
      cells |= a.region.wake_cells(s);
    }
    a.touched.clear();
    if (!a.in_use) return;
    const uint64_t one = 1;
    bool broadcast = a.region.app_waiting();
    // The threads that sleep and may wait for what changed, each on its own bell;
    // at most kWakeCells writes, whatever the application wrote in its region.
    for (uint64_t due = cells & a.region.cells_sleeping(); due != 0; due &= due - 1) {
      const uint32_t c = uint32_t(__builtin_ctzll(due));
      int bell = a.cell_bells[c];
      if (bell < 0 || a.region.bell_token(c) != a.cell_tokens[c]) {
        broadcast = true;  // its bell is not here yet: it hears the doorbell too
        bell_pending_ = true;
      } else if (write(bell, &one, sizeof one) == ssize_t(sizeof one)) {
        ++ctr_.cell_bells_rung;
        ++rung;
      }
    }
    if (broadcast && write(a.app_doorbell, &one, sizeof one) == ssize_t(sizeof one)) {
      ++ctr_.doorbells_rung;
      ++rung;
    }
  });
  return rung;
}

// Sharing a core, a daemon that spins on after waking an application keeps it from
// running when the scheduler does not preempt the spinner (a busy application has
// run more than the daemon): once idle after a doorbell, it yields the core to what
// it woke, then spins on (a sleep instead would cost every reply a wake-up of the
// daemon). Measured on 2 CPUs, redis-server and shuntd on one, redis-benchmark
// -P 16 -c 50 on the other: docs/benchmarks.md, "Spinning on two CPUs".
bool Daemon::yield_to_woken() {
  bool yield = woke_app_ && !cfg_.spin_while_apps_run;
  woke_app_ = false;
  return yield;
}

Time Daemon::spin_budget() const {
  Time budget = rx_gaps_.budget(cfg_.idle_spin_us);
  if (cfg_.spin_while_apps_run) return budget;
  for (uint32_t id : apps_.active())
    if (apps_.app(id).region.thread_waiting()) return budget;
  return 0;
}

void Daemon::sleep_until_work(Time now) {
  check_headers();
  cut_off_faulty();
  // Dekker with the applications: announce the sleep, re-check the queues, then
  // block; an application that pushes after our check sees the flag and rings.
  for (uint32_t id : apps_.active()) apps_.app(id).region.set_daemon_sleeping(true);
  bool pending = port_.holds_frames();
  for (uint32_t id : apps_.active()) pending = pending || apps_.app(id).region.commands_pending();
  if (!pending) {
    Time timeout;
    if (!port_.wake_fds().empty()) {
      Time next = engine_.next_deadline();
      timeout = next == Engine::kNoDeadline ? kMaxSleep
                : next <= now                 ? 0
                                              : std::min(next - now, kMaxSleep);
    } else {
      timeout = nap_;
      nap_ = std::min(nap_ * 2, kMaxNap);
    }
    if (stopping_) timeout = std::min<Time>(timeout, 10 * kMillisecond);
    ++ctr_.sleeps;
    poll_control(timeout);
  }
  for (uint32_t id : apps_.active()) apps_.app(id).region.set_daemon_sleeping(false);
}

// The application is gone (how = kAsKernel) or cut off (kReset): its sockets end
// as that says, it stops being polled, and its control connection is closed (so
// a cut-off application sees the daemon hang up on it).
void Daemon::detach(uint32_t id, Ending how, const char* why) {
  App& app = apps_.app(id);
  if (!app.active) return;
  Time now = now_us();
  sockets_.close_all(id, how, now);
  if (app.daemon_doorbell >= 0) epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, app.daemon_doorbell, nullptr);
  if (app.ctl_fd >= 0) {
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, app.ctl_fd, nullptr);
    ctl_conns_.erase(app.ctl_fd);
    ::close(app.ctl_fd);
    app.ctl_fd = -1;
  }
  ++ctr_.apps_detached;
  if (how == Ending::kReset)
    log_error("cut off pid %d (%s, region %u): %s; its connections are reset", int(app.cred.pid),
              app.comm.c_str(), id, why);
  else
    log_info("detached pid %d (%s, region %u): %s", int(app.cred.pid), app.comm.c_str(), id, why);
  apps_.deactivate(id);
  engine_.flush(now);
}

// ---- Stopping ----

void Daemon::begin_stop(Time now) {
  stopping_ = true;
  stop_deadline_ = now + kStopGrace;
  log_info("stopping: FIN on every connection, up to %llu ms for the peers",
           (unsigned long long)(kStopGrace / kMillisecond));
  // No new attachments from now on.
  if (listen_fd_ >= 0) {
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, listen_fd_, nullptr);
    ::close(listen_fd_);
    listen_fd_ = -1;
    unlink(socket_path_.c_str());
  }
  sockets_.shutdown_all();
}

bool Daemon::stop_done(Time now) const { return now >= stop_deadline_ || engine_.quiescent(); }

Daemon::~Daemon() {
  Time now = now_us();
  while (!apps_.active().empty()) detach(apps_.active().front(), Ending::kAsKernel, "daemon exit");
  engine_.flush(now);
  port_.flush();
  if (capture_client_ >= 0) port_.stop_capture();
  for (auto& [fd, id] : ctl_conns_) ::close(fd);
  if (listen_fd_ >= 0) {
    ::close(listen_fd_);
    unlink(socket_path_.c_str());
  }
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
}

void Daemon::publish_snapshot(Time now) {
  next_snapshot_ = now + kSnapshotEvery;
  std::string text = stats_text();
  std::lock_guard<std::mutex> g(snapshot_->mu);
  snapshot_->text.swap(text);
}

}  // namespace shunt
