// The attachment to shuntd: control socket, mapped region, doorbells, per-thread
// queue pairs, command round trips, and the sleep/wake protocol (docs/abi.md).
//
// State machine of the process: kUnknown --first AF_INET stream socket()--> kAttached
// or kFailed (fail-open: one warning on stderr, the kernel for everything). A fork
// child re-attaches in the pthread_atfork child handler (see fork_child()).
#pragma once

#include <time.h>

#include <atomic>
#include <cstdint>

#include "route.hh"
#include "shunt/abi.h"
#include "shunt/ring.h"

namespace shunt::preload {

// One mapped region with its doorbells. A fork child keeps its parent's region
// mapped while inherited connected sockets still move bytes through it; a region
// whose daemon hung up stays mapped for the sockets that still name it (they are
// reset), and a new attachment gets a region of its own.
//
// The layout is read once, at attach, after abi::region_fits checked it: the
// header is writable memory, and nothing here reads a size or offset back.
struct Region {
  void* base = nullptr;
  uint64_t size = 0;
  abi::RegionHeader* hdr = nullptr;
  abi::Layout layout{};
  int app_bell = -1;     // daemon → app eventfd
  int daemon_bell = -1;  // app → daemon eventfd
  int ctl_fd = -1;       // control socket whose hang-up means the daemon is gone, or -1
  int memfd = -1;        // the region's memfd: kept so that exec can carry the region
  uint32_t id = 0;
  uint64_t epoch = 0;    // attach generation this region belongs to
  std::atomic<bool> gone{false};  // the daemon hung up (or cut us off): sockets are reset

  // Rings the app doorbell: every thread of the process asleep on this region
  // looks again (a change the daemon does not know of).
  void wake_all() const;
  uint32_t slot_count() const { return layout.slot_count; }
  uint32_t queue_pair_count() const { return layout.queue_pair_count; }
  abi::SocketSlot* slot(uint32_t i) const { return abi::slot(base, layout, i); }
  abi::QueuePair* queue_pair(uint32_t i) const { return abi::queue_pair(base, layout, i); }
  abi::ByteRing rx(uint32_t i) const {
    return abi::ByteRing(&slot(i)->rx, abi::rx_bytes(base, layout, i), layout.rx_ring_size,
                         &slot(i)->rx_geometry, &slot(i)->rx_limit);
  }
  abi::ByteRing tx(uint32_t i) const {
    return abi::ByteRing(&slot(i)->tx, abi::tx_bytes(base, layout, i), layout.tx_ring_size,
                         &slot(i)->tx_geometry, &slot(i)->tx_limit);
  }
};

// Monotonic deadline in nanoseconds; kNever for "block forever".
struct Deadline {
  static constexpr int64_t kNever = INT64_MAX;
  int64_t at = kNever;
  static int64_t now();
  static Deadline after_ms(int ms) {  // poll/epoll convention: < 0 forever
    return ms < 0 ? Deadline{} : Deadline{now() + int64_t(ms) * 1000000};
  }
  static Deadline after_ns(int64_t ns) { return ns <= 0 ? Deadline{} : Deadline{now() + ns}; }
  // ppoll/pselect/epoll_pwait2 convention: nullptr forever.
  static Deadline after(const timespec* ts) {
    return ts == nullptr ? Deadline{} : Deadline{now() + int64_t(ts->tv_sec) * 1000000000 + ts->tv_nsec};
  }
  bool never() const { return at == kNever; }
  bool passed() const { return !never() && now() >= at; }
  // Milliseconds left, rounded up, for epoll_wait/poll; -1 when never.
  int remaining_ms() const;
};

// One step of a spin loop.
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Result of a wait.
enum class Wake { kReady, kTimeout, kInterrupted, kDaemonGone, kExtraFd };

// After a wait ended kInterrupted: whether the blocking socket call restarts, as
// the kernel restarts it under SA_RESTART (signal(7)): every signal this thread
// does not block and catches with a handler has SA_RESTART (none caught: a stop
// and SIGCONT, which restart too), fault signals aside (they come from the thread's
// own instructions, not while it sleeps). Which signal ran is not known, so handlers with
// and without SA_RESTART at once give EINTR. Callers ask only when nothing was
// transferred; a call with a deadline d (SO_RCVTIMEO/SO_SNDTIMEO) always gets EINTR.
bool signal_restarts(const Deadline& d);

class Runtime {
 public:
  static Runtime& get();

  // Attaches on first call (fail-open). True when shunted sockets may be created.
  // After the daemon hung up, tries (at most every kReattachEvery) to attach to a
  // new one: sockets created meanwhile use the kernel.
  bool ensure_attached();
  bool attached() const { return state_.load(std::memory_order_acquire) == kAttached; }
  Region* region() const { return region_.load(std::memory_order_acquire); }
  uint64_t epoch() const { return epoch_.load(std::memory_order_acquire); }
  NicRoute nic() const { return nic_; }
  // The current region's daemon hung up.
  bool daemon_gone() const {
    Region* r = region();
    return r != nullptr && r->gone.load(std::memory_order_acquire);
  }
  // r's daemon hung up: its sockets are reset (said once per region).
  void set_gone(Region& r);
  uint32_t spin_ns() const { return spin_ns_; }

  // A command with a completion, through the calling thread's queue pair. Returns
  // the completion's result (>= 0 or -errno); -ENETDOWN when not attached or the
  // daemon is gone. Never interrupted by signals (control ops are short).
  // With `reply`, a success also copies the queue pair's reply (QueuePair::reply).
  int call(abi::Command cmd, abi::Completion* out, abi::TcpInfo* reply = nullptr);
  // A command without completion (kClose, kTxReady, kRxDrained).
  void post(abi::Command cmd);

  // Sleeps on r's app doorbell and the thread's cell bell (and optionally on a
  // kernel fd, POLLIN) until woken, the deadline, or a signal. The caller has
  // announced itself (announce_sleep) and re-checked its condition. sigmask, when
  // given, is installed for the sleep.
  Wake sleep(Region& r, const Deadline& d, int extra_fd = -1, const sigset_t* sigmask = nullptr);

  // The calling thread's doorbell waiter for r (an epoll fd that becomes readable
  // when the doorbell rings), for callers that sleep in poll themselves; and the
  // matching drain, which consumes its edges (and notices a daemon hang-up).
  int waiter_fd(Region& r) { return thread_waiter(r); }
  // The calling thread's cell bell (an eventfd) in r, or -1: what an epoll's
  // private waiter watches besides the app doorbell.
  int cell_bell(Region& r);
  void drain_waiter(Region& r);

  // The calling thread's wake cell in r as a bit (docs/abi.md "Wake cells"), its
  // bell registered with the daemon and watched by waiter_fd(r); 0 when it has
  // none (r is not the current attachment, the thread shares the last queue
  // pair, no eventfd): then it sleeps counted in app_waiters.
  uint64_t wake_cell(Region& r);
  // The sleeper's half of the Dekker handshake, and its end: `cell` from wake_cell.
  static void announce_sleep(Region& r, uint64_t cell) {
    if (cell != 0) {
      std::atomic<uint32_t>& seq = r.queue_pair(uint32_t(__builtin_ctzll(cell)))->sleep_seq;
      seq.store(seq.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);  // its only writer
      r.hdr->cells_sleeping.fetch_or(cell, std::memory_order_seq_cst);
    } else {
      r.hdr->app_waiters.fetch_add(1, std::memory_order_seq_cst);
    }
  }
  static void end_sleep(Region& r, uint64_t cell) {
    if (cell != 0)
      r.hdr->cells_sleeping.fetch_and(~cell, std::memory_order_seq_cst);
    else
      r.hdr->app_waiters.fetch_sub(1, std::memory_order_seq_cst);
  }
  // Names slot i of r as one that `cell` waits for (before announce_sleep);
  // `exclusive`: through an EPOLLEXCLUSIVE entry.
  static void watch_slot(Region& r, uint32_t i, uint64_t cell, bool exclusive = false) {
    if (cell == 0 || i >= r.slot_count()) return;
    std::atomic<uint64_t>& w = exclusive ? r.slot(i)->wake_cells_exclusive : r.slot(i)->wake_cells;
    if ((w.load(std::memory_order_relaxed) & cell) == 0) w.fetch_or(cell, std::memory_order_seq_cst);
  }
  // Ends an exclusive watch when its sleep ends: a bit left behind would have
  // shuntd pick this thread, asleep elsewhere, for a connection it cannot take.
  static void unwatch_exclusive(Region& r, uint32_t i, uint64_t cell) {
    if (cell != 0 && i < r.slot_count())
      r.slot(i)->wake_cells_exclusive.fetch_and(~cell, std::memory_order_relaxed);
  }

  // Waits until ready() is true: spins for the budget, then sleeps with the waiter
  // protocol (docs/abi.md "Wake cells"), woken by changes of `slot` (kNoSlot: by
  // completions on the thread's queue pair). kExtraFd: extra_fd became readable.
  // `exclusive` (accept on a listener): one waiter is woken per connection, as
  // Linux wakes one thread blocked in accept; the bit is this sleep's only.
  template <typename F>
  Wake wait(Region& r, F&& ready, const Deadline& d, int extra_fd = -1, uint32_t slot = abi::kNoSlot,
            bool exclusive = false) {
    if (ready()) return Wake::kReady;
    int64_t spin_until = Deadline::now() + spin_ns_;
    if (!d.never() && d.at < spin_until) spin_until = d.at;
    while (Deadline::now() < spin_until) {
      for (int i = 0; i < 64; ++i) cpu_relax();
      if (ready()) return Wake::kReady;
    }
    for (;;) {
      if (r.gone.load(std::memory_order_acquire)) return Wake::kDaemonGone;
      const uint64_t cell = wake_cell(r);
      watch_slot(r, slot, cell, exclusive);
      announce_sleep(r, cell);
      bool ok = ready();
      Wake w = ok ? Wake::kReady : sleep(r, d, extra_fd);
      end_sleep(r, cell);
      if (exclusive) unwatch_exclusive(r, slot, cell);
      if (ok || ready()) return Wake::kReady;
      if (w == Wake::kInterrupted || w == Wake::kDaemonGone || w == Wake::kExtraFd) return w;
      if (d.passed()) return Wake::kTimeout;
    }
  }

  // Rings the daemon's doorbell if it sleeps (after a push, docs/abi.md).
  void kick(Region& r);

  // kInherit for n inherited sockets (fork child, on the fresh attachment).
  // child_slots[i] = kNoSlot where refused. False when the exchange failed.
  bool inherit(uint32_t parent_region, const int* fds, const uint32_t* parent_slots, uint32_t n,
               uint32_t* child_slots);

  // pthread_atfork handlers.
  void fork_prepare();
  void fork_parent();
  void fork_child();

  // exec (exec.cc). The next command cookie, carried so that the new image never
  // takes a completion meant for a thread the exec ended; and the new image's
  // adoption of the attachment (region r, its control socket r->ctl_fd) the old
  // image made. Single-threaded (before main).
  uint64_t next_cookie() const;
  void resume_after_exec(Region* r, uint64_t cookie);

  // Test hook: adopt an already-mapped region (a fake daemon in the test).
  void attach_for_test(Region* r);

 private:
  enum State : int { kUnknown = 0, kAttached = 1, kFailed = 2, kDisabled = 3 };
  constexpr Runtime() = default;
  static Runtime instance_;
  static constexpr int64_t kReattachEvery = 200 * 1000000;  // ns
  bool attach_locked(bool warn);
  bool reattach();
  bool wait_for_room(Region& r);
  void fork_child_attach();
  void fork_child_done();
  bool connect_and_map(Region* out, int* ctl_fd, char* why, size_t why_len);
  int thread_waiter(Region& r);
  void setup_cell(Region& r);

  std::atomic<int> state_{kUnknown};
  std::atomic<Region*> region_{nullptr};
  std::atomic<uint64_t> epoch_{1};
  std::atomic<int64_t> next_reattach_{0};
  NicRoute nic_{};
  int ctl_fd_ = -1;
  uint32_t spin_ns_ = 50000;
};

// Submission helpers that build commands.
abi::Command make_command(abi::Op op, uint32_t slot);

}  // namespace shunt::preload
