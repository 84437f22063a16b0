#include "daemon/apps.hh"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "daemon/log.hh"

namespace shunt {

namespace {
std::string read_comm(pid_t pid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/comm", int(pid));
  std::string comm;
  if (FILE* f = std::fopen(path, "r")) {
    char buf[64] = {};
    if (std::fgets(buf, sizeof buf, f) != nullptr) comm = buf;
    std::fclose(f);
  }
  while (!comm.empty() && (comm.back() == '\n' || comm.back() == ' ')) comm.pop_back();
  return comm.empty() ? "?" : comm;
}
}  // namespace

AppRegistry::AppRegistry(uint32_t max_apps, const abi::Layout& layout, uint32_t initial_ring)
    : layout_(layout), initial_ring_(initial_ring), apps_(max_apps) {
  active_.reserve(max_apps);
  dirty_.reserve(2 * size_t(max_apps));  // each id once, plus a reused id's stale entry: no growth in the loop
}

uint32_t AppRegistry::regions_in_use() const {
  uint32_t n = 0;
  for (const App& a : apps_) n += a.in_use;
  return n;
}

uint32_t AppRegistry::attach(int ctl_fd, const Credentials& cred, uint32_t nic_ip,
                             uint32_t prefix_len, uint32_t gateway, uint64_t now, int* error) {
  uint32_t id = kNone;
  for (uint32_t a = 0; a < apps_.size() && id == kNone; ++a)
    if (!apps_[a].in_use) id = a;
  if (id == kNone) {
    *error = -EUSERS;
    return kNone;
  }
  App& app = apps_[id];
  std::string why;
  if (!app.region.create(layout_, initial_ring_, id, nic_ip, prefix_len, gateway, &why)) {
    log_error("attach of pid %d: %s", int(cred.pid), why.c_str());
    *error = -ENOMEM;
    return kNone;
  }
  app.cell_bells = kNoBells;
  app.wake = 0;
  app.exclusive_woken = 0;
  app.app_doorbell = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  app.daemon_doorbell = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (app.app_doorbell < 0 || app.daemon_doorbell < 0) {
    *error = -errno;
    release(id);
    return kNone;
  }
  app.slots.assign(layout_.slot_count, SlotInfo{});
  app.touched.clear();
  app.touched.reserve(layout_.slot_count);
  app.free_slots.clear();
  for (uint32_t s = layout_.slot_count; s-- > 0;) app.free_slots.push_back(s);
  app.used_slots = app.zombies = 0;
  app.ctl_fd = ctl_fd;
  app.cred = cred;
  app.comm = read_comm(cred.pid);
  app.attached_at = now;
  app.commands = 0;
  app.dirty = false;
  app.active = app.in_use = true;
  active_.push_back(id);
  return id;
}

bool AppRegistry::set_cell_bell(uint32_t id, uint32_t cell, int fd, uint64_t token) {
  App& app = apps_[id];
  // The daemon writes to it from its loop: only an eventfd, never one that blocks
  // (a pipe that fills up, a socket) or one that is somewhere else (a file).
  char path[64], target[64] = {};
  std::snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(path, target, sizeof target - 1);
  if (!app.active || cell >= abi::kWakeCells || cell >= layout_.queue_pair_count || n <= 0 ||
      std::strcmp(target, "anon_inode:[eventfd]") != 0)
    return false;
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) return false;
  if (app.cell_bells[cell] >= 0) close(app.cell_bells[cell]);  // a new thread holds the cell
  app.cell_bells[cell] = fd;
  app.cell_tokens[cell] = token;
  return true;
}

void AppRegistry::deactivate(uint32_t id) {
  App& app = apps_[id];
  if (!app.active) return;
  app.active = false;
  active_.erase(std::find(active_.begin(), active_.end(), id));
  if (app.used_slots == 0) release(id);
}

uint32_t AppRegistry::alloc_slot(uint32_t id, uint32_t socket) {
  App& app = apps_[id];
  if (!app.active || app.free_slots.empty()) return kNone;
  uint32_t slot = app.free_slots.back();
  app.free_slots.pop_back();
  app.slots[slot] = SlotInfo{socket, true, false, app.slots[slot].touched};  // still listed if so
  ++app.used_slots;
  return slot;
}

void AppRegistry::free_slot(uint32_t id, uint32_t slot) {
  App& app = apps_[id];
  if (!app.in_use || slot >= app.slots.size()) return;
  SlotInfo& si = app.slots[slot];
  if (!si.used) return;
  if (si.zombie) --app.zombies;
  si = SlotInfo{.touched = si.touched};  // still listed in app.touched if so
  --app.used_slots;
  if (app.active) {
    app.region.release_rings(slot);
    app.region.set_state(slot, abi::SlotState::kFree);
    app.free_slots.push_back(slot);
  } else if (app.used_slots == 0) {
    release(id);
  }
}

void AppRegistry::make_zombie(uint32_t id, uint32_t slot) {
  SlotInfo& si = apps_[id].slots[slot];
  if (!si.used || si.zombie) return;
  si.zombie = true;
  ++apps_[id].zombies;
}

void AppRegistry::release(uint32_t id) {
  App& app = apps_[id];
  app.region.destroy();
  for (int* fd : {&app.app_doorbell, &app.daemon_doorbell, &app.ctl_fd})
    if (*fd >= 0) {
      close(*fd);
      *fd = -1;
    }
  for (int& fd : app.cell_bells)
    if (fd >= 0) {
      close(fd);
      fd = -1;
    }
  app.in_use = app.active = false;
  app.slots.clear();
  app.touched.clear();
  app.free_slots.clear();
  app.used_slots = app.zombies = 0;
}

}  // namespace shunt
