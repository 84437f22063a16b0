// UDP sockets in the daemon: kUdpBind / kUdpConnect, draining a slot's tx ring of
// datagram records into the engine on kTxReady, and publishing the engine's UDP
// events (datagrams in, ICMP errors) to the slots (docs/abi.md "Datagram sockets").
//
// A UDP socket has one slot whose rings the engine uses (Socket::rings); after a
// fork the child's slot for it only names it in commands, and both processes use
// the ring owner's rings (as for inherited connections, a version-1 limit).
#include <arpa/inet.h>

#include <cerrno>
#include <sstream>

#include "daemon/daemon.hh"

namespace shunt {

abi::Completion Daemon::handle_udp(uint32_t app_id, const abi::Command& cmd) {
  abi::Completion c{};
  c.cookie = cmd.cookie;
  c.slot = cmd.slot;
  switch (static_cast<abi::Op>(cmd.op)) {
    case abi::Op::kUdpBind: c.result = do_udp_bind(app_id, cmd, &c); break;
    case abi::Op::kUdpConnect: c.result = do_udp_connect(app_id, cmd, &c); break;
    default: c.result = -EINVAL; break;
  }
  return c;
}

uint16_t Daemon::pick_udp_port() {
  // Linux's default ip_local_port_range; UDP ports are a space of their own.
  for (uint32_t i = 0; i < 61000 - 32768; ++i) {
    uint16_t p = next_udp_ephemeral_;
    next_udp_ephemeral_ = next_udp_ephemeral_ >= 60999 ? 32768 : uint16_t(next_udp_ephemeral_ + 1);
    if (!engine_.udp().port_in_use(p)) return p;
  }
  return 0;
}

int Daemon::do_udp_bind(uint32_t app_id, const abi::Command& cmd, abi::Completion* out) {
  uint32_t ip = ntohl(cmd.ip);
  if (ip != 0 && ip != cfg_.ip) return -EADDRNOTAVAIL;
  uint16_t port = ntohs(cmd.port);
  if (port == 0) port = pick_udp_port();
  if (port == 0) return -EADDRINUSE;
  if (engine_.udp().port_in_use(port)) return -EADDRINUSE;
  uint32_t s = alloc_socket();  // may grow sockets_: no references held across it
  uint32_t slot = alloc_slot(app_id, s);
  if (slot == kNone) {
    free_socket(s);
    return -ENOBUFS;
  }
  abi::SocketSlot* sl = slot_of(app_id, slot);
  reset_slot(sl, abi::SlotState::kBound);
  sl->error_seq.store(0, std::memory_order_relaxed);
  UdpId id;
  if (int rc = engine_.udp().bind(port, rx_ring(app_id, slot), uint64_t(s) + 1, &id); rc != 0) {
    free_slot(app_id, slot);
    sockets_[s].kind = Kind::kUdp;  // so that free_socket recycles it
    free_socket(s);
    return rc;
  }
  Socket& sock = sockets_[s];
  sock.kind = Kind::kUdp;
  sock.port = port;
  sock.udp = id;
  sock.inode = cmd.arg2;
  sock.rings = {app_id, slot};
  out->slot = slot;
  out->local_ip = htonl(cfg_.ip);
  out->local_port = htons(port);
  return 0;
}

int Daemon::do_udp_connect(uint32_t app_id, const abi::Command& cmd, abi::Completion* out) {
  uint32_t slot = cmd.slot;
  if (slot == abi::kNoSlot) {
    abi::Command bind_cmd = cmd;
    bind_cmd.ip = 0;
    bind_cmd.port = 0;
    abi::Completion tmp{};
    if (int rc = do_udp_bind(app_id, bind_cmd, &tmp); rc != 0) return rc;
    slot = tmp.slot;
  } else if (!valid_slot(app_id, slot)) {
    return -EBADF;
  }
  uint32_t s = apps_[app_id].slots[slot].socket;
  Socket& sock = sockets_[s];
  if (sock.kind != Kind::kUdp) return -EINVAL;
  uint32_t dst = ntohl(cmd.ip);
  abi::SlotState state = abi::SlotState::kBound;
  if (dst != 0) {
    // The NIC reaches its subnet, its gateway's routes, and itself (the engine loops
    // datagrams to its own address back).
    uint32_t mask = cfg_.prefix_len == 0 ? 0 : ~uint32_t{0} << (32 - cfg_.prefix_len);
    if ((dst & mask) != (cfg_.ip & mask) && cfg_.gateway == 0) {
      if (cmd.slot == abi::kNoSlot) do_close(app_id, slot, Time(0));
      return -ENETUNREACH;
    }
    state = abi::SlotState::kConnected;
  }
  engine_.udp().connect(sock.udp, dst, dst == 0 ? 0 : ntohs(cmd.port));
  Holder h = sock.rings;
  if (h.app != kNone && apps_[h.app].in_use) {
    abi::SocketSlot* sl = slot_of(h.app, h.slot);
    sl->state.store(uint32_t(state), std::memory_order_release);
    touch(h.app, sl);
  }
  if (h.app != app_id || h.slot != slot) {  // a fork child's slot names the socket too
    abi::SocketSlot* sl = slot_of(app_id, slot);
    sl->state.store(uint32_t(state), std::memory_order_release);
    touch(app_id, sl);
  }
  out->slot = slot;
  out->local_ip = htonl(cfg_.ip);
  out->local_port = htons(sock.port);
  out->remote_ip = dst == 0 ? 0 : cmd.ip;
  out->remote_port = dst == 0 ? 0 : cmd.port;
  return 0;
}

// The application wrote datagram records (kTxReady). Everything published so far
// goes out now; records the application adds meanwhile are announced again (the
// notice handshake, docs/abi.md), so the loop never chases a busy writer.
void Daemon::udp_tx_ready(uint32_t s, Time now) {
  Socket& sock = sockets_[s];
  Holder h = sock.rings;
  if (sock.kind != Kind::kUdp || h.app == kNone || !apps_[h.app].in_use) return;
  abi::SocketSlot* sl = slot_of(h.app, h.slot);
  sl->tx_notice.store(0, std::memory_order_seq_cst);
  abi::ByteRing tx = tx_ring(h.app, h.slot);
  const uint32_t cap = tx.capacity();
  uint32_t budget = tx.readable();
  if (budget > cap || (budget > 0 && budget < sizeof(abi::DgramHeader))) {
    ++ctr_.apps_killed;
    detach_app(h.app, "corrupt datagram ring indices");
    return;
  }
  if (udp_scratch_.empty()) udp_scratch_.resize(abi::kMaxDatagram);
  uint32_t done = 0;
  while (done < budget) {
    abi::DgramHeader hd;
    abi::DgramFront f = abi::dgram_front(tx, &hd);
    if (f == abi::DgramFront::kEmpty) break;
    if (f == abi::DgramFront::kCorrupt) {
      ++ctr_.apps_killed;
      detach_app(h.app, "corrupt datagram record");
      return;
    }
    uint32_t pos = tx.indices()->tail.value.load(std::memory_order_relaxed) +
                   uint32_t(sizeof(abi::DgramHeader));
    uint32_t off = pos & (cap - 1);
    std::span<const uint8_t> payload;
    if (off + hd.len <= cap) {
      payload = {tx.bytes() + off, hd.len};
    } else {
      tx.copy_out(pos, udp_scratch_.data(), hd.len);
      payload = {udp_scratch_.data(), hd.len};
    }
    // Errors (port 0, a datagram lost on the way) are the engine's to count: UDP
    // reports nothing per datagram once sendto has returned.
    (void)engine_.udp_send(sock.udp, ntohl(hd.ip), ntohs(hd.port), payload, now);
    uint32_t size = abi::dgram_record_size(hd.len);
    tx.consume(size);
    done += size;
  }
  if (done > 0) touch(h.app, sl);  // room for writers that wait
}

void Daemon::publish_udp_events() {
  engine_.udp().drain_events([&](uint64_t user, uint32_t ev, int err) {
    uint32_t s = uint32_t(user - 1);
    if (s >= sockets_.size() || sockets_[s].kind != Kind::kUdp) return;
    Holder h = sockets_[s].rings;
    if (h.app == kNone || !apps_[h.app].in_use) return;
    abi::SocketSlot* sl = slot_of(h.app, h.slot);
    if (ev & kUdpEvError) {
      sl->error.store(err, std::memory_order_relaxed);
      sl->error_seq.fetch_add(1, std::memory_order_release);
    }
    touch(h.app, sl);
  });
}

std::string Daemon::udp_stats_text() const {
  const UdpCounters& u = engine_.udp().counters;
  std::ostringstream o;
  o << "udp.datagrams_in " << u.datagrams_in << "\nudp.datagrams_out " << u.datagrams_out
    << "\nudp.fragments_out " << u.fragments_out << "\nudp.reassembled " << u.reassembled
    << "\nudp.port_unreachable_sent " << u.port_unreachable_sent << "\nudp.icmp_errors_in "
    << u.icmp_errors_in << "\nudp.sockets " << engine_.udp().live() << "\n";
  return o.str();
}

}  // namespace shunt
