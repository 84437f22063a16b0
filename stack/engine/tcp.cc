// TCP (RFC 9293): input by the steps of "SEGMENT ARRIVES", output once per batch.
#include <algorithm>
#include <cerrno>
#include <cstring>

#include "engine/engine.hh"

namespace shunt {

using namespace wire;
using tcp::SeqNum;

namespace {
constexpr Time kMinRto = 200 * kMillisecond;  // Linux TCP_RTO_MIN (RFC 6298 says 1 s)
constexpr Time kMaxRto = 120 * kSecond;       // Linux TCP_RTO_MAX
constexpr uint32_t kSynRetries = 6;           // Linux tcp_syn_retries
constexpr uint32_t kDataRetries = 15;         // Linux tcp_retries2
constexpr uint32_t kInitialWindowSegments = 10;  // RFC 6928
constexpr uint32_t kMaxWindow = 65535;        // no window scaling in this version

bool is_synchronized(TcpState s) {
  return s != TcpState::kClosed && s != TcpState::kListen && s != TcpState::kSynSent;
}
bool may_send_data(TcpState s) {
  return s == TcpState::kEstablished || s == TcpState::kCloseWait ||
         s == TcpState::kFinWait1 || s == TcpState::kClosing || s == TcpState::kLastAck;
}
bool may_receive_data(TcpState s) {
  return s == TcpState::kEstablished || s == TcpState::kFinWait1 || s == TcpState::kFinWait2;
}
uint64_t mix64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdull;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ull;
  k ^= k >> 33;
  return k;
}
}  // namespace

// RFC 6528: ISN = M + F(4-tuple, secret), M a 4-microsecond clock.
SeqNum Engine::make_isn(uint32_t rip, uint16_t rport, uint16_t lport, Time now) const {
  uint64_t f = mix64(cfg_.isn_secret ^ mix64((uint64_t{rip} << 32) ^ (uint64_t{rport} << 16) ^
                                             lport ^ (uint64_t{cfg_.ip} << 20)));
  return SeqNum(uint32_t(f) + uint32_t(now / 4));
}

uint32_t Engine::rx_window(const Tcb& t) const {
  if (!t.rx.valid()) return 0;
  return std::min(t.rx.writable(), kMaxWindow);
}

// Bytes in the tx ring past snd.nxt. The head is written by the application, so
// it is clamped to the ring's capacity.
uint32_t Engine::tx_unsent(const Tcb& t) const {
  if (!t.tx.valid() || t.snd.nxt == t.iss) return 0;
  uint32_t tail = t.tx.tail();
  uint32_t used = std::min(t.tx.head() - tail, t.tx.capacity());
  uint32_t sent_index = t.tx_base + uint32_t(t.snd.nxt - (t.iss + 1));
  // Past the end once our FIN is sent (snd.nxt = fin_seq + 1): nothing unsent.
  int32_t unsent = int32_t(tail + used - sent_index);
  return unsent <= 0 ? 0 : std::min(uint32_t(unsent), used);
}

// ---- Bookkeeping ----

void Engine::queue_output(ConnId c) {
  Tcb& t = conns_[c];
  if (t.in_output) return;
  t.in_output = true;
  output_list_.push_back(c);
}

void Engine::note_event(ConnId c, uint32_t ev) {
  Tcb& t = conns_[c];
  t.events |= ev;
  if (t.in_events) return;
  t.in_events = true;
  event_list_.push_back(c);
}

void Engine::note_listener_event(ListenerId l) {
  if (listeners_[l].in_events) return;
  listeners_[l].in_events = true;
  event_list_.push_back(l | kListenerBit);
}

void Engine::set_state(ConnId c, TcpState s, Time now) {
  Tcb& t = conns_[c];
  if (t.state == s) return;
  if (t.state == TcpState::kTimeWait) time_wait_unlink(c);
  t.state = s;
  if (s == TcpState::kEstablished) ++ctr_.tcp_established;
  if (s == TcpState::kTimeWait) {
    t.rto_at = t.persist_at = 0;
    t.time_wait_at = now + cfg_.time_wait;
    time_wait_push(c);
    arm_timer(c);
  }
  note_event(c, kEvState);
}

ConnId Engine::alloc_conn(Time now) {
  if (free_head_ == kInvalidId && tw_head_ != kInvalidId) {
    // Out of connections: recycle the oldest TIME-WAIT, as Linux does past
    // tcp_max_tw_buckets.
    ConnId old = tw_head_;
    ++ctr_.tcp_time_wait_recycled;
    reset_conn(old, 0);
  }
  (void)now;
  if (free_head_ == kInvalidId) return kInvalidId;
  ConnId c = free_head_;
  free_head_ = conns_[c].next_in_queue;
  conns_[c] = Tcb{};
  ++live_conns_;
  return c;
}

void Engine::free_conn(ConnId c) {
  Tcb& t = conns_[c];
  wheel_.cancel(c);
  table_remove(c);
  if (t.staging != kInvalidId) staging_free_.push_back(t.staging);
  t = Tcb{};
  t.next_in_queue = free_head_;
  free_head_ = c;
  --live_conns_;
}

void Engine::maybe_free(ConnId c) {
  Tcb& t = conns_[c];
  if (t.state == TcpState::kClosed && !t.user_attached && !t.in_events && !t.in_output &&
      t.listener == kInvalidId && (t.user == 0 || t.events == 0) && !t.rx.valid() &&
      !t.tx.valid() && live_conns_ > 0 && t.remote_port != 0)
    free_conn(c);
}

void Engine::detach_rings(ConnId c) {
  Tcb& t = conns_[c];
  if (!t.rx.valid() && !t.tx.valid()) return;
  t.rx = abi::ByteRing();
  t.tx = abi::ByteRing();
  if (t.staging != kInvalidId) {
    staging_free_.push_back(t.staging);
    t.staging = kInvalidId;
    t.staged = false;
  }
  if (t.user != 0) note_event(c, kEvDetached);
}

void Engine::time_wait_push(ConnId c) {
  Tcb& t = conns_[c];
  t.prev_in_queue = tw_tail_;
  t.next_in_queue = kInvalidId;
  if (tw_tail_ != kInvalidId) conns_[tw_tail_].next_in_queue = c;
  else tw_head_ = c;
  tw_tail_ = c;
}

void Engine::time_wait_unlink(ConnId c) {
  Tcb& t = conns_[c];
  if (t.prev_in_queue != kInvalidId) conns_[t.prev_in_queue].next_in_queue = t.next_in_queue;
  else tw_head_ = t.next_in_queue;
  if (t.next_in_queue != kInvalidId) conns_[t.next_in_queue].prev_in_queue = t.prev_in_queue;
  else tw_tail_ = t.prev_in_queue;
  t.prev_in_queue = t.next_in_queue = kInvalidId;
}

void Engine::enqueue_accept(ConnId c) {
  Tcb& t = conns_[c];
  Listener& l = listeners_[t.listener];
  t.prev_in_queue = l.tail;
  t.next_in_queue = kInvalidId;
  if (l.tail != kInvalidId) conns_[l.tail].next_in_queue = c;
  else l.head = c;
  l.tail = c;
  ++l.queued;
  note_listener_event(t.listener);
}

void Engine::unlink_accept(ConnId c) {
  Tcb& t = conns_[c];
  Listener& l = listeners_[t.listener];
  if (t.prev_in_queue != kInvalidId) conns_[t.prev_in_queue].next_in_queue = t.next_in_queue;
  else l.head = t.next_in_queue;
  if (t.next_in_queue != kInvalidId) conns_[t.next_in_queue].prev_in_queue = t.prev_in_queue;
  else l.tail = t.prev_in_queue;
  t.prev_in_queue = t.next_in_queue = kInvalidId;
  --l.queued;
}

// The connection is over without a RST from us: peer reset, timeout, or our abort
// after the RST went out. Everything is released that the application does not hold.
void Engine::reset_conn(ConnId c, int error) {
  Tcb& t = conns_[c];
  t.error = error;
  t.rto_at = t.persist_at = t.time_wait_at = 0;
  wheel_.cancel(c);
  if (t.listener != kInvalidId) {
    Listener& l = listeners_[t.listener];
    if (t.state == TcpState::kEstablished || t.state == TcpState::kCloseWait) unlink_accept(c);
    --l.pending;
    t.listener = kInvalidId;
  }
  if (t.state == TcpState::kTimeWait) time_wait_unlink(c);
  t.state = TcpState::kClosed;
  table_remove(c);
  if (t.user_attached) note_event(c, kEvState | kEvReadable | kEvWritable);
  else detach_rings(c);
  maybe_free(c);
}

void Engine::abort_conn(ConnId c, Time now) {
  Tcb& t = conns_[c];
  if (is_synchronized(t.state) && t.state != TcpState::kTimeWait) {
    // RFC 9293 3.10.4 ABORT: <SEQ=SND.NXT><CTL=RST>; Linux adds ACK.
    send_segment(t, t.snd.max, kRst | kAck, 0, now);
    ++ctr_.tcp_resets_sent;
  }
  reset_conn(c, ECONNRESET);
}

void Engine::arm_timer(ConnId c) {
  Tcb& t = conns_[c];
  Time next = 0;
  for (Time d : {t.rto_at, t.persist_at, t.time_wait_at})
    if (d != 0 && (next == 0 || d < next)) next = d;
  if (next == 0) wheel_.cancel(c);
  else wheel_.schedule(c, (next + kMillisecond - 1) / kMillisecond);
}

Time Engine::current_rto(const Tcb& t) const {
  return std::min(t.rto << std::min<uint32_t>(t.backoff, 12), kMaxRto);
}

void Engine::update_rtt(Tcb& t, Time r) {
  // RFC 6298 2.2 and 2.3, alpha = 1/8, beta = 1/4, G = 1 ms.
  if (t.srtt == 0) {
    t.srtt = r;
    t.rttvar = r / 2;
  } else {
    Time delta = t.srtt > r ? t.srtt - r : r - t.srtt;
    t.rttvar = (3 * t.rttvar + delta) / 4;
    t.srtt = (7 * t.srtt + r) / 8;
  }
  t.rto = std::clamp(t.srtt + std::max<Time>(kMillisecond, 4 * t.rttvar), kMinRto, kMaxRto);
}

// ---- Input ----

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
    // tuple (RFC 9293 3.10.7.4 note, as Linux does).
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

// RFC 9293 3.10.7.2: LISTEN.
Drop Engine::listen_input(Listener& l, ListenerId lid, const TcpSegment& seg, Time now) {
  if (seg.flags & kRst) return Drop::kTcpRstIgnored;
  if (seg.flags & kAck) {
    send_reset_for(seg, now);
    return Drop::kTcpListenNotSyn;
  }
  if (!(seg.flags & kSyn)) return Drop::kTcpListenNotSyn;
  if (l.pending >= l.backlog) return Drop::kTcpBacklogFull;
  if (staging_free_.empty()) return Drop::kTcpNoMemory;
  ConnId c = alloc_conn(now);
  if (c == kInvalidId) return Drop::kTcpNoMemory;
  Tcb& t = conns_[c];
  t.remote_ip = seg.src_ip;
  t.remote_port = seg.src_port;
  t.local_port = seg.dst_port;
  t.listener = lid;
  ++l.pending;
  t.staging = staging_free_.back();
  staging_free_.pop_back();
  t.staged = true;
  abi::RingIndices& idx = staging_idx_[t.staging];
  idx.head.value.store(0, std::memory_order_relaxed);
  idx.tail.value.store(0, std::memory_order_relaxed);
  t.rx = abi::ByteRing(&idx, staging_bytes_.data() + size_t{t.staging} * cfg_.staging_size,
                       cfg_.staging_size);
  t.tx = abi::ByteRing(&empty_tx_idx_, &empty_tx_byte_, 1);
  t.irs = SeqNum(seg.seq);
  t.rcv.nxt = t.irs + 1;
  t.iss = make_isn(seg.src_ip, seg.src_port, seg.dst_port, now);
  t.snd.una = t.snd.nxt = t.snd.max = t.iss;
  t.snd.wnd = seg.window;
  t.snd.wl1 = SeqNum(seg.seq);
  t.snd.mss = seg.mss ? std::min(seg.mss, our_mss()) : 536;
  t.cwnd = kInitialWindowSegments * t.snd.mss;
  t.tx_base = 0;
  table_insert(c);
  t.state = TcpState::kSynReceived;
  ++ctr_.tcp_passive_opens;
  queue_output(c);  // SYN-ACK
  return Drop::kNone;
}

// RFC 9293 3.10.7.3: SYN-SENT.
Drop Engine::syn_sent_input(ConnId c, const TcpSegment& seg, Time now) {
  Tcb& t = conns_[c];
  SeqNum ack(seg.ack);
  bool ack_ok = false;
  if (seg.flags & kAck) {
    if (ack <= t.iss || ack > t.snd.max) {
      if (!(seg.flags & kRst)) send_reset_for(seg, now);
      return Drop::kTcpBadAck;
    }
    ack_ok = true;  // snd.una < ack <= snd.nxt
  }
  if (seg.flags & kRst) {
    if (!ack_ok) return Drop::kTcpRstIgnored;
    ++ctr_.tcp_resets_received;
    reset_conn(c, ECONNREFUSED);
    return Drop::kNone;
  }
  if (!(seg.flags & kSyn)) return Drop::kTcpBadFlags;
  t.irs = SeqNum(seg.seq);
  t.rcv.nxt = t.irs + 1;
  t.snd.mss = seg.mss ? std::min(seg.mss, our_mss()) : 536;
  t.cwnd = kInitialWindowSegments * t.snd.mss;
  t.snd.wnd = seg.window;
  t.snd.wl1 = SeqNum(seg.seq);
  t.snd.wl2 = ack;
  t.ack_pending = true;
  queue_output(c);
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

// RFC 9293 3.10.7.4, first check.
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

Drop Engine::segment_arrives(ConnId c, const TcpSegment& seg, Time now) {
  Tcb& t = conns_[c];
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
    t.ack_pending = true;
    queue_output(c);
    return Drop::kNone;
  }
  // First: sequence number.
  if (!seq_acceptable(t, seg)) {
    if (!(seg.flags & kRst)) {
      t.ack_pending = true;
      queue_output(c);
    }
    return Drop::kTcpUnacceptable;
  }
  // Second: RST.
  if (seg.flags & kRst) return process_rst(c, seg);
  // Fourth: SYN in a synchronized state: RFC 5961 4.2 challenge ACK.
  if (seg.flags & kSyn) {
    t.ack_pending = true;
    queue_output(c);
    return Drop::kTcpBadFlags;
  }
  // Fifth: ACK.
  if (!(seg.flags & kAck)) return Drop::kTcpBadAck;
  if (Drop d = process_ack(c, seg, now); d != Drop::kNone || t.state == TcpState::kClosed)
    return d;
  // Seventh and eighth: text and FIN.
  Drop d = seg.payload.empty() ? Drop::kNone : process_text(c, seg, now);
  if ((seg.flags & kFin) && t.state != TcpState::kClosed) process_fin(c, seg, now);
  return d;
}

// RFC 9293 3.10.7.4 second check, with RFC 5961 3.2: only an exact match resets;
// anything else in the window gets a challenge ACK.
Drop Engine::process_rst(ConnId c, const TcpSegment& seg) {
  Tcb& t = conns_[c];
  if (SeqNum(seg.seq) != t.rcv.nxt) {
    t.ack_pending = true;
    queue_output(c);
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
    case TcpState::kCloseWait:
      reset_conn(c, ECONNRESET);
      break;
    default:  // CLOSING, LAST-ACK, TIME-WAIT
      reset_conn(c, 0);
      break;
  }
  return Drop::kNone;
}

Drop Engine::process_ack(ConnId c, const TcpSegment& seg, Time now) {
  Tcb& t = conns_[c];
  SeqNum ack(seg.ack);
  SeqNum seq(seg.seq);
  if (t.state == TcpState::kSynReceived) {
    if (!(t.snd.una < ack && ack <= t.snd.max)) {
      send_reset_for(seg, now);
      return Drop::kTcpBadAck;
    }
    t.snd.wnd = seg.window;
    t.snd.wl1 = seq;
    t.snd.wl2 = ack;
    set_state(c, TcpState::kEstablished, now);
    if (t.listener != kInvalidId) enqueue_accept(c);
    else note_event(c, kEvWritable);
  }
  if (ack > t.snd.max) {
    // Acks something not yet sent: RFC 9293 says send an ACK and drop.
    t.ack_pending = true;
    queue_output(c);
    return Drop::kTcpBadAck;
  }
  if (t.snd.una < ack) {
    uint32_t acked = uint32_t(ack - t.snd.una);
    if (t.snd.una == t.iss) --acked;  // our SYN
    bool fin_acked = t.fin_sent && ack > t.fin_seq && t.snd.una <= t.fin_seq;
    if (fin_acked) --acked;           // our FIN
    if (acked > 0 && t.tx.valid()) {
      t.tx.consume(std::min(acked, t.tx.capacity()));
      note_event(c, kEvWritable);
    }
    t.snd.una = ack;
    // After a go-back-N rewind the peer may acknowledge beyond snd.nxt.
    if (t.snd.nxt < ack) t.snd.nxt = ack;
    if (t.rtt_timing && ack > t.rtt_seq) {
      update_rtt(t, now - t.rtt_start);
      t.rtt_timing = false;
    }
    t.backoff = 0;
    // RFC 5681: slow start below ssthresh, else congestion avoidance.
    uint32_t mss = t.snd.mss;
    if (t.cwnd < t.ssthresh) t.cwnd += std::min(acked, mss);
    else t.cwnd += std::max<uint32_t>(1, mss * mss / std::max<uint32_t>(t.cwnd, 1));
    t.rto_at = t.snd.una == t.snd.max ? 0 : now + current_rto(t);  // RFC 6298 5.2, 5.3
    arm_timer(c);
    queue_output(c);
    if (fin_acked) {
      switch (t.state) {
        case TcpState::kFinWait1: set_state(c, TcpState::kFinWait2, now); break;
        case TcpState::kClosing: set_state(c, TcpState::kTimeWait, now); break;
        case TcpState::kLastAck: reset_conn(c, 0); return Drop::kNone;
        default: break;
      }
    }
    // An orphan whose every byte is acknowledged needs its rings no more.
    if (t.user_closed && t.tx.valid() && t.tx.readable() == 0 && t.fin_sent) detach_rings(c);
  }
  // Window update (RFC 9293 3.10.7.4, fifth check): only from a newer segment.
  if (t.snd.wl1 < seq || (t.snd.wl1 == seq && t.snd.wl2 <= ack)) {
    if (seg.window > t.snd.wnd) queue_output(c);
    t.snd.wnd = seg.window;
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
  t.ack_pending = true;
  queue_output(c);
  if (seq < t.rcv.nxt) {
    uint32_t dup = uint32_t(t.rcv.nxt - seq);
    if (dup >= payload.size()) return Drop::kNone;
    payload = payload.subspan(dup);
    seq = t.rcv.nxt;
  }
  if (seq != t.rcv.nxt) {
    // Out of order: no reassembly in this version; the duplicate ACK asks again.
    return Drop::kTcpOutOfOrder;
  }
  uint32_t n = t.rx.valid() ? t.rx.write(payload.data(), uint32_t(payload.size())) : 0;
  if (n == 0) return Drop::kTcpRxRingFull;
  t.rcv.nxt += n;
  note_event(c, kEvReadable);
  // Part of the segment fit: take it, count the overrun, the ACK asks for the rest.
  if (n < payload.size()) ++ctr_.drops[static_cast<size_t>(Drop::kTcpRxRingFull)];
  return Drop::kNone;
}

void Engine::process_fin(ConnId c, const TcpSegment& seg, Time now) {
  Tcb& t = conns_[c];
  // Only a FIN that follows every byte we took closes the stream.
  SeqNum fin_seq = SeqNum(seg.seq) + uint32_t(seg.payload.size());
  if (fin_seq != t.rcv.nxt) return;
  t.rcv.nxt += 1;
  t.peer_fin = true;
  t.ack_pending = true;
  queue_output(c);
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

// ---- Output ----

void Engine::send_segment(Tcb& t, SeqNum seq, uint8_t flags, uint32_t len, Time now) {
  SeqNum end = seq + len + ((flags & kSyn) ? 1 : 0) + ((flags & kFin) ? 1 : 0);
  if (end > t.snd.max) t.snd.max = end;  // also when no buffer: RTO resends it
  uint8_t* f = begin_ip_frame(t.remote_ip, now);
  if (!f) return;
  uint32_t wnd = rx_window(t);
  TcpSegment s{.src_ip = cfg_.ip,
                .dst_ip = t.remote_ip,
                .src_port = t.local_port,
                .dst_port = t.remote_port,
                .seq = seq.raw(),
                .ack = (flags & kAck) ? t.rcv.nxt.raw() : 0,
                .flags = flags,
                .window = uint16_t(wnd),
                .mss = (flags & kSyn) ? our_mss() : uint16_t(0)};
  uint8_t* p = f + kEthHeader + kIpv4Header;
  size_t hlen = tcp_header_len(s);
  if (len > 0) t.tx.copy_out(t.tx_base + uint32_t(seq - (t.iss + 1)), p + hlen, len);
  s.payload = {p + hlen, len};
  write_tcp(p, s);
  write_ipv4(f + kEthHeader, cfg_.ip, t.remote_ip, kProtoTcp, uint16_t(hlen + len), ip_id_++);
  end_ip_frame(kEthHeader + kIpv4Header + hlen + len);
  ++ctr_.tcp_segments_out;
  if (flags & kAck) {
    t.ack_pending = false;
    t.rcv.adv_wnd = wnd;
  }
}

void Engine::output(ConnId c, Time now) {
  Tcb& t = conns_[c];
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
    for (;;) {
      uint32_t unsent = tx_unsent(t);
      if (unsent == 0) break;
      uint32_t in_flight = uint32_t(t.snd.nxt - t.snd.una);
      uint32_t wnd = std::min(t.snd.wnd, t.cwnd);
      if (in_flight >= wnd) {
        // Zero window with nothing in flight: the persist timer probes it.
        if (t.snd.wnd == 0 && in_flight == 0 && t.persist_at == 0) t.persist_at = now + current_rto(t);
        break;
      }
      uint32_t len = std::min({unsent, wnd - in_flight, uint32_t(t.snd.mss)});
      // Sender SWS avoidance (RFC 9293 3.8.6.2.1): no runt while data is in flight.
      if (len < t.snd.mss && len < unsent && in_flight > 0) break;
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
      t.snd.nxt += len;
      if (with_fin) {
        t.fin_sent = true;
        t.fin_seq = t.snd.nxt;
        t.snd.nxt += 1;
      }
      if (t.rto_at == 0) t.rto_at = now + current_rto(t);
      if (with_fin) break;
    }
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
  if (t.rx.valid() && !t.window_low && t.rcv.adv_wnd < std::min(t.rx.capacity(), kMaxWindow) / 2) {
    t.window_low = true;
    note_event(c, kEvWindowLow);
  }
  arm_timer(c);
}

void Engine::on_timer(ConnId c, Time now) {
  Tcb& t = conns_[c];
  if (t.time_wait_at != 0 && now >= t.time_wait_at) {
    reset_conn(c, 0);
    return;
  }
  if (t.rto_at != 0 && now >= t.rto_at) {
    t.rto_at = 0;
    ++ctr_.tcp_retransmits;
    bool handshake = t.state == TcpState::kSynSent || t.state == TcpState::kSynReceived;
    if (++t.backoff > (handshake ? kSynRetries : kDataRetries)) {
      ++ctr_.tcp_timeouts;
      reset_conn(c, ETIMEDOUT);
      return;
    }
    // RFC 6298 5.5-5.7 and Karn: back off, stop timing, go back to snd.una. The
    // backoff is a shift on the computed RTO that the next ACK of new data ends
    // (as BSD and Linux do), so that a go-back-N run, which yields no RTT sample,
    // does not keep the doubled value.
    t.rtt_timing = false;
    uint32_t flight = uint32_t(t.snd.max - t.snd.una);
    t.ssthresh = std::max(flight / 2, 2u * t.snd.mss);  // RFC 5681 (4)
    t.cwnd = t.snd.mss;
    t.snd.nxt = t.snd.una;  // go back N; snd.max remembers how far we got
    t.rto_at = now + current_rto(t);
    queue_output(c);
  }
  if (t.persist_at != 0 && now >= t.persist_at) {
    // Zero-window probe: an old sequence number makes the peer answer with its
    // window. Probes back off exponentially (RFC 9293 3.8.6.1).
    send_segment(t, t.snd.una + uint32_t(-1), kAck, 0, now);
    t.probes = uint8_t(std::min<uint32_t>(t.probes + 1u, 16u));
    t.persist_at = now + std::min(t.rto << std::min<uint32_t>(t.probes, 6), kMaxRto);
  }
  arm_timer(c);
}

void Engine::poll(Time now) {
  wheel_.expire(now / kMillisecond, [&](uint32_t c) { on_timer(c, now); });
}

void Engine::flush(Time now) {
  for (size_t i = 0; i < output_list_.size(); ++i) {
    ConnId c = output_list_[i];
    conns_[c].in_output = false;
    output(c, now);
    maybe_free(c);
  }
  output_list_.clear();
}

// ---- Socket calls ----

bool Engine::port_in_use(uint16_t port) const { return listener_by_port_[port] != 0; }

int Engine::listen(uint16_t port, uint32_t backlog, uint64_t user, ListenerId* out) {
  if (port == 0) return -EINVAL;
  if (listener_by_port_[port] != 0) return -EADDRINUSE;
  for (ListenerId i = 0; i < listeners_.size(); ++i) {
    Listener& l = listeners_[i];
    if (l.active) continue;
    l = Listener{};
    l.active = true;
    l.port = port;
    l.backlog = std::max<uint32_t>(backlog, 1);
    l.user = user;
    listener_by_port_[port] = uint16_t(i + 1);
    *out = i;
    return 0;
  }
  return -ENOBUFS;
}

void Engine::unlisten(ListenerId lid) {
  Listener& l = listeners_[lid];
  if (!l.active) return;
  // Children not yet accepted are reset, as Linux does when a listener closes.
  // A scan of the pool: closing a listener is rare, and this keeps no child list.
  for (ConnId c = 0; c < conns_.size(); ++c)
    if (conns_[c].listener == lid && conns_[c].state != TcpState::kClosed) abort_conn(c, 0);
  l.active = false;
  listener_by_port_[l.port] = 0;
}

uint32_t Engine::accept_queue_len(ListenerId l) const { return listeners_[l].queued; }

ConnId Engine::accept(ListenerId lid) {
  Listener& l = listeners_[lid];
  ConnId c = l.head;
  if (c == kInvalidId) return kInvalidId;
  unlink_accept(c);
  --l.pending;
  Tcb& t = conns_[c];
  t.listener = kInvalidId;
  t.user_attached = true;
  return c;
}

void Engine::attach(ConnId c, abi::ByteRing rx, abi::ByteRing tx, uint64_t user) {
  Tcb& t = conns_[c];
  abi::ByteRing old = t.rx;
  if (old.valid()) {
    // Move what arrived before accept() into the application's ring.
    uint32_t n = old.readable(), tail = old.tail(), cap = old.capacity();
    uint32_t off = tail & (cap - 1), first = std::min(n, cap - off);
    rx.write(old.bytes() + off, first);
    rx.write(old.bytes(), n - first);
  }
  if (t.staging != kInvalidId) {
    staging_free_.push_back(t.staging);
    t.staging = kInvalidId;
  }
  t.staged = false;
  t.rx = rx;
  t.tx = tx;
  t.tx_base = tx.tail() - uint32_t(t.snd.una - (t.iss + 1));
  t.user = user;
  t.window_low = false;
  note_event(c, kEvState | kEvReadable | kEvWritable);
}

int Engine::connect(uint16_t local_port, uint32_t remote_ip, uint16_t remote_port,
                    abi::ByteRing rx, abi::ByteRing tx, uint64_t user, Time now, ConnId* out) {
  if (remote_ip == 0 || remote_port == 0 || local_port == 0) return -EINVAL;
  if (find(remote_ip, remote_port, local_port) != kInvalidId) return -EADDRNOTAVAIL;
  ConnId c = alloc_conn(now);
  if (c == kInvalidId) return -ENOBUFS;
  Tcb& t = conns_[c];
  t.remote_ip = remote_ip;
  t.remote_port = remote_port;
  t.local_port = local_port;
  t.rx = rx;
  t.tx = tx;
  t.user = user;
  t.user_attached = true;
  t.iss = make_isn(remote_ip, remote_port, local_port, now);
  t.snd.una = t.snd.nxt = t.snd.max = t.iss;
  t.tx_base = tx.tail();
  t.cwnd = kInitialWindowSegments * t.snd.mss;
  table_insert(c);
  t.state = TcpState::kSynSent;
  ++ctr_.tcp_active_opens;
  queue_output(c);
  *out = c;
  return 0;
}

void Engine::tx_ready(ConnId c) {
  if (may_send_data(conns_[c].state)) queue_output(c);
}

void Engine::rx_drained(ConnId c) {
  Tcb& t = conns_[c];
  t.window_low = false;
  // Receiver SWS avoidance (RFC 9293 3.8.6.2.2): update once the window grew by
  // at least an MSS or half the buffer.
  uint32_t wnd = rx_window(t);
  uint32_t grow = std::min<uint32_t>(t.snd.mss, std::min(t.rx.capacity(), kMaxWindow) / 2);
  if (is_synchronized(t.state) && wnd >= t.rcv.adv_wnd + grow) {
    t.ack_pending = true;
    queue_output(c);
  }
}

void Engine::shutdown_write(ConnId c) {
  Tcb& t = conns_[c];
  if (t.fin_queued) return;
  t.fin_queued = true;
  queue_output(c);
}

bool Engine::close(ConnId c, bool abort, Time now) {
  Tcb& t = conns_[c];
  t.user_attached = false;
  t.user_closed = true;
  // Releases made inside this call are reported by the return value, not kEvDetached.
  uint64_t user = t.user;
  t.user = 0;
  t.events = 0;
  if (t.state == TcpState::kClosed || t.state == TcpState::kSynSent) {
    reset_conn(c, 0);  // RFC 9293 3.10.4: SYN-SENT close deletes the TCB
    return true;
  }
  // Linux: unread data (or SO_LINGER 0) turns close into an abort with RST.
  if (abort || (t.rx.valid() && t.rx.readable() > 0)) {
    abort_conn(c, now);
    return true;
  }
  t.fin_queued = true;
  queue_output(c);
  if (!t.tx.valid() || t.tx.readable() == 0 || t.state == TcpState::kTimeWait ||
      t.state == TcpState::kFinWait2) {
    detach_rings(c);
    return true;
  }
  t.user = user;  // kEvDetached comes once the peer has acknowledged every byte
  return false;
}

}  // namespace shunt
