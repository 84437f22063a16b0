// UDP sockets in the socket table: kUdpBind / kUdpConnect, draining a slot's tx
// ring of datagram records into the engine on kTxReady, and publishing the
// engine's UDP events (datagrams in, ICMP errors) to the slots (docs/abi.md
// "Datagram sockets").
//
// A UDP socket has one slot whose rings the engine uses (Socket::rings); after a
// fork the child's slot for it only names it in commands, and both processes use
// the ring owner's rings (as for inherited connections).
#include <arpa/inet.h>

#include <cerrno>

#include "daemon/sockets.hh"

namespace shunt {

int SocketTable::do_udp_bind(uint32_t app, const abi::Command& cmd, abi::Completion* out) {
  uint32_t ip = ntohl(cmd.ip);
  if (ip != 0 && ip != nic_.ip) return -EADDRNOTAVAIL;
  uint16_t port = ntohs(cmd.port);
  if (port == 0) port = pick_udp_port();
  if (port == 0) return -EADDRINUSE;
  if (engine_.udp().port_in_use(port)) return -EADDRINUSE;
  uint32_t s = alloc_socket();  // may grow sockets_: no references held across it
  uint32_t slot = add_holder(app, s);
  if (slot == kNone) {
    free_socket(s);
    return -ENOBUFS;
  }
  AppRegion& region = apps_.app(app).region;
  region.reset_slot(slot, abi::SlotState::kBound);
  UdpId id;
  if (int rc = engine_.udp().bind(port, region.rx_end(slot), uint64_t(s) + 1, &id); rc != 0) {
    drop_holder(s, app, slot);
    apps_.free_slot(app, slot);
    free_socket(s);
    return rc;
  }
  Socket& sock = sockets_[s];
  sock.kind = Kind::kUdp;
  sock.port = port;
  sock.udp = id;
  sock.udp_tx = region.tx_end(slot);
  sock.inode = cmd.arg2;
  sock.rings = {app, slot};
  out->slot = slot;
  out->local_ip = htonl(nic_.ip);
  out->local_port = htons(port);
  return 0;
}

int SocketTable::do_udp_connect(uint32_t app, const abi::Command& cmd, abi::Completion* out) {
  int rc = 0;
  uint32_t slot = slot_to_connect(app, cmd, /*udp=*/true, &rc);
  if (rc != 0) return rc;
  uint32_t s = socket_of(app, slot);
  Socket& sock = sockets_[s];
  if (sock.kind != Kind::kUdp) return -EINVAL;
  uint32_t dst = ntohl(cmd.ip);
  abi::SlotState state = abi::SlotState::kBound;
  if (dst != 0) {
    // The NIC reaches its subnet, its gateway's routes, and itself (the engine
    // loops datagrams to its own address back).
    if (!reachable(dst)) {
      if (cmd.slot == abi::kNoSlot) do_close(app, slot, Time(0));
      return -ENETUNREACH;
    }
    state = abi::SlotState::kConnected;
  }
  engine_.udp().connect(sock.udp, dst, dst == 0 ? 0 : ntohs(cmd.port));
  const Holder h = sock.rings;
  if (h.app != kNone && apps_.app(h.app).in_use) {
    apps_.app(h.app).region.set_state(h.slot, state);
    touch(h.app, h.slot);
  }
  if (!(h == Holder{app, slot})) {  // a fork child's slot names the socket too
    apps_.app(app).region.set_state(slot, state);
    touch(app, slot);
  }
  out->slot = slot;
  out->local_ip = htonl(nic_.ip);
  out->local_port = htons(sock.port);
  out->remote_ip = dst == 0 ? 0 : cmd.ip;
  out->remote_port = dst == 0 ? 0 : cmd.port;
  return 0;
}

// The application wrote datagram records (kTxReady). Everything published so far
// goes out now; records the application adds meanwhile are announced again (the
// notice handshake, docs/abi.md), so the loop never chases a busy writer.
void SocketTable::udp_tx_ready(uint32_t s, Time now) {
  Socket& sock = sockets_[s];
  const Holder h = sock.rings;
  AppRegion& region = apps_.app(h.app).region;
  region.clear_tx_notice(h.slot);
  abi::ConsumerEnd& tx = sock.udp_tx;
  uint32_t budget = tx.readable();  // 0 when the head is out of range (a ring fault)
  if (budget > 0 && budget < sizeof(abi::DgramHeader)) {
    region.fail(Violation::kDatagramRecord);
    return;
  }
  if (udp_scratch_.empty()) udp_scratch_.resize(abi::kMaxDatagram);
  uint32_t done = 0;
  while (done < budget) {
    abi::DgramHeader hd;
    abi::DgramFront f = abi::dgram_front(tx, &hd);
    if (f == abi::DgramFront::kEmpty) break;
    if (f == abi::DgramFront::kCorrupt) {
      region.fail(Violation::kDatagramRecord);
      return;
    }
    uint32_t pos = tx.tail() + uint32_t(sizeof(abi::DgramHeader));
    // In place when contiguous. The application may change those bytes under
    // us: that spoils only its own datagram (the engine reads each byte once
    // into the frame, within the ring's bounds).
    std::span<const uint8_t> payload;
    uint32_t run = hd.len;
    const uint8_t* at = tx.span(pos, &run);
    if (run == hd.len) {
      payload = {at, hd.len};
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
  if (done > 0) {
    region.bump(h.slot);  // room for writers that wait
    touch_holders(sock);
  }
}

void SocketTable::publish_udp_events() {
  engine_.udp().drain_events([&](uint64_t user, uint32_t ev, int err) {
    uint32_t s = uint32_t(user - 1);
    if (s >= sockets_.size() || sockets_[s].kind != Kind::kUdp) return;
    const Holder h = sockets_[s].rings;
    if (h.app == kNone || !apps_.app(h.app).in_use) return;  // a fork child may read it
    AppRegion& region = apps_.app(h.app).region;
    if (ev & kUdpEvError) region.post_error(h.slot, err);
    else region.bump(h.slot);
    touch_holders(sockets_[s]);
  });
}

}  // namespace shunt
