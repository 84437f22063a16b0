#include "fake_shuntd.hh"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <vector>

#include "shunt/control.h"
#include "shunt/scm.h"
#include "test_region.hh"

namespace shunt::test {

using abi::SlotState;

namespace {

struct Endpoint {
  int app = -1;
  uint32_t slot = abi::kNoSlot;
  bool operator==(const Endpoint& o) const { return app == o.app && slot == o.slot; }
};

enum class Kind { kFree, kBound, kListener, kConn, kUdp };

struct Sock {
  Kind kind = Kind::kFree;
  uint32_t ip = 0;
  uint16_t port = 0;  // network order
  uint64_t inode = 0;
  Endpoint peer;            // kConn
  uint32_t peer_ip = 0;
  uint16_t peer_port = 0;
  bool connecting = false;  // kConnect answered, handshake not done yet
  bool fin_wanted = false;  // shutdown(WR)/close: FIN once tx drained
  bool fin_sent = false;
  bool closed = false;      // kClose received: the slot goes back when drained
  bool linger_zero = false;
  Endpoint alias_of;        // fork child's command slot for a parent's connection
};

struct App {
  int ctl = -1;
  TestRegion region;
  int app_bell = -1, daemon_bell = -1;
  std::array<int, abi::kWakeCells> cell_bells = [] {  // kWakeCell: each thread's bell
    std::array<int, abi::kWakeCells> a{};
    a.fill(-1);
    return a;
  }();
  std::array<uint64_t, abi::kWakeCells> cell_tokens{};
  uint32_t id = 0;
  bool alive = true;
  bool dirty = false;  // something changed: ring the doorbell if anyone waits
  std::vector<Sock> socks;
  void close_cell_bells() {
    for (int& fd : cell_bells)
      if (fd >= 0) {
        close(fd);
        fd = -1;
      }
  }
};

int send_fds(int sock, const void* buf, size_t len, const int* fds, int n) {
  return int(scm::send(sock, buf, len, fds, n));
}

}  // namespace

struct FakeShuntd::Impl {
  int listen_fd = -1;
  std::string path;
  uint32_t nic_ip = 0;
  uint32_t next_id = 1;
  uint16_t next_port = 40000;
  std::vector<std::unique_ptr<App>> apps;
  // Listener groups by port: every listening slot (several after fork) and the
  // connections waiting to be accepted (client endpoints).
  struct Group {
    std::vector<Endpoint> listeners;
    std::deque<Endpoint> pending;
  };
  std::map<uint16_t, Group> groups;
  std::vector<Endpoint> connecting;  // finish the handshake next round

  App& app(int i) { return *apps[size_t(i)]; }
  Sock& sock(Endpoint e) { return app(e.app).socks[e.slot]; }
  abi::SocketSlot* slot(Endpoint e) { return app(e.app).region.slot(e.slot); }
  void bump(Endpoint e) {
    slot(e)->event_seq.fetch_add(1, std::memory_order_release);
    app(e.app).dirty = true;
  }
  void set_flags(Endpoint e, uint32_t f) { slot(e)->flags.fetch_or(f, std::memory_order_release); }
  void set_state(Endpoint e, SlotState s) { slot(e)->state.store(uint32_t(s), std::memory_order_release); }

  int alloc_slot(int a) {
    App& ap = app(a);
    for (uint32_t i = 0; i < ap.socks.size(); ++i) {
      if (ap.socks[i].kind != Kind::kFree) continue;
      ap.socks[i] = Sock{};
      abi::SocketSlot* s = ap.region.slot(i);
      s->flags.store(0);
      s->error.store(0);
      s->accept_ready.store(0);
      s->tx_notice.store(0);
      s->rx_notice.store(0);
      s->rx.head.value.store(0);
      s->rx.tail.value.store(0);
      s->tx.head.value.store(0);
      s->tx.tail.value.store(0);
      s->generation.fetch_add(1);
      return int(i);
    }
    return -1;
  }
  void free_slot(Endpoint e) {
    sock(e).kind = Kind::kFree;
    set_state(e, SlotState::kFree);
  }
  bool port_in_use(uint16_t port) {
    for (auto& a : apps)
      for (auto& s : a->socks)
        if (a->alive && (s.kind == Kind::kBound || s.kind == Kind::kListener) && s.port == port)
          return true;
    return false;
  }
  void update_accept_ready(uint16_t port) {
    Group& g = groups[port];
    for (Endpoint l : g.listeners) {
      slot(l)->accept_ready.store(uint32_t(g.pending.size()), std::memory_order_release);
      bump(l);
    }
  }
  void reset(Endpoint e, int err) {
    Sock& s = sock(e);
    if (s.kind != Kind::kConn || s.closed) return;
    slot(e)->error.store(err, std::memory_order_release);
    set_flags(e, abi::kFlagReset);
    set_state(e, SlotState::kClosed);
    s.peer = Endpoint{};
    bump(e);
  }
  // The socket's app closed it: hand the slot back once nothing is left to send.
  void close_sock(Endpoint e) {
    Sock& s = sock(e);
    if (s.kind == Kind::kListener) {
      Group& g = groups[s.port];
      g.listeners.erase(std::remove(g.listeners.begin(), g.listeners.end(), e), g.listeners.end());
      if (g.listeners.empty()) {
        for (Endpoint c : g.pending) reset(c, ECONNRESET);
        groups.erase(s.port);
      }
      free_slot(e);
      return;
    }
    if (s.kind != Kind::kConn) {
      free_slot(e);
      return;
    }
    // Like Linux: unread bytes or SO_LINGER{1,0} reset the peer at once.
    bool unread = app(e.app).region.rx(e.slot).readable() > 0;
    if (s.peer.app >= 0 && (unread || s.linger_zero)) {
      reset(s.peer, ECONNRESET);
      sock(s.peer).peer = Endpoint{};
      free_slot(e);
      return;
    }
    if (s.peer.app < 0) {
      free_slot(e);
      return;
    }
    s.closed = true;
    s.fin_wanted = true;
  }

  void complete(App& a, abi::QueuePair* qp, const abi::Command& c, int result, uint32_t slot_no,
                const Sock* s) {
    abi::Completion k{};
    k.cookie = c.cookie;
    k.result = result;
    k.slot = slot_no;
    if (s != nullptr) {
      k.local_ip = s->ip;
      k.local_port = s->port;
      k.remote_ip = s->peer_ip;
      k.remote_port = s->peer_port;
    }
    abi::EntryRing<abi::Completion> cq(&qp->cq_idx, qp->cq, abi::kQueueDepth);
    cq.push(k);
    a.dirty = true;
  }

  // Commands that name a fork child's alias act on the parent's connection.
  Endpoint resolve(int a, uint32_t slot_no) {
    Endpoint e{a, slot_no};
    if (slot_no >= app(a).socks.size()) return Endpoint{};
    if (sock(e).alias_of.app >= 0) return sock(e).alias_of;
    return e;
  }

  void command(int ai, abi::QueuePair* qp, const abi::Command& c, std::atomic<int>* counters) {
    App& a = app(ai);
    if (c.op < 16) counters[c.op].fetch_add(1);
    switch (abi::Op(c.op)) {
      case abi::Op::kBind: {
        if (c.ip != nic_ip) return complete(a, qp, c, -EADDRNOTAVAIL, abi::kNoSlot, nullptr);
        uint16_t port = c.port != 0 ? c.port : htons(next_port++);
        if (port_in_use(port)) return complete(a, qp, c, -EADDRINUSE, abi::kNoSlot, nullptr);
        int i = alloc_slot(ai);
        if (i < 0) return complete(a, qp, c, -ENOBUFS, abi::kNoSlot, nullptr);
        Sock& s = a.socks[size_t(i)];
        s.kind = Kind::kBound;
        s.ip = c.ip;
        s.port = port;
        s.inode = c.arg2;
        set_state({ai, uint32_t(i)}, SlotState::kBound);
        return complete(a, qp, c, 0, uint32_t(i), &s);
      }
      case abi::Op::kListen: {
        Endpoint e{ai, c.slot};
        if (c.slot >= a.socks.size()) return complete(a, qp, c, -EINVAL, 0, nullptr);
        Sock& s = sock(e);
        if (s.kind == Kind::kListener) return complete(a, qp, c, 0, c.slot, &s);
        if (s.kind != Kind::kBound) return complete(a, qp, c, -EINVAL, 0, nullptr);
        s.kind = Kind::kListener;
        groups[s.port].listeners.push_back(e);
        set_state(e, SlotState::kListening);
        update_accept_ready(s.port);
        return complete(a, qp, c, 0, c.slot, &s);
      }
      case abi::Op::kConnect: {
        int i;
        if (c.slot == abi::kNoSlot) {
          i = alloc_slot(ai);
          if (i < 0) return complete(a, qp, c, -ENOBUFS, abi::kNoSlot, nullptr);
          a.socks[size_t(i)].ip = nic_ip;
          a.socks[size_t(i)].port = htons(next_port++);
        } else if (c.slot < a.socks.size() && a.socks[c.slot].kind == Kind::kBound) {
          i = int(c.slot);
        } else {
          return complete(a, qp, c, -EINVAL, abi::kNoSlot, nullptr);
        }
        Sock& s = a.socks[size_t(i)];
        s.kind = Kind::kConn;
        s.inode = c.arg2;
        s.peer_ip = c.ip;
        s.peer_port = c.port;
        s.connecting = true;
        set_state({ai, uint32_t(i)}, SlotState::kConnecting);
        connecting.push_back({ai, uint32_t(i)});
        return complete(a, qp, c, 0, uint32_t(i), &s);
      }
      case abi::Op::kAccept: {
        Endpoint l{ai, c.slot};
        if (c.slot >= a.socks.size() || sock(l).kind != Kind::kListener)
          return complete(a, qp, c, -EINVAL, 0, nullptr);
        uint16_t port = sock(l).port;
        Group& g = groups[port];
        while (!g.pending.empty() && sock(g.pending.front()).kind != Kind::kConn) g.pending.pop_front();
        if (g.pending.empty()) return complete(a, qp, c, -EAGAIN, 0, nullptr);
        Endpoint client = g.pending.front();
        g.pending.pop_front();
        int i = alloc_slot(ai);
        if (i < 0) return complete(a, qp, c, -ENOBUFS, 0, nullptr);
        Sock& s = a.socks[size_t(i)];
        Sock& cs = sock(client);
        s.kind = Kind::kConn;
        s.ip = nic_ip;
        s.port = port;
        s.inode = c.arg2;
        s.peer = client;
        s.peer_ip = cs.ip;
        s.peer_port = cs.port;
        cs.peer = {ai, uint32_t(i)};
        set_state({ai, uint32_t(i)}, SlotState::kConnected);
        update_accept_ready(port);
        return complete(a, qp, c, 0, uint32_t(i), &s);
      }
      case abi::Op::kClose: {
        Endpoint e = resolve(ai, c.slot);
        if (e.app < 0) return;
        if (!(e == Endpoint{ai, c.slot})) {  // a child's alias: only the alias goes
          free_slot({ai, c.slot});
          return;
        }
        if (sock(e).kind != Kind::kFree) close_sock(e);
        return;
      }
      case abi::Op::kShutdown: {
        Endpoint e = resolve(ai, c.slot);
        if (e.app < 0 || sock(e).kind != Kind::kConn)
          return complete(a, qp, c, -ENOTCONN, c.slot, nullptr);
        if (c.arg != SHUT_RD) sock(e).fin_wanted = true;
        return complete(a, qp, c, 0, c.slot, &sock(e));
      }
      case abi::Op::kTxReady:
      case abi::Op::kRxDrained:
        return;  // the pump looks at every ring each round
      case abi::Op::kTcpInfo: {
        // Like shuntd: Linux's numbering; a listener's state alone; the MSS of a
        // 1500-byte MTU with timestamps for a connection.
        Endpoint e = resolve(ai, c.slot);
        if (e.app < 0) return complete(a, qp, c, -EBADF, c.slot, nullptr);
        const Sock& s = sock(e);
        qp->reply = abi::TcpInfo{};
        qp->reply.state = s.kind == Kind::kListener ? 10  // TCP_LISTEN
                          : s.kind != Kind::kConn || s.closed ? 7  // TCP_CLOSE
                          : s.connecting ? 2 : 1;  // TCP_SYN_SENT, TCP_ESTABLISHED
        if (qp->reply.state == 1) qp->reply.snd_mss = 1448;
        return complete(a, qp, c, 0, c.slot, nullptr);
      }
      case abi::Op::kUdpBind:
      case abi::Op::kUdpConnect:
        return udp_command(ai, qp, c);
      case abi::Op::kSetOption: {
        // Like shuntd: no completion when the application asked for none.
        bool reply = !(c.flags & abi::kCmdNoReply);
        Endpoint e = resolve(ai, c.slot);
        if (e.app < 0) return reply ? complete(a, qp, c, -EBADF, c.slot, nullptr) : void();
        if (c.arg == int32_t(abi::SockOption::kLingerZero)) sock(e).linger_zero = c.arg2 != 0;
        else if (c.arg <= 0 || c.arg >= int32_t(abi::SockOption::kCount))
          return reply ? complete(a, qp, c, -ENOPROTOOPT, c.slot, nullptr) : void();
        return reply ? complete(a, qp, c, 0, c.slot, nullptr) : void();
      }
      default:
        return;
    }
  }

  void finish_connects() {
    std::vector<Endpoint> todo;
    todo.swap(connecting);
    for (Endpoint e : todo) {
      if (!app(e.app).alive || sock(e).kind != Kind::kConn) continue;
      Sock& s = sock(e);
      s.connecting = false;
      uint32_t mask = htonl(0xffffff00u);
      auto it = groups.find(s.peer_port);
      if ((s.peer_ip & mask) != (nic_ip & mask) || it == groups.end() || it->second.listeners.empty()) {
        slot(e)->error.store(ECONNREFUSED, std::memory_order_release);
        set_flags(e, abi::kFlagReset);
        set_state(e, SlotState::kClosed);
        bump(e);
        continue;
      }
      set_state(e, SlotState::kConnected);  // like the kernel: established before accept
      bump(e);
      it->second.pending.push_back(e);
      update_accept_ready(s.peer_port);
    }
  }

  // Moves bytes from each connection's tx ring to its peer's rx ring.
  // ---- UDP: datagram records between slots (docs/abi.md "Datagram sockets") ----

  bool udp_port_in_use(uint16_t port) {
    for (auto& a : apps)
      for (auto& s : a->socks)
        if (a->alive && s.kind == Kind::kUdp && s.port == port) return true;
    return false;
  }
  void udp_command(int ai, abi::QueuePair* qp, const abi::Command& c) {
    App& a = app(ai);
    uint32_t slot_no = c.slot;
    if (abi::Op(c.op) == abi::Op::kUdpBind || c.slot == abi::kNoSlot) {
      uint32_t ip = abi::Op(c.op) == abi::Op::kUdpBind ? c.ip : nic_ip;
      if (ip != nic_ip) return complete(a, qp, c, -EADDRNOTAVAIL, abi::kNoSlot, nullptr);
      uint16_t port = abi::Op(c.op) == abi::Op::kUdpBind && c.port != 0 ? c.port : htons(next_port++);
      if (udp_port_in_use(port)) return complete(a, qp, c, -EADDRINUSE, abi::kNoSlot, nullptr);
      int i = alloc_slot(ai);
      if (i < 0) return complete(a, qp, c, -ENOBUFS, abi::kNoSlot, nullptr);
      Sock& s = a.socks[size_t(i)];
      s.kind = Kind::kUdp;
      s.ip = nic_ip;
      s.port = port;
      s.inode = c.arg2;
      a.region.slot(uint32_t(i))->error_seq.store(0);
      set_state({ai, uint32_t(i)}, SlotState::kBound);
      slot_no = uint32_t(i);
      if (abi::Op(c.op) == abi::Op::kUdpBind) return complete(a, qp, c, 0, slot_no, &s);
    }
    Endpoint e = resolve(ai, slot_no);
    if (e.app < 0 || sock(e).kind != Kind::kUdp) return complete(a, qp, c, -EINVAL, slot_no, nullptr);
    Sock& s = sock(e);
    s.peer_ip = c.ip;
    s.peer_port = c.ip == 0 ? 0 : c.port;
    set_state(e, c.ip == 0 ? SlotState::kBound : SlotState::kConnected);
    bump(e);
    return complete(a, qp, c, 0, slot_no, &s);
  }
  // The UDP socket a datagram to ip:port (network order) from src reaches, if any.
  Endpoint udp_lookup(uint32_t ip, uint16_t port, uint32_t src_ip, uint16_t src_port) {
    uint32_t mask = htonl(0xffffff00u);
    if ((ip & mask) != (nic_ip & mask)) return Endpoint{};
    for (int ai = 0; ai < int(apps.size()); ++ai) {
      if (!app(ai).alive) continue;
      for (uint32_t i = 0; i < app(ai).socks.size(); ++i) {
        Sock& s = app(ai).socks[i];
        if (s.kind != Kind::kUdp || s.port != port) continue;
        if (s.peer_ip != 0 && (s.peer_ip != src_ip || s.peer_port != src_port)) continue;
        return Endpoint{ai, i};
      }
    }
    return Endpoint{};
  }
  // Moves each UDP socket's tx records to their destinations' rx rings. A full
  // destination holds the sender back (no loss, so tests can count); a datagram to
  // a port nobody has is dropped, and a connected sender hears ECONNREFUSED.
  void pump_udp(int ai, uint32_t i) {
    Sock& s = app(ai).socks[i];
    abi::SocketSlot* sl = app(ai).region.slot(i);
    sl->tx_notice.store(0, std::memory_order_release);
    abi::ByteRing tx = app(ai).region.tx(i);
    bool moved = false;
    std::vector<uint8_t> buf;
    for (int n = 0; n < 1024; ++n) {
      abi::DgramHeader h;
      if (abi::dgram_front(tx, &h) != abi::DgramFront::kOk) break;
      Endpoint to = udp_lookup(h.ip, h.port, s.ip, s.port);
      if (to.app < 0) {
        if (s.peer_ip == h.ip && s.peer_port == h.port) {
          sl->error.store(ECONNREFUSED);
          sl->error_seq.fetch_add(1, std::memory_order_release);
        }
        tx.consume(abi::dgram_record_size(h.len));
        moved = true;
        continue;
      }
      abi::ByteRing rx = app(to.app).region.rx(to.slot);
      if (rx.writable() < abi::dgram_record_size(h.len)) break;
      buf.resize(h.len);
      abi::dgram_pop(tx, h, buf.data(), h.len);
      abi::dgram_push(rx, s.ip, s.port, buf.data(), h.len);
      bump(to);
      moved = true;
    }
    if (moved) bump({ai, i});
  }

  void pump() {
    for (int ai = 0; ai < int(apps.size()); ++ai) {
      App& a = app(ai);
      for (uint32_t i = 0; i < a.socks.size(); ++i) {
        Sock& s = a.socks[i];
        if (s.kind == Kind::kUdp && s.alias_of.app < 0) pump_udp(ai, i);
        if (s.kind != Kind::kConn || s.connecting) continue;
        Endpoint e{ai, i};
        abi::SocketSlot* sl = a.region.slot(i);
        sl->tx_notice.store(0, std::memory_order_release);  // before looking at the ring
        sl->rx_notice.store(0, std::memory_order_release);
        abi::ByteRing tx = a.region.tx(i);
        if (s.peer.app >= 0 && tx.readable() > 0) {
          abi::ByteRing prx = app(s.peer.app).region.rx(s.peer.slot);
          uint32_t n = std::min(tx.readable(), prx.writable());
          if (n > 0) {
            std::vector<uint8_t> buf(n);
            tx.read(buf.data(), n);
            prx.write(buf.data(), n);
            bump(e);
            bump(s.peer);
          }
        } else if (s.peer.app < 0 && tx.readable() > 0 &&
                   (sl->flags.load() & abi::kFlagReset)) {
          tx.consume(tx.readable());  // reset: nobody will read it
        }
        if (s.fin_wanted && !s.fin_sent && tx.readable() == 0) {
          s.fin_sent = true;
          set_flags(e, abi::kFlagWriteShut);
          bump(e);
          if (s.peer.app >= 0) {
            Sock& p = sock(s.peer);
            set_flags(s.peer, abi::kFlagPeerFin);
            bump(s.peer);
            if (p.fin_sent) {  // both FINs: both sides are done
              set_state(s.peer, SlotState::kClosed);
              set_state(e, SlotState::kClosed);
            }
          }
        }
        if (s.closed && s.fin_sent) {
          if (s.peer.app >= 0) {
            // Data sent to a closed socket would get an RST from Linux.
            Sock& p = sock(s.peer);
            if (app(s.peer.app).region.tx(s.peer.slot).readable() > 0) reset(s.peer, ECONNRESET);
            p.peer = Endpoint{};
          }
          free_slot(e);
        }
      }
    }
  }

  void serve_queues(std::atomic<int>* counters) {
    for (int ai = 0; ai < int(apps.size()); ++ai)
      if (app(ai).alive) serve_app(ai, counters);
  }
  void serve_app(int ai, std::atomic<int>* counters) {
    {
      App& a = app(ai);
      uint32_t claimed = std::min(a.region.hdr->queue_pairs_claimed.load(), a.region.hdr->queue_pair_count);
      for (uint32_t q = 0; q < claimed; ++q) {
        abi::QueuePair* qp = abi::queue_pair(a.region.base, a.region.layout, q);
        abi::EntryRing<abi::Command> sq(&qp->sq_idx, qp->sq, abi::kQueueDepth);
        abi::Command c;
        while (sq.pop(&c)) command(ai, qp, c, counters);
      }
    }
  }

  void ring_doorbells() {
    for (auto& a : apps) {
      if (!a->alive || !a->dirty) continue;
      a->dirty = false;
      std::atomic_thread_fence(std::memory_order_seq_cst);
      // Not which threads wait for what changed, as shuntd knows: every sleeping
      // cell, which wakes too many but never too few.
      uint64_t one = 1;
      bool broadcast = a->region.hdr->app_waiters.load() > 0;
      for (uint64_t due = a->region.hdr->cells_sleeping.load(); due != 0; due &= due - 1) {
        const uint32_t c = uint32_t(__builtin_ctzll(due));
        int bell = a->cell_bells[c];
        if (bell < 0 || c >= a->region.layout.queue_pair_count ||
            abi::queue_pair(a->region.base, a->region.layout, c)->bell_token.load() != a->cell_tokens[c]) {
          broadcast = true;
        } else {
          ssize_t w = write(bell, &one, sizeof one);
          (void)w;
        }
      }
      if (broadcast) {
        ssize_t w = write(a->app_bell, &one, sizeof one);
        (void)w;
      }
    }
  }

  // The process is gone: like the kernel at exit, every socket it had is closed
  // (graceful unless unread data), after the commands it managed to queue.
  void app_gone(int ai, std::atomic<int>* counters) {
    App& a = app(ai);
    serve_app(ai, counters);
    for (uint32_t i = 0; i < a.socks.size(); ++i) {
      Sock& s = a.socks[i];
      if (s.kind == Kind::kFree || s.closed) continue;
      if (s.alias_of.app >= 0) {
        free_slot({ai, i});
        continue;
      }
      close_sock({ai, i});
    }
    for (auto& g : groups)
      g.second.pending.erase(std::remove_if(g.second.pending.begin(), g.second.pending.end(),
                                            [&](Endpoint e) { return e.app == ai; }),
                             g.second.pending.end());
    close(a.ctl);
    close(a.app_bell);
    close(a.daemon_bell);
    a.close_cell_bells();
    a.alive = false;  // the region stays mapped while its connections drain
  }
};

FakeShuntd::FakeShuntd(FakeOptions o) : opts_(o), impl_(new Impl) {}

FakeShuntd::~FakeShuntd() {
  stop();
  delete impl_;
}

bool FakeShuntd::start(const std::string& rundir) {
  impl_->path = rundir + "/shuntd.sock";
  inet_pton(AF_INET, opts_.nic_ip, &impl_->nic_ip);
  unlink(impl_->path.c_str());
  impl_->listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  snprintf(addr.sun_path, sizeof addr.sun_path, "%s", impl_->path.c_str());
  if (bind(impl_->listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      listen(impl_->listen_fd, 16) != 0)
    return false;
  thread_ = std::thread([this] { run(); });
  return true;
}

void FakeShuntd::stop() {
  if (!thread_.joinable()) return;
  stop_.store(true);
  thread_.join();
  for (auto& a : impl_->apps) {
    if (a->alive) {
      close(a->ctl);
      close(a->app_bell);
      close(a->daemon_bell);
      a->close_cell_bells();
    }
    a->region.destroy();
  }
  impl_->apps.clear();
  close(impl_->listen_fd);
  unlink(impl_->path.c_str());
}

void FakeShuntd::run() {
  Impl& m = *impl_;
  while (!stop_.load()) {
    std::vector<pollfd> pfds;
    pfds.push_back({m.listen_fd, POLLIN, 0});
    for (auto& a : m.apps) pfds.push_back({a->alive ? a->ctl : -1, POLLIN, 0});
    poll(pfds.data(), pfds.size(), 0);
    if (pfds[0].revents & POLLIN) {
      int c = accept4(m.listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (c >= 0) {
        ctl::Request req{};
        pollfd p{c, POLLIN, 0};
        poll(&p, 1, 2000);
        ssize_t n = recv(c, &req, sizeof req, 0);
        if (n == ssize_t(sizeof req) && req.type == uint32_t(ctl::Type::kAttach)) {
          ctl::AttachReply reply{};
          if (opts_.reply_status < 0 || req.abi_version != abi::kVersion) {
            reply.status = opts_.reply_status < 0 ? opts_.reply_status : -EPROTO;
            send_fds(c, &reply, sizeof reply, nullptr, 0);
            close(c);
          } else {
            auto a = std::make_unique<App>();
            a->ctl = c;
            a->id = m.next_id++;
            abi::Layout l{opts_.queue_pairs, opts_.slots, opts_.ring_size, opts_.ring_size};
            a->region.create(l, a->id, m.nic_ip, opts_.prefix_len);
            a->app_bell = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
            a->daemon_bell = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
            a->socks.resize(opts_.slots);
            reply.region_id = a->id;
            reply.region_size = a->region.size;
            int fds[3] = {a->region.memfd, a->app_bell, a->daemon_bell};
            send_fds(c, &reply, sizeof reply, fds, 3);
            m.apps.push_back(std::move(a));
            attaches_.fetch_add(1);
          }
        } else {
          close(c);
        }
      }
    }
    for (size_t i = 1; i < pfds.size(); ++i) {
      if (!(pfds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      int ai = int(i - 1);
      App& a = m.app(ai);
      ctl::Request req{};
      int fd_buf[scm::kMaxFds];
      int nfd = 0;
      ssize_t n = scm::recv(a.ctl, &req, sizeof req, fd_buf, scm::kMaxFds, &nfd, MSG_DONTWAIT);
      if (n == 0 || (n < 0 && n != -EAGAIN)) {
        m.app_gone(ai, commands_);
        continue;
      }
      std::vector<int> fds(fd_buf, fd_buf + nfd);
      if (n == ssize_t(sizeof req) && req.type == uint32_t(ctl::Type::kWakeCell) && nfd == 1 &&
          req.count < abi::kWakeCells) {
        if (a.cell_bells[req.count] >= 0) close(a.cell_bells[req.count]);
        a.cell_bells[req.count] = fds[0];
        a.cell_tokens[req.count] = req.token;
        continue;
      }
      if (n != ssize_t(sizeof req) || req.type != uint32_t(ctl::Type::kInherit)) {
        for (int fd : fds) close(fd);
        continue;
      }
      ctl::InheritReply reply{};
      reply.count = req.count;
      int parent = -1;
      for (int k = 0; k < int(m.apps.size()); ++k)
        if (m.apps[size_t(k)]->id == req.parent_region) parent = k;
      for (uint32_t k = 0; k < req.count && k < ctl::kMaxInherit; ++k) {
        reply.slots[k] = abi::kNoSlot;
        if (parent < 0 || k >= fds.size() || req.parent_slots[k] >= opts_.slots) continue;
        Endpoint pe{parent, req.parent_slots[k]};
        Sock& ps = m.sock(pe);
        struct stat st{};
        if (fstat(fds[k], &st) != 0 || uint64_t(st.st_ino) != ps.inode || ps.kind == Kind::kFree)
          continue;  // the fd is not that socket's placeholder
        int ci = m.alloc_slot(ai);
        if (ci < 0) continue;
        Sock& cs = a.socks[size_t(ci)];
        Endpoint ce{ai, uint32_t(ci)};
        if (ps.kind == Kind::kListener) {
          cs = ps;
          m.groups[ps.port].listeners.push_back(ce);
          m.set_state(ce, SlotState::kListening);
          m.update_accept_ready(ps.port);
        } else {
          cs.kind = ps.kind == Kind::kConn || ps.kind == Kind::kUdp ? Kind::kBound : ps.kind;  // command alias
          cs.alias_of = pe;
          cs.inode = ps.inode;
          m.set_state(ce, SlotState(m.slot(pe)->state.load()));
        }
        reply.slots[k] = uint32_t(ci);
      }
      for (int fd : fds) close(fd);
      send(a.ctl, &reply, sizeof reply, MSG_NOSIGNAL);
      inherits_.fetch_add(1);
    }
    m.serve_queues(commands_);
    m.finish_connects();
    m.pump();
    m.ring_doorbells();
    usleep(50);
  }
}

}  // namespace shunt::test
