// TCP output: once per batch, for every connection input or the application
// touched, build what is due: retransmissions (RFC 6675 / 6582 recovery), new
// data (window, congestion window, Nagle, cork), FIN, and the ACK.
#include <algorithm>

#include "engine/engine.hh"
#include "engine/tcp_internal.hh"

namespace shunt {

using namespace wire;
using tcp::SeqNum;

uint32_t Engine::ts_clock(const Tcb& t, Time now) const {
  return uint32_t(now / kMillisecond) + t.ts_offset;  // 1 ms ticks (RFC 7323 5.4)
}

// Payload that fits in one segment next to the options it will carry (RFC 6691:
// the MSS counts no options).
uint32_t Engine::seg_payload(const Tcb& t) const {
  uint32_t options = t.ts_ok ? 12 : 0;
  if (t.sack_ok && (t.ooo.n != 0 || t.dsack_pending)) {
    uint32_t blocks = std::min<uint32_t>(t.ooo.n + (t.dsack_pending ? 1 : 0), kMaxSackBlocks);
    blocks = std::min<uint32_t>(blocks, (40 - options - 4) / 8);
    options += 4 + 8 * blocks;
  }
  return std::min<uint32_t>(t.snd.mss, our_mss()) - options;
}

void Engine::send_reset_for(const TcpSegment& seg, Time now) {
  uint8_t* f = begin_ip_frame(seg.src_ip, now);
  if (!f) return;
  TcpSegment r{.src_ip = cfg_.ip, .dst_ip = seg.src_ip, .src_port = seg.dst_port,
               .dst_port = seg.src_port};
  if (seg.flags & kAck) {
    r.seq = seg.ack;
    r.flags = kRst;
  } else {
    r.ack = seg.seq + seg.seq_len();
    r.flags = kRst | kAck;
  }
  size_t hlen = write_tcp(f + kEthHeader + kIpv4Header, r);
  write_ipv4(f + kEthHeader, cfg_.ip, seg.src_ip, kProtoTcp, uint16_t(hlen), ip_id_++);
  end_ip_frame(kEthHeader + kIpv4Header + hlen);
  ++ctr_.tcp_resets_sent;
  ++ctr_.tcp_segments_out;
}

void Engine::send_segment(Tcb& t, SeqNum seq, uint8_t flags, uint32_t len, Time now) {
  SeqNum end = seq + len + ((flags & kSyn) ? 1 : 0) + ((flags & kFin) ? 1 : 0);
  bool retransmission = seq < t.snd.max;
  if (end > t.snd.max) t.snd.max = end;  // also when no buffer: RTO resends it
  uint8_t* f = begin_ip_frame(t.remote_ip, now);
  if (!f) return;
  if (len > 0) log_sent(t, seq, len, retransmission, now);
  bool syn = flags & kSyn;
  // RFC 7323 2.2: a SYN's window is never scaled.
  uint32_t wnd = rx_window(t);
  uint16_t field = syn ? uint16_t(std::min<uint32_t>(wnd, 65535)) : uint16_t(wnd >> t.rcv_wscale);
  TcpSegment s{.src_ip = cfg_.ip,
                .dst_ip = t.remote_ip,
                .src_port = t.local_port,
                .dst_port = t.remote_port,
                .seq = seq.raw(),
                .ack = (flags & kAck) ? t.rcv.nxt.raw() : 0,
                .flags = flags,
                .window = field};
  if (syn) {
    s.mss = our_mss();
    bool active = !(flags & kAck);  // our own SYN offers what we support
    s.wscale = active ? int8_t(cfg_.window_shift) : t.wscale_ok ? int8_t(t.rcv_wscale) : int8_t(-1);
    s.sack_permitted = active ? cfg_.sack : t.sack_ok;
    s.has_ts = active ? cfg_.timestamps : t.ts_ok;
  } else {
    s.has_ts = t.ts_ok && !(flags & kRst);
  }
  if (s.has_ts) {
    s.tsval = t.cookie_tsval != 0 ? t.cookie_tsval : ts_clock(t, now);
    s.tsecr = (syn && !(flags & kAck)) ? 0 : t.ts_recent;
  }
  if (t.sack_ok && !syn && (flags & kAck)) fill_sack_blocks(t, &s);
  uint8_t* p = f + kEthHeader + kIpv4Header;
  size_t hlen = tcp_header_len(s);
  if (len > 0) t.tx.copy_out(t.tx_base + uint32_t(seq - (t.iss + 1)), p + hlen, len);
  s.payload = {p + hlen, len};
  write_tcp(p, s);
  write_ipv4(f + kEthHeader, cfg_.ip, t.remote_ip, kProtoTcp, uint16_t(hlen + len), ip_id_++, t.ttl,
             t.tos);
  end_ip_frame(kEthHeader + kIpv4Header + hlen + len);
  ++ctr_.tcp_segments_out;
  if (len > 0) t.last_tx = now;
  if (flags & kAck) {
    t.rcv.last_ack = t.rcv.nxt;  // Last.ACK.sent (RFC 7323 4.3)
    t.ack_pending = false;
    t.rcv.adv_wnd = syn ? field : uint32_t(field) << t.rcv_wscale;
    t.rcv_unacked = 0;
    t.delack_at = 0;
    if (t.quickack > 0) --t.quickack;
  }
}

// RFC 2018 4: the first block reports the most recent arrival (or a DSACK, RFC
// 2883 4), the others repeat the rest, most recent first.
void Engine::fill_sack_blocks(Tcb& t, TcpSegment* s) {
  uint8_t n = 0;
  if (t.dsack_pending) {
    s->sack[n++] = {t.dsack_start.raw(), t.dsack_end.raw()};
    t.dsack_pending = false;
    ++ctr_.tcp_dsacks_sent;
  }
  if (t.ooo.n != 0) {
    uint16_t first = t.ooo.recent < t.ooo.n ? t.ooo.recent : 0;
    s->sack[n++] = {t.ooo.r[first].start.raw(), t.ooo.r[first].end.raw()};
    for (uint16_t i = t.ooo.n; i-- > 0 && n < kMaxSackBlocks;)
      if (i != first) s->sack[n++] = {t.ooo.r[i].start.raw(), t.ooo.r[i].end.raw()};
  }
  s->sack_count = n;
}

void Engine::send_new_data(ConnId c, Time now) {
  Tcb& t = conns_[c];
  uint32_t unsent = tx_unsent(t);
  if (unsent == 0) return;
  // RFC 5681 4.1: after an idle period longer than the RTO, restart from the
  // initial window.
  if (t.snd.una == t.snd.max && t.last_tx != 0 && now - t.last_tx > current_rto(t))
    t.cwnd = std::min(t.cwnd, kInitialWindowSegments * t.snd.mss);
  bool sack_recovery = t.in_recovery && t.sack_ok;
  uint32_t in_pipe = sack_recovery ? pipe(t) : uint32_t(t.snd.nxt - t.snd.una) - sacked_in(t, t.snd.una, t.snd.nxt);
  for (; unsent != 0; unsent = tx_unsent(t)) {
    if (t.remote_ip == cfg_.ip && !loop_room_for(c)) break;  // resumes once the loop drains
    // Resending after an RTO: skip what the peer holds, stop short of the next
    // range it holds.
    uint32_t sacked_limit = ~0u;
    if (t.snd.nxt < t.snd.max && t.sacked.n != 0) {
      for (uint8_t i = 0; i < t.sacked.n; ++i) {
        const auto& r = t.sacked.r[i];
        if (r.start <= t.snd.nxt && t.snd.nxt < r.end) {
          t.snd.nxt = r.end;
          continue;
        }
        if (t.snd.nxt < r.start) {
          sacked_limit = uint32_t(r.start - t.snd.nxt);
          break;
        }
      }
      unsent = tx_unsent(t);
      if (unsent == 0) break;
    }
    uint32_t in_flight = uint32_t(t.snd.nxt - t.snd.una);
    uint32_t wnd_room = t.snd.wnd > in_flight ? t.snd.wnd - in_flight : 0;
    // RFC 3042: up to two segments past cwnd on the first duplicate ACKs.
    uint32_t cwnd = t.cwnd + (t.in_recovery ? 0 : std::min<uint32_t>(t.dupacks, 2) * t.snd.mss);
    uint32_t cwnd_room = cwnd > in_pipe ? cwnd - in_pipe : 0;
    uint32_t room = std::min(wnd_room, cwnd_room);
    if (room == 0) {
      // Zero window with nothing in flight: the persist timer probes it.
      if (t.snd.wnd == 0 && in_flight == 0 && t.persist_at == 0)
        t.persist_at = now + current_rto(t);
      break;
    }
    uint32_t full = seg_payload(t);
    uint32_t len = std::min({unsent, room, full, sacked_limit});
    if (len < full && len != sacked_limit) {
      // Sender SWS avoidance (RFC 9293 3.8.6.2.1): no window-limited runt
      // while data is in flight.
      if (len < unsent && in_flight > 0) break;
      // Nagle (RFC 9293 3.7.4) and TCP_CORK: the last partial segment waits for
      // the ACK of what is in flight, or for the cork to come off.
      if (len == unsent && !t.fin_queued && (t.cork || (!t.nodelay && in_flight > 0))) break;
    }
    uint8_t flags = kAck;
    if (len == unsent) flags |= kPsh;
    bool with_fin = t.fin_queued && len == unsent && (!t.fin_sent || t.snd.nxt + len == t.fin_seq);
    if (with_fin) flags |= kFin;
    // Karn: time only new data, never a retransmission.
    if (!t.rtt_timing && t.backoff == 0 && t.snd.nxt == t.snd.max) {
      t.rtt_timing = true;
      t.rtt_seq = t.snd.nxt;
      t.rtt_start = now;
    }
    send_segment(t, t.snd.nxt, flags, len, now);
    // Limited-transmit segments (beyond cwnd) do not count in the FlightSize
    // that sets ssthresh (RFC 3042 2).
    if (in_pipe + len > t.cwnd && !t.in_recovery) t.limited_sent += len;
    t.snd.nxt += len;
    in_pipe += len;
    if (with_fin) {
      t.fin_sent = true;
      t.fin_seq = t.snd.nxt;
      t.snd.nxt += 1;
    }
    if (t.rto_at == 0) t.rto_at = now + current_rto(t);
    if (with_fin) break;
  }
  // Out of data with room to spare: rate samples taken until this is delivered
  // measure the application, not the path (delivery rate estimation 3.4).
  if (tx_unsent(t) == 0 && in_pipe < t.cwnd)
    t.rate.app_limited = std::max<uint64_t>(t.rate.delivered + in_pipe, 1);
  arm_tail_loss_probe(t, now);
}

void Engine::output(ConnId c, Time now) {
  Tcb& t = conns_[c];
  if (t.rx.valid()) t.rx.refresh_shape();  // a grown ring's full window once the reader is past the switch
  switch (t.state) {
    case TcpState::kClosed:
    case TcpState::kListen:
      return;
    case TcpState::kSynSent:
    case TcpState::kSynReceived:
      if (t.snd.nxt == t.iss) {
        uint8_t flags = t.state == TcpState::kSynSent ? kSyn : (kSyn | kAck);
        send_segment(t, t.iss, flags, 0, now);
        t.snd.nxt = t.iss + 1;
        if (t.backoff == 0 && !t.rtt_timing) {
          t.rtt_timing = true;
          t.rtt_seq = t.iss;
          t.rtt_start = now;
        }
        if (t.rto_at == 0) t.rto_at = now + current_rto(t);
        arm_timer(c);
      } else if (t.ack_pending && t.state == TcpState::kSynReceived) {
        send_segment(t, t.snd.max, kAck, 0, now);
      }
      return;
    default:
      break;
  }
  if (may_send_data(t.state)) {
    if (t.in_recovery || t.rexmit_now) retransmit_lost(c, now);
    send_new_data(c, now);
    if (t.fin_queued && tx_unsent(t) == 0 && (!t.fin_sent || t.snd.nxt == t.fin_seq)) {
      send_segment(t, t.snd.nxt, kFin | kAck, 0, now);
      t.fin_sent = true;
      t.fin_seq = t.snd.nxt;
      t.snd.nxt += 1;
      if (t.rto_at == 0) t.rto_at = now + current_rto(t);
    }
    if (t.fin_sent) {
      if (t.state == TcpState::kEstablished) set_state(c, TcpState::kFinWait1, now);
      else if (t.state == TcpState::kCloseWait) set_state(c, TcpState::kLastAck, now);
    }
  }
  // A pure ACK carries the highest sequence number sent: after a rewind, snd.nxt
  // lies below what the peer already expects.
  if (t.ack_pending) send_segment(t, t.snd.max, kAck, 0, now);
  // The application is behind (less than half the ring free): ask the daemon to
  // tell us when it drains, for a window update (receiver SWS avoidance).
  if (t.rx.valid() && !t.window_low && rx_window(t) < std::min(t.rx.capacity(), max_window(t)) / 2) {
    t.window_low = true;
    t.window_low_at = now;
    note_event(c, kEvWindowLow);
  }
  arm_timer(c);
}

}  // namespace shunt
