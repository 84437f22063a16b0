// UDP sockets of the engine (RFC 768): the port table and the socket records.
//
// One socket per local port (no SO_REUSEADDR/SO_REUSEPORT groups), found by a
// direct array indexed by port: O(1), no hashing. A socket owns an rx ring of
// datagram records (include/shunt/abi.h "Datagram records") that the engine fills
// as datagrams arrive; a full ring drops the datagram with kUdpRxRingFull (Linux's
// UDP_MIB_RCVBUFERRORS). Sending needs no ring here: the owner hands each datagram
// to Engine::udp_send. The frame-level work (input, checksums, fragments, ICMP) is
// in udp.cc as Engine members; this class is only data and bookkeeping.
//
// Connected sockets (connect(2) on UDP) filter what they receive: like Linux's
// socket lookup, a datagram from another source finds no socket at all (and earns
// an ICMP port unreachable).
#pragma once

#include <cstdint>
#include <vector>

#include "shunt/ring.h"

namespace shunt {

using UdpId = uint32_t;
inline constexpr UdpId kNoUdp = ~0u;

// Events reported by UdpTable::drain_events.
inline constexpr uint32_t kUdpEvReadable = 1u << 0;  // a datagram went into the rx ring
inline constexpr uint32_t kUdpEvError = 1u << 1;     // an ICMP error for a connected socket

// UDP counters: X(field, "name in shunt stat").
#define SHUNT_UDP_COUNTERS(X)                                                     \
  X(datagrams_in, "udp.datagrams_in")       /* delivered to a socket's ring */   \
  X(datagrams_out, "udp.datagrams_out")                                           \
  X(fragments_out, "udp.fragments_out")     /* IPv4 fragments above the MTU */   \
  X(reassembled, "udp.reassembled")         /* datagrams rebuilt from fragments */ \
  X(port_unreachable_sent, "udp.port_unreachable_sent")                           \
  X(icmp_errors_in, "udp.icmp_errors_in")   /* matched to a connected socket */

struct UdpCounters {
#define SHUNT_X(field, name) uint64_t field = 0;
  SHUNT_UDP_COUNTERS(SHUNT_X)
#undef SHUNT_X
};

struct UdpSocket {
  bool active = false;
  bool in_events = false;
  uint16_t local_port = 0;
  uint32_t remote_ip = 0;    // host order; 0 = not connected
  uint16_t remote_port = 0;
  int error = 0;             // the last ICMP error (errno) for a connected socket
  uint8_t tos = 0;           // IP_TOS of its datagrams
  uint8_t ttl = 64;          // IP_TTL
  uint32_t events = 0;
  abi::ProducerEnd rx;
  uint64_t user = 0;
  UdpId next_free = kNoUdp;

  bool connected() const { return remote_ip != 0; }
};

class UdpTable {
 public:
  explicit UdpTable(uint32_t max_sockets = 65536);

  // A socket on `port` (non-zero) delivering into `rx`. -EADDRINUSE, -ENOBUFS.
  int bind(uint16_t port, abi::ProducerEnd rx, uint64_t user, UdpId* out);
  // Sets the peer (host order); ip 0 disconnects.
  void connect(UdpId id, uint32_t ip, uint16_t port);
  void close(UdpId id);
  bool port_in_use(uint16_t port) const { return by_port_[port] != 0; }
  // The socket bound to `port`, or kNoUdp.
  UdpId lookup(uint16_t port) const { return by_port_[port] - 1; }
  bool valid(UdpId id) const { return id < socks_.size() && socks_[id].active; }
  const UdpSocket& socket(UdpId id) const { return socks_[id]; }
  UdpSocket& socket(UdpId id) { return socks_[id]; }
  uint32_t live() const { return live_; }

  void note(UdpId id, uint32_t ev);
  // Calls fn(user, events, error) once per socket with pending events.
  template <typename Fn>
  void drain_events(Fn&& fn) {
    for (size_t i = 0; i < events_.size(); ++i) {
      UdpSocket& s = socks_[events_[i]];
      s.in_events = false;
      uint32_t ev = s.events;
      s.events = 0;
      if (s.active && ev != 0) fn(s.user, ev, s.error);
    }
    events_.clear();
  }

  // ICMP error rate limit (Linux's icmp_msgs_per_sec 1000 with a burst of 50):
  // true when one more ICMP error may go out at `now` (µs).
  bool icmp_allow(uint64_t now);

  UdpCounters counters;

 private:
  uint32_t max_;
  std::vector<UdpSocket> socks_;    // grows on bind up to max_ (control path)
  std::vector<uint32_t> by_port_;   // port -> id + 1, 0 = none
  UdpId free_head_ = kNoUdp;
  uint32_t live_ = 0;
  std::vector<UdpId> events_;
  uint64_t icmp_tokens_ = 0;        // in 1/1000 of a message
  uint64_t icmp_refill_at_ = 0;
  bool icmp_started_ = false;
};

}  // namespace shunt
