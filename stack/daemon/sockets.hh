// The daemon's sockets: what applications' slots refer to, and what joins them to
// the engine's connections, listeners and UDP sockets (docs/architecture.md
// "Applications and sockets"). Commands from the queues land here; engine events
// go back out to the slots from here.
//
// A socket has holders: (application, slot) pairs, more than one after fork. One
// holder's rings are the ones the engine uses (`rings`). The socket goes when its
// last holder closes it and the engine is done with the rings.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "daemon/apps.hh"
#include "daemon/counters.hh"
#include "engine/engine.hh"
#include "shunt/abi.h"
#include "shunt/control.h"

namespace shunt {

struct NicAddress {
  uint32_t ip = 0;  // host order
  uint8_t prefix_len = 24;
  uint32_t gateway = 0;
};

// How an application's sockets end when it goes.
enum class Ending {
  kAsKernel,  // the process died or exec'd: FIN, or RST where data was left unread
  kReset,     // cut off (it broke the contract): RST everything, rings released now
};

class SocketTable {
 public:
  SocketTable(AppRegistry& apps, Engine& engine, const NicAddress& nic, DaemonCounters& ctr);

  // One command from application `app`. *reply: whether a completion goes back.
  // kTcpInfo answers in *info (the caller copies it to the queue pair's reply).
  abi::Completion handle(uint32_t app, const abi::Command& cmd, Time now, bool* reply,
                         abi::TcpInfo* info);
  // Closes every socket `app` holds (its slots, zombies included for kReset).
  void close_all(uint32_t app, Ending how, Time now);
  // Shuts down writing on every connection: the graceful stop (FIN everywhere).
  void shutdown_all();
  // Engine events to the slots that wait for them.
  void publish_events();
  // EPOLLEXCLUSIVE: for each connection that arrived on a listener since the
  // last call, one thread asleep on it through an exclusive entry is marked to
  // be woken, the processes holding it taking turns. At the doorbell round,
  // after its fence (it reads who sleeps).
  void wake_exclusive();

  // After fork: a slot in `child` for the socket behind the parent's slot, if
  // `inode` (of the placeholder the child sent) is that socket's. kNoSlot if not.
  uint32_t inherit(uint32_t child, uint32_t parent, uint32_t parent_slot, uint64_t inode);

  // shunt ss: every TCP connection and listener of the engine and every UDP
  // socket, with the process holding it.
  void list(std::vector<ctl::SocketInfo>* out) const;

  uint32_t live() const { return uint32_t(sockets_.size() - free_.size()); }

 private:
  // kDead: ended under its holders (its rings' owner was cut off); they can only
  // close it.
  enum class Kind : uint8_t { kFree, kBound, kListener, kConn, kUdp, kDead };
  struct Holder {
    uint32_t app;
    uint32_t slot;
    bool operator==(const Holder&) const = default;
  };
  struct Socket {
    Kind kind = Kind::kFree;
    uint16_t port = 0;  // local port (host order)
    bool owns_port = false;
    bool linger_zero = false;
    // Options the application set (kSetOption), replayed on the connection when
    // it exists, and passed from a listener to what it accepts.
    uint32_t option_set = 0;  // bit per abi::SockOption
    uint32_t option_value[uint32_t(abi::SockOption::kCount)] = {};
    uint64_t inode = 0;  // the kernel placeholder's inode: identity across fork
    // kConn handed ahead to a listener holder (abi::HandedConn) and not claimed
    // yet: that listener's socket; else kNone.
    uint32_t handed_by = kNone;
    // kListener: the holders it handed connections to, each with the daemon's
    // end of that slot's rx ring and the connections it has not claimed.
    struct Handout {
      Holder to;
      abi::ProducerEnd ring;
      std::vector<uint32_t> unclaimed;
      uint32_t due = 0;  // handed since the last wake_exclusive: waiters to wake
    };
    std::vector<Handout> handouts;
    ListenerId listener = kInvalidId;
    uint32_t accept_published = 0;  // kListener: the queue length the slots show
    uint32_t exclusive_due = 0;     // connections arrived, exclusive waiters not yet woken
    uint32_t exclusive_turn = 0;    // the holder whose exclusive waiter goes next
    bool exclusive_listed = false;  // in exclusive_due_
    ConnId conn = kInvalidId;
    UdpId udp = kNoUdp;
    abi::ConsumerEnd udp_tx;     // kUdp: the daemon's end of the ring owner's tx ring
    Holder rings{kNone, kNone};  // the slot whose rings the engine uses
    std::vector<Holder> holders;
  };

  // ---- Commands ----
  int do_bind(uint32_t app, const abi::Command& cmd, abi::Completion* out);
  int do_listen(uint32_t app, uint32_t slot, int backlog);
  int do_connect(uint32_t app, const abi::Command& cmd, Time now, abi::Completion* out);
  int do_accept(uint32_t app, const abi::Command& cmd, abi::Completion* out);
  uint32_t accept_into(uint32_t app, uint32_t listener_socket, ConnId c, uint64_t inode);
  void hand_ahead(uint32_t app, uint32_t listener_slot, uint32_t listener_socket);
  void do_accepted(uint32_t app, const abi::Command& cmd);
  void claim(uint32_t socket, uint64_t inode);
  void unhand(uint32_t socket);
  void take_back_handed(uint32_t listener_socket, Holder from, Time now);
  uint32_t slot_to_connect(uint32_t app, const abi::Command& cmd, bool udp, int* rc);
  void do_close(uint32_t app, uint32_t slot, Time now);
  int do_shutdown(uint32_t app, uint32_t slot, int how, Time now);
  int unlisten(uint32_t listener_socket, Time now);
  void do_tx_ready(uint32_t app, uint32_t slot, Time now);
  void do_rx_drained(uint32_t app, uint32_t slot);
  int do_tcp_info(uint32_t app, uint32_t slot, Time now, abi::TcpInfo* out);
  void kill_socket(uint32_t socket, Time now);
  int set_option(uint32_t socket, abi::SockOption opt, uint64_t value);
  void apply_options(uint32_t socket);

  // ---- UDP (udp_sockets.cc) ----
  int do_udp_bind(uint32_t app, const abi::Command& cmd, abi::Completion* out);
  int do_udp_connect(uint32_t app, const abi::Command& cmd, abi::Completion* out);
  void udp_tx_ready(uint32_t socket, Time now);
  void publish_udp_events();
  uint16_t pick_udp_port();

  // ---- Bookkeeping ----
  uint32_t alloc_socket();
  void free_socket(uint32_t s);
  void release_port(uint32_t s);  // a TCP port it owns is free again
  uint32_t add_holder(uint32_t app, uint32_t socket);  // a slot for it, or kNone
  void drop_holder(uint32_t socket, uint32_t app, uint32_t slot);
  uint16_t pick_ephemeral_port();
  bool reachable(uint32_t dst) const;  // the NIC routes dst (its subnet or a gateway)
  void publish_conn(uint32_t socket);
  void publish_listener(uint32_t socket);
  uint64_t exclusive_sleepers(const Holder& h) const;
  // Marks one of h's sleeping exclusive waiters to be woken; false if none sleeps.
  bool wake_one_exclusive(const Holder& h);
  void list_exclusive(uint32_t s) {  // s has exclusive waiters to wake this round
    if (sockets_[s].exclusive_listed) return;
    sockets_[s].exclusive_listed = true;
    exclusive_due_.push_back(s);
  }
  // A change in `slot` of `app`: the threads that wait for it are woken.
  void touch(uint32_t app, uint32_t slot) { apps_.mark_slot_dirty(app, slot); }
  // A change in the ring owner's slot: every holder may be waiting for it, the
  // owner's doorbell (a blocking call on those rings) or its own (poll, select
  // and epoll sleep on the calling process's doorbell).
  void touch_holders(const Socket& sock) {
    if (sock.rings.app != kNone) touch(sock.rings.app, sock.rings.slot);
    for (const Holder& h : sock.holders) touch(h.app, h.slot);
  }
  uint32_t socket_of(uint32_t app, uint32_t slot) const { return apps_.app(app).slots[slot].socket; }

  AppRegistry& apps_;
  Engine& engine_;
  NicAddress nic_;
  DaemonCounters& ctr_;
  std::vector<Socket> sockets_;
  std::vector<uint32_t> free_;
  std::vector<uint32_t> port_owner_;  // TCP port -> socket + 1, 0 = free
  uint32_t ephemeral_owned_ = 0;      // TCP ports of the ephemeral range owned
  uint16_t next_ephemeral_ = 32768;
  uint16_t next_udp_ephemeral_ = 32768;
  std::vector<uint8_t> udp_scratch_;  // one datagram that wraps around a tx ring's end
  std::vector<uint32_t> exclusive_due_;  // listeners with exclusive_due > 0
};

}  // namespace shunt
