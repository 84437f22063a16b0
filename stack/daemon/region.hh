// An application's shared-memory region as shuntd sees it: the trust boundary
// (docs/architecture.md "Trust boundary").
//
// The application can write every byte of its region at any time. So the daemon
// reads that memory only here and in the ring ends this class hands out
// (include/shunt/ring.h), and:
//   - sizes, offsets and counts come from the daemon's private copy of the layout,
//     never from the header;
//   - every index it consumes (command queue heads, ring heads and tails) is its
//     own private copy or is checked against the capacity before use;
//   - every value it owns in a slot (state, flags, sequence counters) is kept
//     here privately and only ever stored to shared memory, never read back;
//   - commands are copied out before they are looked at;
//   - the memfd is sealed (no shrink, no grow), so the mapping cannot lose pages.
// A value that breaks the contract is recorded as a violation (violation()); the
// daemon then cuts that application off. Nothing here aborts or asserts on what an
// application wrote.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "shunt/abi.h"
#include "shunt/ring.h"

namespace shunt {

// Ways an application breaks the shared-memory contract: X(enum, "name").
#define SHUNT_VIOLATIONS(X)                                        \
  X(kNone, "none")                                                 \
  X(kCommandQueueHead, "command_queue_head")                       \
  X(kCompletionOverflow, "completion_queue_overflow")              \
  X(kCompletionTail, "completion_queue_tail")                      \
  X(kHeader, "region_header")                                      \
  X(kRingIndices, "ring_indices")                                  \
  X(kDatagramRecord, "datagram_record")

enum class Violation : uint8_t {
#define SHUNT_X(e, name) e,
  SHUNT_VIOLATIONS(SHUNT_X)
#undef SHUNT_X
  kCount
};
const char* violation_name(Violation v);

class AppRegion {
 public:
  AppRegion() = default;
  AppRegion(const AppRegion&) = delete;
  AppRegion& operator=(const AppRegion&) = delete;
  ~AppRegion() { destroy(); }

  // A sealed memfd of layout.size() bytes, mapped and laid out (abi::init_region).
  // Addresses in host order. False with *error on failure.
  // Rings start at initial_ring bytes (at most the layout's reserved sizes) and
  // grow within what is reserved.
  bool create(const abi::Layout& layout, uint32_t initial_ring, uint32_t id, uint32_t nic_ip,
              uint32_t prefix_len, uint32_t gateway, std::string* error);
  void destroy();
  bool mapped() const { return base_ != nullptr; }
  int memfd() const { return memfd_; }
  uint64_t size() const { return size_; }
  const abi::Layout& layout() const { return layout_; }

  // ---- Violations ----
  // The first broken rule seen (kNone: none). The ring ends count their faults
  // here too; the owner checks once per loop turn.
  Violation violation() const {
    return violation_ != Violation::kNone ? violation_
           : ring_faults_ != 0            ? Violation::kRingIndices
                                          : Violation::kNone;
  }
  void fail(Violation v) {
    if (violation_ == Violation::kNone) violation_ = v;
  }
  // The read-only part of the header still holds what the daemon wrote (a cheap
  // check, made now and then, that catches an application scribbling over it).
  bool check_header();

  // ---- Command and completion queues ----
  // Queue pairs in use: what the application claimed, at most the layout's count.
  uint32_t queue_pairs() const;
  // Copies up to max commands of pair q out of shared memory and consumes them.
  // Returns how many; a corrupt head records a violation and returns 0.
  uint32_t take_commands(uint32_t q, abi::Command* out, uint32_t max);
  // Posts a completion on pair q. False (and a violation) when the queue is full:
  // the application asked more than it has room to hear.
  bool complete(uint32_t q, const abi::Completion& c);
  // The answer that goes with the next completion on q (QueuePair::reply).
  void write_reply(uint32_t q, const abi::TcpInfo& info);
  bool commands_pending() const;

  // ---- Sleep and wake (docs/abi.md "Queue pairs") ----
  void set_daemon_sleeping(bool sleeping);
  // Threads asleep on the app doorbell alone (no wake cell: app_waiters).
  bool app_waiting() const;
  // Any thread asleep waiting for the daemon, on the app doorbell or its own bell.
  bool thread_waiting() const { return app_waiting() || cells_sleeping() != 0; }
  // Version 5 (docs/abi.md "Wake cells"): the cells whose threads sleep, and the
  // cells that wait for `slot`. Hints from the application, any value harmless.
  uint64_t cells_sleeping() const;
  // A listener's EPOLLEXCLUSIVE waiters count here only: wake_cells() leaves them
  // out for a listening slot (SocketTable::wake_exclusive wakes one of them).
  uint64_t wake_cells(uint32_t slot) const;
  uint64_t wake_cells_exclusive(uint32_t slot) const;
  uint64_t bell_token(uint32_t cell) const;  // 0 for a pair the region does not have
  uint32_t sleep_seq(uint32_t cell) const;   // likewise

  // ---- Slots ----
  // The caller names only slots it handed out (slot < layout().slot_count).
  // reset_slot: a fresh slot in `state`, rings empty, generation bumped.
  void reset_slot(uint32_t slot, abi::SlotState state);
  void set_state(uint32_t slot, abi::SlotState state);
  uint32_t generation(uint32_t slot) const { return slots_[slot].generation; }
  // A freed slot's ring memory beyond the initial size goes back to the system.
  void release_rings(uint32_t slot);
  // Connection state as the engine sees it: flags kFlagPeerFin/Reset/WriteShut
  // (kFlagWantRxDrain is kept as it is) and the pending error (0: none yet).
  void publish_conn(uint32_t slot, abi::SlotState state, uint32_t conn_flags, int32_t error);
  void set_accept_ready(uint32_t slot, uint32_t n);
  // Datagram slots: a new ICMP error, reported once by the application.
  void post_error(uint32_t slot, int32_t error);
  void bump(uint32_t slot);  // event_seq: something an application may wait for changed
  // The receive-drain handshake (kFlagWantRxDrain): set, clear.
  void want_rx_drain(uint32_t slot, bool want);
  void clear_tx_notice(uint32_t slot);
  void clear_rx_notice(uint32_t slot);
  // The daemon's ends of a slot's rings, starting empty (reset_slot) at the
  // initial size, and counting faults in this region.
  abi::ProducerEnd rx_end(uint32_t slot);
  abi::ConsumerEnd tx_end(uint32_t slot);

 private:
  struct QueueShadow {
    uint32_t sq_tail = 0;  // commands consumed
    uint32_t cq_head = 0;  // completions posted
  };
  struct SlotShadow {
    uint32_t state = 0;
    uint32_t flags = 0;
    uint32_t event_seq = 0;
    uint32_t generation = 0;
    uint32_t error_seq = 0;
  };

  abi::SocketSlot* slot_ptr(uint32_t i) const;
  abi::QueuePair* queue_ptr(uint32_t q) const;

  void* base_ = nullptr;
  uint64_t size_ = 0;
  int memfd_ = -1;
  abi::Layout layout_{};
  uint32_t initial_ring_ = 0;
  abi::RegionHeader header_copy_{};  // the read-only part as written (check_header)
  std::vector<QueueShadow> queues_;
  std::vector<SlotShadow> slots_;
  Violation violation_ = Violation::kNone;
  uint32_t ring_faults_ = 0;
};

}  // namespace shunt
