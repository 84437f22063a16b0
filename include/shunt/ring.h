// Single-producer single-consumer rings over RingIndices: fixed-size entries
// (command and completion queues) and bytes (per-socket rx/tx streams).
//
// Indices are free-running uint32_t; the slot of index i is i & (capacity - 1), so
// any index value, however corrupt, addresses memory inside the ring. A consumer
// that does not trust its producer checks `used <= capacity` (see *_sane).
#pragma once

#include <algorithm>
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

// ---- Byte rings ----

// A view of one byte stream. Both ends use it; each end calls only its own half.
class ByteRing {
 public:
  ByteRing() = default;
  ByteRing(RingIndices* idx, uint8_t* bytes, uint32_t capacity)
      : idx_(idx), bytes_(bytes), cap_(capacity) {}

  bool valid() const { return idx_ != nullptr; }
  uint32_t capacity() const { return cap_; }
  RingIndices* indices() const { return idx_; }
  uint8_t* bytes() const { return bytes_; }

  // Bytes between tail and head as seen by the consumer (acquire on head).
  uint32_t readable() const {
    return idx_->head.value.load(std::memory_order_acquire) -
           idx_->tail.value.load(std::memory_order_relaxed);
  }
  // Free space as seen by the producer (acquire on tail).
  uint32_t writable() const {
    uint32_t used = idx_->head.value.load(std::memory_order_relaxed) -
                    idx_->tail.value.load(std::memory_order_acquire);
    return used >= cap_ ? 0 : cap_ - used;
  }
  uint32_t head() const { return idx_->head.value.load(std::memory_order_acquire); }
  uint32_t tail() const { return idx_->tail.value.load(std::memory_order_acquire); }

  // Copies bytes [pos, pos+len) of the stream (absolute index) out, wrapping.
  void copy_out(uint32_t pos, uint8_t* dst, uint32_t len) const {
    uint32_t off = pos & (cap_ - 1);
    uint32_t first = std::min(len, cap_ - off);
    std::memcpy(dst, bytes_ + off, first);
    std::memcpy(dst + first, bytes_, len - first);
  }
  void copy_in(uint32_t pos, const uint8_t* src, uint32_t len) {
    uint32_t off = pos & (cap_ - 1);
    uint32_t first = std::min(len, cap_ - off);
    std::memcpy(bytes_ + off, src, first);
    std::memcpy(bytes_, src + first, len - first);
  }

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
    uint32_t avail = std::min(readable(), cap_);
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
  uint32_t cap_ = 0;
};

// ---- Ends of a byte ring for a side that does not trust the other ----
//
// The daemon's view of a socket's rings (docs/architecture.md, Trust boundary).
// Its own index (the rx head it produces, the tx tail it consumes) lives in the
// end, in the daemon's private memory, and is only ever stored to the shared line:
// an application that overwrites it cannot move it. The other side's index is
// loaded and checked on every use. More than `capacity` bytes between the two
// breaks the ring's invariant: the end counts it in *fault (its owner cuts that
// application off) and reads as an empty ring (consumer) or a full one (producer),
// so nothing outside the ring's bytes is ever touched. An end is a value: the
// engine's copy (in its connection record) is the one that counts.

inline uint32_t g_unwatched_ring_faults = 0;  // where ends nobody watches count faults

class ProducerEnd {
 public:
  ProducerEnd() = default;
  ProducerEnd(RingIndices* idx, uint8_t* bytes, uint32_t capacity, uint32_t head,
              uint32_t* fault = nullptr)
      : idx_(idx), bytes_(bytes), cap_(capacity), head_(head),
        fault_(fault ? fault : &g_unwatched_ring_faults) {}
  // Over a ring both of whose ends this process owns (engine staging, tests): the
  // head is read once, here.
  explicit ProducerEnd(const ByteRing& r, uint32_t* fault = nullptr)
      : ProducerEnd(r.indices(), r.bytes(), r.capacity(),
                    r.valid() ? r.indices()->head.value.load(std::memory_order_relaxed) : 0,
                    fault) {}

  bool valid() const { return idx_ != nullptr; }
  uint32_t capacity() const { return cap_; }
  const uint8_t* bytes() const { return bytes_; }
  uint32_t head() const { return head_; }
  // Bytes the consumer has not taken yet. Acquire on its tail: pairs with the
  // consumer's release store, made after it copied the bytes out.
  uint32_t used() const {
    uint32_t used = head_ - idx_->tail.value.load(std::memory_order_acquire);
    if (used > cap_) {
      ++*fault_;
      return cap_;
    }
    return used;
  }
  uint32_t tail() const { return head_ - used(); }
  uint32_t writable() const { return cap_ - used(); }
  void copy_in(uint32_t pos, const uint8_t* src, uint32_t len) {
    ByteRing(idx_, bytes_, cap_).copy_in(pos, src, len);
  }
  void copy_out(uint32_t pos, uint8_t* dst, uint32_t len) const {
    ByteRing(idx_, bytes_, cap_).copy_out(pos, dst, len);
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
  uint32_t cap_ = 0;
  uint32_t head_ = 0;
  uint32_t* fault_ = &g_unwatched_ring_faults;
};

class ConsumerEnd {
 public:
  ConsumerEnd() = default;
  ConsumerEnd(RingIndices* idx, uint8_t* bytes, uint32_t capacity, uint32_t tail,
              uint32_t* fault = nullptr)
      : idx_(idx), bytes_(bytes), cap_(capacity), tail_(tail),
        fault_(fault ? fault : &g_unwatched_ring_faults) {}
  explicit ConsumerEnd(const ByteRing& r, uint32_t* fault = nullptr)
      : ConsumerEnd(r.indices(), r.bytes(), r.capacity(),
                    r.valid() ? r.indices()->tail.value.load(std::memory_order_relaxed) : 0,
                    fault) {}

  bool valid() const { return idx_ != nullptr; }
  uint32_t capacity() const { return cap_; }
  const uint8_t* bytes() const { return bytes_; }
  uint32_t tail() const { return tail_; }
  // Bytes published and not consumed. Acquire on the producer's head: pairs with
  // its release store, made after it copied the bytes in.
  uint32_t readable() const {
    uint32_t n = idx_->head.value.load(std::memory_order_acquire) - tail_;
    if (n > cap_) {
      ++*fault_;
      return 0;
    }
    return n;
  }
  uint32_t head() const { return tail_ + readable(); }
  void copy_out(uint32_t pos, uint8_t* dst, uint32_t len) const {
    ByteRing(idx_, bytes_, cap_).copy_out(pos, dst, len);
  }
  // Gives n bytes back to the producer: release, after they were copied out.
  void consume(uint32_t n) {
    tail_ += n;
    idx_->tail.value.store(tail_, std::memory_order_release);
  }

 private:
  RingIndices* idx_ = nullptr;
  uint8_t* bytes_ = nullptr;
  uint32_t cap_ = 0;
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
