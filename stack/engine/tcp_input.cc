// TCP input (RFC 9293 3.10.7 "SEGMENT ARRIVES"), one short function per step.
// Input records what must be sent (ack_pending, queue_output); tcp_output.cc
// builds the segments once per batch.
#include <algorithm>
#include <cerrno>

#include "engine/engine.hh"
#include "engine/tcp_internal.hh"

namespace shunt {

using namespace wire;
using tcp::SeqNum;

Drop Engine::input_tcp(const Ipv4& ip, Time now) {
  TcpSegment seg;
  switch (parse_tcp(ip, &seg)) {
    case ParseError::kNone: break;
    case ParseError::kTruncated: return Drop::kTcpTruncated;
    case ParseError::kBadHeaderLength: return Drop::kTcpBadHeaderLength;
    case ParseError::kBadChecksum: return Drop::kTcpBadChecksum;
    default: return Drop::kTcpBadOptions;
  }
  ++ctr_.tcp_segments_in;
  if (seg.src_port == 0 || seg.dst_port == 0) return Drop::kTcpBadFlags;
  if ((seg.flags & kSyn) && (seg.flags & (kRst | kFin))) return Drop::kTcpBadFlags;

  ConnId c = find(seg.src_ip, seg.src_port, seg.dst_port);
  if (c != kInvalidId) {
    Tcb& t = conns_[c];
    uint16_t lid = listener_by_port_[seg.dst_port];
    // A new SYN above the old connection's sequence space reopens a TIME-WAIT
    // tuple (RFC 9293 3.10.7.4 note, RFC 6191; as Linux does).
    if (t.state == TcpState::kTimeWait && (seg.flags & kSyn) && !(seg.flags & kAck) &&
        SeqNum(seg.seq) > t.rcv.nxt && lid != 0) {
      ++ctr_.tcp_time_wait_recycled;
      reset_conn(c, 0);
      return listen_input(listeners_[lid - 1], lid - 1, seg, now);
    }
    if (t.state == TcpState::kSynSent) return syn_sent_input(c, seg, now);
    return segment_arrives(c, seg, now);
  }
  if (uint16_t lid = listener_by_port_[seg.dst_port]; lid != 0)
    return listen_input(listeners_[lid - 1], lid - 1, seg, now);
  // RFC 9293 3.10.7.1: CLOSED. Answer anything but a RST with a RST.
  if (!(seg.flags & kRst)) send_reset_for(seg, now);
  return Drop::kTcpNoSocket;
}

// ---- LISTEN (RFC 9293 3.10.7.2), with SYN cookies (RFC 4987 3.6) ----

Drop Engine::listen_input(Listener& l, ListenerId lid, const TcpSegment& seg, Time now) {
  if (seg.flags & kRst) return Drop::kTcpRstIgnored;
  if (seg.flags & kAck) {
    // The last ACK of a handshake we answered with a cookie, or a stray.
    if (cfg_.syn_cookies && !(seg.flags & kSyn)) {
      Drop d = cookie_ack_input(l, lid, seg, now);
      if (d != Drop::kTcpBadCookie) return d;
      ++ctr_.drops[static_cast<size_t>(Drop::kTcpBadCookie)];
    }
    send_reset_for(seg, now);
    return Drop::kTcpListenNotSyn;
  }
  if (!(seg.flags & kSyn)) return Drop::kTcpListenNotSyn;
  // Linux drops SYNs while the accept queue is full: the client retries later.
  if (accept_queue_full(l)) return Drop::kTcpBacklogFull;
  uint32_t syn_queue = l.pending - l.queued;
  // With cookies, half-open children may hold only half of the staging rings: the
  // rest is kept for handshakes that complete, so that under a SYN flood a
  // cookie's ACK still finds a ring (else real clients wait for the flood's
  // SYN-ACKs to time out).
  bool rings_low = cfg_.syn_cookies ? staging_free_.size() <= cfg_.staging_buffers / 2
                                    : staging_free_.empty();
  bool no_room = syn_queue >= l.backlog || rings_low ||
                 (free_head_ == kInvalidId && tw_head_ == kInvalidId);
  if (no_room) {
    if (!cfg_.syn_cookies) return syn_queue >= l.backlog ? Drop::kTcpBacklogFull : Drop::kTcpNoMemory;
    send_syn_cookie(seg, now);
    return Drop::kNone;
  }
  ConnId c = new_passive_child(l, lid, seg, now);
  if (c == kInvalidId) return Drop::kTcpNoMemory;
  Tcb& t = conns_[c];
  t.irs = SeqNum(seg.seq);
  t.rcv.nxt = t.rcv.last_ack = t.irs + 1;
  t.iss = make_isn(seg.src_ip, seg.src_port, seg.dst_port, now);
  t.ts_offset = uint32_t(mix64(cfg_.isn_secret ^ t.iss.raw()));
  t.snd.una = t.snd.nxt = t.snd.max = t.iss;
  negotiate_options(t, seg, now);
  t.snd.wnd = seg.window;  // never scaled in a SYN (RFC 7323 2.2)
  t.snd.wl1 = SeqNum(seg.seq);
  t.tx_base = 0;
  table_insert(c);
  t.state = TcpState::kSynReceived;
  ++ctr_.tcp_passive_opens;
  queue_output(c);  // SYN-ACK
  return Drop::kNone;
}

// A connection born of a listener (a SYN, or a cookie's ACK): its 4-tuple, its
// place in the listener's backlog, and a staging ring until accept().
ConnId Engine::new_passive_child(Listener& l, ListenerId lid, const TcpSegment& seg, Time now) {
  ConnId c = alloc_conn(now);
  if (c == kInvalidId) return c;
  Tcb& t = conns_[c];
  t.remote_ip = seg.src_ip;
  t.remote_port = seg.src_port;
  t.local_port = seg.dst_port;
  t.listener = lid;
  ++l.pending;
  take_staging(t);
  t.cc.algorithm = cfg_.congestion;
  t.last_rx = now;
  return c;
}

void Engine::take_staging(Tcb& t) {
  t.staging = staging_free_.back();
  staging_free_.pop_back();
  t.staged = true;
  abi::RingIndices& idx = staging_idx_[t.staging];
  idx.head.value.store(0, std::memory_order_relaxed);
  idx.tail.value.store(0, std::memory_order_relaxed);
  t.rx = abi::ProducerEnd(&idx, staging_bytes_.data() + size_t{t.staging} * cfg_.staging_size,
                          abi::RingShape(cfg_.staging_size), 0);
  t.tx = abi::ConsumerEnd(&empty_tx_idx_, &empty_tx_byte_, abi::RingShape(1), 0);
}

// Options of a SYN we answer or a SYN-ACK we receive (RFC 7323 1.3, 2.2; RFC 2018 2).
void Engine::negotiate_options(Tcb& t, const TcpSegment& syn, Time now) {
  // RFC 9293 3.7.1 default 536; Linux's floor of 48 keeps room for options.
  t.snd.mss = syn.mss ? std::clamp<uint16_t>(syn.mss, kMinMss, our_mss()) : 536;
  t.wscale_ok = syn.wscale >= 0;
  t.snd_wscale = t.wscale_ok ? uint8_t(syn.wscale) : 0;
  t.rcv_wscale = t.wscale_ok ? cfg_.window_shift : 0;
  t.ts_ok = cfg_.timestamps && syn.has_ts;
  if (t.ts_ok) {
    t.ts_recent = syn.tsval;
    t.ts_recent_at = now;
  }
  t.sack_ok = cfg_.sack && syn.sack_permitted;
  t.cwnd = kInitialWindowSegments * t.snd.mss;
}

// RFC 4987 3.6. The ISN carries a MAC of the 4-tuple and the peer's ISN (24
// bits), a 64-second counter (5 bits) and the MSS (3 bits). Like Linux, window
// scale and SACK ride in the low bits of our TSval when the peer does timestamps.
namespace {
constexpr uint16_t kCookieMss[8] = {536, 1200, 1300, 1360, 1400, 1440, 1460, 8960};
constexpr Time kCookiePeriod = 64 * kSecond;
constexpr uint32_t kTsOptionBits = 0x3f;  // [wscale:4][sack:1][valid:1]
}  // namespace

uint32_t Engine::cookie_hash(const TcpSegment& s, uint32_t irs, uint32_t counter) const {
  uint64_t k = (uint64_t{s.src_ip} << 32) ^ (uint64_t{s.src_port} << 16) ^ s.dst_port;
  return uint32_t(mix64(cfg_.isn_secret * 0x9e3779b97f4a7c15ull ^ mix64(k ^ (uint64_t{irs} << 7) ^ counter)));
}

void Engine::send_syn_cookie(const TcpSegment& syn, Time now) {
  uint32_t full_counter = uint32_t(now / kCookiePeriod);
  uint32_t counter = full_counter & 31;
  uint32_t mss_idx = 0;
  uint16_t peer_mss = syn.mss ? std::clamp<uint16_t>(syn.mss, kMinMss, our_mss()) : 536;
  for (uint32_t i = 0; i < 8; ++i)
    if (kCookieMss[i] <= peer_mss) mss_idx = i;
  // The MAC covers the whole counter, so a cookie does not come back to life when
  // its 5 bits wrap (every 2048 s).
  uint32_t isn = (cookie_hash(syn, syn.seq, full_counter) & 0xffffff00u) | counter << 3 | mss_idx;
  // A throwaway TCB describes the SYN-ACK; nothing of it is kept.
  Tcb t;
  // Advertise the window the connection will have (a staging ring), not 0.
  abi::RingIndices no_bytes;
  t.rx = abi::ProducerEnd(&no_bytes, nullptr, abi::RingShape(cfg_.staging_size), 0);
  t.remote_ip = syn.src_ip;
  t.remote_port = syn.src_port;
  t.local_port = syn.dst_port;
  t.iss = SeqNum(isn);
  t.irs = SeqNum(syn.seq);
  t.rcv.nxt = t.irs + 1;
  t.snd.una = t.snd.nxt = t.snd.max = t.iss;
  negotiate_options(t, syn, now);
  t.snd.mss = kCookieMss[mss_idx];
  if (t.ts_ok) {
    uint32_t opts = (t.wscale_ok ? t.snd_wscale : 0xfu) << 2 | (t.sack_ok ? 2u : 0u) | 1u;
    t.ts_offset = 0;
    uint32_t clock = ts_clock(t, now);
    t.cookie_tsval = (clock & ~kTsOptionBits) | opts;
    // Never ahead of the clock our later segments use, or the peer's PAWS would
    // drop them (Linux does the same).
    if (int32_t(t.cookie_tsval - clock) > 0) t.cookie_tsval -= kTsOptionBits + 1;
  } else {
    // Without timestamps there is nowhere to keep them: plain window, no SACK.
    t.wscale_ok = t.sack_ok = false;
    t.snd_wscale = t.rcv_wscale = 0;
  }
  send_segment(t, t.iss, kSyn | kAck, 0, now);
  ++ctr_.tcp_syn_cookies_sent;
}

Drop Engine::cookie_ack_input(Listener& l, ListenerId lid, const TcpSegment& seg, Time now) {
  uint32_t cookie = seg.ack - 1;
  uint32_t irs = seg.seq - 1;
  // Valid for the current and the previous 64-second period (RFC 4987 3.6).
  uint32_t current = uint32_t(now / kCookiePeriod);
  uint32_t counter = (cookie >> 3) & 31;
  uint32_t full = (current & 31) == counter ? current : current - 1;
  if ((full & 31) != counter || (cookie_hash(seg, irs, full) & 0xffffff00u) != (cookie & 0xffffff00u))
    return Drop::kTcpBadCookie;
  if (accept_queue_full(l)) return Drop::kTcpBacklogFull;
  if (staging_free_.empty()) return Drop::kTcpNoMemory;
  ConnId c = new_passive_child(l, lid, seg, now);
  if (c == kInvalidId) return Drop::kTcpNoMemory;
  Tcb& t = conns_[c];
  t.iss = SeqNum(cookie);
  t.irs = SeqNum(irs);
  t.rcv.nxt = t.rcv.last_ack = t.irs + 1;
  t.snd.una = t.snd.nxt = t.snd.max = t.iss + 1;
  t.snd.mss = kCookieMss[cookie & 7];
  t.cwnd = kInitialWindowSegments * t.snd.mss;
  t.ts_offset = 0;
  if (cfg_.timestamps && seg.has_ts && (seg.tsecr & 1)) {
    t.ts_ok = true;
    t.ts_recent = seg.tsval;
    t.ts_recent_at = now;
    uint32_t ws = (seg.tsecr >> 2) & 0xf;
    t.wscale_ok = ws != 0xf;
    t.snd_wscale = t.wscale_ok ? uint8_t(std::min<uint32_t>(ws, kMaxWindowShift)) : 0;
    t.rcv_wscale = t.wscale_ok ? cfg_.window_shift : 0;
    t.sack_ok = cfg_.sack && (seg.tsecr & 2);
  }
  t.snd.wnd = uint32_t(seg.window) << t.snd_wscale;
  t.snd.wl1 = SeqNum(seg.seq);
  t.snd.wl2 = SeqNum(seg.ack);
  t.tx_base = 0;
  table_insert(c);
  t.state = TcpState::kEstablished;
  ++ctr_.tcp_established;
  ++ctr_.tcp_syn_cookies_accepted;
  ++ctr_.tcp_passive_opens;
  enqueue_accept(c);
  // The ACK may carry the first request: let the normal path take its data.
  return segment_arrives(c, seg, now);
}

// ---- SYN-SENT (RFC 9293 3.10.7.3) ----

Drop Engine::syn_sent_input(ConnId c, const TcpSegment& seg, Time now) {
  Tcb& t = conns_[c];
  SeqNum ack(seg.ack);
  bool ack_ok = false;
  if (seg.flags & kAck) {
    if (ack <= t.iss || ack > t.snd.max) {
      if (!(seg.flags & kRst)) send_reset_for(seg, now);
      return Drop::kTcpBadAck;
    }
    ack_ok = true;
  }
  if (seg.flags & kRst) {
    if (!ack_ok) return Drop::kTcpRstIgnored;
    ++ctr_.tcp_resets_received;
    reset_conn(c, ECONNREFUSED);
    return Drop::kNone;
  }
  if (!(seg.flags & kSyn)) return Drop::kTcpBadFlags;
  t.irs = SeqNum(seg.seq);
  t.rcv.nxt = t.rcv.last_ack = t.irs + 1;
  t.last_rx = now;
  // Our SYN offered every option the configuration allows; the SYN-ACK says
  // which the peer takes.
  negotiate_options(t, seg, now);
  if (!cfg_.sack) t.sack_ok = false;
  t.snd.wnd = seg.window;
  t.snd.wl1 = SeqNum(seg.seq);
  t.snd.wl2 = ack;
  ack_now(c);
  if (ack_ok) {
    t.snd.una = ack;
    if (t.rtt_timing) {
      update_rtt(t, now - t.rtt_start);
      t.rtt_timing = false;
    }
    t.backoff = 0;
    t.rto_at = 0;
    arm_timer(c);
    set_state(c, TcpState::kEstablished, now);
    note_event(c, kEvWritable);
    return Drop::kNone;
  }
  // Simultaneous open: answer SYN-ACK from SYN-RECEIVED.
  t.snd.nxt = t.iss;
  set_state(c, TcpState::kSynReceived, now);
  return Drop::kNone;
}

// ---- Synchronized states (RFC 9293 3.10.7.4) ----

// First check: sequence number.
bool Engine::seq_acceptable(const Tcb& t, const TcpSegment& seg) const {
  uint32_t len = seg.seq_len();
  uint32_t wnd = std::max(t.rcv.adv_wnd, rx_window(t));
  SeqNum seq(seg.seq);
  // At zero window RFC 9293 accepts only empty segments at rcv.nxt; like Linux we
  // also take a bare FIN there, so a closed socket's zero window does not strand
  // the peer's FIN. Data at zero window stays unacceptable (answered with an ACK).
  if (wnd == 0) return seq == t.rcv.nxt && seg.payload.empty();
  if (len == 0) return seq.in_window(t.rcv.nxt, wnd);
  return seq.in_window(t.rcv.nxt, wnd) || (seq + (len - 1)).in_window(t.rcv.nxt, wnd);
}

// RFC 7323 5.3: PAWS. True when the segment is an old duplicate.
bool Engine::paws_reject(const Tcb& t, const TcpSegment& seg, Time now) const {
  if (!t.ts_ok || !seg.has_ts || (seg.flags & kRst)) return false;
  if (int32_t(seg.tsval - t.ts_recent) >= 0) return false;
  // A TS.Recent idle for 24 days is invalid (5.5): accept and start over.
  return now - t.ts_recent_at < 24ull * 24 * 3600 * kSecond;
}

void Engine::ack_now(ConnId c) {
  conns_[c].ack_pending = true;
  queue_output(c);
}

// RFC 5961 7: challenge ACKs are rate limited, per engine as Linux does.
void Engine::challenge_ack(ConnId c, Time now) {
  if (now - challenge_window_ >= kSecond) {
    challenge_window_ = now;
    challenge_count_ = 0;
  }
  if (challenge_count_ >= cfg_.challenge_ack_limit) {
    ++ctr_.drops[static_cast<size_t>(Drop::kTcpChallengeAckLimited)];
    return;
  }
  ++challenge_count_;
  ++ctr_.tcp_challenge_acks;
  ack_now(c);
}

Drop Engine::segment_arrives(ConnId c, const TcpSegment& seg, Time now) {
  Tcb& t = conns_[c];
  t.last_rx = now;
  t.keep_probes = 0;
  if (cfg_.fast_path && fast_path(c, seg, now)) return Drop::kNone;
  // A retransmitted SYN while our SYN-ACK is outstanding: send the SYN-ACK again.
  if (t.state == TcpState::kSynReceived && (seg.flags & kSyn) && !(seg.flags & kAck) &&
      SeqNum(seg.seq) == t.irs) {
    t.snd.nxt = t.iss;
    queue_output(c);
    return Drop::kNone;
  }
  // A retransmitted FIN in TIME-WAIT: our last ACK was lost. Acknowledge it and
  // restart the 2 MSL timer (RFC 9293 3.10.7.4, eighth check).
  if (t.state == TcpState::kTimeWait && (seg.flags & kFin) && !(seg.flags & kRst) &&
      SeqNum(seg.seq) + uint32_t(seg.payload.size()) + 1 == t.rcv.nxt) {
    t.time_wait_at = now + cfg_.time_wait;
    arm_timer(c);
    ack_now(c);
    return Drop::kNone;
  }
  if (paws_reject(t, seg, now)) {
    ack_now(c);
    return Drop::kTcpPaws;
  }
  // First: sequence number.
  if (!seq_acceptable(t, seg)) {
    if (!(seg.flags & kRst)) {
      // A segment entirely below rcv.nxt is a duplicate: report it (RFC 2883).
      if (t.sack_ok && !seg.payload.empty() &&
          SeqNum(seg.seq) + uint32_t(seg.payload.size()) <= t.rcv.nxt)
        note_dsack(t, SeqNum(seg.seq), SeqNum(seg.seq) + uint32_t(seg.payload.size()));
      ack_now(c);
    }
    return Drop::kTcpUnacceptable;
  }
  update_ts_recent(t, seg, now);
  // Second: RST.
  if (seg.flags & kRst) return process_rst(c, seg, now);
  // Fourth: SYN in a synchronized state: RFC 5961 4.2 challenge ACK.
  if (seg.flags & kSyn) {
    challenge_ack(c, now);
    return Drop::kTcpBadFlags;
  }
  // Fifth: ACK.
  if (!(seg.flags & kAck)) return Drop::kTcpBadAck;
  if (Drop d = process_ack(c, seg, now); d != Drop::kNone || t.state == TcpState::kClosed)
    return d;
  // Seventh and eighth: text and FIN.
  Drop d = seg.payload.empty() ? Drop::kNone : process_text(c, seg, now);
  if ((seg.flags & kFin) && t.state != TcpState::kClosed) process_fin(c, seg, now);
  if (t.peer_fin_ahead && t.rcv.nxt == t.peer_fin_seq && t.state != TcpState::kClosed &&
      may_receive_data(t.state))
    take_fin(c, now);
  return d;
}

// RFC 7323 4.3: TS.Recent follows the newest timestamp of in-window segments.
void Engine::update_ts_recent(Tcb& t, const TcpSegment& seg, Time now) {
  if (t.ts_ok && seg.has_ts && SeqNum(seg.seq) <= t.rcv.last_ack &&
      int32_t(seg.tsval - t.ts_recent) >= 0) {
    t.ts_recent = seg.tsval;
    t.ts_recent_at = now;
  }
}

// Header prediction: an in-order segment in ESTABLISHED that carries nothing
// unusual, handled by the same helpers the full path uses, minus its checks.
// Differential-tested against the full path (tests/engine/fast_path_test.cc).
bool Engine::fast_path(ConnId c, const TcpSegment& seg, Time now) {
  Tcb& t = conns_[c];
  if (t.state != TcpState::kEstablished || (seg.flags & ~kPsh) != kAck) return false;
  if (SeqNum(seg.seq) != t.rcv.nxt || t.ooo.n != 0 || t.peer_fin_ahead || t.in_recovery ||
      t.sacked.n != 0 || seg.sack_count != 0 || t.user_closed)
    return false;
  if (t.ts_ok && (!seg.has_ts || int32_t(seg.tsval - t.ts_recent) < 0)) return false;
  if ((uint32_t(seg.window) << t.snd_wscale) != t.snd.wnd) return false;
  SeqNum ack(seg.ack);
  if (ack < t.snd.una || ack > t.snd.max) return false;
  // The full path's window-update rule must hold, so that both update wl1/wl2 alike.
  SeqNum seq(seg.seq);
  if (!(t.snd.wl1 < seq || (t.snd.wl1 == seq && t.snd.wl2 <= ack))) return false;
  if (seg.payload.empty()) {
    if (ack == t.snd.una) return false;  // a duplicate ACK: the full path counts it
  } else {
    if (ack != t.snd.una || !t.rx.valid() || t.rx.writable() < seg.payload.size()) return false;
  }
  ++ctr_.tcp_fast_path;
  update_ts_recent(t, seg, now);
  t.snd.wl1 = SeqNum(seg.seq);
  t.snd.wl2 = ack;
  if (seg.payload.empty()) {
    ack_advance(c, seg, now);
    if (t.sack_ok) rack_after_ack(c, now);
    cc_after_ack(c, now);
  } else {
    t.rx.write(seg.payload.data(), uint32_t(seg.payload.size()));
    t.rcv.nxt += uint32_t(seg.payload.size());
    t.bytes_received += seg.payload.size();
    note_event(c, kEvReadable);
    schedule_ack(c, uint32_t(seg.payload.size()), now);
  }
  return true;
}

// RFC 9293 3.10.7.4 second check, with RFC 5961 3.2: only an exact match resets;
// anything else in the window gets a challenge ACK.
Drop Engine::process_rst(ConnId c, const TcpSegment& seg, Time now) {
  Tcb& t = conns_[c];
  if (SeqNum(seg.seq) != t.rcv.nxt) {
    challenge_ack(c, now);
    return Drop::kTcpRstIgnored;
  }
  ++ctr_.tcp_resets_received;
  switch (t.state) {
    case TcpState::kSynReceived:
      // Passive open goes back to LISTEN (the child just disappears); active → refused.
      reset_conn(c, t.listener != kInvalidId ? 0 : ECONNREFUSED);
      break;
    case TcpState::kEstablished:
    case TcpState::kFinWait1:
    case TcpState::kFinWait2:
      reset_conn(c, ECONNRESET);
      break;
    case TcpState::kCloseWait:
      reset_conn(c, EPIPE);  // as Linux's tcp_reset: the peer had closed; writing is what failed
      break;
    default:  // CLOSING, LAST-ACK, TIME-WAIT
      reset_conn(c, 0);
      break;
  }
  return Drop::kNone;
}

// Fifth check: ACK.
Drop Engine::process_ack(ConnId c, const TcpSegment& seg, Time now) {
  Tcb& t = conns_[c];
  SeqNum ack(seg.ack);
  SeqNum seq(seg.seq);
  if (t.state == TcpState::kSynReceived) {
    if (!(t.snd.una < ack && ack <= t.snd.max)) {
      send_reset_for(seg, now);
      return Drop::kTcpBadAck;
    }
    t.snd.wnd = uint32_t(seg.window) << t.snd_wscale;
    t.snd.wl1 = seq;
    t.snd.wl2 = ack;
    set_state(c, TcpState::kEstablished, now);
    if (t.listener != kInvalidId) enqueue_accept(c);
    else note_event(c, kEvWritable);
  }
  if (ack > t.snd.max) {
    // Acks something not yet sent: RFC 9293 says send an ACK and drop.
    ack_now(c);
    return Drop::kTcpBadAck;
  }
  // RFC 5961 5.2: an ACK older than any window we could have sent in is a blind
  // guess; its data must not be taken.
  if (ack < t.snd.una - std::max(t.snd.max_wnd, t.snd.wnd)) {
    challenge_ack(c, now);
    return Drop::kTcpBadAck;
  }
  bool new_sack = t.sack_ok && seg.sack_count != 0 && take_sack(t, seg, now);
  uint32_t wnd = uint32_t(seg.window) << t.snd_wscale;
  bool advanced = t.snd.una < ack;
  if (advanced) {
    ack_advance(c, seg, now);
    if (t.state == TcpState::kClosed) return Drop::kNone;
  } else if (ack == t.snd.una && t.snd.una != t.snd.max &&
             ((seg.payload.empty() && !(seg.flags & kFin) && wnd == t.snd.wnd) || new_sack)) {
    on_duplicate_ack(c, now);  // RFC 5681 2 "duplicate ACK", or new SACK information
  }
  if (t.sack_ok && (advanced || new_sack)) rack_after_ack(c, now);
  cc_after_ack(c, now);
  // Window update: only from a newer segment.
  if (t.snd.wl1 < seq || (t.snd.wl1 == seq && t.snd.wl2 <= ack)) {
    if (wnd > t.snd.wnd) queue_output(c);
    t.snd.max_wnd = std::max(t.snd.max_wnd, t.snd.wnd);
    t.snd.wnd = wnd;
    t.snd.wl1 = seq;
    t.snd.wl2 = ack;
    if (t.snd.wnd > 0 && t.persist_at != 0) {
      t.persist_at = 0;
      t.probes = 0;
      arm_timer(c);
    }
  }
  return Drop::kNone;
}

// snd.una moves forward: release acknowledged bytes, time the round trip, grow
// the window, and leave recovery when it is over.
void Engine::ack_advance(ConnId c, const TcpSegment& seg, Time now) {
  Tcb& t = conns_[c];
  SeqNum ack(seg.ack);
  uint32_t acked = uint32_t(ack - t.snd.una);
  rack_delivered(t, t.snd.una, ack, seg, now);
  note_delivered(t, acked - sacked_in(t, t.snd.una, ack), now);
  if (t.snd.una == t.iss) --acked;  // our SYN
  bool fin_acked = t.fin_sent && ack > t.fin_seq && t.snd.una <= t.fin_seq;
  if (fin_acked) --acked;           // our FIN
  if (acked > 0 && t.tx.valid()) {
    uint32_t used_before = t.tx.readable();
    uint32_t capacity_before = t.tx.capacity();  // consume may settle a grown ring
    uint32_t freed = std::min(acked, used_before);
    t.tx.consume(freed);
    t.bytes_acked += freed;
    // Like Linux's SOCK_NOSPACE: space matters to the application only when the
    // ring was filling up; a writer or poller can only be blocked on a full ring.
    if (used_before > capacity_before / 2) {
      note_event(c, kEvWritable);
      grow_send_buffer(t);
    }
  }
  t.snd.una = ack;
  // After a go-back-N rewind the peer may acknowledge beyond snd.nxt.
  if (t.snd.nxt < ack) t.snd.nxt = ack;
  t.sacked.trim_below(ack);
  t.sent_log.trim_below(ack);
  if (t.rtt_timing && ack > t.rtt_seq) {
    update_rtt(t, now - t.rtt_start);
    t.rtt_timing = false;
  } else if (t.backoff > 0 && t.ts_ok && seg.has_ts && seg.tsecr != 0) {
    // RFC 7323 4.1: timestamps time even retransmitted data, where Karn cannot.
    uint32_t ms = ts_clock(t, now) - seg.tsecr;
    if (ms < 60000) update_rtt(t, Time(ms) * kMillisecond);
  }
  t.backoff = 0;
  t.dupacks = 0;
  t.limited_sent = 0;
  t.tlp_at = 0;
  t.tlp_sent = false;
  uint32_t mss = t.snd.mss;
  if (t.in_recovery) {
    if (ack >= t.recover) {
      // RFC 6582 3.2 step 3 (full acknowledgment): deflate to ssthresh. With SACK
      // cwnd was never inflated, and stays where a DSACK undo put it.
      t.in_recovery = false;
      uint32_t deflated = std::max(t.ssthresh, 2 * mss);
      if (t.cc.algorithm != CcAlgorithm::kBbr) t.cwnd = t.sack_ok ? std::min(t.cwnd, deflated) : deflated;
      if (t.rack.reo_wnd_persist > 0 && --t.rack.reo_wnd_persist == 0) t.rack.reo_wnd_mult = 1;
    } else if (!t.sack_ok) {
      // Partial ACK (RFC 6582 3.2 step 5): retransmit the next hole at once and
      // deflate by what was acknowledged.
      t.rexmit_now = true;
      t.cwnd = t.cwnd > acked ? t.cwnd - acked + mss : mss;
    }
  } else if (t.cc.algorithm == CcAlgorithm::kBbr) {
    // cc_after_ack sets the window from BBR's model.
  } else if (t.cwnd < t.ssthresh) {
    t.cwnd += std::min(acked, 2 * mss);  // slow start, RFC 3465 L = 2
  } else {
    cc_on_ack(t.cc, &t.cwnd, mss, acked, now, t.srtt);
  }
  t.rto_at = t.snd.una == t.snd.max ? 0 : now + current_rto(t);  // RFC 6298 5.2, 5.3
  arm_timer(c);
  queue_output(c);
  if (fin_acked) {
    switch (t.state) {
      case TcpState::kFinWait1: set_state(c, TcpState::kFinWait2, now); break;
      case TcpState::kClosing: set_state(c, TcpState::kTimeWait, now); break;
      case TcpState::kLastAck: reset_conn(c, 0); return;
      default: break;
    }
  }
  // An orphan whose every byte is acknowledged needs its rings no more.
  if (t.user_closed && t.tx.valid() && t.tx.readable() == 0 && t.fin_sent) detach_rings(c);
}

void Engine::note_dsack(Tcb& t, SeqNum start, SeqNum end) {
  t.dsack_start = start;
  t.dsack_end = end;
  t.dsack_pending = true;
}

// Seventh check: segment text. In-order bytes go to the rx ring; bytes beyond
// rcv.nxt are written into the ring past its head and remembered as ranges
// until the hole fills (reassembly in place, bounded by the ring and SeqRanges).
Drop Engine::process_text(ConnId c, const TcpSegment& seg, Time now) {
  Tcb& t = conns_[c];
  if (!may_receive_data(t.state)) return Drop::kNone;  // after the peer's FIN: ignore (RFC 9293)
  if (t.user_closed) {
    // Linux: data for a socket the application closed resets it.
    abort_conn(c, now);
    return Drop::kTcpAfterClose;
  }
  SeqNum seq(seg.seq);
  auto payload = seg.payload;
  if (seq < t.rcv.nxt) {
    uint32_t dup = uint32_t(t.rcv.nxt - seq);
    if (t.sack_ok) note_dsack(t, seq, std::min(t.rcv.nxt, seq + uint32_t(payload.size())));
    if (dup >= payload.size()) {
      ack_now(c);
      return Drop::kNone;
    }
    payload = payload.subspan(dup);
    seq = t.rcv.nxt;
  }
  if (!t.rx.valid()) return Drop::kTcpRxRingFull;
  if (seq != t.rcv.nxt) return queue_out_of_order(c, seq, payload);
  uint32_t n = t.rx.write(payload.data(), uint32_t(payload.size()));
  if (n == 0) {
    ack_now(c);
    return Drop::kTcpRxRingFull;
  }
  t.rcv.nxt += n;
  t.bytes_received += n;
  bool filled_hole = false;
  // Ranges now contiguous with rcv.nxt are already in the ring: expose them.
  while (t.ooo.n != 0 && t.ooo.r[0].start <= t.rcv.nxt) {
    if (t.ooo.r[0].end > t.rcv.nxt) {
      uint32_t more = uint32_t(t.ooo.r[0].end - t.rcv.nxt);
      t.rx.produce(more);
      t.rcv.nxt += more;
      t.bytes_received += more;
    }
    t.ooo.trim_below(t.rcv.nxt);
    filled_hole = true;
  }
  note_event(c, kEvReadable);
  if (n < payload.size()) ++ctr_.drops[static_cast<size_t>(Drop::kTcpRxRingFull)];
  // RFC 5681 4.2: ACK at once when a segment fills all or part of a hole (bytes
  // above still wait), else delay. A delayed ACK here would stretch every round
  // trip of the peer's recovery by the delayed-ACK timeout.
  if (filled_hole || t.ooo.n != 0 || n < payload.size()) ack_now(c);
  else schedule_ack(c, n, now);
  return Drop::kNone;
}

Drop Engine::queue_out_of_order(ConnId c, SeqNum seq, std::span<const uint8_t> payload) {
  Tcb& t = conns_[c];
  ack_now(c);  // RFC 5681 4.2: a duplicate ACK at once, with SACK blocks
  uint32_t offset = uint32_t(seq - t.rcv.nxt);
  uint32_t room = t.rx.writable();
  if (offset >= room) return Drop::kTcpRxRingFull;
  uint32_t n = std::min<uint32_t>(uint32_t(payload.size()), room - offset);
  SeqNum end = seq + n;
  if (t.ooo.contains(seq, end)) {
    if (t.sack_ok) note_dsack(t, seq, end);
    return Drop::kNone;
  }
  if (!t.ooo.add(seq, end)) {
    // Full: keep what is nearest delivery. The highest range goes (its bytes were
    // SACKed: the peer resends them once our ACK reaches them, RFC 2018 8);
    // data above every range is dropped.
    if (!(seq < t.ooo.r[t.ooo.n - 1].start)) return Drop::kTcpOooFull;
    t.ooo.drop_last();
    ++ctr_.tcp_ooo_pruned;
    t.ooo.add(seq, end);
  }
  t.rx.copy_in(t.rx.head() + offset, payload.data(), n);
  ++ctr_.tcp_ooo_queued;
  return Drop::kNone;
}

// Delayed ACK: every second full segment at once, otherwise within kDelayedAck.
// A full segment is the largest the peer sent, not its MSS: timestamps take 12
// bytes of every segment, and two of them must not wait for the timer (Linux
// measures rcv_mss the same way and ACKs once more than one is unacknowledged).
void Engine::schedule_ack(ConnId c, uint32_t bytes, Time now) {
  Tcb& t = conns_[c];
  t.rcv_unacked += bytes;
  if (bytes > t.rcv_mss) t.rcv_mss = uint16_t(std::min<uint32_t>(bytes, our_mss()));
  if (!cfg_.delayed_ack || t.quickack > 0 || t.rcv_unacked > t.rcv_mss) {
    ack_now(c);
    return;
  }
  if (t.delack_at == 0) {
    t.delack_at = now + kDelayedAck;
    arm_timer(c);
  }
}

// Eighth check: FIN.
void Engine::process_fin(ConnId c, const TcpSegment& seg, Time now) {
  Tcb& t = conns_[c];
  // Only a FIN that follows every byte we took closes the stream. One that came
  // ahead of a hole (reordering) is kept until the hole fills, as Linux keeps it
  // in its out-of-order queue: dropping it costs the peer a retransmission timeout.
  SeqNum fin_seq = SeqNum(seg.seq) + uint32_t(seg.payload.size());
  if (fin_seq != t.rcv.nxt) {
    if (fin_seq > t.rcv.nxt) {
      t.peer_fin_ahead = true;
      t.peer_fin_seq = fin_seq;
    }
    return;
  }
  take_fin(c, now);
}

void Engine::take_fin(ConnId c, Time now) {
  Tcb& t = conns_[c];
  t.peer_fin_ahead = false;
  t.rcv.nxt += 1;
  t.peer_fin = true;
  if (t.user_closed) ++ctr_.tcp_orphan_fins;
  ack_now(c);
  note_event(c, kEvReadable);
  switch (t.state) {
    case TcpState::kSynReceived:
    case TcpState::kEstablished: set_state(c, TcpState::kCloseWait, now); break;
    case TcpState::kFinWait1:  // our FIN not yet acked, else we would be in FIN-WAIT-2
      set_state(c, TcpState::kClosing, now);
      break;
    case TcpState::kFinWait2: set_state(c, TcpState::kTimeWait, now); break;
    case TcpState::kTimeWait:
      t.time_wait_at = now + cfg_.time_wait;
      arm_timer(c);
      break;
    default: break;
  }
}

// ---- ICMP errors about our connections (RFC 1122 4.2.3.9, RFC 5927) ----

Drop Engine::tcp_icmp_error(uint8_t type, uint8_t code, uint16_t next_mtu,
                            std::span<const uint8_t> quoted, Time now) {
  // The quoted datagram: our IPv4 header and at least 8 bytes of our TCP header.
  if (quoted.size() < kIpv4Header || (quoted[0] >> 4) != 4) return Drop::kIcmpInvalid;
  size_t ihl = size_t(quoted[0] & 0xf) * 4;
  if (ihl < kIpv4Header || quoted.size() < ihl + 8 || quoted[9] != kProtoTcp)
    return Drop::kIcmpInvalid;
  if (load32(quoted.data() + 12) != cfg_.ip) return Drop::kIcmpInvalid;
  uint32_t remote = load32(quoted.data() + 16);
  const uint8_t* th = quoted.data() + ihl;
  ConnId c = find(remote, load16(th + 2), load16(th));
  if (c == kInvalidId) return Drop::kIcmpNoSocket;
  Tcb& t = conns_[c];
  // RFC 5927 4.1: only a sequence number we have in flight proves the error is real.
  SeqNum seq(load32(th + 4));
  if (!(t.snd.una <= seq && seq < t.snd.max)) return Drop::kIcmpInvalid;
  ++ctr_.icmp_errors_received;
  constexpr uint8_t kUnreachable = 3, kFragNeeded = 4, kPortUnreachable = 3;
  if (type != kUnreachable) return Drop::kNone;
  if (code == kFragNeeded) {
    // RFC 1191 path MTU discovery, with Linux's floor of 552 bytes.
    uint32_t mtu = std::clamp<uint32_t>(next_mtu, 552, cfg_.mtu);
    uint16_t mss = uint16_t(mtu - kIpv4Header - kTcpHeader);
    if (mss < t.snd.mss) {
      t.snd.mss = mss;
      ++ctr_.pmtu_updates;
      t.snd.nxt = t.snd.una;  // resend what no longer fits
      queue_output(c);
    }
    return Drop::kNone;
  }
  // Hard errors while connecting fail the connect; later they are soft (RFC 5461).
  if (t.state == TcpState::kSynSent || t.state == TcpState::kSynReceived) {
    reset_conn(c, code == kPortUnreachable ? ECONNREFUSED : EHOSTUNREACH);
  }
  (void)now;
  return Drop::kNone;
}

}  // namespace shunt
