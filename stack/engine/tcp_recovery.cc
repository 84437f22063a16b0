// Loss detection and recovery (docs/architecture.md, "The engine's loss recovery").
//
// With SACK, loss is RACK's to declare (RFC 8985): the send log (send_log.hh)
// keeps when each byte in flight was last sent; data sent before the most
// recently sent data the peer has delivered, by more than a reordering window,
// is lost. That finds lost retransmissions the same way as first losses. The
// repair is RFC 6675's: resend lost bytes while the pipe is below cwnd, new data
// after them. A tail with nothing after it is probed (RFC 8985 7), in recovery as
// well. A reduction whose every retransmission the peer reports as a duplicate
// (DSACK, RFC 2883) is undone. Without SACK: NewReno (RFC 6582).
#include <algorithm>

#include "engine/engine.hh"
#include "engine/tcp_internal.hh"

namespace shunt {

using namespace wire;
using tcp::SeqNum;

// RFC 5681 3.2: duplicate ACKs. With SACK they only drive limited transmit
// (RFC 3042); RACK decides loss in rack_after_ack.
void Engine::on_duplicate_ack(ConnId c, Time now) {
  Tcb& t = conns_[c];
  uint32_t mss = t.snd.mss;
  if (t.sack_ok) {
    // In recovery the pipe shrank by what was SACKed: room, perhaps, for more.
    if (t.in_recovery) {
      queue_output(c);
      return;
    }
    if (t.dupacks < 255) ++t.dupacks;
    if (t.dupacks <= 2) queue_output(c);
    return;
  }
  if (t.in_recovery) {
    t.cwnd += mss;  // RFC 6582 3.2 step 4: inflate
    queue_output(c);
    return;
  }
  if (t.dupacks < 255) ++t.dupacks;
  // RFC 5827 early retransmit: with fewer than four segments outstanding and
  // nothing new to send, fewer duplicate ACKs can come; lower the threshold.
  uint32_t outstanding = (uint32_t(t.snd.max - t.snd.una) + mss - 1) / mss;
  uint32_t thresh = kDupThresh;
  if (outstanding < 4 && tx_unsent(t) == 0) thresh = std::max<uint32_t>(1, outstanding - 1);
  if (t.dupacks < thresh) {
    if (t.dupacks <= 2) queue_output(c);
    return;
  }
  enter_recovery(c, now);
}

void Engine::enter_recovery(ConnId c, Time now) {
  Tcb& t = conns_[c];
  uint32_t mss = t.snd.mss;
  t.in_recovery = true;
  t.rexmit_now = true;  // the first retransmission goes regardless of the window
  t.rtt_timing = false;
  queue_output(c);
  // RFC 6582 4.1: a loss within the window of the previous recovery (or RTO)
  // is the same congestion event: repair it, but do not reduce again.
  if (t.recovered_once && t.snd.una <= t.recover) return;
  ++ctr_.tcp_recoveries;
  ++ctr_.tcp_fast_retransmits;
  t.recovered_once = true;
  t.recover = t.snd.max;
  if (t.cc.algorithm == CcAlgorithm::kBbr) return;  // its model keeps the window (bbr.hh)
  t.undo.armed = t.sack_ok;
  t.undo.retransmits = 0;
  t.undo.marker = t.snd.una;
  t.undo.cwnd = t.cwnd;
  t.undo.ssthresh = t.ssthresh;
  t.undo.cc = t.cc;
  uint32_t flight = uint32_t(t.snd.max - t.snd.una) - std::min(t.limited_sent, uint32_t(t.snd.max - t.snd.una));
  t.ssthresh = cc_on_loss(t.cc, t.cc.algorithm == CcAlgorithm::kReno ? flight : t.cwnd, mss, now);
  t.cwnd = t.ssthresh + (t.sack_ok ? 0 : kDupThresh * mss);
}

// Records the peer's SACK blocks (RFC 2018 3). Returns true when they told us
// something new. A first block below snd.una, or inside the second, is a DSACK
// (RFC 2883 4).
bool Engine::take_sack(Tcb& t, const TcpSegment& seg, Time now) {
  bool news = false;
  for (uint8_t i = 0; i < seg.sack_count; ++i) {
    SeqNum l(seg.sack[i][0]), r(seg.sack[i][1]);
    if (i == 0 && (r <= t.snd.una ||
                   (seg.sack_count > 1 && SeqNum(seg.sack[1][0]) <= l && r <= SeqNum(seg.sack[1][1])))) {
      take_dsack(t, l, r);
      continue;
    }
    // Blocks must lie inside what we sent (RFC 2018: ignore the rest).
    if (!(l < r) || l < t.snd.una || r > t.snd.max) continue;
    if (t.sacked.contains(l, r)) continue;
    // Only the parts not SACKed before are newly delivered.
    SeqNum s = l, start;
    uint32_t len;
    while (s < r && next_hole(t, s, r, &start, &len)) {
      rack_delivered(t, start, start + len, seg, now);
      note_delivered(t, len, now);
      s = start + len;
    }
    if (!t.sacked.add(l, r)) ++ctr_.tcp_sack_scoreboard_full;  // its bytes may be resent
    news = true;
  }
  return news;
}

// A DSACK: we sent [start, end) once too often.
void Engine::take_dsack(Tcb& t, SeqNum start, SeqNum end) {
  ++ctr_.tcp_dsacks_received;
  // RFC 8985 6.2 step 4: widen the reordering window by a quarter round trip per
  // round in which DSACKs come, for the next 16 recoveries.
  if (!t.rack.dsack_round_open || t.snd.una >= t.rack.dsack_round) {
    t.rack.dsack_round_open = true;
    t.rack.dsack_round = t.snd.max;
    if (t.rack.reo_wnd_mult < 64) ++t.rack.reo_wnd_mult;
    t.rack.reo_wnd_persist = 16;
  }
  // Every retransmission of the reduction reported duplicate: the loss was not
  // real (reordering, or a probe that crossed a late ACK). Put the window back.
  if (!t.undo.armed || t.undo.retransmits <= 0 || start < t.undo.marker || !(start < end)) return;
  uint32_t mss = std::max<uint32_t>(t.snd.mss, 1);
  t.undo.retransmits -= int32_t((uint32_t(end - start) + mss - 1) / mss);
  if (t.undo.retransmits > 0) return;
  t.undo.armed = false;
  t.cwnd = std::max(t.cwnd, t.undo.cwnd);
  t.ssthresh = std::max(t.ssthresh, t.undo.ssthresh);
  t.cc = t.undo.cc;
  t.rack.reordering_seen = true;
  ++ctr_.tcp_spurious_undos;
}

// RFC 8985 6.2 steps 1-3 for newly delivered [from, to) (cumulatively ACKed or
// SACKed): the most recently sent delivered data, its round trip, and whether
// delivery went out of order.
void Engine::rack_delivered(Tcb& t, SeqNum from, SeqNum to, const TcpSegment& seg, Time now) {
  for (uint8_t i = 0; i < t.sent_log.n; ++i) {
    const SendLog::Entry& x = t.sent_log.e[i];
    if (x.end <= from || to <= x.start) continue;
    SeqNum end = x.end < to ? x.end : to;
    if (x.order > t.rate.sample_order) {
      t.rate.sample_order = x.order;
      t.rate.sample_sent = x.sent;
      t.rate.sample = x.rate;
    }
    if (x.retransmitted) {
      // Step 2: the ACK may answer the original transmission, not this one.
      if (t.ts_ok && seg.has_ts && int32_t(seg.tsecr - ts_clock(t, x.sent)) < 0) continue;
      if (now - x.sent < t.rack.min_rtt) continue;
    }
    Time rtt = now - x.sent;
    if (!x.retransmitted && rtt != 0 && (t.rack.min_rtt == 0 || rtt < t.rack.min_rtt)) t.rack.min_rtt = rtt;
    if (x.order > t.rack.order || (x.order == t.rack.order && end > t.rack.end_seq)) {
      t.rack.order = x.order;
      t.rack.xmit_ts = x.sent;
      t.rack.end_seq = end;
      t.rack.rtt = rtt;
    }
    if (!x.retransmitted && t.rack.fack_set && end < t.rack.fack) t.rack.reordering_seen = true;
  }
  if (!t.rack.fack_set || to > t.rack.fack) {
    t.rack.fack = to;
    t.rack.fack_set = true;
  }
}

// RFC 8985 6.2 step 4: no allowance until reordering is seen once loss is
// evident; then a quarter of the minimum round trip per DSACK round, at most SRTT.
Time Engine::rack_reo_wnd(const Tcb& t) const {
  if (!t.rack.reordering_seen) {
    if (t.in_recovery) return 0;
    // DupThresh segments SACKed (full-sized ones: RFC 6675's bytes rule).
    uint32_t full = t.snd.mss - (t.ts_ok ? 12 : 0);
    if (t.sacked.bytes() >= kDupThresh * full) return 0;
  }
  return std::min<Time>(t.rack.min_rtt / 4 * t.rack.reo_wnd_mult, t.srtt);
}

// RFC 8985 6.2 step 5: marks lost what was sent before the most recently sent
// delivered data by more than the reordering window; arms the reordering timer
// for what is not yet overdue.
void Engine::rack_detect_loss(Tcb& t, Time now) {
  t.rack.timer_at = 0;
  if (t.rack.order == 0) return;
  Time reo_wnd = rack_reo_wnd(t);
  Time wait = 0;
  SendLog& log = t.sent_log;
  for (uint8_t i = 0; i < log.n; ++i) {
    SendLog::Entry& x = log.e[i];
    if (x.order > t.rack.order) break;  // the log is in send order
    bool same = x.order == t.rack.order;
    if (x.lost || (same && !(x.start < t.rack.end_seq))) continue;
    Time deadline = x.sent + t.rack.rtt + reo_wnd;
    if (deadline > now) {
      wait = std::max(wait, deadline - now);
      continue;
    }
    // Sent in the same batch as the delivered data: only what lies below it.
    if (same && t.rack.end_seq < x.end && !log.split(i, t.rack.end_seq)) continue;
    SeqNum start;
    uint32_t len;
    if (!next_hole(t, x.start, x.end, &start, &len)) continue;  // all delivered
    x.lost = true;
    ++ctr_.tcp_rack_marked_lost;
  }
  if (wait != 0) t.rack.timer_at = now + wait;
}

bool Engine::has_lost(const Tcb& t) const {
  for (uint8_t i = 0; i < t.sent_log.n; ++i)
    if (t.sent_log.e[i].lost) return true;
  return false;
}

// After an ACK that delivered something (SACK connections): detect loss, start
// or continue the repair.
void Engine::rack_after_ack(ConnId c, Time now) {
  Tcb& t = conns_[c];
  if (t.snd.una == t.snd.max || !may_send_data(t.state)) {
    t.rack.timer_at = 0;
    return;
  }
  rack_detect_loss(t, now);
  if (has_lost(t)) {
    if (!t.in_recovery) enter_recovery(c, now);
    else queue_output(c);
  }
  arm_timer(c);
}

void Engine::rack_timer(ConnId c, Time now) {
  conns_[c].rack.timer_at = 0;
  rack_after_ack(c, now);
}

void Engine::log_sent(Tcb& t, SeqNum seq, uint32_t len, bool retransmission, Time now) {
  // Nothing in flight: the sample interval starts now (delivery rate estimation 3.2).
  if (t.snd.una == t.snd.max || t.snd.una + len == t.snd.max) t.rate.first_sent = t.rate.delivered_time = now;
  RateSnapshot snap{t.rate.delivered, t.rate.delivered_time, t.rate.first_sent, t.rate.app_limited != 0};
  if (!t.sent_log.record(seq, seq + len, now, retransmission, snap)) ++ctr_.tcp_send_log_overflows;
}

void Engine::note_delivered(Tcb& t, uint32_t bytes, Time now) {
  if (bytes == 0) return;
  t.rate.delivered += bytes;
  t.rate.delivered_time = now;
  t.rate.acked += bytes;
  if (t.rate.app_limited != 0 && t.rate.delivered > t.rate.app_limited) t.rate.app_limited = 0;
}

// After an ACK that delivered data: one delivery rate sample from the most
// recently sent data it delivered, for BBR's model.
void Engine::cc_after_ack(ConnId c, Time now) {
  Tcb& t = conns_[c];
  uint32_t acked = t.rate.acked;
  t.rate.acked = 0;
  uint32_t order = t.rate.sample_order;
  t.rate.sample_order = 0;
  if (t.cc.algorithm != CcAlgorithm::kBbr || acked == 0) return;
  RateSample rs;
  rs.total_delivered = t.rate.delivered;
  rs.acked = acked;
  rs.inflight = uint32_t(t.snd.nxt - t.snd.una) - sacked_in(t, t.snd.una, t.snd.nxt);
  if (order != 0) {
    const RateSnapshot& p = t.rate.sample;
    t.rate.first_sent = t.rate.sample_sent;
    Time send_elapsed = t.rate.sample_sent - p.first_sent;
    Time ack_elapsed = t.rate.delivered_time - p.delivered_time;
    Time interval = std::max(send_elapsed, ack_elapsed);
    rs.prior_delivered = p.delivered;
    rs.delivered = t.rate.delivered - p.delivered;
    rs.app_limited = p.app_limited;
    // Shorter than the minimum RTT: ACK compression, not a rate.
    rs.interval = interval >= t.rack.min_rtt && interval != 0 ? interval : 0;
    rs.rtt = now - t.rate.sample_sent;
  }
  t.cwnd = bbr_on_ack(t.cc.bbr, rs, t.cwnd, t.snd.mss, now, t.in_recovery);
}

// SACKed bytes in [from, to).
uint32_t Engine::sacked_in(const Tcb& t, SeqNum from, SeqNum to) const {
  uint32_t n = 0;
  for (uint8_t i = 0; i < t.sacked.n; ++i) {
    SeqNum lo = tcp::max(t.sacked.r[i].start, from), hi = tcp::min(t.sacked.r[i].end, to);
    if (lo < hi) n += uint32_t(hi - lo);
  }
  return n;
}

// RFC 6675 "pipe": bytes sent and still in the network, i.e. neither SACKed nor
// declared lost and waiting to be sent again.
uint32_t Engine::pipe(const Tcb& t) const {
  SeqNum top = t.snd.nxt;
  uint32_t in_flight = uint32_t(top - t.snd.una) - sacked_in(t, t.snd.una, top);
  for (uint8_t i = 0; i < t.sent_log.n; ++i) {
    const SendLog::Entry& x = t.sent_log.e[i];
    if (!x.lost) continue;
    SeqNum lo = tcp::max(x.start, t.snd.una), hi = tcp::min(x.end, top);
    if (!(lo < hi)) continue;
    uint32_t lost = uint32_t(hi - lo) - sacked_in(t, lo, hi);
    in_flight -= std::min(lost, in_flight);
  }
  return in_flight;
}

// The next hole at or after `from` and below `limit`: [*start, *start + *len).
bool Engine::next_hole(const Tcb& t, SeqNum from, SeqNum limit, SeqNum* start, uint32_t* len) const {
  SeqNum s = from < t.snd.una ? t.snd.una : from;
  for (uint8_t i = 0; i < t.sacked.n && s < limit; ++i) {
    if (t.sacked.r[i].end <= s) continue;
    if (t.sacked.r[i].start <= s) {
      s = t.sacked.r[i].end;
      continue;
    }
    SeqNum e = t.sacked.r[i].start < limit ? t.sacked.r[i].start : limit;
    *start = s;
    *len = uint32_t(e - s);
    return true;
  }
  if (s >= limit) return false;
  *start = s;
  *len = uint32_t(limit - s);
  return true;
}

void Engine::retransmit_lost(ConnId c, Time now) {
  Tcb& t = conns_[c];
  SeqNum data_end = t.fin_sent ? t.fin_seq : t.snd.max;
  bool force = t.rexmit_now;
  t.rexmit_now = false;
  if (!t.sack_ok) {
    // NewReno: one segment at snd.una per partial ACK (and at the start).
    if (force && t.snd.una < data_end) {
      uint32_t len = std::min<uint32_t>(seg_payload(t), uint32_t(data_end - t.snd.una));
      send_segment(t, t.snd.una, kAck, len, now);
      ++ctr_.tcp_retransmits;
      ++t.retransmits;
      arm_recovery_timer(t, now);
    }
    return;
  }
  uint32_t in_pipe = pipe(t);
  for (int guard = 0; guard < 64 && (force || in_pipe < t.cwnd); ++guard) {
    // The oldest range declared lost that still has a hole.
    SeqNum start;
    uint32_t len = 0;
    bool found = false;
    for (uint8_t i = 0; i < t.sent_log.n && !found; ++i) {
      SendLog::Entry& x = t.sent_log.e[i];
      if (!x.lost) continue;
      SeqNum end = tcp::min(x.end, data_end);
      if (next_hole(t, x.start, end, &start, &len)) found = true;
      else x.lost = false;  // delivered meanwhile
    }
    if (!found) break;
    len = std::min<uint32_t>(len, seg_payload(t));
    uint64_t sent_before = ctr_.tcp_segments_out;
    send_segment(t, start, kAck, len, now);  // logs it: the range is no longer lost
    if (ctr_.tcp_segments_out == sent_before) break;  // no buffer: next batch
    in_pipe += len;
    force = false;
    ++ctr_.tcp_retransmits;
    ++t.retransmits;
    ++ctr_.tcp_sack_retransmits;
    if (t.undo.armed) ++t.undo.retransmits;
  }
  arm_recovery_timer(t, now);
}

// The probe timeout (RFC 8985 7.2): two round trips, 10 ms at least (as Linux).
static Time probe_timeout(const Tcb& t) { return std::max<Time>(2 * t.srtt, 10 * kMillisecond); }

// In recovery, a probe after a quiet probe timeout: the retransmissions and all
// that followed them may be lost, with no ACK left to tell (recovery_probe).
void Engine::arm_recovery_timer(Tcb& t, Time now) {
  if (t.srtt == 0) return;
  Time pto = probe_timeout(t);
  if (t.rto_at != 0 && now + pto >= t.rto_at) return;
  t.tlp_at = now + pto;
}

void Engine::recovery_probe(ConnId c, Time now) {
  Tcb& t = conns_[c];
  t.tlp_at = 0;
  if (!may_send_data(t.state) || t.snd.una == t.snd.max) return;
  ++ctr_.tcp_tail_loss_probes;
  t.rexmit_now = true;
  if (t.sack_ok) {
    // The oldest range with a hole goes again; the ACK it draws lets RACK judge the rest.
    SeqNum start;
    uint32_t len;
    for (uint8_t i = 0; i < t.sent_log.n; ++i) {
      SendLog::Entry& x = t.sent_log.e[i];
      if (next_hole(t, x.start, x.end, &start, &len)) {
        x.lost = true;
        break;
      }
    }
  }
  queue_output(c);
  (void)now;
}

// RFC 8985 7.2: a probe two round trips after the last send, so that a lost tail
// (no later segment to cause duplicate ACKs) is found without waiting for the RTO.
void Engine::arm_tail_loss_probe(Tcb& t, Time now) {
  if (t.tlp_sent || t.in_recovery || t.srtt == 0 || t.snd.una == t.snd.max) return;
  Time pto = probe_timeout(t);
  if (uint32_t(t.snd.max - t.snd.una) <= t.snd.mss) pto += 200 * kMillisecond;  // WCDelAckT
  if (t.rto_at != 0 && now + pto >= t.rto_at) return;  // the RTO comes first anyway
  t.tlp_at = now + pto;
}

// RFC 8985 7.3: send one new segment if the windows allow, else the last one
// again; the ACK it draws (with SACK) starts a fast recovery instead of an RTO.
void Engine::tail_loss_probe(ConnId c, Time now) {
  Tcb& t = conns_[c];
  t.tlp_at = 0;
  if (!may_send_data(t.state) || t.snd.una == t.snd.max) return;
  t.tlp_sent = true;
  ++ctr_.tcp_tail_loss_probes;
  uint32_t unsent = tx_unsent(t);
  uint32_t in_flight = uint32_t(t.snd.nxt - t.snd.una);
  // New data only where it would go anyway: never a partial segment held by
  // TCP_CORK or Nagle.
  bool held = unsent < seg_payload(t) && (t.cork || !t.nodelay);
  if (unsent > 0 && t.snd.wnd > in_flight && !held) {
    uint32_t len = std::min({unsent, t.snd.wnd - in_flight, seg_payload(t)});
    send_segment(t, t.snd.nxt, kAck, len, now);
    t.snd.nxt += len;
  } else {
    SeqNum data_end = t.fin_sent ? t.fin_seq : t.snd.max;
    uint32_t len = std::min<uint32_t>(seg_payload(t), uint32_t(data_end - t.snd.una));
    if (len == 0) return;
    send_segment(t, data_end + (0u - len), kAck, len, now);
    ++ctr_.tcp_retransmits;
    ++t.retransmits;
  }
  t.rto_at = now + current_rto(t);  // RFC 8985 7.3: restart the RTO
}

}  // namespace shunt
