#include "daemon/region.hh"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace shunt {

const char* violation_name(Violation v) {
  static constexpr const char* kNames[] = {
#define SHUNT_X(e, name) name,
      SHUNT_VIOLATIONS(SHUNT_X)
#undef SHUNT_X
  };
  return size_t(v) < size_t(Violation::kCount) ? kNames[size_t(v)] : "unknown";
}

namespace {
// The read-only part of the header: everything before daemon_sleeping.
constexpr size_t kHeaderFixed = offsetof(abi::RegionHeader, daemon_sleeping);
}  // namespace

bool AppRegion::create(const abi::Layout& layout, uint32_t initial_ring, uint32_t id,
                       uint32_t nic_ip, uint32_t prefix_len, uint32_t gateway, std::string* error) {
  destroy();
  layout_ = layout;
  initial_ring_ = std::min({initial_ring, layout.rx_ring_size, layout.tx_ring_size});
  size_ = layout.size();
  memfd_ = memfd_create("shunt-region", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (memfd_ < 0 || ftruncate(memfd_, off_t(size_)) != 0) {
    *error = std::string("region memfd: ") + std::strerror(errno);
    destroy();
    return false;
  }
  // No shrink, no grow, and no way to lift the seals: an application that
  // truncates the memfd (through /proc/PID/map_files) gets EPERM, and the daemon's
  // mapping never loses its pages (a SIGBUS in the daemon).
  if (fcntl(memfd_, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    *error = std::string("sealing the region memfd: ") + std::strerror(errno);
    destroy();
    return false;
  }
  void* base = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, memfd_, 0);
  if (base == MAP_FAILED) {
    *error = std::string("mapping the region: ") + std::strerror(errno);
    destroy();
    return false;
  }
  base_ = base;
  abi::init_region(base_, layout_, id, nic_ip, prefix_len, gateway);
  std::memcpy(static_cast<void*>(&header_copy_), base_, kHeaderFixed);
  queues_.assign(layout_.queue_pair_count, QueueShadow{});
  slots_.assign(layout_.slot_count, SlotShadow{});
  violation_ = Violation::kNone;
  ring_faults_ = 0;
  return true;
}

void AppRegion::destroy() {
  if (base_ != nullptr) munmap(base_, size_);
  if (memfd_ >= 0) close(memfd_);
  base_ = nullptr;
  memfd_ = -1;
  size_ = 0;
  queues_.clear();
  slots_.clear();
}

bool AppRegion::check_header() {
  if (std::memcmp(base_, &header_copy_, kHeaderFixed) != 0) fail(Violation::kHeader);
  return violation_ == Violation::kNone;
}

abi::SocketSlot* AppRegion::slot_ptr(uint32_t i) const { return abi::slot(base_, layout_, i); }

abi::QueuePair* AppRegion::queue_ptr(uint32_t q) const {
  return abi::queue_pair(base_, layout_, q);
}

// ---- Queues ----

uint32_t AppRegion::queue_pairs() const {
  uint32_t claimed = abi::header(base_)->queue_pairs_claimed.load(std::memory_order_acquire);
  return claimed < layout_.queue_pair_count ? claimed : layout_.queue_pair_count;
}

uint32_t AppRegion::take_commands(uint32_t q, abi::Command* out, uint32_t max) {
  abi::QueuePair* qp = queue_ptr(q);
  QueueShadow& sh = queues_[q];
  // Acquire: pairs with the application's release store of head after it wrote
  // the entry.
  uint32_t head = qp->sq_idx.head.value.load(std::memory_order_acquire);
  uint32_t queued = head - sh.sq_tail;
  if (queued > abi::kQueueDepth) {
    fail(Violation::kCommandQueueHead);
    return 0;
  }
  uint32_t n = queued < max ? queued : max;
  for (uint32_t i = 0; i < n; ++i)
    std::memcpy(&out[i], &qp->sq[(sh.sq_tail + i) & (abi::kQueueDepth - 1)], sizeof(abi::Command));
  sh.sq_tail += n;
  // Release: the application may reuse the entries once it sees the tail move.
  if (n != 0) qp->sq_idx.tail.value.store(sh.sq_tail, std::memory_order_release);
  return n;
}

bool AppRegion::complete(uint32_t q, const abi::Completion& c) {
  abi::QueuePair* qp = queue_ptr(q);
  QueueShadow& sh = queues_[q];
  // Acquire: pairs with the application's release store of tail after it read.
  uint32_t tail = qp->cq_idx.tail.value.load(std::memory_order_acquire);
  uint32_t used = sh.cq_head - tail;
  if (used >= abi::kQueueDepth) {
    // Full (or a tail beyond the head): one outstanding command per thread is
    // the contract, so a full queue is a broken one.
    fail(used == abi::kQueueDepth ? Violation::kCompletionOverflow : Violation::kCompletionTail);
    return false;
  }
  std::memcpy(&qp->cq[sh.cq_head & (abi::kQueueDepth - 1)], &c, sizeof c);
  ++sh.cq_head;
  qp->cq_idx.head.value.store(sh.cq_head, std::memory_order_release);  // pairs with its acquire
  return true;
}

void AppRegion::write_reply(uint32_t q, const abi::TcpInfo& info) {
  // Written only: the completion's release store publishes it.
  std::memcpy(&queue_ptr(q)->reply, &info, sizeof info);
}

bool AppRegion::commands_pending() const {
  uint32_t n = queue_pairs();
  for (uint32_t q = 0; q < n; ++q) {
    // seq_cst: the sleeper's half of the Dekker handshake (set_daemon_sleeping).
    if (queue_ptr(q)->sq_idx.head.value.load(std::memory_order_seq_cst) != queues_[q].sq_tail)
      return true;
  }
  return false;
}

void AppRegion::set_daemon_sleeping(bool sleeping) {
  abi::header(base_)->daemon_sleeping.store(sleeping ? 1 : 0, std::memory_order_seq_cst);
}

bool AppRegion::app_waiting() const {
  // Any value is only a hint: a wrong one costs a doorbell write or a late wake-up
  // of that application alone.
  return abi::header(base_)->app_waiters.load(std::memory_order_seq_cst) != 0;
}

uint64_t AppRegion::cells_sleeping() const {
  return abi::header(base_)->cells_sleeping.load(std::memory_order_seq_cst);
}

uint64_t AppRegion::bell_token(uint32_t cell) const {
  if (!mapped() || cell >= layout_.queue_pair_count) return 0;
  return queue_ptr(cell)->bell_token.load(std::memory_order_relaxed);
}

uint32_t AppRegion::sleep_seq(uint32_t cell) const {
  if (!mapped() || cell >= layout_.queue_pair_count) return 0;
  return queue_ptr(cell)->sleep_seq.load(std::memory_order_relaxed);
}

uint64_t AppRegion::wake_cells(uint32_t slot) const {
  if (!mapped() || slot >= layout_.slot_count) return 0;
  const abi::SocketSlot* s = slot_ptr(slot);
  uint64_t cells = s->wake_cells.load(std::memory_order_relaxed);
  // An exclusive entry on a socket that is not listening waits like any other.
  if (slots_[slot].state != uint32_t(abi::SlotState::kListening))
    cells |= s->wake_cells_exclusive.load(std::memory_order_relaxed);
  return cells;
}

uint64_t AppRegion::wake_cells_exclusive(uint32_t slot) const {
  if (!mapped() || slot >= layout_.slot_count) return 0;
  return slot_ptr(slot)->wake_cells_exclusive.load(std::memory_order_relaxed);
}

// ---- Slots ----

void AppRegion::reset_slot(uint32_t i, abi::SlotState state) {
  abi::SocketSlot* s = slot_ptr(i);
  SlotShadow& sh = slots_[i];
  sh.flags = 0;
  sh.state = uint32_t(state);
  ++sh.generation;
  sh.error_seq = 0;
  s->flags.store(0, std::memory_order_relaxed);
  s->error.store(0, std::memory_order_relaxed);
  s->accept_ready.store(0, std::memory_order_relaxed);
  s->error_seq.store(0, std::memory_order_relaxed);
  s->tx_notice.store(0, std::memory_order_relaxed);
  s->rx_notice.store(0, std::memory_order_relaxed);
  for (abi::RingIndices* r : {&s->rx, &s->tx}) {
    r->head.value.store(0, std::memory_order_relaxed);
    r->tail.value.store(0, std::memory_order_relaxed);
  }
  // Geometry and limits are stored again by the ends (rx_end/tx_end); until then
  // the slot describes rings of the initial size.
  for (std::atomic<uint64_t>* g : {&s->rx_geometry, &s->tx_geometry})
    g->store(abi::RingGeometry::fixed(initial_ring_).pack(), std::memory_order_relaxed);
  s->rx_limit.store(initial_ring_, std::memory_order_relaxed);
  s->tx_limit.store(initial_ring_, std::memory_order_relaxed);
  s->generation.store(sh.generation, std::memory_order_relaxed);
  s->state.store(sh.state, std::memory_order_release);
  bump(i);
}

void AppRegion::release_rings(uint32_t i) {
  // The geometry words are read back only to skip the system call for rings
  // that never grew: a wrong value costs the application its own memory.
  abi::SocketSlot* s = slot_ptr(i);
  uint8_t reserved = abi::ring_shift(layout_.rx_ring_size);
  bool grown = false;
  for (const std::atomic<uint64_t>* g : {&s->rx_geometry, &s->tx_geometry})
    grown |= abi::RingGeometry::unpack(g->load(std::memory_order_relaxed), reserved).largest() >
             initial_ring_;
  if (!grown) return;
  uint64_t at = uint64_t(abi::rx_bytes(base_, layout_, i) - static_cast<uint8_t*>(base_));
  // Both rings of the slot, past what every fresh ring uses.
  (void)fallocate(memfd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off_t(at + initial_ring_),
                  off_t(layout_.rx_ring_size - initial_ring_));
  (void)fallocate(memfd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  off_t(at + layout_.rx_ring_size + initial_ring_),
                  off_t(layout_.tx_ring_size - initial_ring_));
}

void AppRegion::set_state(uint32_t i, abi::SlotState state) {
  slots_[i].state = uint32_t(state);
  slot_ptr(i)->state.store(uint32_t(state), std::memory_order_release);
  bump(i);
}

void AppRegion::publish_conn(uint32_t i, abi::SlotState state, uint32_t conn_flags,
                             int32_t error) {
  abi::SocketSlot* s = slot_ptr(i);
  SlotShadow& sh = slots_[i];
  sh.flags = (sh.flags & abi::kFlagWantRxDrain) | (conn_flags & ~abi::kFlagWantRxDrain);
  sh.state = uint32_t(state);
  if (error != 0) s->error.store(error, std::memory_order_relaxed);
  s->flags.store(sh.flags, std::memory_order_release);
  s->state.store(sh.state, std::memory_order_release);
  bump(i);
}

void AppRegion::set_accept_ready(uint32_t i, uint32_t n) {
  slot_ptr(i)->accept_ready.store(n, std::memory_order_release);
  bump(i);
}

void AppRegion::post_error(uint32_t i, int32_t error) {
  abi::SocketSlot* s = slot_ptr(i);
  s->error.store(error, std::memory_order_relaxed);
  s->error_seq.store(++slots_[i].error_seq, std::memory_order_release);
  bump(i);
}

void AppRegion::bump(uint32_t i) {
  slot_ptr(i)->event_seq.store(++slots_[i].event_seq, std::memory_order_release);
}

void AppRegion::want_rx_drain(uint32_t i, bool want) {
  SlotShadow& sh = slots_[i];
  sh.flags = want ? sh.flags | abi::kFlagWantRxDrain : sh.flags & ~abi::kFlagWantRxDrain;
  // seq_cst, then a fence: the daemon's half of the drain handshake. The caller
  // looks at the ring after this; the application stores its tail, then looks at
  // the flag.
  slot_ptr(i)->flags.store(sh.flags, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

void AppRegion::clear_tx_notice(uint32_t i) {
  // Before the ring is read: bytes written after this store are announced again.
  slot_ptr(i)->tx_notice.store(0, std::memory_order_seq_cst);
}

void AppRegion::clear_rx_notice(uint32_t i) {
  slot_ptr(i)->rx_notice.store(0, std::memory_order_seq_cst);
}

abi::ProducerEnd AppRegion::rx_end(uint32_t i) {
  abi::SocketSlot* s = slot_ptr(i);
  return abi::ProducerEnd(&s->rx, abi::rx_bytes(base_, layout_, i),
                          abi::RingShape(layout_.rx_ring_size, initial_ring_, &s->rx_geometry, &s->rx_limit),
                          0, &ring_faults_);
}

abi::ConsumerEnd AppRegion::tx_end(uint32_t i) {
  abi::SocketSlot* s = slot_ptr(i);
  return abi::ConsumerEnd(&s->tx, abi::tx_bytes(base_, layout_, i),
                          abi::RingShape(layout_.tx_ring_size, initial_ring_, &s->tx_geometry, &s->tx_limit),
                          0, &ring_faults_);
}

}  // namespace shunt
