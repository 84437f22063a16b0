#include "epoll.hh"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <mutex>
#include <new>
#include <vector>

#include "config.hh"
#include "inline_buf.hh"
#include "libc.hh"
#include "log.hh"

namespace shunt::preload {
namespace {

// The kernel half of a dual listener is registered with this tag in the high bits
// and its fd in the low 24, so its events merge with the shunt half's.
constexpr uint64_t kDualTag = 0x5348554e54000000ull;  // "SHUNT"
constexpr uint64_t kDualMask = 0xffffffffff000000ull;
constexpr uint32_t kInnerBell = 0, kInnerCtl = 1, kInnerUser = 2;
constexpr uint32_t kAlwaysReported = EPOLLERR | EPOLLHUP;
constexpr uint32_t kReadinessBits =
    EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI | EPOLLRDNORM | EPOLLWRNORM | EPOLLERR | EPOLLHUP;

struct EpollObj;

struct Interest {
  int fd = -1;
  Socket* sock = nullptr;     // a socket of ours, or
  EpollObj* nested = nullptr;  // an epoll fd of ours inside this one (its kernel half tagged)
  uint32_t events = 0;  // as given: readiness bits plus EPOLLET, EPOLLONESHOT, …
  epoll_data_t data{};
  uint32_t last_seq = 0;
  uint64_t round = 0;        // collect() round that last reported it
  bool armed = true;         // EPOLLONESHOT fired → false until EPOLL_CTL_MOD
  bool pending = false;      // undecided socket: lives in the kernel epoll for now
  bool kernel_half = false;  // dual listener: kernel half registered with the tag
};

void destroy_epoll(FdObject* o);

struct EpollObj : FdObject {
  EpollObj() : FdObject(FdKind::kEpoll, destroy_epoll) {}
  std::mutex mu;
  std::vector<Interest> list;
  int epfd = -1;
  int inner = -1;  // private epoll: the user's epfd + the app doorbell + cell bells
  uint64_t inner_epoch = 0;
  uint64_t inner_cells = 0;  // the wake cells whose bells `inner` watches
  std::atomic<uint32_t> sleepers{0};  // threads asleep in epoll_wait on it
  size_t rotor = 0;
  uint64_t round = 0;
  std::atomic<uint32_t> shunt_count{0};  // entries that are not pending
  // Entries of listening sockets of ours (indices in list), looked at first by
  // every scan: a listener waiting its turn behind thousands of busy connections
  // would be reported once per many calls, and a server that accepts one
  // connection per report (nginx) would fall behind a connection storm.
  std::vector<uint32_t> listening;
};

constinit NoDestroy<Pool<EpollObj>> g_pool_storage;
Pool<EpollObj>& g_pool = g_pool_storage.value;
std::mutex g_reg_mu;  // order: Socket::mu → g_reg_mu → EpollObj::mu
constinit NoDestroy<std::vector<EpollObj*>> g_reg_storage;
std::vector<EpollObj*>& g_reg = g_reg_storage.value;

// A member added or re-armed while threads sleep in epoll_wait on the set: they
// watch only the slots that were members when they fell asleep, so they are woken
// to look again, as the kernel wakes them when ADD or MOD finds the fd ready. The
// app doorbell wakes every sleeping thread of the process: rare (most event loops
// change their own set, awake).
void wake_sleepers(EpollObj& ep) {
  std::atomic_thread_fence(std::memory_order_seq_cst);  // pairs with the sleeper's increment
  if (ep.sleepers.load(std::memory_order_relaxed) == 0) return;
  if (Region* r = Runtime::get().region()) r->wake_all();
}

// Keeps EpollObj::listening in step with list (ep.mu held): after an entry is
// added at the end, or with `erased` the index of one taken out.
void note_listening(EpollObj& ep, long erased = -1) {
  if (erased >= 0) {
    auto& l = ep.listening;
    l.erase(std::remove(l.begin(), l.end(), uint32_t(erased)), l.end());
    for (uint32_t& x : l)
      if (x > uint32_t(erased)) --x;
    return;
  }
  const Interest& e = ep.list.back();
  if (e.sock != nullptr && !e.pending && e.sock->listening.load(std::memory_order_acquire))
    ep.listening.push_back(uint32_t(ep.list.size() - 1));
}

void drop_entry(EpollObj& ep, size_t i) {
  Interest& e = ep.list[i];
  if (!e.pending) ep.shunt_count.fetch_sub(1, std::memory_order_relaxed);
  if (e.sock != nullptr) e.sock->epoll_refs.fetch_sub(1, std::memory_order_acq_rel);
  ep.list.erase(ep.list.begin() + long(i));
  if (!ep.listening.empty()) note_listening(ep, long(i));
}

bool any_ready(EpollObj& ep);

void destroy_epoll(FdObject* o) {
  auto* ep = static_cast<EpollObj*>(o);
  {
    std::lock_guard<std::mutex> r(g_reg_mu);
    // Closing an epoll fd takes it out of the epolls it was in, as in the kernel.
    for (EpollObj* outer : g_reg) {
      if (outer == ep) continue;
      std::lock_guard<std::mutex> g(outer->mu);
      for (size_t i = outer->list.size(); i-- > 0;)
        if (outer->list[i].nested == ep) drop_entry(*outer, i);
    }
    g_reg.erase(std::remove(g_reg.begin(), g_reg.end(), ep), g_reg.end());
    std::lock_guard<std::mutex> g(ep->mu);
    while (!ep->list.empty()) drop_entry(*ep, ep->list.size() - 1);
    if (ep->inner >= 0) libc().close(ep->inner);
    ep->inner = -1;
  }
  g_pool.give(ep);
}

// The EpollObj for epfd, created on first use. `check_fd`: a socket not in the
// kernel epoll, used to make the kernel say whether epfd is an epoll at all.
Ref<EpollObj> epoll_at(int epfd, int check_fd, int* err) {
  Ref<EpollObj> ep = fd_table().get<EpollObj>(epfd, FdKind::kEpoll);
  if (ep) return ep;
  if (check_fd >= 0 && libc().epoll_ctl(epfd, EPOLL_CTL_DEL, check_fd, nullptr) < 0 &&
      errno != ENOENT) {
    *err = errno;
    return {};
  }
  if (fd_table().peek(epfd) != nullptr) {  // another kind of object: not an epoll
    *err = EINVAL;
    return {};
  }
  EpollObj* o = g_pool.take();
  if (o == nullptr) o = new (std::nothrow) EpollObj;
  if (o == nullptr) {
    *err = ENOMEM;
    return {};
  }
  o->epfd = epfd;
  o->inner = -1;
  o->rotor = 0;
  o->shunt_count.store(0, std::memory_order_relaxed);
  o->refs.store(1, std::memory_order_relaxed);  // ours, for the Ref returned
  if (!fd_table().install(epfd, o, nullptr)) {
    o->refs.store(0, std::memory_order_relaxed);
    g_pool.give(o);
    *err = ENOMEM;
    return {};
  }
  std::lock_guard<std::mutex> r(g_reg_mu);
  g_reg.push_back(o);
  return Ref<EpollObj>(o);
}

long find(const EpollObj& ep, int fd, const Socket* s) {
  for (size_t i = 0; i < ep.list.size(); ++i)
    if (ep.list[i].fd == fd && ep.list[i].sock == s) return long(i);
  return -1;
}

epoll_event kernel_half_event(const Interest& e) {
  epoll_event ev{};
  ev.events = e.events;
  ev.data.u64 = kDualTag | uint64_t(uint32_t(e.fd));
  return ev;
}

// Arms an entry so that its current readiness is reported (the kernel checks
// readiness on ADD and MOD, edge-triggered or not).
void arm(Interest& e) {
  e.armed = true;
  e.last_seq = e.sock != nullptr && e.sock->shunted()
                   ? e.sock->s->event_seq.load(std::memory_order_acquire) - 1
                   : 0;
}

// An entry's readiness (masked by what it asks) and whether an edge-triggered
// entry has news. A nested epoll is readable while a member of ours is ready; its
// edge is the move from not ready to ready (last_seq holds the last state).
uint32_t entry_ready(Interest& e, bool consume, bool* edge) {
  uint32_t seq = 0, mask;
  if (e.nested != nullptr) {
    mask = any_ready(*e.nested) ? EPOLLIN & e.events : 0;
    seq = mask != 0 ? 1 : 0;
  } else {
    mask = e.sock->readiness(&seq) & ((e.events & kReadinessBits) | kAlwaysReported);
  }
  *edge = seq != e.last_seq;
  if (consume && (e.events & EPOLLET)) e.last_seq = seq;
  return mask;
}

// Entry e into out[n] if it is to be reported this round. ep.mu held.
bool report(EpollObj& ep, Interest& e, epoll_event* out) {
  if (e.pending || !e.armed || e.round == ep.round) return false;
  bool edge;
  uint32_t mask = entry_ready(e, true, &edge);
  if ((e.events & EPOLLET) && !edge) return false;
  if (mask == 0) return false;
  out->events = mask;
  out->data = e.data;
  e.round = ep.round;
  if (e.events & EPOLLONESHOT) e.armed = false;
  return true;
}

// Ready shunted entries into out[0..cap): listeners first, then the others from
// where the last scan stopped. ep.mu held.
int scan(EpollObj& ep, epoll_event* out, int cap) {
  int n = 0;
  size_t count = ep.list.size();
  if (count == 0 || cap <= 0) return 0;
  for (size_t k = 0; k < ep.listening.size() && n < cap; ++k)
    if (report(ep, ep.list[ep.listening[k]], out + n)) ++n;
  size_t start = ep.rotor % count;
  for (size_t k = 0; k < count && n < cap; ++k) {
    size_t i = (start + k) % count;
    if (report(ep, ep.list[i], out + n)) {
      ++n;
      ep.rotor = i + 1;
    }
  }
  return n;
}

// Kernel events (timeout 0) into out[0..max), dual-listener tags translated and
// merged with shunt events already in out[0..first). ep.mu held; returns the count
// kept (>= first) or -errno.
int harvest(EpollObj& ep, std::unique_lock<std::mutex>& g, int epfd, epoll_event* out, int first,
            int max) {
  g.unlock();
  int k = libc().epoll_wait(epfd, out + first, max - first, 0);
  int err = errno;
  g.lock();
  if (k < 0) return -err;
  int total = first;
  for (int j = first; j < first + k; ++j) {
    epoll_event ev = out[j];
    if ((ev.data.u64 & kDualMask) == kDualTag) {
      int fd = int(ev.data.u64 & ~kDualMask);
      long idx = -1;
      for (size_t i = 0; i < ep.list.size(); ++i)
        if (ep.list[i].fd == fd && ep.list[i].kernel_half) idx = long(i);
      if (idx < 0) continue;  // deregistered meanwhile
      Interest& e = ep.list[size_t(idx)];
      ev.data = e.data;
      if (e.round == ep.round) {  // the shunt half is already in this batch: merge
        for (int t = 0; t < first; ++t)
          if (out[t].data.u64 == e.data.u64) out[t].events |= ev.events;
        continue;
      }
      e.round = ep.round;
    }
    out[total++] = ev;
  }
  return total;
}

// Shunt events and kernel events, merged. Neither side can starve the other: the
// first pass takes at most half the room (all of it on alternate rounds when only
// one event fits), the second pass fills what is left.
int collect(EpollObj& ep, int epfd, epoll_event* out, int max) {
  std::unique_lock<std::mutex> g(ep.mu);
  ++ep.round;
  const bool kernel_first = max == 1 && (ep.round & 1) != 0;
  int n = 0;
  if (!kernel_first) n = scan(ep, out, max > 1 ? max - max / 2 : max);
  int total = n < max ? harvest(ep, g, epfd, out, n, max) : n;
  if (total < 0) return n > 0 ? n : total;
  if (total < max) total += scan(ep, out + total, max - total);
  return total;
}

// The set's private waiter, watching the calling thread's bell (`cell`, from
// Runtime::wake_cell) too.
int ep_inner(EpollObj& ep, Region& r, uint64_t cell) {
  std::lock_guard<std::mutex> g(ep.mu);
  uint64_t epoch = Runtime::get().epoch();
  epoll_event ev{};
  if (ep.inner >= 0 && ep.inner_epoch == epoch) {
    if (cell != 0 && (ep.inner_cells & cell) == 0) {
      ev.events = EPOLLIN | EPOLLET;
      ev.data.u32 = kInnerBell;
      if (libc().epoll_ctl(ep.inner, EPOLL_CTL_ADD, Runtime::get().cell_bell(r), &ev) == 0)
        ep.inner_cells |= cell;
    }
    return ep.inner;
  }
  if (ep.inner >= 0) libc().close(ep.inner);
  ep.inner = libc().epoll_create1(EPOLL_CLOEXEC);
  if (ep.inner < 0) return -1;
  ep.inner_epoch = epoch;
  ep.inner_cells = 0;
  ev.events = EPOLLIN;
  ev.data.u32 = kInnerUser;
  libc().epoll_ctl(ep.inner, EPOLL_CTL_ADD, ep.epfd, &ev);
  ev.events = EPOLLIN | EPOLLET;
  ev.data.u32 = kInnerBell;
  libc().epoll_ctl(ep.inner, EPOLL_CTL_ADD, r.app_bell, &ev);
  if (cell != 0 && libc().epoll_ctl(ep.inner, EPOLL_CTL_ADD, Runtime::get().cell_bell(r), &ev) == 0)
    ep.inner_cells = cell;
  if (r.ctl_fd >= 0) {
    ev.events = EPOLLRDHUP | EPOLLET;
    ev.data.u32 = kInnerCtl;
    libc().epoll_ctl(ep.inner, EPOLL_CTL_ADD, r.ctl_fd, &ev);
  }
  return ep.inner;
}

// Names every shunted member's slot as one the calling thread's cell waits for
// (docs/abi.md "Wake cells"). False when a member cannot be watched so (a nested
// epoll, a socket on another region's rings): the thread then sleeps counted in
// app_waiters, woken by every doorbell.
//
// A listener's EPOLLEXCLUSIVE entry is watched for this sleep only (`excl` keeps
// the slots, unwatch_exclusive clears them after): shuntd picks among the threads
// asleep on the listener now, as Linux passes over an exclusive entry whose epoll
// nobody waits on. A bit left behind would make it pick a thread asleep elsewhere
// (in a read on the connection it accepted) and wake nobody who could accept.
struct ExclusiveWatch {
  static constexpr int kMax = 8;  // listeners beyond: watched as plain entries
  uint32_t slots[kMax];
  int n = 0;
};

bool watch_set(EpollObj& ep, Region& r, uint64_t cell, ExclusiveWatch* excl) {
  std::lock_guard<std::mutex> g(ep.mu);
  for (const Interest& e : ep.list) {
    if (e.pending) continue;
    if (e.nested != nullptr) return false;
    if (!e.sock->shunted()) continue;
    if (e.sock->region != &r) return false;
    // EPOLLEXCLUSIVE matters for a listener alone: shuntd wakes one of its waiters.
    const bool exclusive = (e.events & EPOLLEXCLUSIVE) != 0 && excl->n < ExclusiveWatch::kMax &&
                           e.sock->s->state.load(std::memory_order_acquire) == uint32_t(abi::SlotState::kListening);
    if (exclusive) excl->slots[excl->n++] = e.sock->slot;
    Runtime::watch_slot(r, e.sock->slot, cell, exclusive);
  }
  return true;
}

void unwatch_exclusive(Region& r, const ExclusiveWatch& excl, uint64_t cell) {
  for (int i = 0; i < excl.n; ++i) Runtime::unwatch_exclusive(r, excl.slots[i], cell);
}

// Lock order: an epoll before the epolls nested in it (the kernel refuses loops).
bool any_ready(EpollObj& ep) {
  std::lock_guard<std::mutex> g(ep.mu);
  for (Interest& e : ep.list) {
    if (e.pending || !e.armed) continue;
    bool edge;
    uint32_t mask = entry_ready(e, false, &edge);
    if (mask != 0 && (!(e.events & EPOLLET) || edge)) return true;
  }
  return false;
}

// poll and select look after fd themselves: a shunted socket, or an epoll fd with
// members of ours (its kernel members the kernel reports).
bool pollable_of_ours(int fd) {
  FdObject* o = fd_table().peek(fd);
  if (o == nullptr) return false;
  if (o->kind == FdKind::kSocket) return static_cast<Socket*>(o)->shunted();
  return o->kind == FdKind::kEpoll &&
         static_cast<EpollObj*>(o)->shunt_count.load(std::memory_order_relaxed) != 0;
}

}  // namespace

int ep_ctl(Socket& s, int epfd, int op, int fd, epoll_event* ev) {
  const Libc& c = libc();
  if (op != EPOLL_CTL_ADD && op != EPOLL_CTL_MOD && op != EPOLL_CTL_DEL) return -EINVAL;
  if (epfd == fd) return -EINVAL;
  if (op != EPOLL_CTL_DEL && ev == nullptr) return -EFAULT;
  std::lock_guard<std::mutex> sg(s.mu);
  Mode m = s.mode.load(std::memory_order_acquire);
  if (m == Mode::kKernel) return c.epoll_ctl(epfd, op, fd, ev) < 0 ? -errno : 0;
  int err = 0;
  if (m == Mode::kCandidate || m == Mode::kWildcard) {
    // Still a kernel socket: the kernel epoll has it; remember it for the decision.
    if (c.epoll_ctl(epfd, op, fd, ev) < 0) return -errno;
    Ref<EpollObj> ep = epoll_at(epfd, -1, &err);
    if (!ep) return 0;
    std::lock_guard<std::mutex> g(ep->mu);
    long i = find(*ep, fd, &s);
    if (op == EPOLL_CTL_DEL) {
      if (i >= 0) drop_entry(*ep, size_t(i));
    } else if (i >= 0) {
      ep->list[size_t(i)].events = ev->events;
      ep->list[size_t(i)].data = ev->data;
    } else {
      Interest e;
      e.fd = fd;
      e.sock = &s;
      e.events = ev->events;
      e.data = ev->data;
      e.pending = true;
      s.epoll_refs.fetch_add(1, std::memory_order_acq_rel);
      ep->list.push_back(e);
    }
    return 0;
  }
  const bool dual = m == Mode::kDual;
  Ref<EpollObj> ep = epoll_at(epfd, dual ? -1 : fd, &err);
  if (!ep) return -err;
  std::lock_guard<std::mutex> g(ep->mu);
  long i = find(*ep, fd, &s);
  switch (op) {
    case EPOLL_CTL_ADD: {
      if (i >= 0) return -EEXIST;
      for (size_t j = 0; j < ep->list.size(); ++j) {  // a closed fd's leftover entry
        if (ep->list[j].fd == fd) {
          drop_entry(*ep, j);
          break;
        }
      }
      Interest e;
      e.fd = fd;
      e.sock = &s;
      e.events = ev->events;
      e.data = ev->data;
      e.kernel_half = dual;
      arm(e);
      if (dual) {
        epoll_event kev = kernel_half_event(e);
        if (c.epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &kev) < 0) return -errno;
      }
      s.epoll_refs.fetch_add(1, std::memory_order_acq_rel);
      ep->shunt_count.fetch_add(1, std::memory_order_relaxed);
      ep->list.push_back(e);
      note_listening(*ep);
      wake_sleepers(*ep);
      return 0;
    }
    case EPOLL_CTL_MOD: {
      if (i < 0) return -ENOENT;
      Interest& e = ep->list[size_t(i)];
      if ((e.events | ev->events) & EPOLLEXCLUSIVE) return -EINVAL;
      e.events = ev->events;
      e.data = ev->data;
      arm(e);
      if (dual) {
        epoll_event kev = kernel_half_event(e);
        if (c.epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &kev) < 0) return -errno;
      }
      wake_sleepers(*ep);
      return 0;
    }
    default: {
      if (i < 0) return -ENOENT;
      if (dual) c.epoll_ctl(epfd, EPOLL_CTL_DEL, fd, nullptr);
      drop_entry(*ep, size_t(i));
      return 0;
    }
  }
}

int ep_ctl_nested(int epfd, int op, int fd, epoll_event* ev) {
  const Libc& c = libc();
  Ref<EpollObj> inner = fd_table().get<EpollObj>(fd, FdKind::kEpoll);
  const bool known_op = op == EPOLL_CTL_ADD || op == EPOLL_CTL_MOD || op == EPOLL_CTL_DEL;
  if (!inner || epfd == fd || !known_op || (op != EPOLL_CTL_DEL && ev == nullptr))
    return c.epoll_ctl(epfd, op, fd, ev) < 0 ? -errno : 0;  // the kernel's answer, errors too
  // The kernel first: it checks epfd, loops (ELOOP) and depth, EEXIST and ENOENT.
  // Its half carries a tag, so that its events merge with what our members add.
  epoll_event kev{};
  if (op != EPOLL_CTL_DEL) {
    kev.events = ev->events;
    kev.data.u64 = kDualTag | uint64_t(uint32_t(fd));
  }
  if (c.epoll_ctl(epfd, op, fd, op == EPOLL_CTL_DEL ? nullptr : &kev) < 0) return -errno;
  int err = 0;
  Ref<EpollObj> ep = epoll_at(epfd, -1, &err);
  if (!ep) return 0;  // cannot follow it: the kernel half alone
  std::lock_guard<std::mutex> g(ep->mu);
  long i = -1;
  for (size_t j = 0; j < ep->list.size(); ++j)
    if (ep->list[j].fd == fd && ep->list[j].nested == inner.get()) i = long(j);
  if (op == EPOLL_CTL_DEL) {
    if (i >= 0) drop_entry(*ep, size_t(i));
    return 0;
  }
  if (i < 0) {
    Interest e;
    e.fd = fd;
    e.nested = inner.get();
    e.kernel_half = true;
    ep->shunt_count.fetch_add(1, std::memory_order_relaxed);
    ep->list.push_back(e);
    i = long(ep->list.size() - 1);
  }
  Interest& e = ep->list[size_t(i)];
  e.events = ev->events;
  e.data = ev->data;
  arm(e);
  wake_sleepers(*ep);
  return 0;
}

void ep_created(int epfd) {
  if (config().disabled) return;
  int err = 0;
  (void)epoll_at(epfd, -1, &err);
}

namespace {

// epoll_wait, epoll_pwait and epoll_pwait2 over a set that may hold shunted fds:
// until d (zero: just look), with sigmask while asleep; `passthrough` is the libc
// call for a set shunt has nothing in.
template <typename Passthrough>
int ep_wait_until(int epfd, epoll_event* evs, int max, const Deadline& d, bool zero,
                  const sigset_t* sigmask, Passthrough passthrough) {
  const Libc& c = libc();
  if (max <= 0 || fd_table().peek(epfd) == nullptr) return passthrough();
  Ref<EpollObj> ep = fd_table().get<EpollObj>(epfd, FdKind::kEpoll);
  Region* r = Runtime::get().region();
  if (!ep || ep->shunt_count.load(std::memory_order_relaxed) == 0 || r == nullptr)
    return passthrough();
  Runtime& rt = Runtime::get();
  bool spun = false;
  for (;;) {
    int n = collect(*ep, epfd, evs, max);
    if (n != 0 || zero || d.passed()) return n;
    if (!spun) {
      spun = true;
      int64_t until = Deadline::now() + rt.spin_ns();
      while (Deadline::now() < until && !any_ready(*ep)) {
        for (int i = 0; i < 64; ++i) cpu_relax();
      }
      continue;
    }
    // Announced to epoll_ctl first (wake_sleepers), then to the daemon.
    ep->sleepers.fetch_add(1, std::memory_order_seq_cst);
    uint64_t cell = rt.wake_cell(*r);
    ExclusiveWatch excl;
    if (cell != 0 && !watch_set(*ep, *r, cell, &excl)) {
      unwatch_exclusive(*r, excl, cell);
      cell = 0;
    }
    auto awake = [&] {
      Runtime::end_sleep(*r, cell);
      unwatch_exclusive(*r, excl, cell);
      ep->sleepers.fetch_sub(1, std::memory_order_relaxed);
    };
    int inner = ep_inner(*ep, *r, cell);
    if (inner < 0) {
      unwatch_exclusive(*r, excl, cell);
      ep->sleepers.fetch_sub(1, std::memory_order_relaxed);
      return passthrough();
    }
    Runtime::announce_sleep(*r, cell);
    if (any_ready(*ep)) {
      awake();
      continue;
    }
    epoll_event woke[4];
    int k = c.epoll_pwait(inner, woke, 4, d.remaining_ms(), sigmask);
    int err = errno;
    awake();
    if (k < 0) {
      if (err == EINTR) return -EINTR;
      return -err;
    }
    for (int i = 0; i < k; ++i)
      if (woke[i].data.u32 == kInnerCtl) rt.set_gone(*r);
  }
}

}  // namespace

int ep_wait(int epfd, epoll_event* evs, int max, int timeout_ms, const sigset_t* sigmask,
            bool pwait) {
  const Libc& c = libc();
  auto passthrough = [&] {
    int r = pwait ? c.epoll_pwait(epfd, evs, max, timeout_ms, sigmask)
                  : c.epoll_wait(epfd, evs, max, timeout_ms);
    return r < 0 ? -errno : r;
  };
  // Before the deadline's clock read: a kernel-only set goes straight through.
  if (!epoll_of_ours(epfd)) return passthrough();
  return ep_wait_until(epfd, evs, max, Deadline::after_ms(timeout_ms), timeout_ms == 0,
                       pwait ? sigmask : nullptr, passthrough);
}

int ep_wait2(int epfd, epoll_event* evs, int max, const timespec* ts, const sigset_t* sigmask) {
  auto passthrough = [&] {
    int r = libc().epoll_pwait2(epfd, evs, max, ts, sigmask);
    return r < 0 ? -errno : r;
  };
  if (ts != nullptr && (ts->tv_sec < 0 || ts->tv_nsec < 0 || ts->tv_nsec >= 1000000000)) return -EINVAL;
  bool zero = ts != nullptr && ts->tv_sec == 0 && ts->tv_nsec == 0;
  if (!epoll_of_ours(epfd)) return passthrough();
  return ep_wait_until(epfd, evs, max, Deadline::after(ts), zero, sigmask, passthrough);
}

// Descriptors a poll or select call handles without allocating.
constexpr size_t kInlinePollFds = 32;

bool epoll_of_ours(int epfd) {
  FdObject* o = fd_table().peek(epfd);
  return o != nullptr && o->kind == FdKind::kEpoll &&
         static_cast<EpollObj*>(o)->shunt_count.load(std::memory_order_relaxed) != 0;
}

bool polls_ours(pollfd* fds, nfds_t n) {
  for (nfds_t i = 0; i < n; ++i)
    if (pollable_of_ours(fds[i].fd)) return true;
  return false;
}

int poll_mixed(pollfd* fds, nfds_t n, const Deadline& d, const sigset_t* sigmask, bool* handled) {
  *handled = false;
  nfds_t shunted = 0;
  for (nfds_t i = 0; i < n; ++i)
    if (pollable_of_ours(fds[i].fd)) ++shunted;
  Region* r = Runtime::get().region();
  if (shunted == 0 || r == nullptr) return 0;
  *handled = true;
  Runtime& rt = Runtime::get();
  const Libc& c = libc();
  // Working copies: kernel view (shunt-only sockets masked out with fd = -1, which
  // poll ignores), plus one slot for the doorbell waiter when sleeping.
  InlineBuf<pollfd, kInlinePollFds + 1> tmp(n + 1);
  InlineBuf<Ref<Socket>, kInlinePollFds> socks(n);
  InlineBuf<Ref<EpollObj>, kInlinePollFds> eps(n);  // epoll fds with members of ours: readable when one is
  for (nfds_t i = 0; i < n; ++i) {
    socks[i] = shunted_at(fds[i].fd);
    if (!socks[i]) eps[i] = fd_table().get<EpollObj>(fds[i].fd, FdKind::kEpoll);
  }
  auto ours_ready = [&](nfds_t i) -> uint32_t {
    uint32_t want = uint32_t(uint16_t(fds[i].events)) | kAlwaysReported;
    if (socks[i]) return socks[i]->readiness() & want;
    return eps[i] && any_ready(*eps[i]) ? want & POLLIN : 0;
  };
  auto pass = [&](bool* any_shunt) -> int {
    for (nfds_t i = 0; i < n; ++i) {
      tmp[i] = fds[i];
      tmp[i].revents = 0;
      if (socks[i] && socks[i]->mode.load() != Mode::kDual) tmp[i].fd = -1;
    }
    timespec zero{0, 0};
    int k = c.ppoll(tmp.data(), n, &zero, nullptr);
    if (k < 0) return -errno;
    int count = 0;
    *any_shunt = false;
    for (nfds_t i = 0; i < n; ++i) {
      short rev = tmp[i].revents;
      if (socks[i] || eps[i]) {
        uint32_t m = ours_ready(i);
        if (m != 0) *any_shunt = true;
        rev = short(rev | short(m));
      }
      fds[i].revents = rev;
      if (rev != 0) ++count;
    }
    return count;
  };
  auto shunt_ready = [&] {
    for (nfds_t i = 0; i < n; ++i)
      if ((socks[i] || eps[i]) && ours_ready(i) != 0) return true;
    return false;
  };
  bool spun = false, any = false;
  for (;;) {
    int count = pass(&any);
    if (count != 0 || d.passed() || (!d.never() && d.at <= Deadline::now())) return count;
    if (!spun) {
      spun = true;
      int64_t until = Deadline::now() + rt.spin_ns();
      while (Deadline::now() < until && !shunt_ready()) {
        for (int i = 0; i < 64; ++i) cpu_relax();
      }
      continue;
    }
    uint64_t cell = rt.wake_cell(*r);
    for (nfds_t i = 0; i < n && cell != 0; ++i) {
      if (eps[i] || (socks[i] && socks[i]->region != r)) cell = 0;  // see watch_set
      else if (socks[i]) Runtime::watch_slot(*r, socks[i]->slot, cell);
    }
    int wfd = rt.waiter_fd(*r);
    tmp[n] = pollfd{wfd, POLLIN, 0};
    Runtime::announce_sleep(*r, cell);
    if (shunt_ready()) {
      Runtime::end_sleep(*r, cell);
      continue;
    }
    timespec ts{};
    const timespec* tsp = nullptr;
    if (!d.never()) {
      int64_t left = std::max<int64_t>(0, d.at - Deadline::now());
      ts.tv_sec = left / 1000000000;
      ts.tv_nsec = left % 1000000000;
      tsp = &ts;
    }
    int k = c.ppoll(tmp.data(), n + 1, tsp, sigmask);
    int err = errno;
    Runtime::end_sleep(*r, cell);
    if (tmp[n].revents != 0) rt.drain_waiter(*r);
    if (k < 0) return -err;
  }
}

namespace {
// fd_set bits without FD_ISSET: nfds may pass FD_SETSIZE with larger arrays.
constexpr int kBits = int(8 * sizeof(unsigned long));
bool bit(const fd_set* s, int fd) {
  return s != nullptr &&
         (reinterpret_cast<const unsigned long*>(s)[fd / kBits] >> (fd % kBits)) & 1ul;
}
void set_bit(fd_set* s, int fd) {
  reinterpret_cast<unsigned long*>(s)[fd / kBits] |= 1ul << (fd % kBits);
}
void clear_bits(fd_set* s, int nfds) {
  if (s == nullptr) return;
  for (int fd = 0; fd < nfds; ++fd)
    reinterpret_cast<unsigned long*>(s)[fd / kBits] &= ~(1ul << (fd % kBits));
}
}  // namespace

int select_mixed(int nfds, fd_set* rd, fd_set* wr, fd_set* ex, const Deadline& d,
                 const sigset_t* sigmask, bool* handled) {
  *handled = false;
  if (nfds <= 0 || nfds > FdTable::kMaxFds) return 0;
  size_t want = 0;
  for (int fd = 0; fd < nfds; ++fd)
    if (bit(rd, fd) || bit(wr, fd) || bit(ex, fd)) ++want;
  InlineBuf<pollfd, kInlinePollFds> pf(want);
  size_t npf = 0;
  bool any = false;
  for (int fd = 0; fd < nfds && npf < want; ++fd) {
    short ev = short((bit(rd, fd) ? POLLIN : 0) | (bit(wr, fd) ? POLLOUT : 0) |
                     (bit(ex, fd) ? POLLPRI : 0));
    if (ev == 0) continue;
    if (pollable_of_ours(fd)) any = true;
    pf[npf++] = pollfd{fd, ev, 0};
  }
  if (!any) return 0;
  *handled = true;
  bool h = false;
  int r = poll_mixed(pf.data(), npf, d, sigmask, &h);
  if (r < 0) return r;
  for (size_t i = 0; i < npf; ++i)
    if (pf[i].revents & POLLNVAL) return -EBADF;
  clear_bits(rd, nfds);
  clear_bits(wr, nfds);
  clear_bits(ex, nfds);
  int count = 0;
  for (size_t i = 0; i < npf; ++i) {
    const pollfd& p = pf[i];
    if ((p.events & POLLIN) && (p.revents & (POLLIN | POLLRDNORM | POLLRDBAND | POLLHUP | POLLERR))) {
      set_bit(rd, p.fd);
      ++count;
    }
    if ((p.events & POLLOUT) && (p.revents & (POLLOUT | POLLWRNORM | POLLWRBAND | POLLERR))) {
      set_bit(wr, p.fd);
      ++count;
    }
    if ((p.events & POLLPRI) && (p.revents & POLLPRI)) {
      set_bit(ex, p.fd);
      ++count;
    }
  }
  return count;
}

void epolls_on_decision(Socket& s, int) {
  const Libc& c = libc();
  Mode m = s.mode.load(std::memory_order_acquire);
  std::lock_guard<std::mutex> r(g_reg_mu);
  for (EpollObj* ep : g_reg) {
    std::lock_guard<std::mutex> g(ep->mu);
    for (size_t i = 0; i < ep->list.size();) {
      Interest& e = ep->list[i];
      if (e.sock != &s || !e.pending) {
        ++i;
        continue;
      }
      if (m == Mode::kKernel) {  // stays in the kernel epoll, as registered
        drop_entry(*ep, i);
        continue;
      }
      if (m == Mode::kDual) {
        epoll_event kev = kernel_half_event(e);
        c.epoll_ctl(ep->epfd, EPOLL_CTL_MOD, e.fd, &kev);
        e.kernel_half = true;
      } else if (m == Mode::kShunted) {
        c.epoll_ctl(ep->epfd, EPOLL_CTL_DEL, e.fd, nullptr);
      } else {
        ++i;  // kWildcard: still a kernel socket
        continue;
      }
      e.pending = false;
      arm(e);
      if (s.listening.load(std::memory_order_acquire)) ep->listening.push_back(uint32_t(i));
      ep->shunt_count.fetch_add(1, std::memory_order_relaxed);
      wake_sleepers(*ep);
      ++i;
    }
  }
}

void epolls_dual_end(Socket& s, int fd) {
  const Libc& c = libc();
  const bool kernel = s.mode.load(std::memory_order_acquire) == Mode::kKernel;
  std::lock_guard<std::mutex> r(g_reg_mu);
  for (EpollObj* ep : g_reg) {
    std::lock_guard<std::mutex> g(ep->mu);
    for (size_t i = ep->list.size(); i-- > 0;) {
      Interest& e = ep->list[i];
      if (e.sock != &s || e.fd != fd || !e.kernel_half) continue;
      if (kernel) {  // the kernel epoll reports it as registered by the application
        epoll_event ev{};
        ev.events = e.events;
        ev.data = e.data;
        c.epoll_ctl(ep->epfd, EPOLL_CTL_MOD, fd, &ev);
        drop_entry(*ep, i);
      } else {
        c.epoll_ctl(ep->epfd, EPOLL_CTL_DEL, fd, nullptr);
        e.kernel_half = false;
      }
    }
  }
}

void epolls_forget(Socket& s) {
  std::lock_guard<std::mutex> r(g_reg_mu);
  for (EpollObj* ep : g_reg) {
    std::lock_guard<std::mutex> g(ep->mu);
    for (size_t i = ep->list.size(); i-- > 0;)
      if (ep->list[i].sock == &s) drop_entry(*ep, i);
  }
}

void epolls_fork_prepare() {
  g_pool.mutex().lock();
  g_reg_mu.lock();
}

void epolls_fork_parent() {
  g_reg_mu.unlock();
  g_pool.mutex().unlock();
}

void epolls_fork_child() {
  new (&g_pool.mutex()) std::mutex;
  new (&g_reg_mu) std::mutex;
  // The private epolls are shared with the parent now and hold its doorbell: drop
  // ours (the parent keeps its own) and build new ones on the next wait.
  for (EpollObj* ep : g_reg) {
    new (&ep->mu) std::mutex;
    if (ep->inner >= 0) libc().close(ep->inner);
    ep->inner = -1;
  }
}

}  // namespace shunt::preload
