// A set of disjoint sequence ranges, ordered by start: out-of-order data held in
// the rx ring (receiver), or data the peer SACKed (sender). Bounded by its
// capacity; no allocation.
#pragma once

#include <cstdint>

#include "engine/seq.hh"

namespace shunt {

template <uint16_t Capacity>
struct SeqRangesOf {
  static constexpr uint16_t kMax = Capacity;
  struct Range {
    tcp::SeqNum start, end;
  };
  Range r[kMax];
  uint16_t n = 0;
  uint16_t recent = 0;  // index of the range changed last (first SACK block, RFC 2018 4)

  // Adds [start, end), merging overlaps and neighbours. False when full and the
  // range touches none of the others (the caller drops it, or prunes first).
  bool add(tcp::SeqNum start, tcp::SeqNum end) {
    uint16_t i = first_reaching(start);
    if (i < n && r[i].start <= end) {
      // Merge with r[i] and every following range it reaches.
      if (start < r[i].start) r[i].start = start;
      if (end > r[i].end) r[i].end = end;
      uint16_t j = i + 1;
      while (j < n && r[j].start <= r[i].end) {
        if (r[j].end > r[i].end) r[i].end = r[j].end;
        ++j;
      }
      uint16_t gone = uint16_t(j - i - 1);
      for (uint16_t k = i + 1; k + gone < n; ++k) r[k] = r[k + gone];
      n = uint16_t(n - gone);
      recent = i;
      return true;
    }
    if (n == kMax) return false;
    for (uint16_t k = n; k > i; --k) r[k] = r[k - 1];
    r[i] = {start, end};
    ++n;
    recent = i;
    return true;
  }

  // Forgets the highest range (a receiver pruning what is furthest from
  // delivery, as Linux's tcp_prune_ofo_queue does).
  void drop_last() {
    if (n == 0) return;
    --n;
    if (recent >= n) recent = n == 0 ? 0 : uint16_t(n - 1);
  }

  // Removes everything below `seq`.
  void trim_below(tcp::SeqNum seq) {
    uint16_t drop = 0;
    while (drop < n && r[drop].end <= seq) ++drop;
    for (uint16_t k = 0; k + drop < n; ++k) r[k] = r[k + drop];
    n = uint16_t(n - drop);
    recent = recent >= drop ? uint16_t(recent - drop) : 0;
    if (n != 0 && r[0].start < seq) r[0].start = seq;
  }

  bool contains(tcp::SeqNum start, tcp::SeqNum end) const {
    uint16_t i = first_reaching(start);
    return i < n && r[i].start <= start && end <= r[i].end;
  }

  uint32_t bytes() const {
    uint32_t b = 0;
    for (uint16_t i = 0; i < n; ++i) b += uint32_t(r[i].end - r[i].start);
    return b;
  }

  void clear() { n = recent = 0; }

 private:
  // The first range that ends at or after `seq` (binary search: ends ascend).
  uint16_t first_reaching(tcp::SeqNum seq) const {
    uint16_t lo = 0, hi = n;
    while (lo < hi) {
      uint16_t mid = uint16_t((lo + hi) / 2);
      if (r[mid].end < seq) lo = uint16_t(mid + 1);
      else hi = mid;
    }
    return lo;
  }
};

// The sender's scoreboard: a BBR flight of a few hundred segments at 5% loss has
// tens of holes; a full scoreboard forgets SACKed data, which then goes again (16
// ranges: five times as many retransmissions as losses, 64 MiB at 5% loss both
// ways).
using SeqRanges = SeqRangesOf<48>;
// The receiver's out-of-order data: every hole in a full receive window at 5%
// loss (4 MiB / 1448 bytes * 5% is about 145). A full table used to drop every
// segment above its highest range, so the sender had to resend them all; it now
// forgets the highest range for one below it.
using RxRanges = SeqRangesOf<192>;

}  // namespace shunt
