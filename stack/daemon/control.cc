// The control socket (include/shunt/control.h): attach, fork inheritance, stats,
// socket listings, captures and stop. Everything here is control path: it may
// allocate and make system calls; the data path never comes here.
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "daemon/access.hh"
#include "daemon/daemon.hh"
#include "daemon/log.hh"
#include "shunt/scm.h"

namespace shunt {

namespace {
constexpr uint64_t kTagListen = 1ull << 40;
constexpr uint64_t kTagControl = 2ull << 40;
constexpr uint64_t kTagDoorbell = 3ull << 40;
constexpr uint64_t kTagPort = 4ull << 40;
constexpr uint64_t kTagMask = 0xffull << 40;
constexpr int kSendWaitMs = 100;  // a slow reader of a long reply gets this long per message

// One message on a non-blocking control connection, waiting a little for room.
bool send_reply(int fd, const void* data, size_t len, const int* fds = nullptr, int nfds = 0) {
  for (int tries = 0; tries < 2; ++tries) {
    ssize_t n = scm::send(fd, data, len, fds, nfds);
    if (n == ssize_t(len)) return true;
    if (n != -EAGAIN) return false;
    pollfd p{fd, POLLOUT, 0};
    if (poll(&p, 1, kSendWaitMs) <= 0) return false;
  }
  return false;
}
}  // namespace

bool Daemon::start(std::string* error) {
  mkdir(cfg_.rundir.c_str(), 0755);
  socket_path_ = cfg_.rundir + "/" + ctl::kSocketName;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path_.size() >= sizeof(addr.sun_path)) {
    *error = "SHUNT_RUNDIR=" + cfg_.rundir + ": path too long for a unix socket";
    return false;
  }
  std::strcpy(addr.sun_path, socket_path_.c_str());
  // A socket file that nobody answers on is left over from a dead daemon.
  int probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    Peer other;
    std::string who = peer_of(probe, &other) ? " (pid " + std::to_string(other.pid) + ")" : "";
    ::close(probe);
    *error = "SHUNT_RUNDIR=" + cfg_.rundir + ": a shuntd" + who + " already runs there";
    return false;
  }
  ::close(probe);
  unlink(socket_path_.c_str());
  listen_fd_ = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  // Created with no permissions for others, then opened as far as SHUNT_ALLOW says.
  mode_t old_mask = umask(0077);
  int rc = bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  umask(old_mask);
  if (rc != 0 || listen(listen_fd_, 128) != 0) {
    *error = "SHUNT_RUNDIR=" + cfg_.rundir + ": cannot create " + socket_path_ + ": " +
             std::strerror(errno);
    return false;
  }
  SocketAccess access = socket_access(cfg_.allow);
  if ((access.gid != gid_t(-1) && chown(socket_path_.c_str(), uid_t(-1), access.gid) != 0) ||
      chmod(socket_path_.c_str(), access.mode) != 0) {
    *error = "SHUNT_ALLOW=" + cfg_.allow_text + ": cannot set the mode of " + socket_path_ + ": " +
             std::strerror(errno);
    return false;
  }
  // Others must reach the socket through the run directory too.
  if (access.mode != 0600) {
    struct stat st;
    if (stat(cfg_.rundir.c_str(), &st) == 0 && (st.st_mode & 0005) != 0005)
      log_info("SHUNT_RUNDIR=%s is not searchable by others: SHUNT_ALLOW=%s cannot take effect",
               cfg_.rundir.c_str(), cfg_.allow_text.c_str());
  }
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kTagListen;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev);
  for (int fd : port_.wake_fds()) {
    ev.events = EPOLLIN;
    ev.data.u64 = kTagPort | uint32_t(fd);
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
  }
  return true;
}

void Daemon::poll_control(Time timeout_us) {
  if (epoll_fd_ < 0) return;
  epoll_event evs[16];
  timespec ts{time_t(timeout_us / 1000000), long(timeout_us % 1000000) * 1000};
  int n = epoll_pwait2(epoll_fd_, evs, 16, &ts, nullptr);
  for (int i = 0; i < n; ++i) {
    uint64_t tag = evs[i].data.u64 & kTagMask;
    uint32_t val = uint32_t(evs[i].data.u64 & 0xffffffffu);
    if (tag == kTagListen) {
      accept_control();
    } else if (tag == kTagControl) {
      control_message(int(val));
    } else if (tag == kTagDoorbell) {
      uint64_t v;
      if (val < apps_.capacity() && apps_.app(val).active)
        while (read(apps_.app(val).daemon_doorbell, &v, sizeof v) > 0) {
        }
    }
    // kTagPort: frames arrived; the next turn receives them.
  }
}

void Daemon::accept_control() {
  for (int i = 0; i < 16; ++i) {
    int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;
    ctl_conns_[fd] = kNone;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = kTagControl | uint32_t(fd);
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev);
  }
}

void Daemon::hang_up(int fd) {
  auto it = ctl_conns_.find(fd);
  if (it == ctl_conns_.end()) return;
  uint32_t id = it->second;
  if (fd == capture_client_) {
    port_.stop_capture();
    capture_client_ = -1;
  }
  if (id != kNone) {
    serve_last_commands(id, now_us());
    cut_off_faulty();  // a violation among them ends it with resets, as at a turn's end
    detach(id, Ending::kAsKernel, "exited");  // closes fd (no-op if cut off)
    return;
  }
  epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  ctl_conns_.erase(it);
  ::close(fd);
}

void Daemon::control_message(int fd) {
  auto it = ctl_conns_.find(fd);
  if (it == ctl_conns_.end()) return;
  uint32_t app = it->second;
  ctl::Request req{};
  int fds[scm::kMaxFds];
  int nfds = 0;
  ssize_t n = scm::recv(fd, &req, sizeof req, fds, scm::kMaxFds, &nfds);
  if (n == -EAGAIN) return;
  if (n <= 0 || size_t(n) < offsetof(ctl::Request, parent_slots)) {
    // Hang-up (the process is gone, or exec'd without us), or garbage.
    for (int i = 0; i < nfds; ++i) ::close(fds[i]);
    hang_up(fd);
    return;
  }
  switch (static_cast<ctl::Type>(req.type)) {
    case ctl::Type::kAttach:
      if (app == kNone) attach_app(fd, req);
      break;
    case ctl::Type::kInherit:
      if (app != kNone) inherit(fd, app, req, fds, nfds);
      break;
    case ctl::Type::kStats: {
      Peer peer;
      std::string text = peer_of(fd, &peer) && admits(cfg_.allow, getuid(), peer)
                             ? stats_text()
                             : std::string("error not admitted (SHUNT_ALLOW)\n");
      if (text.size() > ctl::kStatsMax) text.resize(ctl::kStatsMax);
      send_reply(fd, text.data(), text.size());
      break;
    }
    case ctl::Type::kSockets:
      send_sockets(fd);
      break;
    case ctl::Type::kWakeCell:
      // Taken: the fd stays open as the bell. Refused: closed below, the thread
      // hears the app doorbell instead (it watches both).
      if (app != kNone && nfds == 1 && size_t(n) == sizeof req &&
          apps_.set_cell_bell(app, req.count, fds[0], req.token))
        nfds = 0;
      break;
    case ctl::Type::kCapture:
      start_capture(fd, req, fds, nfds);
      break;
    case ctl::Type::kStop: {
      const char ok[] = "stopping";
      const char no[] = "refused: only root or the daemon's user may stop it";
      bool allowed = privileged(fd);
      send_reply(fd, allowed ? ok : no, allowed ? sizeof ok - 1 : sizeof no - 1);
      if (allowed) stop();
      break;
    }
    default:
      break;
  }
  for (int i = 0; i < nfds; ++i) ::close(fds[i]);
}

bool Daemon::privileged(int fd) const {
  Peer peer;
  return peer_of(fd, &peer) && (peer.uid == 0 || peer.uid == getuid());
}

void Daemon::attach_app(int fd, const ctl::Request& req) {
  ctl::AttachReply reply{};
  Peer peer;
  if (req.abi_version != abi::kVersion) {
    reply.status = -EPROTO;
  } else if (!peer_of(fd, &peer)) {
    reply.status = -EPERM;
  } else if (!admits(cfg_.allow, getuid(), peer)) {
    reply.status = -EACCES;
    ++ctr_.apps_refused;
    log_info("refused pid %d (uid %u, gid %u): not admitted by SHUNT_ALLOW=%s", int(peer.pid),
             unsigned(peer.uid), unsigned(peer.gid), cfg_.allow_text.c_str());
  }
  if (reply.status != 0) {
    send_reply(fd, &reply, sizeof reply);
    return;
  }
  int err = 0;
  uint32_t id = apps_.attach(fd, Credentials{peer.pid, peer.uid, peer.gid}, cfg_.ip,
                             cfg_.prefix_len, cfg_.gateway, now_us(), &err);
  if (id == kNone) {
    reply.status = err;
    send_reply(fd, &reply, sizeof reply);
    return;
  }
  App& app = apps_.app(id);
  ctl_conns_[fd] = id;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kTagDoorbell | id;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, app.daemon_doorbell, &ev);
  reply.status = 0;
  reply.region_id = id;
  reply.region_size = app.region.size();
  int fds[3] = {app.region.memfd(), app.app_doorbell, app.daemon_doorbell};
  if (!send_reply(fd, &reply, sizeof reply, fds, 3)) {
    detach(id, Ending::kAsKernel, "attach reply failed");
    return;
  }
  ++ctr_.apps_attached;
  log_info("attached pid %d (%s, uid %u) as region %u", int(peer.pid), app.comm.c_str(),
           unsigned(peer.uid), id);
}

// After fork the child asks for its own slots on the sockets it inherited. Each
// claim is checked: the fd it sends must be the placeholder registered for the
// parent's slot (same inode), so a process can only claim sockets it holds.
void Daemon::inherit(int fd, uint32_t app, const ctl::Request& req, const int* fds, int nfds) {
  ctl::InheritReply reply{};
  uint32_t count = std::min<uint32_t>({req.count, uint32_t(nfds), ctl::kMaxInherit});
  reply.count = count;
  for (uint32_t i = 0; i < count; ++i) {
    struct stat st;
    reply.slots[i] = fstat(fds[i], &st) == 0
                         ? sockets_.inherit(app, req.parent_region, req.parent_slots[i], st.st_ino)
                         : abi::kNoSlot;
    if (reply.slots[i] == abi::kNoSlot) ++ctr_.inherits_refused;
    else ++ctr_.inherits;
  }
  reply.status = 0;
  send_reply(fd, &reply, sizeof reply);
}

void Daemon::send_sockets(int fd) {
  Peer peer;
  std::vector<ctl::SocketInfo> all;
  if (peer_of(fd, &peer) && admits(cfg_.allow, getuid(), peer)) sockets_.list(&all);
  std::vector<uint8_t> buf(sizeof(ctl::SocketList));
  auto* msg = reinterpret_cast<ctl::SocketList*>(buf.data());
  size_t pos = 0;
  do {
    uint32_t n = uint32_t(std::min<size_t>(all.size() - pos, ctl::kSocketsPerMessage));
    msg->count = n;
    msg->last = pos + n == all.size();
    std::memcpy(msg->sockets, all.data() + pos, n * sizeof(ctl::SocketInfo));
    pos += n;
    size_t len = offsetof(ctl::SocketList, sockets) + n * sizeof(ctl::SocketInfo);
    if (!send_reply(fd, msg, len)) return;
  } while (pos < all.size());
}

void Daemon::start_capture(int fd, const ctl::Request& req, const int* fds, int nfds) {
  ctl::CaptureReply reply{};
  if (!privileged(fd)) reply.status = -EACCES;
  else if (nfds < 1) reply.status = -EBADF;
  else if (capture_client_ >= 0) reply.status = -EBUSY;
  else reply.status = port_.start_capture(fds[0], req.count);
  if (reply.status == 0) {
    capture_client_ = fd;
    ++ctr_.captures;
    log_info("capture started (%u packets; 0 = until stopped)", req.count);
  }
  send_reply(fd, &reply, sizeof reply);
}

void Daemon::service_capture() {
  if (port_.capturing()) return;
  ctl::CaptureReply reply{0, 1, port_.captured()};
  send_reply(capture_client_, &reply, sizeof reply);
  capture_client_ = -1;
}

}  // namespace shunt
