#include "runtime.hh"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <new>

#include "config.hh"
#include "fault_guard.hh"
#include "libc.hh"
#include "log.hh"
#include "shunt/control.h"
#include "shunt/scm.h"
#include "socket.hh"

namespace shunt::preload {
namespace {

constexpr uint32_t kTagBell = 0;
constexpr uint32_t kTagCtl = 1;

// The calling thread's queue pair and doorbell waiter. Reset when the attach epoch
// moves (fork child, re-attach).
struct ThreadState {
  uint64_t qp_epoch = 0;
  abi::QueuePair* qp = nullptr;
  uint32_t qp_index = 0;
  bool qp_shared = false;  // the last pair (shared beyond queue_pair_count): under g_shared_qp_mu
  int waiter_ep = -1;
  const Region* waiter_region = nullptr;
  uint64_t waiter_epoch = 0;
  // The wake cell: the queue pair's index while below abi::kWakeCells and not the
  // shared pair, with its bell; -1 for none. Set up once per attach epoch.
  uint64_t cell_epoch = 0;
  int cell = -1;
  int cell_bell = -1;
};
__attribute__((tls_model("initial-exec"))) thread_local ThreadState t_state;

std::mutex g_attach_mu;
std::mutex g_shared_qp_mu;  // the fork child re-creates it in place
std::atomic<uint64_t> g_cookie{1};
pthread_key_t g_thread_key;
pthread_once_t g_thread_key_once = PTHREAD_ONCE_INIT;

void close_thread_waiter(void*) {
  if (t_state.waiter_ep >= 0) libc().close(t_state.waiter_ep);
  t_state.waiter_ep = -1;
  // The daemon keeps its copy of the bell; the cell is never claimed again.
  if (t_state.cell_bell >= 0) libc().close(t_state.cell_bell);
  t_state.cell_bell = -1;
}
void make_thread_key() { pthread_key_create(&g_thread_key, close_thread_waiter); }

// The calling thread's queue pair in r for this attach epoch, claimed on first use.
void claim_queue_pair(ThreadState& t, Region& r, uint64_t epoch) {
  if (t.qp != nullptr && t.qp_epoch == epoch) return;
  uint32_t i = r.hdr->queue_pairs_claimed.fetch_add(1, std::memory_order_acq_rel);
  uint32_t count = r.queue_pair_count();
  // The last pair is shared by whoever claimed it and every thread beyond the
  // count, so all of them take the lock.
  t.qp_shared = i >= count - 1;
  t.qp_index = i >= count ? count - 1 : i;
  t.qp = r.queue_pair(t.qp_index);
  t.qp_epoch = epoch;
}

// Holds the calling thread's queue pair for one command (and the shared-pair lock
// for threads beyond the region's count).
class QpLease {
 public:
  QpLease(Region& r, uint64_t epoch) {
    ThreadState& t = t_state;
    claim_queue_pair(t, r, epoch);
    qp_ = t.qp;
    if (t.qp_shared) {
      mu_ = &g_shared_qp_mu;
      mu_->lock();
    }
  }
  ~QpLease() {
    if (mu_ != nullptr) mu_->unlock();
  }
  abi::QueuePair* qp() const { return qp_; }

 private:
  abi::QueuePair* qp_ = nullptr;
  std::mutex* mu_ = nullptr;
};

void unmap_region(Region* r) {
  if (r == nullptr) return;
  if (r->base != nullptr) munmap(r->base, r->size);
  if (r->app_bell >= 0) libc().close(r->app_bell);
  if (r->daemon_bell >= 0) libc().close(r->daemon_bell);
  if (r->memfd >= 0) libc().close(r->memfd);
  delete r;
}

// The control socket's messages, with libc's own sendmsg/recvmsg (never ours).
ssize_t recv_with_fds(int sock, void* buf, size_t len, int* fds, int max_fds, int* nfds) {
  return scm::recv(sock, buf, len, fds, max_fds, nfds, 0, libc().recvmsg, libc().close);
}
ssize_t send_with_fds(int sock, const void* buf, size_t len, const int* fds, int nfds) {
  return scm::send(sock, buf, len, fds, nfds, libc().sendmsg);
}

void atfork_prepare() { Runtime::get().fork_prepare(); }
void atfork_parent() { Runtime::get().fork_parent(); }
void atfork_child() { Runtime::get().fork_child(); }
void register_atfork() {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, [] { pthread_atfork(atfork_prepare, atfork_parent, atfork_child); });
}

}  // namespace

void Region::wake_all() const {
  if (app_bell < 0) return;
  uint64_t one = 1;
  ssize_t w = libc().write(app_bell, &one, sizeof one);
  (void)w;
}

int64_t Deadline::now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

int Deadline::remaining_ms() const {
  if (never()) return -1;
  int64_t left = at - now();
  if (left <= 0) return 0;
  int64_t ms = (left + 999999) / 1000000;
  return ms > INT32_MAX ? INT32_MAX : int(ms);
}

constinit Runtime Runtime::instance_;

Runtime& Runtime::get() { return instance_; }

abi::Command make_command(abi::Op op, uint32_t slot) {
  abi::Command c{};
  c.op = uint16_t(op);
  c.slot = slot;
  return c;
}

bool Runtime::ensure_attached() {
  int s = state_.load(std::memory_order_acquire);
  if (s == kAttached) return !daemon_gone() || reattach();
  if (s != kUnknown) return false;
  std::lock_guard<std::mutex> g(g_attach_mu);
  s = state_.load(std::memory_order_acquire);
  if (s != kUnknown) return s == kAttached;
  if (config().disabled) {
    state_.store(kDisabled, std::memory_order_release);
    return false;
  }
  register_atfork();
  return attach_locked(true);
}

bool Runtime::connect_and_map(Region* out, int* ctl_fd, char* why, size_t why_len) {
  const Config& cfg = config();
  const Libc& c = libc();
  if (cfg.path_too_long) {
    snprintf(why, why_len, "cannot reach shuntd at %s (%s)", cfg.socket_path,
             strerror(ENAMETOOLONG));
    return false;
  }
  int sock = c.socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (sock < 0) {
    snprintf(why, why_len, "cannot reach shuntd at %s (%s)", cfg.socket_path, strerror(errno));
    return false;
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, cfg.socket_path, strlen(cfg.socket_path) + 1);
  int rc;
  do {
    rc = c.connect(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    if (errno == EACCES)
      snprintf(why, why_len,
               "shuntd at %s does not admit uid %u (the socket's permissions): name the user "
               "or a group of it in SHUNT_ALLOW where shuntd starts",
               cfg.socket_path, unsigned(geteuid()));
    else
      snprintf(why, why_len, "cannot reach shuntd at %s (%s)", cfg.socket_path, strerror(errno));
    c.close(sock);
    return false;
  }
  // A daemon that accepts but never answers must not hang the application.
  timeval tv{5, 0};
  c.setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  c.setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);

  ctl::Request req{};
  req.type = uint32_t(ctl::Type::kAttach);
  req.abi_version = abi::kVersion;
  req.pid = getpid();
  ctl::AttachReply reply{};
  int fds[3] = {-1, -1, -1};
  int nfds = 0;
  const char* fail = nullptr;
  int err = 0;
  ssize_t n = send_with_fds(sock, &req, sizeof req, nullptr, 0);
  if (n < 0) {
    err = int(-n);
    fail = "attach request";
  } else if ((n = recv_with_fds(sock, &reply, sizeof reply, fds, 3, &nfds)) < 0) {
    err = int(-n);
    fail = "attach reply";
  } else if (size_t(n) != sizeof reply || (reply.status == 0 && nfds != 3)) {
    err = EPROTO;
    fail = "malformed attach reply";
  } else if (reply.status < 0) {
    err = -reply.status;
    fail = err == EPROTO ? "ABI version mismatch" : "attach refused";
    if (err == EACCES) {
      snprintf(why, why_len,
               "shuntd at %s does not admit uid %u (gid %u): name the user or a group of it "
               "in SHUNT_ALLOW where shuntd starts",
               cfg.socket_path, unsigned(geteuid()), unsigned(getegid()));
      for (int i = 0; i < nfds; ++i) c.close(fds[i]);
      c.close(sock);
      return false;
    }
  }
  struct stat st{};
  void* base = MAP_FAILED;
  if (fail == nullptr) {
    if (fstat(fds[0], &st) < 0 || uint64_t(st.st_size) < reply.region_size ||
        reply.region_size < sizeof(abi::RegionHeader)) {
      err = EPROTO;
      fail = "region smaller than announced";
    } else {
      base = mmap(nullptr, reply.region_size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
      if (base == MAP_FAILED) {
        err = errno;
        fail = "mmap";
      } else if (!abi::region_fits(*abi::header(base), reply.region_size) ||
                 abi::header(base)->queue_pair_count == 0) {
        err = EPROTO;
        fail = "region layout or ABI version mismatch";
      }
    }
  }
  if (fail != nullptr) {
    snprintf(why, why_len, "cannot attach to shuntd at %s (%s: %s)", cfg.socket_path, fail,
             strerror(err));
    if (base != MAP_FAILED) munmap(base, reply.region_size);
    for (int i = 0; i < nfds; ++i) c.close(fds[i]);
    c.close(sock);
    return false;
  }
  const abi::RegionHeader& h = *abi::header(base);
  out->memfd = fds[0];
  out->base = base;
  out->size = reply.region_size;
  out->hdr = abi::header(base);
  out->layout = abi::layout_of(h);
  out->app_bell = fds[1];
  out->daemon_bell = fds[2];
  out->id = reply.region_id;
  out->ctl_fd = sock;
  *ctl_fd = sock;
  return true;
}

bool Runtime::attach_locked(bool warn) {
  auto* r = new (std::nothrow) Region;
  char why[256];
  int ctl = -1;
  if (r == nullptr || !connect_and_map(r, &ctl, why, sizeof why)) {
    if (r == nullptr) snprintf(why, sizeof why, "cannot attach to shuntd (out of memory)");
    delete r;
    state_.store(kFailed, std::memory_order_release);
    // The fail-open notice: once per process, whatever SHUNT_LOG says.
    if (warn) log_line(false, "%s; using the kernel stack", why);
    return false;
  }
  spin_ns_ = config().spin_us * 1000;
  ctl_fd_ = ctl;
  r->epoch = epoch_.load(std::memory_order_relaxed);
  nic_ = NicRoute{r->hdr->nic_ip, r->hdr->nic_prefix_len, r->hdr->gateway_ip};
  install_fault_guard();  // before any copy touches the application's buffers
  region_.store(r, std::memory_order_release);
  state_.store(kAttached, std::memory_order_release);
  SHUNT_DEBUG("attached to region %u (%llu bytes, %u queue pairs, %u slots)", r->id,
              (unsigned long long)r->size, r->queue_pair_count(), r->slot_count());
  return true;
}

// The daemon hung up: a new one may be up. The old region stays mapped for the
// sockets that name it (they are reset); the new attachment starts a new epoch,
// so every thread takes a fresh queue pair and doorbell waiter.
bool Runtime::reattach() {
  int64_t now = Deadline::now();
  int64_t next = next_reattach_.load(std::memory_order_relaxed);
  if (now < next || !next_reattach_.compare_exchange_strong(next, now + kReattachEvery))
    return false;
  std::lock_guard<std::mutex> g(g_attach_mu);
  if (!daemon_gone()) return true;  // another thread made it
  Region* old = region();
  if (old != nullptr && old->ctl_fd >= 0) {
    libc().close(old->ctl_fd);
    old->ctl_fd = -1;
  }
  ctl_fd_ = -1;
  epoch_.fetch_add(1, std::memory_order_acq_rel);
  if (!attach_locked(false)) {
    // Still attached to the old (gone) region: sockets keep using the kernel.
    region_.store(old, std::memory_order_release);
    state_.store(kAttached, std::memory_order_release);
    return false;
  }
  SHUNT_WARN("attached to shuntd again (region %u)", region()->id);
  return true;
}

void Runtime::attach_for_test(Region* r) {
  std::lock_guard<std::mutex> g(g_attach_mu);
  r->epoch = epoch_.fetch_add(1, std::memory_order_acq_rel) + 1;
  spin_ns_ = config().spin_us * 1000;
  nic_ = NicRoute{r->hdr->nic_ip, r->hdr->nic_prefix_len, r->hdr->gateway_ip};
  r->layout = abi::layout_of(*r->hdr);
  region_.store(r, std::memory_order_release);
  state_.store(kAttached, std::memory_order_release);
}

bool signal_restarts(const Deadline& d) {
  if (!d.never()) return false;
  sigset_t blocked;
  if (pthread_sigmask(SIG_BLOCK, nullptr, &blocked) != 0) return false;
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP || sigismember(&blocked, sig) == 1) continue;
    // Faults come from the thread's own instructions, never while it sleeps in a
    // call: a crash handler's flags (ASan's, a crash reporter's) say nothing here.
    if (sig == SIGSEGV || sig == SIGBUS || sig == SIGFPE || sig == SIGILL || sig == SIGTRAP ||
        sig == SIGSYS)
      continue;
    struct sigaction sa;
    if (sigaction(sig, nullptr, &sa) != 0) continue;  // glibc's own real-time signals
    if ((sa.sa_flags & SA_SIGINFO) == 0 && (sa.sa_handler == SIG_DFL || sa.sa_handler == SIG_IGN))
      continue;
    if ((sa.sa_flags & SA_RESTART) == 0) return false;
  }
  return true;
}

uint64_t Runtime::next_cookie() const { return g_cookie.load(std::memory_order_relaxed); }

void Runtime::resume_after_exec(Region* r, uint64_t cookie) {
  register_atfork();
  g_cookie.store(cookie, std::memory_order_relaxed);
  // The old image's threads are gone, and their queue pairs with them: claims
  // start again (a completion still due to one of them carries an older cookie).
  r->hdr->queue_pairs_claimed.store(0, std::memory_order_release);
  r->hdr->cells_sleeping.store(0, std::memory_order_release);
  r->epoch = epoch_.load(std::memory_order_relaxed);
  spin_ns_ = config().spin_us * 1000;
  ctl_fd_ = r->ctl_fd;
  nic_ = NicRoute{r->hdr->nic_ip, r->hdr->nic_prefix_len, r->hdr->gateway_ip};
  region_.store(r, std::memory_order_release);
  state_.store(kAttached, std::memory_order_release);
}

void Runtime::set_gone(Region& r) {
  if (!r.gone.exchange(true, std::memory_order_acq_rel))
    log_line(false, "shuntd hung up; its shunted sockets are reset");
}

void Runtime::kick(Region& r) {
  std::atomic_thread_fence(std::memory_order_seq_cst);  // pairs with the daemon's sleep check
  // The first poster after the daemon fell asleep rings, and clears the flag so
  // that the others do not ring again before it wakes (docs/abi.md).
  if (r.hdr->daemon_sleeping.load(std::memory_order_relaxed) != 0 &&
      r.hdr->daemon_sleeping.exchange(0, std::memory_order_acq_rel) != 0) {
    uint64_t one = 1;
    ssize_t w = libc().write(r.daemon_bell, &one, sizeof one);
    (void)w;
  }
}

// The command queue is full: wake the daemon and give it a moment. A queue that
// stays full may mean the daemon is gone (or cut us off, leaving our region as
// it was): the control socket says so, and then the caller gives up.
bool Runtime::wait_for_room(Region& r) {
  uint64_t one = 1;
  ssize_t w = libc().write(r.daemon_bell, &one, sizeof one);
  (void)w;
  if (r.ctl_fd < 0) {
    sched_yield();
  } else {
    pollfd p{r.ctl_fd, POLLRDHUP, 0};
    if (libc().poll(&p, 1, 1) > 0 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR))) set_gone(r);
  }
  return !r.gone.load(std::memory_order_acquire);
}

void Runtime::post(abi::Command cmd) {
  Region* r = region();
  if (r == nullptr || !attached() || r->gone.load(std::memory_order_acquire)) return;
  QpLease lease(*r, epoch());
  abi::EntryRing<abi::Command> sq(&lease.qp()->sq_idx, lease.qp()->sq, abi::kQueueDepth);
  cmd.cookie = g_cookie.fetch_add(1, std::memory_order_relaxed);
  while (!sq.push(cmd)) {  // full: the daemon is behind
    if (!wait_for_room(*r)) return;
  }
  kick(*r);
}

int Runtime::call(abi::Command cmd, abi::Completion* out, abi::TcpInfo* reply) {
  Region* r = region();
  if (r == nullptr || !attached() || r->gone.load(std::memory_order_acquire)) return -ENETDOWN;
  QpLease lease(*r, epoch());
  abi::QueuePair* qp = lease.qp();
  abi::EntryRing<abi::Command> sq(&qp->sq_idx, qp->sq, abi::kQueueDepth);
  abi::EntryRing<abi::Completion> cq(&qp->cq_idx, qp->cq, abi::kQueueDepth);
  cmd.cookie = g_cookie.fetch_add(1, std::memory_order_relaxed);
  while (!sq.push(cmd)) {
    if (!wait_for_room(*r)) return -ENETDOWN;
  }
  kick(*r);
  for (;;) {
    Wake w = wait(*r, [&] { return cq.available() != 0; }, Deadline{});
    if (w == Wake::kDaemonGone) return -ENETDOWN;
    abi::Completion c;
    while (cq.pop(&c)) {
      if (c.cookie == cmd.cookie) {
        *out = c;
        // Written before the completion was published (acquire in pop); the
        // lease keeps other threads off this queue pair until we are done.
        if (reply != nullptr && c.result >= 0) memcpy(reply, &qp->reply, sizeof *reply);
        SHUNT_DEBUG("op %u slot %u ip %08x port %u arg %d -> %d slot %u", unsigned(cmd.op),
                    cmd.slot, ntohl(cmd.ip), ntohs(cmd.port), cmd.arg, c.result, c.slot);
        return c.result;
      }
      // A completion for a command that is no longer waited for: drop it.
    }
  }
}

uint64_t Runtime::wake_cell(Region& r) {
  ThreadState& t = t_state;
  if (&r != region()) return 0;  // a fork child on its parent's rings: app_waiters there
  if (t.cell_epoch != epoch()) setup_cell(r);
  return t.cell < 0 ? 0 : uint64_t{1} << t.cell;
}

int Runtime::cell_bell(Region& r) { return wake_cell(r) != 0 ? t_state.cell_bell : -1; }

// The thread's bell: an eventfd of its own, registered for its queue pair's cell
// with one message (no answer: until the daemon has it, it rings the app doorbell
// for this cell, which the thread watches too).
void Runtime::setup_cell(Region& r) {
  ThreadState& t = t_state;
  const uint64_t e = epoch();
  if (t.cell_bell >= 0) libc().close(t.cell_bell);  // an older attachment's (a fork child: its parent's)
  t.cell_bell = -1;
  t.cell = -1;
  t.cell_epoch = e;
  if (r.ctl_fd < 0) return;
  claim_queue_pair(t, r, e);
  if (t.qp_shared || t.qp_index >= abi::kWakeCells) return;
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return;
  // Unique along the exec chain (cookies carry over): a bell the old image
  // registered for this cell never passes for this thread's.
  const uint64_t token = g_cookie.fetch_add(1, std::memory_order_relaxed);
  t.qp->bell_token.store(token, std::memory_order_release);
  ctl::Request req{};
  req.type = uint32_t(ctl::Type::kWakeCell);
  req.abi_version = abi::kVersion;
  req.pid = getpid();
  req.count = t.qp_index;
  req.token = token;
  if (send_with_fds(r.ctl_fd, &req, sizeof req, &fd, 1) != ssize_t(sizeof req)) {
    libc().close(fd);
    return;
  }
  t.cell_bell = fd;
  t.cell = int(t.qp_index);
  pthread_once(&g_thread_key_once, make_thread_key);
  pthread_setspecific(g_thread_key, reinterpret_cast<void*>(1));
  if (t.waiter_ep >= 0) {  // made without the bell: made again when next needed
    libc().close(t.waiter_ep);
    t.waiter_ep = -1;
  }
}

int Runtime::thread_waiter(Region& r) {
  ThreadState& t = t_state;
  const int bell = cell_bell(r);
  if (t.waiter_ep >= 0 && t.waiter_region == &r && t.waiter_epoch == r.epoch) return t.waiter_ep;
  if (t.waiter_ep >= 0) libc().close(t.waiter_ep);
  t.waiter_ep = -1;
  int ep = libc().epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) return -1;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLET;  // never drained: each ring is a new edge
  ev.data.u32 = kTagBell;
  libc().epoll_ctl(ep, EPOLL_CTL_ADD, r.app_bell, &ev);
  if (bell >= 0) libc().epoll_ctl(ep, EPOLL_CTL_ADD, bell, &ev);
  if (r.ctl_fd >= 0) {
    ev.events = EPOLLRDHUP | EPOLLET;
    ev.data.u32 = kTagCtl;
    libc().epoll_ctl(ep, EPOLL_CTL_ADD, r.ctl_fd, &ev);
  }
  pthread_once(&g_thread_key_once, make_thread_key);
  pthread_setspecific(g_thread_key, reinterpret_cast<void*>(1));
  t.waiter_ep = ep;
  t.waiter_region = &r;
  t.waiter_epoch = r.epoch;
  return ep;
}

Wake Runtime::sleep(Region& r, const Deadline& d, int extra_fd, const sigset_t* sigmask) {
  int ep = thread_waiter(r);
  if (ep < 0) {  // no epoll (fd limit): degrade to a short nap, then re-check
    timespec ts{0, 100000};
    nanosleep(&ts, nullptr);
    return Wake::kReady;
  }
  epoll_event evs[4];
  int n;
  if (extra_fd < 0) {
    n = libc().epoll_pwait(ep, evs, 4, d.remaining_ms(), sigmask);
    if (n < 0) return errno == EINTR ? Wake::kInterrupted : Wake::kReady;
  } else {
    pollfd p[2] = {{ep, POLLIN, 0}, {extra_fd, POLLIN, 0}};
    timespec ts{};
    const timespec* tsp = nullptr;
    if (!d.never()) {
      int64_t left = d.at - Deadline::now();
      if (left < 0) left = 0;
      ts.tv_sec = left / 1000000000;
      ts.tv_nsec = left % 1000000000;
      tsp = &ts;
    }
    int pr = libc().ppoll(p, 2, tsp, sigmask);
    if (pr < 0) return errno == EINTR ? Wake::kInterrupted : Wake::kReady;
    if (pr == 0) return Wake::kTimeout;
    n = p[0].revents != 0 ? libc().epoll_wait(ep, evs, 4, 0) : 0;  // consume the edges
    for (int i = 0; i < n; ++i)
      if (evs[i].data.u32 == kTagCtl) set_gone(r);
    return p[1].revents != 0 ? Wake::kExtraFd : Wake::kReady;
  }
  if (n == 0) return Wake::kTimeout;
  for (int i = 0; i < n; ++i) {
    if (evs[i].data.u32 == kTagCtl) {
      set_gone(r);
      return Wake::kDaemonGone;
    }
  }
  return Wake::kReady;
}

void Runtime::drain_waiter(Region& r) {
  int ep = thread_waiter(r);
  if (ep < 0) return;
  epoll_event evs[4];
  int n = libc().epoll_wait(ep, evs, 4, 0);
  for (int i = 0; i < n; ++i)
    if (evs[i].data.u32 == kTagCtl) set_gone(r);
}

// ---- fork ----

// The parent waits in fork() until the child has taken its inherited sockets over
// (kInherit answered), or given up: otherwise a parent that closes a socket right
// after fork (a forking server handing a connection to its child) would make the
// daemon close it before the child's claim arrives, where the kernel would keep it
// open for the child. One pipe per fork; the child writes when done.
namespace {
int g_fork_sync[2] = {-1, -1};
}  // namespace

void Runtime::fork_prepare() {
  g_attach_mu.lock();
  if (state_.load(std::memory_order_acquire) == kAttached &&
      pipe2(g_fork_sync, O_CLOEXEC) != 0) {
    g_fork_sync[0] = g_fork_sync[1] = -1;
  }
  sockets_fork_prepare();
}

void Runtime::fork_parent() {
  sockets_fork_parent();
  if (g_fork_sync[0] >= 0) {
    int saved = errno;
    libc().close(g_fork_sync[1]);
    pollfd p{g_fork_sync[0], POLLIN, 0};
    const Deadline d{Deadline::now() + int64_t(5) * 1000000000};
    for (;;) {  // a byte or EOF: the child is done (or died); signals do not end it
      int left = d.remaining_ms();
      if (left <= 0) break;
      int r = libc().poll(&p, 1, left);
      if (r > 0 || (r < 0 && errno != EINTR)) break;
    }
    libc().close(g_fork_sync[0]);
    g_fork_sync[0] = g_fork_sync[1] = -1;
    errno = saved;
  }
  g_attach_mu.unlock();
}

void Runtime::fork_child() {
  fork_child_attach();
  fork_child_done();
}

void Runtime::fork_child_attach() {
  // Only this thread exists now. Locks held by vanished threads are rebuilt.
  new (&g_shared_qp_mu) std::mutex;
  sockets_fork_child_locks();
  g_attach_mu.unlock();
  epoch_.fetch_add(1, std::memory_order_acq_rel);  // every thread state is stale
  // The doorbell waiter is an epoll shared with the parent now: an edge consumed by
  // one process would never wake the other (both wait on the parent's doorbell
  // while they share an inherited socket's rings). This thread gets its own.
  if (t_state.waiter_ep >= 0) libc().close(t_state.waiter_ep);
  t_state.waiter_ep = -1;
  t_state.waiter_region = nullptr;
  if (state_.load(std::memory_order_acquire) != kAttached) return;

  Region* old = region_.load(std::memory_order_acquire);
  libc().close(ctl_fd_);  // the parent's attachment; the daemon must not see us on it
  ctl_fd_ = -1;
  old->ctl_fd = -1;
  state_.store(kUnknown, std::memory_order_release);
  region_.store(nullptr, std::memory_order_release);
  bool ok = !config().disabled && attach_locked(true);
  if (!ok) {
    // No daemon for the child: new sockets use the kernel; inherited shunted ones
    // are reset (two processes must not consume one ring).
    sockets_after_fork(old, nullptr);
    return;
  }
  Region* fresh = region_.load(std::memory_order_acquire);
  if (!sockets_after_fork(old, fresh)) unmap_region(old);
}

void Runtime::fork_child_done() {
  if (g_fork_sync[0] < 0) return;
  libc().close(g_fork_sync[0]);
  char one = 1;
  ssize_t w = libc().write(g_fork_sync[1], &one, 1);
  (void)w;
  libc().close(g_fork_sync[1]);
  g_fork_sync[0] = g_fork_sync[1] = -1;
}

bool Runtime::inherit(uint32_t parent_region, const int* fds, const uint32_t* parent_slots,
                      uint32_t n, uint32_t* child_slots) {
  for (uint32_t i = 0; i < n; ++i) child_slots[i] = abi::kNoSlot;
  ctl::Request req{};
  req.type = uint32_t(ctl::Type::kInherit);
  req.abi_version = abi::kVersion;
  req.pid = getpid();
  req.count = n;
  req.parent_region = parent_region;
  memcpy(req.parent_slots, parent_slots, n * sizeof(uint32_t));
  if (send_with_fds(ctl_fd_, &req, sizeof req, fds, int(n)) < 0) return false;
  ctl::InheritReply reply{};
  int extra[1];
  int nextra = 0;
  ssize_t got = recv_with_fds(ctl_fd_, &reply, sizeof reply, extra, 1, &nextra);
  for (int i = 0; i < nextra; ++i) libc().close(extra[i]);
  if (got != ssize_t(sizeof reply) || reply.status < 0 || reply.count != n) return false;
  Region* r = region();
  for (uint32_t i = 0; i < n; ++i)
    child_slots[i] = reply.slots[i] < r->slot_count() ? reply.slots[i] : abi::kNoSlot;
  return true;
}

}  // namespace shunt::preload
