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

// ---- Datagram records over a ByteRing (abi.h "Datagram records") ----

enum class DgramFront : uint8_t { kEmpty, kOk, kCorrupt };

// Consumer: the header of the record `offset` bytes past tail (0: the next one).
// kCorrupt when the header claims more than the producer published.
inline DgramFront dgram_front(const ByteRing& r, DgramHeader* out, uint32_t offset = 0) {
  uint32_t avail = r.readable();
  if (avail > r.capacity()) return DgramFront::kCorrupt;
  if (avail <= offset || avail - offset < sizeof(DgramHeader)) return DgramFront::kEmpty;
  uint32_t tail = r.indices()->tail.value.load(std::memory_order_relaxed) + offset;
  r.copy_out(tail, reinterpret_cast<uint8_t*>(out), sizeof(DgramHeader));
  if (out->len > kMaxDatagram || dgram_record_size(out->len) > avail - offset)
    return DgramFront::kCorrupt;
  return DgramFront::kOk;
}

// Producer: appends one record from a contiguous payload; false (nothing written)
// when the ring has no room for it.
inline bool dgram_push(ByteRing& r, uint32_t ip, uint16_t port, const uint8_t* payload,
                       uint32_t len) {
  if (len > kMaxDatagram) return false;
  uint32_t size = dgram_record_size(len);
  if (r.writable() < size) return false;
  uint32_t head = r.indices()->head.value.load(std::memory_order_relaxed);
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
inline uint32_t dgram_pop(ByteRing& r, const DgramHeader& h, uint8_t* dst, uint32_t max) {
  uint32_t tail = r.indices()->tail.value.load(std::memory_order_relaxed);
  uint32_t n = h.len < max ? h.len : max;
  if (n > 0) r.copy_out(tail + uint32_t(sizeof(DgramHeader)), dst, n);
  r.consume(dgram_record_size(h.len));
  return h.len;
}

}  // namespace shunt::abi
