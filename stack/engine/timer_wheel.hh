// A hashed timer wheel over a fixed set of ids (connection pool indices): O(1)
// schedule, cancel and per-tick expiry, no allocation after construction. Each id
// has at most one entry: its earliest deadline. Deadlines beyond one turn of the
// wheel stay in their slot and are skipped until their turn comes.
#pragma once

#include <cstdint>
#include <vector>

namespace shunt {

class TimerWheel {
 public:
  static constexpr uint32_t kNone = ~0u;

  TimerWheel(uint32_t max_ids, uint32_t slots_pow2 = 4096)
      : nodes_(max_ids), heads_(slots_pow2, kNone), mask_(slots_pow2 - 1) {}

  bool scheduled(uint32_t id) const { return nodes_[id].linked; }
  uint64_t deadline(uint32_t id) const { return nodes_[id].tick; }

  void schedule(uint32_t id, uint64_t tick) {
    if (nodes_[id].linked) {
      if (nodes_[id].tick == tick) return;
      unlink(id);
    }
    if (tick < current_) tick = current_;
    Node& n = nodes_[id];
    n.tick = tick;
    n.linked = true;
    uint32_t& head = heads_[tick & mask_];
    n.prev = kNone;
    n.next = head;
    if (head != kNone) nodes_[head].prev = id;
    head = id;
    ++count_;
  }

  void cancel(uint32_t id) {
    if (nodes_[id].linked) unlink(id);
  }

  size_t size() const { return count_; }

  // The earliest deadline scheduled, or kNever. Walks the slots from the current
  // tick for at most one turn of the wheel, stopping at the first slot that holds
  // an entry due in this turn: meant for a loop about to sleep, not per packet.
  static constexpr uint64_t kNever = ~uint64_t{0};
  uint64_t next_deadline() const {
    if (count_ == 0) return kNever;
    uint64_t best = kNever;
    for (uint64_t t = current_; t <= current_ + mask_; ++t) {
      for (uint32_t id = heads_[t & mask_]; id != kNone; id = nodes_[id].next)
        if (nodes_[id].tick < best) best = nodes_[id].tick;
      if (best <= t) break;  // later slots only hold later deadlines
    }
    return best;
  }

  // Calls fn(id) for every id whose deadline is <= now; each is unlinked first,
  // so fn may schedule it again.
  template <typename Fn>
  void expire(uint64_t now, Fn&& fn) {
    if (count_ == 0) {
      current_ = now;
      return;
    }
    // Visit each slot at most once per call.
    uint64_t last = now - current_ > mask_ ? current_ + mask_ : now;
    for (uint64_t t = current_; t <= last; ++t) {
      // fn may cancel or reschedule any id, so after each call the slot is walked
      // again from its head; fired entries are gone, so this ends.
      uint32_t id = heads_[t & mask_];
      while (id != kNone) {
        if (nodes_[id].tick <= now) {
          unlink(id);
          fn(id);
          id = heads_[t & mask_];
        } else {
          id = nodes_[id].next;
        }
      }
    }
    current_ = now;
  }

 private:
  struct Node {
    uint64_t tick = 0;
    uint32_t prev = kNone;
    uint32_t next = kNone;
    bool linked = false;
  };

  void unlink(uint32_t id) {
    Node& n = nodes_[id];
    if (n.prev != kNone) nodes_[n.prev].next = n.next;
    else heads_[n.tick & mask_] = n.next;
    if (n.next != kNone) nodes_[n.next].prev = n.prev;
    n.linked = false;
    n.prev = n.next = kNone;
    --count_;
  }

  std::vector<Node> nodes_;
  std::vector<uint32_t> heads_;
  uint64_t mask_;
  uint64_t current_ = 0;
  size_t count_ = 0;
};

}  // namespace shunt
