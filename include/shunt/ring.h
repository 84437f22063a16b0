// Single-producer single-consumer rings over RingIndices: fixed-size entries
// (command and completion queues) and bytes (per-socket rx/tx streams).
//
// Indices are free-running uint32_t; the slot of index i is i & (capacity - 1)
// (byte rings: RingGeometry::offset), so any index value, however corrupt,
// addresses memory inside the ring. A consumer
// that does not trust its producer checks `used <= capacity` (see *_sane).
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>

#include "shunt/abi.h"

namespace shunt::abi {

// ---- Entry rings ----

template <typename T>
class EntryRing {
 public:
  EntryRing(RingIndices* idx, T* entries, uint32_t capacity)
      : idx_(idx), entries_(entries), mask_(capacity - 1) {}

  // Producer side.
  bool push(const T& entry) {
    uint32_t head = idx_->head.value.load(std::memory_order_relaxed);
    uint32_t tail = idx_->tail.value.load(std::memory_order_acquire);  // pairs with pop's release
    if (head - tail > mask_) return false;
    entries_[head & mask_] = entry;
    idx_->head.value.store(head + 1, std::memory_order_release);  // pairs with pop's acquire
    return true;
  }

  // Consumer side. `used` is clamped so a corrupt head cannot make us loop long.
  uint32_t available() const {
    uint32_t head = idx_->head.value.load(std::memory_order_acquire);
    uint32_t tail = idx_->tail.value.load(std::memory_order_relaxed);
    return head - tail;
  }
  bool sane() const { return available() <= mask_ + 1; }
  bool pop(T* out) {
    uint32_t tail = idx_->tail.value.load(std::memory_order_relaxed);
    uint32_t head = idx_->head.value.load(std::memory_order_acquire);  // pairs with push's release
    if (head == tail) return false;
    *out = entries_[tail & mask_];
    idx_->tail.value.store(tail + 1, std::memory_order_release);  // pairs with push's acquire
    return true;
  }

 private:
  RingIndices* idx_;
  T* entries_;
  uint32_t mask_;
};

// ---- Byte ring geometry ----
//
// A byte ring's capacity is a power of two no larger than the bytes reserved for
// it, and it can grow while bytes are in the ring (docs/abi.md, Ring geometry).
// Stream indices before `switch_at` keep the old capacity, indices from it on use
// the new one. switch_at is a multiple of the new capacity at least one old
// capacity past the consumer's tail when the ring grew, so until the consumer
// passes it the ring holds at most the old capacity: the old bytes end at the top
// of the old ring, the new ones start at offset 0, and the two never overlap. Once
// the tail passes switch_at the owner settles the geometry (old = new) and may
// grow it again. Every later geometry maps every index a reader can still touch as
// the earlier one did, so a side that loads a stale word reads the right bytes.
inline constexpr uint8_t kMinRingShift = 12;  // 4 KiB

inline uint8_t ring_shift(uint32_t capacity) {  // log2 of a power of two
  return uint8_t(__builtin_ctz(capacity));
}

struct RingGeometry {
  uint32_t switch_at = 0;
  uint8_t old_shift = 0;
  uint8_t new_shift = 0;

  static RingGeometry fixed(uint32_t capacity) {
    uint8_t s = ring_shift(capacity);
    return {0, s, s};
  }
  uint64_t pack() const {
    return uint64_t{switch_at} | uint64_t{old_shift} << 32 | uint64_t{new_shift} << 40;
  }
  // From a word the other side wrote: 0 is the whole reserved ring; shifts are
  // clamped so that every offset stays inside the reserved bytes.
  static RingGeometry unpack(uint64_t w, uint8_t reserved_shift) {
    if (w == 0) return {0, reserved_shift, reserved_shift};
    auto clamp = [&](uint64_t v) {
      return uint8_t(std::clamp<uint64_t>(v & 0xff, std::min(kMinRingShift, reserved_shift), reserved_shift));
    };
    return {uint32_t(w), clamp(w >> 32), clamp(w >> 40)};
  }

  bool settled() const { return old_shift == new_shift; }
  bool before_switch(uint32_t pos) const { return int32_t(pos - switch_at) < 0; }
  uint8_t shift_at(uint32_t pos) const { return before_switch(pos) ? old_shift : new_shift; }
  // Bytes the ring holds at most while its consumer is at `tail`.
  uint32_t capacity_at(uint32_t tail) const { return 1u << shift_at(tail); }
  uint32_t largest() const { return 1u << std::max(old_shift, new_shift); }
  uint32_t offset(uint32_t pos) const { return pos & ((1u << shift_at(pos)) - 1); }
  // Bytes from pos, up to len, that lie one after the other in memory.
  uint32_t run(uint32_t pos, uint32_t len) const {
    uint32_t n = std::min(len, (1u << shift_at(pos)) - offset(pos));
    return before_switch(pos) ? std::min(n, switch_at - pos) : n;
  }
  // This geometry grown to 2^shift with the consumer at `tail` (settled only).
  RingGeometry grown(uint32_t tail, uint8_t shift) const {
    uint32_t cap = 1u << new_shift, mask = (1u << shift) - 1;
    return {(tail + cap + mask) & ~mask, new_shift, shift};
  }
  // Settled once the consumer is past the switch.
  RingGeometry settled_at(uint32_t tail) const {
    return before_switch(tail) ? *this : RingGeometry{switch_at, new_shift, new_shift};
  }
};

inline void ring_copy_out(const uint8_t* bytes, const RingGeometry& g, uint32_t pos, uint8_t* dst,
                          uint32_t len) {
  while (len > 0) {
    uint32_t n = g.run(pos, len);
    std::memcpy(dst, bytes + g.offset(pos), n);
    pos += n, dst += n, len -= n;
  }
}
inline void ring_copy_in(uint8_t* bytes, const RingGeometry& g, uint32_t pos, const uint8_t* src,
                         uint32_t len) {
  while (len > 0) {
    uint32_t n = g.run(pos, len);
    std::memcpy(bytes + g.offset(pos), src, n);
    pos += n, src += n, len -= n;
  }
}

// The memory of stream index pos; *len is cut to the bytes that follow it there.
inline uint8_t* ring_span(uint8_t* bytes, const RingGeometry& g, uint32_t pos, uint32_t* len) {
  *len = g.run(pos, *len);
  return bytes + g.offset(pos);
}

// ---- Byte rings ----

// A view of one byte stream. Both ends use it; each end calls only its own half.
// The application's view reads geometry and limit from its slot (the daemon
// writes them); a ring without them (tests, engine staging) is fixed at `reserved`.
class ByteRing {
 public:
  ByteRing() = default;
  ByteRing(RingIndices* idx, uint8_t* bytes, uint32_t reserved,
           const std::atomic<uint64_t>* geometry = nullptr, const std::atomic<uint32_t>* limit = nullptr)
      : idx_(idx), bytes_(bytes), reserved_(reserved), geometry_(geometry), limit_(limit) {}

  bool valid() const { return idx_ != nullptr; }
  uint32_t reserved() const { return reserved_; }
  RingIndices* indices() const { return idx_; }
  uint8_t* bytes() const { return bytes_; }
  RingGeometry geometry() const {
    if (geometry_ == nullptr) return RingGeometry::fixed(reserved_);
    return RingGeometry::unpack(geometry_->load(std::memory_order_acquire), ring_shift(reserved_));
  }
  // Bytes the ring may hold now: its capacity at the consumer's tail, or less
  // when the daemon set a limit (SO_RCVBUF/SO_SNDBUF).
  uint32_t capacity() const {
    if (!valid()) return 0;
    uint32_t cap = geometry().capacity_at(tail());
    uint32_t lim = limit_ != nullptr ? limit_->load(std::memory_order_relaxed) : 0;
    return lim != 0 && lim < cap ? lim : cap;
  }

  // Bytes between tail and head as seen by the consumer (acquire on head).
  uint32_t readable() const {
    return idx_->head.value.load(std::memory_order_acquire) -
           idx_->tail.value.load(std::memory_order_relaxed);
  }
  // Free space as seen by the producer (acquire on tail).
  uint32_t writable() const {
    uint32_t used = idx_->head.value.load(std::memory_order_relaxed) -
                    idx_->tail.value.load(std::memory_order_acquire);
    uint32_t cap = capacity();
    return used >= cap ? 0 : cap - used;
  }
  uint32_t head() const { return idx_->head.value.load(std::memory_order_acquire); }
  uint32_t tail() const { return idx_->tail.value.load(std::memory_order_acquire); }

  // Copies bytes [pos, pos+len) of the stream (absolute index) out, wrapping.
  void copy_out(uint32_t pos, uint8_t* dst, uint32_t len) const {
    ring_copy_out(bytes_, geometry(), pos, dst, len);
  }
  void copy_in(uint32_t pos, const uint8_t* src, uint32_t len) {
    ring_copy_in(bytes_, geometry(), pos, src, len);
  }
  uint8_t* span(uint32_t pos, uint32_t* len) const { return ring_span(bytes_, geometry(), pos, len); }

  // Producer: append up to len bytes; returns how many.
  uint32_t write(const void* src, uint32_t len) {
    uint32_t n = std::min(len, writable());
    uint32_t head = idx_->head.value.load(std::memory_order_relaxed);
    copy_in(head, static_cast<const uint8_t*>(src), n);
    idx_->head.value.store(head + n, std::memory_order_release);
    return n;
  }
  // Consumer: copy up to len bytes out, consuming them unless peek.
  uint32_t read(void* dst, uint32_t len, bool peek = false) {
    uint32_t avail = std::min(readable(), geometry().largest());
    uint32_t n = std::min(len, avail);
    uint32_t tail = idx_->tail.value.load(std::memory_order_relaxed);
    copy_out(tail, static_cast<uint8_t*>(dst), n);
    if (!peek) idx_->tail.value.store(tail + n, std::memory_order_release);
    return n;
  }
  void consume(uint32_t n) {
    idx_->tail.value.store(idx_->tail.value.load(std::memory_order_relaxed) + n,
                           std::memory_order_release);
  }
  void produce(uint32_t n) {
    idx_->head.value.store(idx_->head.value.load(std::memory_order_relaxed) + n,
                           std::memory_order_release);
  }

 private:
  RingIndices* idx_ = nullptr;
  uint8_t* bytes_ = nullptr;
  uint32_t reserved_ = 0;
  const std::atomic<uint64_t>* geometry_ = nullptr;
  const std::atomic<uint32_t>* limit_ = nullptr;
};

// ---- Ends of a byte ring for a side that does not trust the other ----
//
// The daemon's view of a socket's rings (docs/architecture.md, Trust boundary).
// Its own index (the rx head it produces, the tx tail it consumes) lives in the
// end, in the daemon's private memory, and is only ever stored to the shared line:
// an application that overwrites it cannot move it. The other side's index is
// loaded and checked on every use. More than the ring's capacity between the two
// breaks the ring's invariant: the end counts it in *fault (its owner cuts that
// application off) and reads as an empty ring (consumer) or a full one (producer),
// so nothing outside the ring's bytes is ever touched. An end is a value: the
// engine's copy (in its connection record) is the one that counts.
//
// The daemon owns both rings' geometry and limit (RingShape): it keeps them here
// and only stores them to the slot.

inline uint32_t g_unwatched_ring_faults = 0;  // where ends nobody watches count faults

// A ring's geometry and limit as its owner keeps them, and where it publishes them.
class RingShape {
 public:
  RingShape() = default;
  RingShape(uint32_t reserved, uint32_t capacity, std::atomic<uint64_t>* geometry_word,
            std::atomic<uint32_t>* limit_word)
      : geometry_(RingGeometry::fixed(capacity)), limit_(capacity),
        reserved_shift_(ring_shift(reserved)), geometry_word_(geometry_word), limit_word_(limit_word) {
    publish();
  }
  explicit RingShape(uint32_t capacity) : RingShape(capacity, capacity, nullptr, nullptr) {}

  const RingGeometry& geometry() const { return geometry_; }
  uint32_t reserved() const { return 1u << reserved_shift_; }
  uint32_t limit() const { return limit_; }
  // Bytes the ring may hold with its consumer at `tail`.
  uint32_t capacity_at(uint32_t tail) const { return std::min(limit_, geometry_.capacity_at(tail)); }

  // A new limit, at most the reserved bytes; the ring grows towards it as soon as
  // its geometry allows (now, or in a later update()). Returns the limit kept.
  uint32_t set_limit(uint32_t bytes, uint32_t tail) {
    limit_ = std::clamp(bytes, 1u, reserved());
    update(tail);
    return limit_;
  }
  // Settles a finished switch and grows when the limit is beyond the capacity.
  void update(uint32_t tail) {
    RingGeometry g = geometry_.settled_at(tail);
    if (g.settled() && limit_ > g.capacity_at(tail)) {
      uint8_t want = uint8_t(32 - __builtin_clz(limit_ - 1));  // log2, rounded up
      g = g.grown(tail, std::min(want, reserved_shift_));
    }
    bool changed = g.pack() != geometry_.pack();
    geometry_ = g;
    if (changed) publish();
    else if (limit_word_ != nullptr) limit_word_->store(limit_, std::memory_order_relaxed);
  }

 private:
  void publish() {
    // Release: stored before any byte at or past switch_at is published (rx) or
    // before the tail that lets the producer reach it (tx).
    if (geometry_word_ != nullptr) geometry_word_->store(geometry_.pack(), std::memory_order_release);
    if (limit_word_ != nullptr) limit_word_->store(limit_, std::memory_order_relaxed);
  }

  RingGeometry geometry_{};
  uint32_t limit_ = 0;
  uint8_t reserved_shift_ = 0;
  std::atomic<uint64_t>* geometry_word_ = nullptr;
  std::atomic<uint32_t>* limit_word_ = nullptr;
};

class ProducerEnd {
 public:
  ProducerEnd() = default;
  ProducerEnd(RingIndices* idx, uint8_t* bytes, RingShape shape, uint32_t head,
              uint32_t* fault = nullptr)
      : idx_(idx), bytes_(bytes), shape_(shape), head_(head),
        fault_(fault ? fault : &g_unwatched_ring_faults) {}
  // Over a ring both of whose ends this process owns (engine staging, tests): the
  // head is read once, here; the ring keeps its size.
  explicit ProducerEnd(const ByteRing& r, uint32_t* fault = nullptr)
      : ProducerEnd(r.indices(), r.bytes(), RingShape(r.reserved()),
                    r.valid() ? r.indices()->head.value.load(std::memory_order_relaxed) : 0,
                    fault) {}

  bool valid() const { return idx_ != nullptr; }
  uint32_t capacity() const { return shape_.capacity_at(tail()); }
  const RingShape& shape() const { return shape_; }
  uint32_t head() const { return head_; }
  // Bytes the consumer has not taken yet. Acquire on its tail: pairs with the
  // consumer's release store, made after it copied the bytes out.
  uint32_t used() const {
    uint32_t used = head_ - idx_->tail.value.load(std::memory_order_acquire);
    uint32_t most = shape_.geometry().largest();
    if (used > most) {
      ++*fault_;
      return most;
    }
    return used;
  }
  uint32_t tail() const { return head_ - used(); }
  uint32_t writable() const {
    uint32_t u = used(), cap = shape_.capacity_at(head_ - u);
    return u >= cap ? 0 : cap - u;
  }
  uint32_t set_limit(uint32_t bytes) { return shape_.set_limit(bytes, tail()); }
  // Settles a switch the consumer has passed (and grows on, if the limit asks).
  void refresh_shape() {
    if (!shape_.geometry().settled()) shape_.update(tail());
  }
  void copy_in(uint32_t pos, const uint8_t* src, uint32_t len) {
    ring_copy_in(bytes_, shape_.geometry(), pos, src, len);
  }
  void copy_out(uint32_t pos, uint8_t* dst, uint32_t len) const {
    ring_copy_out(bytes_, shape_.geometry(), pos, dst, len);
  }
  const uint8_t* span(uint32_t pos, uint32_t* len) const {
    return ring_span(bytes_, shape_.geometry(), pos, len);
  }
  // Makes n more bytes (already copied in past the head) visible: release, so the
  // consumer that sees the head sees the bytes.
  void produce(uint32_t n) {
    head_ += n;
    idx_->head.value.store(head_, std::memory_order_release);
  }
  uint32_t write(const void* src, uint32_t len) {
    uint32_t n = std::min(len, writable());
    copy_in(head_, static_cast<const uint8_t*>(src), n);
    produce(n);
    return n;
  }

 private:
  RingIndices* idx_ = nullptr;
  uint8_t* bytes_ = nullptr;
  RingShape shape_;
  uint32_t head_ = 0;
  uint32_t* fault_ = &g_unwatched_ring_faults;
};

class ConsumerEnd {
 public:
  ConsumerEnd() = default;
  ConsumerEnd(RingIndices* idx, uint8_t* bytes, RingShape shape, uint32_t tail,
              uint32_t* fault = nullptr)
      : idx_(idx), bytes_(bytes), shape_(shape), tail_(tail),
        fault_(fault ? fault : &g_unwatched_ring_faults) {}
  explicit ConsumerEnd(const ByteRing& r, uint32_t* fault = nullptr)
      : ConsumerEnd(r.indices(), r.bytes(), RingShape(r.reserved()),
                    r.valid() ? r.indices()->tail.value.load(std::memory_order_relaxed) : 0,
                    fault) {}

  bool valid() const { return idx_ != nullptr; }
  uint32_t capacity() const { return shape_.capacity_at(tail_); }
  const RingShape& shape() const { return shape_; }
  uint32_t tail() const { return tail_; }
  // Bytes published and not consumed. Acquire on the producer's head: pairs with
  // its release store, made after it copied the bytes in. (The limit binds the
  // producer's own view; only the capacity is the ring's invariant.)
  uint32_t readable() const {
    uint32_t n = idx_->head.value.load(std::memory_order_acquire) - tail_;
    if (n > shape_.geometry().capacity_at(tail_)) {
      ++*fault_;
      return 0;
    }
    return n;
  }
  uint32_t head() const { return tail_ + readable(); }
  uint32_t set_limit(uint32_t bytes) { return shape_.set_limit(bytes, tail_); }
  void copy_out(uint32_t pos, uint8_t* dst, uint32_t len) const {
    ring_copy_out(bytes_, shape_.geometry(), pos, dst, len);
  }
  const uint8_t* span(uint32_t pos, uint32_t* len) const {
    return ring_span(bytes_, shape_.geometry(), pos, len);
  }
  // Gives n bytes back to the producer: release, after they were copied out.
  // Past a switch, the geometry settles first: the producer that sees this tail
  // sees the settled geometry.
  void consume(uint32_t n) {
    tail_ += n;
    if (!shape_.geometry().settled()) shape_.update(tail_);
    idx_->tail.value.store(tail_, std::memory_order_release);
  }

 private:
  RingIndices* idx_ = nullptr;
  uint8_t* bytes_ = nullptr;
  RingShape shape_;
  uint32_t tail_ = 0;
  uint32_t* fault_ = &g_unwatched_ring_faults;
};

// ---- Datagram records over a ByteRing (abi.h "Datagram records") ----

enum class DgramFront : uint8_t { kEmpty, kOk, kCorrupt };

// The helpers take a ByteRing (the application's side) or a ConsumerEnd /
// ProducerEnd (the daemon's).

// Consumer: the header of the record `offset` bytes past tail (0: the next one).
// kCorrupt when the header claims more than the producer published.
template <typename Ring>
DgramFront dgram_front(const Ring& r, DgramHeader* out, uint32_t offset = 0) {
  uint32_t avail = r.readable();
  if (avail > r.capacity()) return DgramFront::kCorrupt;
  if (avail <= offset || avail - offset < sizeof(DgramHeader)) return DgramFront::kEmpty;
  uint32_t tail = r.tail() + offset;
  r.copy_out(tail, reinterpret_cast<uint8_t*>(out), sizeof(DgramHeader));
  if (out->len > kMaxDatagram || dgram_record_size(out->len) > avail - offset)
    return DgramFront::kCorrupt;
  return DgramFront::kOk;
}

// Producer: appends one record from a contiguous payload; false (nothing written)
// when the ring has no room for it.
template <typename Ring>
bool dgram_push(Ring& r, uint32_t ip, uint16_t port, const uint8_t* payload, uint32_t len) {
  if (len > kMaxDatagram) return false;
  uint32_t size = dgram_record_size(len);
  if (r.writable() < size) return false;
  uint32_t head = r.head();
  DgramHeader h{uint16_t(len), port, ip};
  r.copy_in(head, reinterpret_cast<const uint8_t*>(&h), sizeof h);
  if (len > 0) r.copy_in(head + sizeof h, payload, len);
  static constexpr uint8_t kPad[4] = {};
  if (size > sizeof h + len) r.copy_in(head + sizeof h + len, kPad, size - uint32_t(sizeof h) - len);
  r.produce(size);  // release: the consumer sees the whole record first
  return true;
}

// Consumer: copies the next record's payload (up to `max` bytes) out; consumes the
// record. Returns the payload length (which may exceed `max`: truncated).
template <typename Ring>
uint32_t dgram_pop(Ring& r, const DgramHeader& h, uint8_t* dst, uint32_t max) {
  uint32_t tail = r.tail();
  uint32_t n = h.len < max ? h.len : max;
  if (n > 0) r.copy_out(tail + uint32_t(sizeof(DgramHeader)), dst, n);
  r.consume(dgram_record_size(h.len));
  return h.len;
}

}  // namespace shunt::abi
