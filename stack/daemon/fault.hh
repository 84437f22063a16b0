// A seeded fault injector for frames at the device boundary (docs/architecture.md):
// drop, duplicate, corrupt, reorder and delay, in the spirit of smoltcp's
// FaultInjector. The kernel's netem is not available everywhere; this is.
//
// The core is a template over a frame handle `Buf` and an `Ops` policy, so the
// daemon runs it over rte_mbuf* and the unit tests over plain buffers, with no
// DPDK in either this header or the tests:
//
//   struct Ops {
//     Buf copy(Buf);                      // a fresh copy, or Buf{} when none is free
//     void free(Buf);                     // gives the frame back
//     std::span<uint8_t> bytes(Buf);      // the frame's bytes (corrupt flips one bit)
//   };
//
// One Injector per direction. push() takes ownership of a frame and calls
// emit(Buf) for every frame that leaves now (zero, one or more: a held frame can
// leave behind a later one); release() lets held frames whose time has come
// leave, and must be called regularly (the daemon calls it every loop turn), so
// nothing is held forever. No allocation after construction: held frames live
// in two fixed-size arrays.
//
// Order of the stages for each frame: drop, corrupt, duplicate, then each copy
// through the delay line (FIFO, `delay` µs, netem-like limit), then the reorder
// stage (a frame is held back until kReorderGapMax later frames at most have
// passed, or kReorderMaxHold µs, whichever comes first).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace shunt::fault {

using Time = uint64_t;  // µs, same clock as the engine's

struct Spec {
  double drop = 0;     // probability per frame
  double reorder = 0;  // probability per frame to be held back
  double dup = 0;      // probability per frame to be sent twice
  double corrupt = 0;  // probability per frame of one flipped bit
  uint32_t delay_us = 0;  // every frame held this long (delay=MS in SHUNT_FAULT)
  uint64_t seed = 1;
  bool rx = true;  // dir=rx|tx|both
  bool tx = true;

  bool active() const { return drop > 0 || reorder > 0 || dup > 0 || corrupt > 0 || delay_us > 0; }
};

// SHUNT_FAULT's text is parsed by parse_fault_spec (daemon/config.hh).

// Injector counters, per direction: X(field, "name", with "fault.rx_" or
// "fault.tx_" in front in shunt stat).
#define SHUNT_FAULT_COUNTERS(X)                                   \
  X(frames, "frames")        /* frames that entered the injector */ \
  X(dropped, "dropped")                                           \
  X(duplicated, "duplicated")                                     \
  X(dup_failed, "dup_failed")  /* duplicate wanted, no buffer */   \
  X(corrupted, "corrupted")                                       \
  X(reordered, "reordered")  /* held back by the reorder stage */ \
  X(delayed, "delayed")                                           \
  X(delay_overflow, "delay_overflow")  /* the delay line was full */

struct Counters {
#define SHUNT_X(field, name) uint64_t field = 0;
  SHUNT_FAULT_COUNTERS(SHUNT_X)
#undef SHUNT_X
};

// splitmix64: small, fast, good enough for fault decisions, and fully
// determined by the seed.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1).
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }
  bool chance(double p) { return p > 0 && uniform() < p; }
  uint32_t below(uint32_t n) { return uint32_t((next() >> 32) * n >> 32); }

 private:
  uint64_t s_;
};

inline constexpr uint32_t kReorderSlots = 32;       // frames held back at once
inline constexpr uint32_t kReorderGapMax = 3;       // later frames that overtake one
inline constexpr Time kReorderMaxHold = 1000;       // µs: released when traffic stops
inline constexpr uint32_t kDelayLimit = 1024;       // frames in the delay line (netem: 1000)

template <typename Buf, typename Ops>
class Injector {
 public:
  // `stream` separates the directions' random sequences under one seed.
  Injector(const Spec& spec, uint64_t stream, Ops ops)
      : spec_(spec),
        rng_(spec.seed * 0x100000001b3ull ^ (stream + 1) * 0x9e3779b97f4a7c15ull),
        ops_(ops),
        delay_(spec.delay_us > 0 ? kDelayLimit : 0) {}
  Injector(const Injector&) = delete;
  Injector& operator=(const Injector&) = delete;

  const Counters& counters() const { return ctr_; }
  const Spec& spec() const { return spec_; }
  uint32_t held() const { return held_count_ + delay_count_; }

  // Takes ownership of b; calls emit(Buf) for each frame that leaves now.
  template <typename Emit>
  void push(Buf b, Time now, Emit&& emit) {
    ++ctr_.frames;
    if (rng_.chance(spec_.drop)) {
      ++ctr_.dropped;
      ops_.free(b);
      return;
    }
    if (rng_.chance(spec_.corrupt)) {
      std::span<uint8_t> bytes = ops_.bytes(b);
      if (!bytes.empty()) {
        ++ctr_.corrupted;
        bytes[rng_.below(uint32_t(bytes.size()))] ^= uint8_t(1u << rng_.below(8));
      }
    }
    Buf copy{};
    bool dup = rng_.chance(spec_.dup);
    if (dup) {
      copy = ops_.copy(b);
      if (copy == Buf{}) {
        ++ctr_.dup_failed;
        dup = false;
      } else {
        ++ctr_.duplicated;
      }
    }
    release(now, emit);  // what is due leaves before what arrives now
    delay_stage(b, now, emit);
    if (dup) delay_stage(copy, now, emit);
  }

  // Lets held frames whose time has come leave.
  template <typename Emit>
  void release(Time now, Emit&& emit) {
    while (delay_count_ > 0 && delay_[delay_head_].due <= now) {
      Buf b = delay_[delay_head_].buf;
      delay_head_ = (delay_head_ + 1) % kDelayLimit;
      --delay_count_;
      reorder_stage(b, now, emit);
    }
    if (held_count_ == 0) return;
    for (uint32_t i = 0; i < kReorderSlots; ++i) {
      Held& h = held_[i];
      if (h.used && now - h.since >= kReorderMaxHold) leave_hold(i, emit);
    }
  }

  // Frees everything held (shutdown).
  void clear() {
    while (delay_count_ > 0) {
      ops_.free(delay_[delay_head_].buf);
      delay_head_ = (delay_head_ + 1) % kDelayLimit;
      --delay_count_;
    }
    for (Held& h : held_)
      if (h.used) {
        ops_.free(h.buf);
        h.used = false;
      }
    held_count_ = 0;
  }

 private:
  struct Delayed {
    Buf buf{};
    Time due = 0;
  };
  struct Held {
    Buf buf{};
    Time since = 0;
    uint32_t gap = 0;  // later frames still to pass before this one leaves
    bool used = false;
  };

  template <typename Emit>
  void delay_stage(Buf b, Time now, Emit& emit) {
    if (spec_.delay_us == 0) {
      reorder_stage(b, now, emit);
      return;
    }
    if (delay_count_ == kDelayLimit) {
      ++ctr_.delay_overflow;
      ops_.free(b);
      return;
    }
    ++ctr_.delayed;
    delay_[(delay_head_ + delay_count_) % kDelayLimit] = Delayed{b, now + spec_.delay_us};
    ++delay_count_;
  }

  template <typename Emit>
  void reorder_stage(Buf b, Time now, Emit& emit) {
    if (held_count_ < kReorderSlots && rng_.chance(spec_.reorder)) {
      for (uint32_t i = 0; i < kReorderSlots; ++i) {
        if (held_[i].used) continue;
        held_[i] = Held{b, now, 1 + rng_.below(kReorderGapMax), true};
        ++held_count_;
        ++ctr_.reordered;
        return;
      }
    }
    emit(b);
    // b overtook every frame held: each is one step nearer to leaving.
    if (held_count_ == 0) return;
    for (uint32_t i = 0; i < kReorderSlots; ++i)
      if (held_[i].used && --held_[i].gap == 0) leave_hold(i, emit);
  }

  template <typename Emit>
  void leave_hold(uint32_t i, Emit& emit) {
    held_[i].used = false;
    --held_count_;
    emit(held_[i].buf);
  }

  Spec spec_;
  Rng rng_;
  Ops ops_;
  Counters ctr_;
  Held held_[kReorderSlots] = {};
  uint32_t held_count_ = 0;
  std::vector<Delayed> delay_;  // ring of kDelayLimit, allocated once
  uint32_t delay_head_ = 0;
  uint32_t delay_count_ = 0;
};

}  // namespace shunt::fault
