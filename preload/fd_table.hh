// fd → object table: which fds are ours (docs/architecture.md, Conventions:
// ownership by table lookup, never by fd number or by "try ours, fall back on EBADF").
//
// An array indexed by fd, in chunks of 4096 entries allocated on first use, up to
// 2^20 fds. Lookups are lock-free: two acquire loads and a CAS on the object's
// reference count.
//
// Lifetime. Each table entry holds one reference; each call in flight holds one
// (Ref). dup'ed fds are several entries holding the same object. When the last
// reference goes, the object's `destroy` runs (for a socket: kClose to the daemon).
// Objects come from type-stable pools and are never returned to malloc, so a lookup
// racing with close() increments a count in valid memory; it then re-checks that the
// entry still holds the object (a recycled object is detected and dropped).
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <vector>

namespace shunt::preload {

enum class FdKind : uint8_t { kSocket = 1, kEpoll = 2, kTest = 3 };

struct FdObject {
  explicit FdObject(FdKind k, void (*destroy_fn)(FdObject*)) : kind(k), destroy(destroy_fn) {}
  const FdKind kind;
  void (*const destroy)(FdObject*);  // runs when refs drops to 0
  std::atomic<int32_t> refs{0};
};

inline void unref(FdObject* obj) {
  if (obj->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) obj->destroy(obj);
}

// A counted reference for the duration of one call.
template <typename T>
class Ref {
 public:
  Ref() = default;
  explicit Ref(T* p) : p_(p) {}
  Ref(const Ref&) = delete;
  Ref& operator=(const Ref&) = delete;
  Ref(Ref&& o) noexcept : p_(o.p_) { o.p_ = nullptr; }
  Ref& operator=(Ref&& o) noexcept {
    if (this != &o) {
      reset();
      p_ = o.p_;
      o.p_ = nullptr;
    }
    return *this;
  }
  ~Ref() { reset(); }
  void reset() {
    if (p_ != nullptr) unref(p_);
    p_ = nullptr;
  }
  T* get() const { return p_; }
  T* operator->() const { return p_; }
  T& operator*() const { return *p_; }
  explicit operator bool() const { return p_ != nullptr; }
  T* release() {
    T* p = p_;
    p_ = nullptr;
    return p;
  }

 private:
  T* p_ = nullptr;
};

class FdTable {
 public:
  static constexpr int kChunkBits = 12;
  static constexpr int kChunkSize = 1 << kChunkBits;
  static constexpr int kMaxFds = 1 << 20;
  static constexpr int kChunks = kMaxFds / kChunkSize;

  constexpr FdTable() = default;
  FdTable(const FdTable&) = delete;
  FdTable& operator=(const FdTable&) = delete;
  // No destructor: the process-wide table must outlive exit handlers (other threads
  // may still make calls). Tests free a local table's chunks with release_chunks().
  void release_chunks();

  static bool in_range(int fd) { return fd >= 0 && fd < kMaxFds; }

  // The object at fd without taking a reference: only for "is it ours?" questions.
  FdObject* peek(int fd) const {
    if (!in_range(fd)) return nullptr;
    std::atomic<FdObject*>* c = chunks_[fd >> kChunkBits].load(std::memory_order_acquire);
    return c == nullptr ? nullptr : c[fd & (kChunkSize - 1)].load(std::memory_order_acquire);
  }
  // The object at fd with one reference, or null.
  FdObject* acquire(int fd);
  template <typename T>
  Ref<T> get(int fd, FdKind kind) {
    FdObject* o = acquire(fd);
    if (o != nullptr && o->kind != kind) {
      unref(o);
      o = nullptr;
    }
    return Ref<T>(static_cast<T*>(o));
  }

  // Stores obj at fd, taking one new reference on it. Returns the previous object
  // (its table reference now belongs to the caller), normally null. False (and no
  // reference taken) when fd is out of range or no memory.
  bool install(int fd, FdObject* obj, FdObject** previous);
  // Empties the entry; the returned object's table reference belongs to the caller.
  FdObject* remove(int fd);

  // The lowest fd >= from with an entry, or -1; empty chunks are skipped whole.
  int next_used(int from) const {
    for (int fd = from < 0 ? 0 : from; fd < kMaxFds;) {
      std::atomic<FdObject*>* chunk = chunks_[fd >> kChunkBits].load(std::memory_order_acquire);
      if (chunk == nullptr) {
        fd = ((fd >> kChunkBits) + 1) << kChunkBits;
        continue;
      }
      if (chunk[fd & (kChunkSize - 1)].load(std::memory_order_acquire) != nullptr) return fd;
      ++fd;
    }
    return -1;
  }

  // Calls f(fd, obj) for every entry (no references taken; single-threaded use, e.g.
  // in the fork child).
  template <typename F>
  void for_each(F&& f) const {
    for (int c = 0; c < kChunks; ++c) {
      std::atomic<FdObject*>* chunk = chunks_[c].load(std::memory_order_acquire);
      if (chunk == nullptr) continue;
      for (int i = 0; i < kChunkSize; ++i) {
        FdObject* o = chunk[i].load(std::memory_order_acquire);
        if (o != nullptr) f((c << kChunkBits) | i, o);
      }
    }
  }

 private:
  std::atomic<FdObject*>* entry(int fd, bool create);
  std::atomic<std::atomic<FdObject*>*> chunks_[kChunks] = {};
};

// The process-wide table.
// The process's table, inline: every pass-through call asks it first.
extern FdTable g_fd_table;
inline FdTable& fd_table() { return g_fd_table; }

// Type-stable storage: objects are recycled, never freed (see the header comment).
template <typename T>
class Pool {
 public:
  T* take() {
    std::lock_guard<std::mutex> g(mu_);
    if (free_.empty()) return nullptr;
    T* p = free_.back();
    free_.pop_back();
    return p;
  }
  void give(T* p) {
    std::lock_guard<std::mutex> g(mu_);
    free_.push_back(p);
  }
  std::mutex& mutex() { return mu_; }

 private:
  std::mutex mu_;
  std::vector<T*> free_;
};

// A global that is constant-initialised and never destroyed (other threads may
// still make calls while exit handlers run).
template <typename T>
union NoDestroy {
  constexpr NoDestroy() : value() {}
  ~NoDestroy() {}
  T value;
};

}  // namespace shunt::preload
