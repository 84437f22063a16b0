// IPv4 fragment reassembly (RFC 791 section 3.2, RFC 815's idea of tracking what
// arrived), bounded in memory and in time:
//
// - a fixed number of contexts (datagrams being rebuilt), each with one 64 KiB
//   buffer, allocated once on the first fragment: 64 contexts = 4 MiB, Linux's
//   ipfrag_high_thresh. When all are busy the oldest is evicted (Linux evicts too
//   when over its threshold), counted as kIpFragEvicted;
// - at most kMaxFragments fragments per datagram (a 65 535-byte datagram needs 45
//   at MTU 1500, 118 at the IPv4 minimum of 576); more is kIpFragTooMany;
// - a context lives at most `timeout` (Linux's ipfrag_time, 30 s) after its first
//   fragment. Expiry is lazy: every add() scans the contexts it looks through
//   anyway, so a stale context never completes and its memory is reused. Linux
//   sends ICMP time exceeded (code 1) when a datagram whose first fragment came
//   expires (RFC 792, optional per RFC 1122 3.2.2.4); we do not, as expiry
//   happens lazily and with no frame to answer at that moment.
//
// Overlaps: any fragment that overlaps data already held, other than an exact
// duplicate, discards the whole datagram (RFC 5722 for IPv6, which Linux applies to
// IPv4 as well since 4.19); exact duplicates are dropped alone (RFC 5722 erratum
// 3089). A last fragment that disagrees with the known end, or data past it, also
// discards the datagram.
//
// No I/O, no clock: time is passed in (µs).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/drop.hh"

namespace shunt {

struct Fragment {
  uint32_t src = 0, dst = 0;  // host order
  uint8_t proto = 0;
  uint8_t ttl = 0, tos = 0;
  uint16_t id = 0;
  uint32_t offset = 0;  // bytes (the header's offset field * 8)
  bool more = false;    // MF
  std::span<const uint8_t> payload{};
};

// A whole datagram: the payload lives in the context buffer until the next add().
struct Reassembled {
  uint32_t src = 0, dst = 0;
  uint8_t proto = 0;
  uint8_t ttl = 0, tos = 0;
  uint16_t id = 0;
  std::span<const uint8_t> payload{};
};

class Reassembly {
 public:
  static constexpr uint32_t kMaxFragments = 128;
  static constexpr uint32_t kMaxPayload = 65535 - 20;  // IPv4 total length minus a bare header

  explicit Reassembly(uint32_t contexts = 64, uint64_t timeout_us = 30'000'000ull);

  // Takes one fragment. Returns kNone when it was kept (then *complete tells whether
  // the datagram is whole, in *out), else the reason it was dropped. Side effects
  // on other datagrams (timeouts, evictions) are counted into drops[].
  Drop add(const Fragment& f, uint64_t now, uint64_t* drops, bool* complete, Reassembled* out);

  uint32_t in_use() const { return in_use_; }
  // Bytes of buffer memory held (0 until the first fragment).
  size_t memory() const { return buffers_.size(); }

 private:
  struct Range {
    uint16_t start, end;
  };
  struct Context {
    bool used = false;
    uint32_t src = 0, dst = 0;
    uint8_t proto = 0;
    uint16_t id = 0;
    uint64_t created = 0;
    uint32_t total = 0;     // payload length once the last fragment came, else 0
    bool have_last = false;
    uint32_t received = 0;  // payload bytes held
    uint8_t ttl = 0, tos = 0;
    uint32_t nfrags = 0;
    Range frags[kMaxFragments];  // ordered by start, disjoint
  };
  static constexpr size_t kBufferSize = 65536;

  void release(uint32_t i);
  uint8_t* buffer(uint32_t i) { return buffers_.data() + size_t(i) * kBufferSize; }

  uint32_t count_;
  uint64_t timeout_;
  uint32_t in_use_ = 0;
  std::vector<Context> ctx_;
  std::vector<uint8_t> buffers_;  // count_ * kBufferSize, allocated on first use
};

}  // namespace shunt
