#include "fd_table.hh"

#include <cstdlib>

namespace shunt::preload {

void FdTable::release_chunks() {
  for (auto& c : chunks_) free(c.exchange(nullptr, std::memory_order_acq_rel));
}

std::atomic<FdObject*>* FdTable::entry(int fd, bool create) {
  if (!in_range(fd)) return nullptr;
  auto& slot = chunks_[fd >> kChunkBits];
  std::atomic<FdObject*>* c = slot.load(std::memory_order_acquire);
  if (c == nullptr) {
    if (!create) return nullptr;
    // Zeroed memory is a valid array of null atomic pointers.
    auto* fresh = static_cast<std::atomic<FdObject*>*>(
        calloc(kChunkSize, sizeof(std::atomic<FdObject*>)));
    if (fresh == nullptr) return nullptr;
    if (slot.compare_exchange_strong(c, fresh, std::memory_order_acq_rel)) {
      c = fresh;
    } else {
      free(fresh);  // another thread won; c holds its chunk
    }
  }
  return &c[fd & (kChunkSize - 1)];
}

FdObject* FdTable::acquire(int fd) {
  std::atomic<FdObject*>* e = entry(fd, false);
  if (e == nullptr) return nullptr;
  for (;;) {
    FdObject* p = e->load(std::memory_order_acquire);
    if (p == nullptr) return nullptr;
    int32_t r = p->refs.load(std::memory_order_relaxed);
    bool got = false;
    while (r > 0) {
      if (p->refs.compare_exchange_weak(r, r + 1, std::memory_order_acq_rel)) {
        got = true;
        break;
      }
    }
    if (got) {
      if (e->load(std::memory_order_acquire) == p) return p;
      unref(p);  // recycled under us: look again
    } else if (e->load(std::memory_order_acquire) == p) {
      return nullptr;  // dying object still visible: treat as gone
    }
  }
}

bool FdTable::install(int fd, FdObject* obj, FdObject** previous) {
  std::atomic<FdObject*>* e = entry(fd, true);
  if (e == nullptr) return false;
  obj->refs.fetch_add(1, std::memory_order_relaxed);
  FdObject* old = e->exchange(obj, std::memory_order_acq_rel);
  if (previous != nullptr) {
    *previous = old;
  } else if (old != nullptr) {
    unref(old);
  }
  return true;
}

FdObject* FdTable::remove(int fd) {
  std::atomic<FdObject*>* e = entry(fd, false);
  if (e == nullptr) return nullptr;
  return e->exchange(nullptr, std::memory_order_acq_rel);
}

constinit FdTable g_fd_table;  // constant-initialised: no constructor runs at load

}  // namespace shunt::preload
