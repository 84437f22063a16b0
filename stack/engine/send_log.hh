// When each byte in flight was last sent: what RACK (RFC 8985 6.1) needs per
// segment, kept as disjoint sequence ranges in send order, oldest first. Each
// entry has a send order number as well as a time, because one batch sends many
// segments at the same `now`: within an entry, lower sequence numbers went first.
// Bytes sent together coalesce into one entry, so a flight of a hundred segments
// sent in a few batches costs a few entries. Bounded, no allocation: when full,
// the two neighbours closest in time that continue each other merge (taking the
// later time and order, so loss is declared later, never earlier); failing that
// the oldest entry is forgotten, and its bytes are left to the RTO.
#pragma once

#include <cstdint>

#include "engine/seq.hh"

namespace shunt {

using Time = uint64_t;  // microseconds (engine.hh)

// The connection's delivery state when an entry's first byte went out, for
// delivery rate samples (draft-cheng-iccrg-delivery-rate-estimation 3.2).
struct RateSnapshot {
  uint64_t delivered = 0;
  Time delivered_time = 0;
  Time first_sent = 0;
  bool app_limited = false;
};

struct SendLog {
  static constexpr uint8_t kMax = 32;
  struct Entry {
    tcp::SeqNum start, end;
    Time sent = 0;
    uint32_t order = 0;  // send order: larger is later
    bool retransmitted = false;
    bool lost = false;  // RACK declared it lost; not yet sent again
    RateSnapshot rate;
  };
  Entry e[kMax];
  uint8_t n = 0;
  uint32_t next_order = 1;

  // [start, end) went out at `now`. A retransmission first leaves every older
  // entry. Returns false when room had to be made by forgetting an entry.
  bool record(tcp::SeqNum start, tcp::SeqNum end, Time now, bool retransmission,
              const RateSnapshot& rate = {});
  // Everything below `una` is acknowledged.
  void trim_below(tcp::SeqNum una);
  // Splits the entry at index i at `seq` (strictly inside it); the two halves keep
  // its time and flags. False when there is no room.
  bool split(uint8_t i, tcp::SeqNum seq);
  void clear() { n = 0; }

 private:
  // Takes [start, end) out of every entry. False when an entry it splits did not fit.
  bool cut(tcp::SeqNum start, tcp::SeqNum end);
  // Frees one entry. False when it had to forget one.
  bool make_room();
  void erase(uint8_t i);
  void insert(uint8_t i, const Entry& x);
};

}  // namespace shunt
