// Slot readiness (docs/abi.md "Slot readiness") as poll/epoll bits. Pure: a snapshot
// of the daemon-written slot plus the app's local view in, EPOLL* bits out (POLL*
// bits have the same values on Linux).
#pragma once

#include <sys/epoll.h>

#include <algorithm>
#include <cstdint>

#include "shunt/abi.h"
#include "shunt/ring.h"

namespace shunt::preload {

struct SlotSnapshot {
  uint32_t state = 0;  // abi::SlotState
  uint32_t flags = 0;  // abi::kFlag*
  int32_t error = 0;
  uint32_t accept_ready = 0;
  uint32_t rx_readable = 0;
  uint32_t tx_writable = 0;
  uint32_t error_seq = 0;     // datagram slots: bumped with each new error
  uint32_t tx_capacity = 0;
};

// What the application side knows that the slot does not say.
struct LocalView {
  bool error_consumed = false;  // SO_ERROR or a failed call already reported `error`
  bool shut_rd = false;         // shutdown(SHUT_RD) called here
  bool shut_wr = false;         // shutdown(SHUT_WR) called here
  bool daemon_gone = false;     // control socket hung up: every socket is reset
  uint32_t error_seq_seen = 0;  // datagram: the error_seq last reported
};

// Reads the daemon-written fields. event_seq is read first by the caller when it
// needs edge detection, so a change after it is seen again next time.
inline SlotSnapshot snapshot(const abi::SocketSlot& s, const abi::ByteRing& rx,
                             const abi::ByteRing& tx) {
  SlotSnapshot v;
  v.state = s.state.load(std::memory_order_acquire);
  v.flags = s.flags.load(std::memory_order_acquire);
  v.error = s.error.load(std::memory_order_acquire);
  v.accept_ready = s.accept_ready.load(std::memory_order_acquire);
  v.rx_readable = rx.valid() ? std::min(rx.readable(), rx.capacity()) : 0;
  v.tx_writable = tx.valid() ? tx.writable() : 0;
  v.tx_capacity = tx.valid() ? tx.capacity() : 0;
  v.error_seq = s.error_seq.load(std::memory_order_acquire);
  return v;
}

// A listener has a connection to accept: queued in shuntd, or handed ahead as a
// record on its rx ring (docs/abi.md, "Connections handed ahead").
inline bool listener_has_connection(uint32_t accept_ready, uint32_t rx_readable) {
  return accept_ready > 0 || rx_readable >= sizeof(abi::DgramHeader);
}

inline SlotSnapshot apply_daemon_gone(SlotSnapshot v) {
  v.flags |= abi::kFlagReset | abi::kFlagPeerFin;
  if (v.error == 0) v.error = 104;  // ECONNRESET
  if (v.state != uint32_t(abi::SlotState::kListening)) v.state = uint32_t(abi::SlotState::kClosed);
  return v;
}

inline uint32_t readiness(SlotSnapshot v, const LocalView& local) {
  using abi::SlotState;
  if (local.daemon_gone) v = apply_daemon_gone(v);
  const auto state = SlotState(v.state);
  const bool reset = (v.flags & abi::kFlagReset) != 0;
  const bool peer_fin = (v.flags & abi::kFlagPeerFin) != 0 || local.shut_rd;
  const bool write_shut = (v.flags & abi::kFlagWriteShut) != 0 || local.shut_wr;
  const bool error = v.error != 0 && !local.error_consumed;
  uint32_t m = 0;
  if (state == SlotState::kListening) {
    if (listener_has_connection(v.accept_ready, v.rx_readable)) m |= EPOLLIN | EPOLLRDNORM;
    if (error) m |= EPOLLERR;
    return m;
  }
  if (v.rx_readable > 0 || peer_fin || reset) m |= EPOLLIN | EPOLLRDNORM;
  if (peer_fin || reset) m |= EPOLLRDHUP;
  // Writable: a connected socket with room, or shut for writing (as Linux's
  // tcp_poll: the write fails at once with EPIPE); a reset one; like Linux, a
  // socket that is not connecting and not connected (bound, closed) polls
  // writable and hung up.
  const bool idle = state == SlotState::kBound || state == SlotState::kClosed;
  if ((state == SlotState::kConnected && (write_shut || v.tx_writable > 0)) || reset || idle)
    m |= EPOLLOUT | EPOLLWRNORM;
  if (reset || (peer_fin && write_shut) || idle) m |= EPOLLHUP;
  if (error) m |= EPOLLERR;
  return m;
}

// A datagram (UDP) slot, like Linux's datagram_poll: readable with a whole record
// queued or after SHUT_RD; writable while the tx ring has room for the largest
// record or half its size (sock_writeable: less than half the send buffer used);
// EPOLLERR while an ICMP error is unreported; EPOLLHUP after shutdown both ways.
// When the daemon is gone every call fails at once: all bits, so waiters wake.
inline uint32_t dgram_readiness(const SlotSnapshot& v, const LocalView& local) {
  if (local.daemon_gone) return EPOLLIN | EPOLLRDNORM | EPOLLOUT | EPOLLWRNORM | EPOLLERR | EPOLLHUP;
  uint32_t m = 0;
  if (v.rx_readable >= sizeof(abi::DgramHeader)) m |= EPOLLIN | EPOLLRDNORM;
  if (local.shut_rd) m |= EPOLLIN | EPOLLRDNORM | EPOLLRDHUP;
  if (local.shut_rd && local.shut_wr) m |= EPOLLHUP;
  uint32_t room = std::min(abi::kMaxDgramRecord, v.tx_capacity / 2);
  if (v.tx_capacity != 0 && v.tx_writable >= room) m |= EPOLLOUT | EPOLLWRNORM;
  if (v.error_seq != local.error_seq_seen) m |= EPOLLERR;
  return m;
}

}  // namespace shunt::preload
