// TCP (RFC 9293): connection bookkeeping, timers and the socket calls. Input is in
// tcp_input.cc, output in tcp_output.cc.
#include <algorithm>
#include <cerrno>
#include <cstring>

#include "engine/engine.hh"
#include "engine/tcp_internal.hh"

namespace shunt {

using namespace wire;
using tcp::SeqNum;


// RFC 6528: ISN = M + F(4-tuple, secret), M a 4-microsecond clock.
SeqNum Engine::make_isn(uint32_t rip, uint16_t rport, uint16_t lport, Time now) const {
  uint64_t f = mix64(cfg_.isn_secret ^ mix64((uint64_t{rip} << 32) ^ (uint64_t{rport} << 16) ^
                                             lport ^ (uint64_t{cfg_.ip} << 20)));
  return SeqNum(uint32_t(f) + uint32_t(now / 4));
}

uint32_t Engine::max_window(const Tcb& t) const { return 65535u << t.rcv_wscale; }

uint32_t Engine::rx_window(const Tcb& t) const {
  // An orphan (closed by the application, rings released) keeps the window its
  // ring had, as Linux keeps advertising a closed socket's receive space: the peer
  // must be able to send its FIN. Data that arrives resets it (process_text).
  if (!t.rx.valid()) return t.user_closed ? t.orphan_window : 0;
  return std::min(t.rx.writable(), max_window(t));
}

// Bytes in the tx ring past snd.nxt (the application's head is checked by the end).
uint32_t Engine::tx_unsent(const Tcb& t) const {
  if (!t.tx.valid() || t.snd.nxt == t.iss) return 0;
  uint32_t tail = t.tx.tail();
  uint32_t used = t.tx.readable();
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
  if (t.user == 0) return;  // nobody to tell (not accepted yet, or closed)
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
  // An orphan waits in FIN-WAIT-2 for the peer's FIN only so long (Linux
  // tcp_fin_timeout); a silent peer must not pin it forever.
  if (s == TcpState::kFinWait2 && t.user_closed) {
    t.time_wait_at = now + kFinTimeout;
    arm_timer(c);
  }
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
  if (t.rx.valid()) t.orphan_window = std::min(t.rx.capacity(), max_window(t));
  t.rx = abi::ProducerEnd();
  t.tx = abi::ConsumerEnd();
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
  for (Time d : {t.rto_at, t.persist_at, t.time_wait_at, t.delack_at, t.keepalive_at, t.tlp_at,
                 t.rack.timer_at})
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
  if (r != 0 && (t.rack.min_rtt == 0 || r < t.rack.min_rtt)) t.rack.min_rtt = r;
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
    ++t.retransmits;
    ++ctr_.tcp_rto_expired;
    bool handshake = t.state == TcpState::kSynSent || t.state == TcpState::kSynReceived;
    uint32_t retries = handshake ? kSynRetries : t.user_closed ? kOrphanRetries : kDataRetries;
    if (++t.backoff > retries) {
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
    if (t.backoff == 1 && !handshake)  // one reduction per loss episode (RFC 5681 (4))
      t.ssthresh = cc_on_loss(t.cc, t.cc.algorithm == CcAlgorithm::kReno ? flight : t.cwnd,
                              t.snd.mss, now);
    t.cwnd = t.snd.mss;
    // After a timeout SACK information is not trusted (the receiver may renege,
    // RFC 2018 8): go back to snd.una and resend everything.
    t.in_recovery = false;
    t.rexmit_now = false;
    t.dupacks = 0;
    // The go-back-N resend skips what the peer SACKed (as Linux marks the rest
    // lost); a second timeout in a row drops the scoreboard in case the peer
    // reneged (RFC 2018 8).
    if (t.backoff >= 2) t.sacked.clear();
    // RFC 8985 6.3: everything unSACKed counts as lost; go-back-N resends it in
    // order and logs each byte afresh.
    t.sent_log.clear();
    t.undo.armed = false;
    t.rack.timer_at = 0;
    t.tlp_at = 0;
    // RFC 6582 4: duplicate ACKs of the go-back-N resend must not start a recovery.
    t.recover = t.snd.max;
    t.recovered_once = true;
    t.snd.nxt = t.snd.una;  // go back N; snd.max remembers how far we got
    t.rto_at = now + current_rto(t);
    queue_output(c);
  }
  if (t.rack.timer_at != 0 && now >= t.rack.timer_at) rack_timer(c, now);
  if (t.tlp_at != 0 && now >= t.tlp_at) {
    if (t.in_recovery) recovery_probe(c, now);
    else tail_loss_probe(c, now);
  }
  if (t.delack_at != 0 && now >= t.delack_at) {
    t.delack_at = 0;
    ++ctr_.tcp_delayed_acks;
    ack_now(c);
  }
  if (t.keepalive_at != 0 && now >= t.keepalive_at && keepalive_due(c, now)) return;
  if (t.persist_at != 0 && now >= t.persist_at) {
    // Zero-window probe: an old sequence number makes the peer answer with its
    // window. Probes back off exponentially (RFC 9293 3.8.6.1).
    if (t.user_closed && t.probes >= kOrphanRetries) {
      // Nobody will read what is left: give up like Linux's orphan limit.
      ++ctr_.tcp_timeouts;
      abort_conn(c, now);
      return;
    }
    send_segment(t, t.snd.una + uint32_t(-1), kAck, 0, now);
    t.probes = uint8_t(std::min<uint32_t>(t.probes + 1u, 16u));
    t.persist_at = now + std::min(t.rto << std::min<uint32_t>(t.probes, 6), kMaxRto);
  }
  arm_timer(c);
}

// RFC 1122 4.2.3.6: after keep_idle without a segment from the peer, probe every
// keep_intvl; keep_cnt unanswered probes end the connection. Returns true when
// the connection was reset.
bool Engine::keepalive_due(ConnId c, Time now) {
  Tcb& t = conns_[c];
  t.keepalive_at = 0;
  if (!t.keepalive || !(t.state == TcpState::kEstablished || t.state == TcpState::kCloseWait ||
                        t.state == TcpState::kFinWait2))
    return false;
  Time idle_until = t.last_rx + Time(t.keep_idle) * kSecond;
  if (t.keep_probes == 0 && now < idle_until) {
    t.keepalive_at = idle_until;  // traffic since: wait for the rest of the idle time
    return false;
  }
  if (t.keep_probes >= t.keep_cnt) {
    ++ctr_.tcp_timeouts;
    reset_conn(c, ETIMEDOUT);
    return true;
  }
  // <SEQ=SND.UNA-1><ACK=RCV.NXT>: the peer answers with an ACK (or a RST).
  send_segment(t, t.snd.una + uint32_t(-1), kAck, 0, now);
  ++t.keep_probes;
  ++ctr_.tcp_keepalive_probes;
  t.keepalive_at = now + Time(t.keep_intvl) * kSecond;
  return false;
}

int Engine::set_option(ConnId c, TcpOption opt, uint32_t value) {
  Tcb& t = conns_[c];
  switch (opt) {
    case TcpOption::kNoDelay:
      t.nodelay = value != 0;
      if (t.nodelay) queue_output(c);  // Linux pushes what Nagle held back
      return 0;
    case TcpOption::kCork:
      t.cork = value != 0;
      if (!t.cork) queue_output(c);
      return 0;
    case TcpOption::kQuickAck:
      // Linux: TCP_QUICKACK=1 acknowledges at once for a while.
      t.quickack = value ? 16 : 0;
      if (value && t.delack_at != 0) ack_now(c);
      return 0;
    case TcpOption::kKeepAlive:
      t.keepalive = value != 0;
      t.keep_probes = 0;
      t.keepalive_at = t.keepalive ? t.last_rx + Time(t.keep_idle) * kSecond : 0;
      arm_timer(c);
      return 0;
    case TcpOption::kKeepIdle:
    case TcpOption::kKeepIntvl:
      if (value < 1 || value > 32767) return -EINVAL;  // Linux's MAX_TCP_KEEPIDLE/INTVL
      (opt == TcpOption::kKeepIdle ? t.keep_idle : t.keep_intvl) = value;
      if (t.keepalive && opt == TcpOption::kKeepIdle) {
        t.keepalive_at = t.last_rx + Time(value) * kSecond;
        arm_timer(c);
      }
      return 0;
    case TcpOption::kKeepCnt:
      if (value < 1 || value > 127) return -EINVAL;  // Linux's MAX_TCP_KEEPCNT
      t.keep_cnt = value;
      return 0;
    case TcpOption::kRcvBuf:
      // Like SO_RCVBUF on Linux: the size holds from now on, autotuning stops.
      t.rcvbuf_locked = true;
      if (t.rx.valid() && !t.staged) t.rx.set_limit(value);
      return 0;
    case TcpOption::kSndBuf:
      t.sndbuf_locked = true;
      if (t.tx.valid() && !t.staged) t.tx.set_limit(value);
      return 0;
    case TcpOption::kTos:
      if (value > 255) return -EINVAL;
      t.tos = uint8_t(value & ~3u);  // Linux keeps a TCP socket's ECN bits its own
      return 0;
    case TcpOption::kTtl:
      if (value < 1 || value > 255) return -EINVAL;
      t.ttl = uint8_t(value);
      return 0;
    case TcpOption::kCongestion:
      if (value > uint32_t(kLastCcAlgorithm)) return -ENOENT;
      t.cc = CcState{};
      t.cc.algorithm = CcAlgorithm(value);
      return 0;
  }
  return -ENOPROTOOPT;
}

void Engine::tcp_info(ConnId c, Time now, abi::TcpInfo* out) const {
  const Tcb& t = conns_[c];
  *out = abi::TcpInfo{};
  const uint32_t seg = std::max<uint32_t>(seg_payload(t), 1);
  auto segments = [&](uint64_t bytes) { return uint32_t((bytes + seg - 1) / seg); };
  auto ms_since = [&](Time then) { return then == 0 || then > now ? 0u : uint32_t((now - then) / kMillisecond); };
  out->ca_state = t.in_recovery ? 3 : t.backoff > 0 ? 4 : 0;  // TCP_CA_Recovery, TCP_CA_Loss
  out->retransmits = uint8_t(std::min<uint32_t>(t.backoff, 255));
  out->backoff = out->retransmits;
  out->probes = t.probes;
  out->options = (t.ts_ok ? 1 : 0) | (t.sack_ok ? 2 : 0) | (t.wscale_ok ? 4 : 0);
  out->wscale = uint8_t((t.snd_wscale & 15) | (t.rcv_wscale & 15) << 4);
  out->rto = uint32_t(std::min<Time>(t.rto << std::min<uint32_t>(t.backoff, 12), kMaxRto));
  out->ato = cfg_.delayed_ack ? uint32_t(kDelayedAck) : 0;
  out->snd_mss = seg;
  out->rcv_mss = our_mss();
  out->advmss = our_mss();
  out->pmtu = uint32_t(t.snd.mss) + wire::kIpv4Header + wire::kTcpHeader;
  uint32_t in_flight = uint32_t(t.snd.max - t.snd.una);  // sent, not acknowledged (Linux packets_out)
  out->unacked = segments(in_flight);
  out->sacked = segments(t.sacked.bytes());
  out->last_data_sent_ms = ms_since(t.last_tx);
  out->last_data_recv_ms = ms_since(t.last_rx);
  out->last_ack_recv_ms = ms_since(t.last_rx);
  uint32_t rcv_space = t.rx.valid() ? t.rx.capacity() : t.orphan_window;
  out->rcv_ssthresh = rcv_space;
  out->rcv_space = rcv_space;
  out->rtt = uint32_t(t.srtt);
  out->rttvar = uint32_t(t.rttvar);
  out->min_rtt = uint32_t(t.rack.min_rtt);
  out->snd_ssthresh = t.ssthresh == 0xffffffffu ? 0x7fffffffu : t.ssthresh / seg;  // TCP_INFINITE_SSTHRESH
  out->snd_cwnd = std::max<uint32_t>(t.cwnd / seg, 1);
  out->reordering = 3;  // Linux's initial tcp_reordering
  out->total_retrans = t.retransmits;
  out->bytes_acked = t.bytes_acked;
  out->bytes_received = t.bytes_received;
  if (t.tx.valid() && !t.staged) {
    uint32_t queued = t.tx.readable();
    out->notsent_bytes = queued > in_flight ? queued - in_flight : 0;
  }
  out->delivered = segments(t.rate.delivered);
  out->snd_wnd = t.snd.wnd;
}

bool Engine::quiescent() const {
  for (const Tcb& t : conns_) {
    if (!t.in_table) continue;
    switch (t.state) {
      case TcpState::kClosed:
      case TcpState::kListen:
      case TcpState::kFinWait2:
      case TcpState::kTimeWait: break;
      default: return false;
    }
  }
  return true;
}

void Engine::poll(Time now) {
  now_ = now;
  wheel_.expire(now / kMillisecond, [&](uint32_t c) { on_timer(c, now); });
}

void Engine::flush(Time now) {
  flush_output(now);
  for (uint32_t round = 0; round < kLoopRounds && looped_pending() != 0; ++round)
    deliver_looped(now);
}

void Engine::flush_output(Time now) {
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
    l.backlog = backlog;
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

bool Engine::requeue(ConnId c, ListenerId lid) {
  Tcb& t = conns_[c];
  Listener& l = listeners_[lid];
  if (!l.active || !t.user_attached || t.staged || staging_free_.empty()) return false;
  if (t.state != TcpState::kEstablished && t.state != TcpState::kCloseWait) return false;
  if (t.fin_queued || t.snd.nxt != t.iss + 1 || (t.tx.valid() && t.tx.readable() != 0))
    return false;
  const abi::ProducerEnd app_rx = t.rx;
  if (!app_rx.valid()) return false;
  const uint32_t readable = app_rx.used();
  const uint32_t held = t.ooo.n ? uint32_t(t.ooo.r[t.ooo.n - 1].end - t.rcv.nxt) : 0;
  if (readable + held > cfg_.staging_size) return false;
  take_staging(t);
  // The bytes keep their distance from the head, as attach() moves them.
  for (uint32_t done = 0, run, from = app_rx.tail(); done < readable + held; done += run) {
    run = readable + held - done;
    const uint8_t* at = app_rx.span(from + done, &run);
    t.rx.copy_in(done, at, run);
  }
  t.rx.produce(readable);
  t.user_attached = false;
  t.user = 0;
  t.events = 0;
  t.listener = lid;
  ++l.pending;
  enqueue_accept(c);
  return true;
}

void Engine::attach(ConnId c, abi::ProducerEnd rx, abi::ConsumerEnd tx, uint64_t user) {
  Tcb& t = conns_[c];
  abi::ProducerEnd old = t.rx;
  if (old.valid()) {
    // Move what arrived before accept() into the application's ring: the
    // readable bytes and, behind them, the out-of-order bytes held for
    // reassembly (their ranges stay valid: same distance from the head).
    uint32_t readable = old.used();
    uint32_t held = t.ooo.n ? uint32_t(t.ooo.r[t.ooo.n - 1].end - t.rcv.nxt) : 0;
    uint32_t total = std::min(readable + held, std::min(old.capacity(), rx.capacity()));
    uint32_t from = old.tail(), to = rx.head();
    for (uint32_t done = 0, run; done < total; done += run) {
      run = total - done;
      const uint8_t* at = old.span(from + done, &run);
      rx.copy_in(to + done, at, run);
    }
    rx.produce(std::min(readable, total));
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
                    abi::ProducerEnd rx, abi::ConsumerEnd tx, uint64_t user, Time now, ConnId* out) {
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
  // The TSval clock's offset is fixed before the SYN carries the first value.
  t.ts_offset = uint32_t(mix64(cfg_.isn_secret ^ t.iss.raw()));
  t.snd.una = t.snd.nxt = t.snd.max = t.iss;
  t.tx_base = tx.tail();
  t.cc.algorithm = cfg_.congestion;
  t.last_rx = now;
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
  // Receive autotuning: the peer filled half the buffer and the application
  // emptied it again at once, so the window, not the reader, held the peer back.
  // A slow reader takes longer and keeps its buffer (Linux sizes it from what the
  // reader copies per round trip, to the same end).
  if (t.window_low_at != 0 && !t.rcvbuf_locked && t.rx.valid() && !t.staged &&
      now_ <= t.window_low_at + kRxGrowWithin) {  // now_ may predate window_low_at (same turn)
    uint32_t before = t.rx.shape().limit();
    if (t.rx.set_limit(before * 2) > before) ++ctr_.tcp_rx_buffer_grown;
  }
  t.window_low_at = 0;
  t.rx.refresh_shape();
  // Receiver SWS avoidance (RFC 9293 3.8.6.2.2): update once the window grew by
  // at least an MSS or half the buffer.
  uint32_t wnd = rx_window(t);
  uint32_t grow = std::min<uint32_t>(t.snd.mss, std::min(t.rx.capacity(), max_window(t)) / 2);
  if (is_synchronized(t.state) && wnd >= t.rcv.adv_wnd + grow) {
    t.ack_pending = true;
    queue_output(c);
  }
}

// Send autotuning, as Linux's tcp_sndbuf_expand: a writer that keeps its ring
// more than half full gets room for two congestion windows, so the ring never
// holds the sender below its window.
void Engine::grow_send_buffer(Tcb& t) {
  if (t.sndbuf_locked || t.staged) return;
  uint32_t want = uint32_t(std::min<uint64_t>(2ull * t.cwnd, t.tx.shape().reserved()));
  uint32_t before = t.tx.shape().limit();
  if (want > before && t.tx.set_limit(want) > before) ++ctr_.tcp_tx_buffer_grown;
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
  if (abort || (t.rx.valid() && t.rx.used() > 0)) {
    abort_conn(c, now);
    return true;
  }
  t.fin_queued = true;
  queue_output(c);
  if (t.state == TcpState::kFinWait2) {
    t.time_wait_at = now + kFinTimeout;  // as set_state does for a later FIN-WAIT-2
    arm_timer(c);
  }
  if (!t.tx.valid() || t.tx.readable() == 0 || t.state == TcpState::kTimeWait ||
      t.state == TcpState::kFinWait2) {
    detach_rings(c);
    return true;
  }
  t.user = user;  // kEvDetached comes once the peer has acknowledged every byte
  return false;
}

}  // namespace shunt
