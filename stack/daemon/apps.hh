// The applications attached to shuntd: their regions, doorbells, credentials and
// slot tables (docs/architecture.md "Applications and sockets").
//
// Dependencies go one way: the socket table (sockets.hh) hands out and frees
// slots here; this registry never calls the socket table. An application is
// `active` while its control connection is up; its region stays mapped (`in_use`)
// until the last of its slots is freed, because a closed connection may still be
// sending what the application wrote (a zombie slot), as the kernel keeps a
// closed socket's send queue.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "daemon/counters.hh"
#include "daemon/region.hh"
#include "shunt/abi.h"

namespace shunt {

inline constexpr uint32_t kNone = ~0u;
inline constexpr std::array<int, abi::kWakeCells> kNoBells = [] {
  std::array<int, abi::kWakeCells> a{};
  a.fill(-1);
  return a;
}();

struct Credentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

struct SlotInfo {
  uint32_t socket = kNone;  // SocketTable index
  bool used = false;
  bool zombie = false;      // closed by the application; the engine still drains it
  bool touched = false;     // in App::touched
};

struct App {
  bool active = false;  // attached and alive
  bool in_use = false;  // region mapped (alive, or zombies remain)
  bool dirty = false;   // completions or slot changes since the last doorbell
  int ctl_fd = -1;
  int app_doorbell = -1;     // daemon -> app eventfd: threads without a wake cell
  int daemon_doorbell = -1;  // app -> daemon eventfd
  // Each thread's own bell (ctl::kWakeCell), -1 until it registers one; and the
  // cells to wake at the next doorbell round (docs/abi.md, Wake cells).
  std::array<int, abi::kWakeCells> cell_bells = kNoBells;
  std::array<uint64_t, abi::kWakeCells> cell_tokens{};  // what each bell came with
  // Cells woken for a connection (EPOLLEXCLUSIVE), with their sleep_seq then:
  // not picked again before they have slept again.
  uint64_t exclusive_woken = 0;
  std::array<uint32_t, abi::kWakeCells> exclusive_seq{};
  uint64_t wake = 0;
  // Slots changed since the last doorbell round, each once (SlotInfo::touched):
  // their wake_cells are read after the round's fence, never before.
  std::vector<uint32_t> touched;
  Credentials cred;
  std::string comm;          // /proc/PID/comm at attach
  uint64_t attached_at = 0;  // µs, the daemon's clock
  AppRegion region;
  std::vector<SlotInfo> slots;
  std::vector<uint32_t> free_slots;
  uint32_t used_slots = 0;
  uint32_t zombies = 0;
  uint64_t commands = 0;
};

class AppRegistry {
 public:
  AppRegistry(uint32_t max_apps, const abi::Layout& layout, uint32_t initial_ring);

  const abi::Layout& layout() const { return layout_; }
  uint32_t capacity() const { return uint32_t(apps_.size()); }
  App& app(uint32_t id) { return apps_[id]; }
  const App& app(uint32_t id) const { return apps_[id]; }
  // The attached applications, in attach order: what the loop polls.
  const std::vector<uint32_t>& active() const { return active_; }
  // Completions or slot changes for `id` since its last doorbell. An application
  // that is gone can still be marked while its region is in use: a fork child
  // reading a connection's rings in its exited parent's region waits on the
  // parent's doorbell.
  // `cells`: the wake cells that wait for the change (a completion on pair q: q's).
  void mark_dirty(uint32_t id, uint64_t cells) {
    apps_[id].wake |= cells;
    if (!apps_[id].dirty) {
      apps_[id].dirty = true;
      dirty_.push_back(id);
    }
  }
  // A change in `slot` of `id`: the cells that watch it are woken.
  void mark_slot_dirty(uint32_t id, uint32_t slot) {
    App& a = apps_[id];
    // A bound, not a fallback: slots come from the socket table's holders, and an
    // application released meanwhile has no slots left to mark.
    if (slot < a.slots.size() && !a.slots[slot].touched) {
      a.slots[slot].touched = true;
      a.touched.push_back(slot);  // reserved for every slot at attach: no growth here
    }
    mark_dirty(id, 0);
  }
  // The marked ones, each once (an id reused since it was marked may appear
  // with its flag clear: skip it), then the list empties.
  template <typename F>
  void take_dirty(F&& f) {
    for (uint32_t id : dirty_) {
      if (!apps_[id].dirty) continue;
      apps_[id].dirty = false;
      f(id);
    }
    dirty_.clear();
  }
  uint32_t regions_in_use() const;
  // Takes `fd` (an eventfd the application sent) as the bell of its wake cell
  // `cell`, good while the cell's queue pair holds `token`. False, leaving fd to
  // the caller, when the cell or the fd is not one.
  bool set_cell_bell(uint32_t id, uint32_t cell, int fd, uint64_t token);

  // A new application: a region (sealed memfd) and two doorbells. Returns its id,
  // or kNone with *error (-EUSERS when every region is in use).
  uint32_t attach(int ctl_fd, const Credentials& cred, uint32_t nic_ip, uint32_t prefix_len,
                  uint32_t gateway, uint64_t now, int* error);
  // The application is gone (or cut off): it stops being polled. The caller has
  // closed its sockets first; the region goes once no slot is used.
  void deactivate(uint32_t id);

  // ---- Slots ----
  // A slot of `id` that commands may name: handed out and not closed.
  bool valid_slot(uint32_t id, uint32_t slot) const {
    const App& a = apps_[id];
    return a.in_use && slot < a.slots.size() && a.slots[slot].used && !a.slots[slot].zombie;
  }
  // A slot for `socket`, or kNone when the application has none left.
  uint32_t alloc_slot(uint32_t id, uint32_t socket);
  // Back to the application; if it is gone and this was its last slot, its region
  // is released.
  void free_slot(uint32_t id, uint32_t slot);
  void make_zombie(uint32_t id, uint32_t slot);

 private:
  void release(uint32_t id);

  abi::Layout layout_;
  uint32_t initial_ring_;
  std::vector<App> apps_;
  std::vector<uint32_t> active_;
  std::vector<uint32_t> dirty_;
};

}  // namespace shunt
