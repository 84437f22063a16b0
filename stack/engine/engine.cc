// Engine construction, Ethernet, ARP, IPv4 and ICMP. TCP is in tcp.cc.
#include "engine/engine.hh"

#include <cerrno>
#include <cstring>

namespace shunt {

using namespace wire;

namespace {
constexpr Time kArpTimeout = 60 * kSecond;
constexpr Time kArpRetry = 200 * kMillisecond;
// A stale entry (older than kArpTimeout) goes on being used while it is polled
// (RFC 1122 2.3.2.1, "unicast poll"; Linux's STALE and PROBE states): an ARP
// request to the cached MAC at most every kArpPollEvery, given up after kArpPolls
// unanswered. Busy peers do not refresh us themselves (Linux confirms a neighbour
// from TCP's progress and sends no ARP), and re-resolving from scratch every
// kArpTimeout parked four frames and dropped the rest of a busy link's output.
constexpr Time kArpPollEvery = 1 * kSecond;
constexpr uint8_t kArpPolls = 3;
constexpr uint8_t kIcmpEchoReply = 0;
constexpr uint8_t kIcmpEchoRequest = 8;
}  // namespace

const char* state_name(TcpState s) {
  static constexpr const char* kNames[] = {"CLOSED",      "LISTEN",     "SYN-SENT",
                                           "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1",
                                           "FIN-WAIT-2",  "CLOSE-WAIT", "CLOSING",
                                           "LAST-ACK",    "TIME-WAIT"};
  return kNames[static_cast<unsigned>(s)];
}

Engine::Engine(const EngineConfig& config, FrameSink& sink)
    : cfg_(config),
      sink_(sink),
      conns_(config.max_connections),
      listeners_(config.max_listeners),
      listener_by_port_(65536, 0),
      staging_idx_(config.staging_buffers),
      staging_bytes_(size_t{config.staging_buffers} * config.staging_size),
      arp_(kArpEntries),
      arp_pending_(size_t{kArpEntries} * kArpPendingFrames * kMaxFrame),
      arp_pending_len_(size_t{kArpEntries} * kArpPendingFrames),
      loop_bytes_(size_t{kLoopFrames} * kMaxFrame),
      loop_len_(kLoopFrames),
      wheel_(config.max_connections) {
  for (uint32_t i = config.max_connections; i-- > 0;) {
    conns_[i].next_in_queue = free_head_;
    free_head_ = i;
  }
  uint32_t tsize = 16;
  while (tsize < config.max_connections * 2) tsize <<= 1;
  table_.assign(tsize, kInvalidId);
  table_mask_ = tsize - 1;
  staging_free_.reserve(config.staging_buffers);
  for (uint32_t i = config.staging_buffers; i-- > 0;) staging_free_.push_back(i);
  output_list_.reserve(config.max_connections);
  loop_waiters_.reserve(config.max_connections);
  event_list_.reserve(config.max_connections + config.max_listeners);
}

bool Engine::on_link(uint32_t ip) const {
  uint32_t mask = cfg_.prefix_len == 0 ? 0 : ~uint32_t{0} << (32 - cfg_.prefix_len);
  return (ip & mask) == (cfg_.ip & mask);
}

Drop Engine::input(std::span<const uint8_t> frame, Time now) {
  ++ctr_.rx_frames;
  ctr_.rx_bytes += frame.size();
  Drop d = Drop::kNone;
  EthHeader eth;
  if (!parse_eth(frame, &eth)) {
    d = Drop::kEthTruncated;
  } else if (eth.dst != cfg_.mac && eth.dst != kBroadcastMac) {
    d = Drop::kEthNotForUs;  // multicast included: we joined no group
  } else if (eth.type == kEtherArp) {
    d = input_arp(frame.subspan(kEthHeader), now);
  } else if (eth.type == kEtherIpv4) {
    Ipv4 ip;
    switch (parse_ipv4(frame.subspan(kEthHeader), &ip)) {
      case ParseError::kNone:
        if (ip.dst != cfg_.ip) d = Drop::kIpNotForUs;
        else if ((ip.src == cfg_.ip && !delivering_looped_) || ip.src == 0xffffffff || (ip.src >> 28) == 0xe)
          d = Drop::kIpBadSource;  // RFC 1122 3.2.1.3: never answer these
        else if (ip.proto == kProtoTcp) d = input_tcp(ip, now);
        else if (ip.proto == kProtoIcmp) d = input_icmp(ip, now);
        else if (ip.proto == kProtoUdp) d = input_udp(ip, now);  // udp.cc
        else d = Drop::kIpUnknownProtocol;
        break;
      case ParseError::kTruncated: d = Drop::kIpTruncated; break;
      case ParseError::kBadVersion: d = Drop::kIpBadVersion; break;
      case ParseError::kBadHeaderLength: d = Drop::kIpBadHeaderLength; break;
      case ParseError::kBadLength: d = Drop::kIpBadLength; break;
      case ParseError::kBadChecksum: d = Drop::kIpBadChecksum; break;
      case ParseError::kFragment:  // reassembled for UDP (udp.cc)
        d = input_fragment(frame.subspan(kEthHeader), now);
        break;
      default: d = Drop::kIpBadLength; break;
    }
  } else {
    d = Drop::kEthUnknownType;
  }
  if (d != Drop::kNone) ++ctr_.drops[static_cast<size_t>(d)];
  return d;
}

// ---- ARP (RFC 826) ----

Engine::ArpEntry* Engine::arp_lookup(uint32_t ip) {
  for (auto& e : arp_)
    if (e.ip == ip) return &e;
  return nullptr;
}

Engine::ArpEntry* Engine::arp_learn(uint32_t ip, const MacAddr& mac, Time now) {
  ArpEntry* e = arp_lookup(ip);
  if (!e) {
    // Take a free entry, else the one that expires first.
    ArpEntry* victim = &arp_[0];
    for (auto& x : arp_) {
      if (x.ip == 0) { victim = &x; break; }
      if (x.pending == 0 && x.expires < victim->expires) victim = &x;
    }
    e = victim;
    *e = ArpEntry{};
    e->ip = ip;
  }
  e->mac = mac;
  e->resolved = true;
  e->expires = now + kArpTimeout;
  e->polls = 0;
  // Release frames that waited for this address.
  size_t base = size_t(e - arp_.data()) * kArpPendingFrames;
  for (uint8_t i = 0; i < e->pending; ++i) {
    auto out = sink_.tx_buffer();
    uint16_t len = arp_pending_len_[base + i];
    if (out.size() < len) {
      ++ctr_.drops[static_cast<size_t>(Drop::kTxNoBuffer)];
      continue;
    }
    uint8_t* f = arp_pending_.data() + (base + i) * kMaxFrame;
    std::memcpy(f, mac.data(), 6);
    std::memcpy(out.data(), f, len);
    sink_.tx_commit(len);
    ++ctr_.tx_frames;
    ctr_.tx_bytes += len;
  }
  e->pending = 0;
  return e;
}

Drop Engine::input_arp(std::span<const uint8_t> packet, Time now) {
  Arp arp;
  if (parse_arp(packet, &arp) != ParseError::kNone) return Drop::kArpMalformed;
  if (arp.sender_ip == 0 || arp.sender_ip == cfg_.ip) {
    // Probes (sender 0) and our own announcements carry nothing to learn.
    return arp.target_ip == cfg_.ip && arp.op == 1 && arp.sender_ip == 0 ? Drop::kNone
                                                                          : Drop::kArpNotForUs;
  }
  // RFC 826: update an entry we have; add one only when the packet is for us.
  bool for_us = arp.target_ip == cfg_.ip;
  if (for_us || arp_lookup(arp.sender_ip)) arp_learn(arp.sender_ip, arp.sender_mac, now);
  if (!for_us) return Drop::kArpNotForUs;
  if (arp.op == 1) send_arp(2, arp.sender_mac, arp.sender_ip, arp.sender_mac);
  return Drop::kNone;
}

void Engine::send_arp(uint16_t op, const MacAddr& dst_mac, uint32_t target_ip,
                      const MacAddr& target_mac) {
  auto out = sink_.tx_buffer();
  if (out.size() < kEthHeader + kArpPacket) {
    ++ctr_.drops[static_cast<size_t>(Drop::kTxNoBuffer)];
    return;
  }
  write_eth(out.data(), dst_mac, cfg_.mac, kEtherArp);
  write_arp(out.data() + kEthHeader, Arp{.op = op,
                                         .sender_mac = cfg_.mac,
                                         .sender_ip = cfg_.ip,
                                         .target_mac = target_mac,
                                         .target_ip = target_ip});
  // Pad to the Ethernet minimum (60 bytes without FCS).
  size_t len = 60;
  std::memset(out.data() + kEthHeader + kArpPacket, 0, len - kEthHeader - kArpPacket);
  sink_.tx_commit(len);
  ++ctr_.tx_frames;
  ctr_.tx_bytes += len;
  if (op == 1) ++ctr_.arp_requests_sent;
  else ++ctr_.arp_replies_sent;
}

void Engine::announce() { send_arp(1, kBroadcastMac, cfg_.ip, MacAddr{}); }

uint8_t* Engine::begin_ip_frame(uint32_t dst, Time now) {
  loop_frame_ = false;
  if (dst == cfg_.ip) {
    // Our own address: the frame never reaches the NIC, as the kernel's loopback.
    if (loop_head_ - loop_tail_ >= kLoopFrames) {
      ++ctr_.drops[static_cast<size_t>(Drop::kLoopbackFull)];
      return nullptr;
    }
    pending_frame_ = nullptr;
    loop_frame_ = true;
    uint8_t* f = loop_bytes_.data() + size_t(loop_head_ % kLoopFrames) * kMaxFrame;
    write_eth(f, cfg_.mac, cfg_.mac, kEtherIpv4);
    return f;
  }
  uint32_t hop = dst;
  if (!on_link(dst)) {
    if (cfg_.gateway == 0) {
      ++ctr_.drops[static_cast<size_t>(Drop::kNoRoute)];
      return nullptr;
    }
    hop = cfg_.gateway;
  }
  pending_frame_ = nullptr;
  ArpEntry* e = arp_lookup(hop);
  if (e && e->resolved && e->expires <= now && now - e->requested >= kArpPollEvery) {
    if (e->polls < kArpPolls) {
      ++e->polls;
      e->requested = now;
      send_arp(1, e->mac, hop, MacAddr{});
    } else {
      e->resolved = false;  // no answer to the polls: ask everyone, park meanwhile
    }
  }
  if (e && e->resolved) {
    auto out = sink_.tx_buffer();
    if (out.size() < size_t{cfg_.mtu} + kEthHeader) {
      ++ctr_.drops[static_cast<size_t>(Drop::kTxNoBuffer)];
      return nullptr;
    }
    write_eth(out.data(), e->mac, cfg_.mac, kEtherIpv4);
    return out.data();
  }
  // Unresolved: park the frame (bounded) and ask, at most every kArpRetry.
  if (!e) {
    e = arp_learn(hop, MacAddr{}, now);
    e->resolved = false;
  }
  if (e->requested == 0 || now - e->requested >= kArpRetry) {
    e->requested = now;
    send_arp(1, kBroadcastMac, hop, MacAddr{});
  }
  if (e->pending >= kArpPendingFrames) {
    ++ctr_.drops[static_cast<size_t>(Drop::kArpPending)];
    return nullptr;
  }
  size_t idx = size_t(e - arp_.data()) * kArpPendingFrames + e->pending;
  pending_frame_ = arp_pending_.data() + idx * kMaxFrame;
  pending_entry_ = e;
  write_eth(pending_frame_, MacAddr{}, cfg_.mac, kEtherIpv4);
  return pending_frame_;
}

void Engine::end_ip_frame(size_t len) {
  if (loop_frame_) {
    loop_frame_ = false;
    loop_len_[loop_head_ % kLoopFrames] = uint16_t(len);
    ++loop_head_;
    ++ctr_.looped_frames;
    return;
  }
  if (pending_frame_) {
    size_t idx = size_t(pending_entry_ - arp_.data()) * kArpPendingFrames + pending_entry_->pending;
    arp_pending_len_[idx] = uint16_t(len);
    ++pending_entry_->pending;
    pending_frame_ = nullptr;
    return;
  }
  sink_.tx_commit(len);
  ++ctr_.tx_frames;
  ctr_.tx_bytes += len;
}

bool Engine::loop_room_for(ConnId c) {
  if (loop_head_ - loop_tail_ < kLoopFrames - kLoopReserve) return true;
  Tcb& t = conns_[c];
  if (!t.loop_waiting) {
    ++ctr_.loop_waits;
    t.loop_waiting = true;
    loop_waiters_.push_back(c);  // reserved for every connection: no allocation
  }
  return false;
}

// Receives the frames looped so far (those their answers loop meanwhile wait for
// the next round), a few at a time with the output they cause in between: each
// ACK reaches the sender as it would over a wire, not one per round (which would
// make every ACK a stretch ACK), and senders that waited for room go on.
void Engine::deliver_looped(Time now) {
  const uint32_t end = loop_head_;
  while (loop_tail_ != end) {
    delivering_looped_ = true;
    for (uint32_t n = 0; n < kLoopBatch && loop_tail_ != end; ++n, ++loop_tail_) {
      uint32_t i = loop_tail_ % kLoopFrames;
      input({loop_bytes_.data() + size_t(i) * kMaxFrame, loop_len_[i]}, now);
    }
    delivering_looped_ = false;
    for (ConnId c : loop_waiters_) {
      conns_[c].loop_waiting = false;
      if (conns_[c].in_table) queue_output(c);
    }
    loop_waiters_.clear();
    flush_output(now);
  }
}

// ---- ICMP (RFC 792): echo only in this version ----

Drop Engine::input_icmp(const Ipv4& ip, Time now) {
  Icmp icmp;
  if (parse_icmp(ip.payload, &icmp) != ParseError::kNone) return Drop::kIcmpMalformed;
  constexpr uint8_t kIcmpUnreachable = 3;
  if (icmp.type == kIcmpUnreachable && icmp.body.size() >= 4 + kIpv4Header + 8 &&
      icmp.body[4 + 9] == kProtoTcp)
    return tcp_icmp_error(icmp.type, icmp.code, load16(icmp.body.data() + 2), icmp.body.subspan(4),
                          now);
  if (icmp.type == kIcmpUnreachable && icmp.body.size() >= 4 + kIpv4Header + 8 &&
      icmp.body[4 + 9] == kProtoUdp)
    return udp_icmp_error(icmp.type, icmp.code, icmp.body.subspan(4));  // udp.cc
  if (icmp.type != kIcmpEchoRequest || icmp.code != 0) return Drop::kIcmpUnhandled;
  size_t len = ip.payload.size();
  if (len + kIpv4Header > cfg_.mtu) return Drop::kIcmpMalformed;
  uint8_t* f = begin_ip_frame(ip.src, now);
  if (!f) return Drop::kNone;  // counted by begin_ip_frame
  uint8_t* p = f + kEthHeader + kIpv4Header;
  std::memcpy(p, ip.payload.data(), len);
  p[0] = kIcmpEchoReply;
  store16(p + 2, 0);
  store16(p + 2, checksum_finish(checksum_add(0, p, len)));
  write_ipv4(f + kEthHeader, cfg_.ip, ip.src, kProtoIcmp, uint16_t(len), ip_id_++);
  end_ip_frame(kEthHeader + kIpv4Header + len);
  ++ctr_.icmp_echo_replies;
  return Drop::kNone;
}

// ---- Connection table (open addressing, linear probing) ----

uint32_t Engine::hash_tuple(uint32_t rip, uint16_t rport, uint16_t lport) const {
  uint64_t k = (uint64_t{rip} << 32) | (uint64_t{rport} << 16) | lport;
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdull;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ull;
  k ^= k >> 33;
  return uint32_t(k);
}

ConnId Engine::find(uint32_t rip, uint16_t rport, uint16_t lport) const {
  for (uint32_t i = hash_tuple(rip, rport, lport) & table_mask_;; i = (i + 1) & table_mask_) {
    uint32_t c = table_[i];
    if (c == kInvalidId) return kInvalidId;
    const Tcb& t = conns_[c];
    if (t.remote_ip == rip && t.remote_port == rport && t.local_port == lport) return c;
  }
}

void Engine::table_insert(ConnId c) {
  Tcb& t = conns_[c];
  for (uint32_t i = hash_tuple(t.remote_ip, t.remote_port, t.local_port) & table_mask_;;
       i = (i + 1) & table_mask_) {
    if (table_[i] == kInvalidId) {
      table_[i] = c;
      t.in_table = true;
      return;
    }
  }
}

void Engine::table_remove(ConnId c) {
  Tcb& t = conns_[c];
  if (!t.in_table) return;
  t.in_table = false;
  uint32_t i = hash_tuple(t.remote_ip, t.remote_port, t.local_port) & table_mask_;
  while (table_[i] != c) {
    if (table_[i] == kInvalidId) return;
    i = (i + 1) & table_mask_;
  }
  // Backward-shift deletion (no tombstones): pull later entries of the probe chain
  // into the hole when their home slot does not lie cyclically in (hole, j].
  for (uint32_t j = (i + 1) & table_mask_; table_[j] != kInvalidId; j = (j + 1) & table_mask_) {
    const Tcb& m = conns_[table_[j]];
    uint32_t home = hash_tuple(m.remote_ip, m.remote_port, m.local_port) & table_mask_;
    bool home_in_gap = ((j - home) & table_mask_) < ((j - i) & table_mask_);
    if (!home_in_gap) {
      table_[i] = table_[j];
      i = j;
    }
  }
  table_[i] = kInvalidId;
}

}  // namespace shunt
