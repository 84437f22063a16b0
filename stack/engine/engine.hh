// The protocol engine: Ethernet, ARP, IPv4, ICMP echo and TCP, with no I/O and no
// clock of its own. Frames come in through input(); frames go out through a
// FrameSink; time is passed in. Socket byte streams are abi::ByteRing views, so
// the daemon points them at shared memory and tests at plain buffers.
//
// Per batch the owner calls: input() for each received frame, the socket calls
// the applications asked for, poll() for timers, then flush() once, which builds
// every segment the batch made necessary (ACKs coalesced per burst).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/congestion.hh"
#include "engine/drop.hh"
#include "engine/reassembly.hh"
#include "engine/send_log.hh"
#include "engine/seq.hh"
#include "engine/seq_ranges.hh"
#include "engine/timer_wheel.hh"
#include "engine/udp.hh"
#include "shunt/ring.h"
#include "wire/wire.hh"

namespace shunt {

using Time = uint64_t;  // microseconds, from any fixed origin
inline constexpr Time kMillisecond = 1000;
inline constexpr Time kSecond = 1000 * kMillisecond;

using ConnId = uint32_t;
using ListenerId = uint32_t;
inline constexpr uint32_t kInvalidId = ~0u;

struct EngineConfig {
  wire::MacAddr mac{};
  uint32_t ip = 0;  // host order
  uint8_t prefix_len = 24;
  uint32_t gateway = 0;  // host order, 0 = none
  uint16_t mtu = 1500;
  uint32_t max_connections = 16384;
  uint32_t max_listeners = 256;
  uint32_t staging_buffers = 1024;  // connections established but not yet accepted
  uint32_t staging_size = 1 << 16;  // power of two
  uint64_t isn_secret = 0x5348554e54ull;
  Time time_wait = 60 * kSecond;    // Linux TCP_TIMEWAIT_LEN
  uint8_t window_shift = 7;         // our RFC 7323 window scale (Linux's usual)
  bool timestamps = true;           // offer RFC 7323 timestamps
  bool sack = true;                 // offer RFC 2018 SACK
  bool syn_cookies = true;          // answer SYNs statelessly when the SYN queue is full
  CcAlgorithm congestion = CcAlgorithm::kCubic;
  uint32_t challenge_ack_limit = 1000;  // per second (RFC 5961 7, Linux's default)
  bool fast_path = true;            // header prediction for in-order ESTABLISHED segments
  bool delayed_ack = true;          // RFC 1122 4.2.3.2; off: every data segment is acked at once
};

// Per-connection socket options the engine acts on (TCP_* and SO_KEEPALIVE).
enum class TcpOption : uint8_t {
  kNoDelay,     // value 0/1
  kCork,        // value 0/1; uncorking pushes what waits
  kQuickAck,    // value 0/1
  kKeepAlive,   // value 0/1
  kKeepIdle,    // seconds
  kKeepIntvl,   // seconds
  kKeepCnt,     // probes
  kCongestion,  // CcAlgorithm
  kRcvBuf,      // bytes the rx ring may hold; no autotuning after it
  kSndBuf,      // bytes the tx ring may hold; likewise
  kTos,         // IP_TOS byte of every segment
  kTtl,         // IP_TTL, 1..255
};

class FrameSink {
 public:
  virtual ~FrameSink() = default;
  // A buffer for one outgoing frame of up to mtu + 14 bytes; empty when none is free.
  virtual std::span<uint8_t> tx_buffer() = 0;
  virtual void tx_commit(size_t len) = 0;
};

enum class TcpState : uint8_t {
  kClosed,
  kListen,
  kSynSent,
  kSynReceived,
  kEstablished,
  kFinWait1,
  kFinWait2,
  kCloseWait,
  kClosing,
  kLastAck,
  kTimeWait,
};
const char* state_name(TcpState s);

// Events reported to the owner of a connection or listener (drain_events).
inline constexpr uint32_t kEvReadable = 1u << 0;   // bytes, FIN or reset arrived
inline constexpr uint32_t kEvWritable = 1u << 1;   // tx ring space freed
inline constexpr uint32_t kEvState = 1u << 2;      // connected, closed, reset, refused
inline constexpr uint32_t kEvDetached = 1u << 3;   // engine no longer uses the rings
inline constexpr uint32_t kEvAcceptable = 1u << 4; // listener queue grew
inline constexpr uint32_t kEvWindowLow = 1u << 5;  // advertised window fell below half

struct Tcb {
  TcpState state = TcpState::kClosed;
  uint16_t local_port = 0;
  uint16_t remote_port = 0;
  uint32_t remote_ip = 0;
  wire::MacAddr remote_mac{};  // unused: next hop comes from ARP

  // RFC 9293 3.3.1 send and receive sequence variables.
  struct {
    tcp::SeqNum una, nxt, wl1, wl2;
    tcp::SeqNum max;  // highest sequence number sent + 1; snd.nxt goes back on RTO
    uint32_t wnd = 0;
    uint32_t max_wnd = 0;  // largest window the peer offered before wnd (MAX.SND.WND)
    uint16_t mss = 536;    // peer's MSS (RFC 9293 3.7.1 default)
  } snd;
  struct {
    tcp::SeqNum nxt;
    uint32_t adv_wnd = 0;  // window in the last segment we sent
    tcp::SeqNum last_ack;  // rcv.nxt in the last ACK we sent (Last.ACK.sent)
  } rcv;
  tcp::SeqNum iss, irs;

  uint32_t cwnd = 0;
  uint32_t ssthresh = 0xffffffff;
  CcState cc;

  // RFC 7323.
  uint8_t snd_wscale = 0;   // shift of the windows the peer sends
  uint8_t rcv_wscale = 0;   // shift of the windows we send
  bool wscale_ok = false;
  bool ts_ok = false;
  uint32_t ts_recent = 0;
  Time ts_recent_at = 0;
  uint32_t ts_offset = 0;   // per-connection offset of our TSval clock
  uint32_t cookie_tsval = 0;  // SYN-ACK of a SYN cookie: TSval carrying the options
  // RFC 2018 / 2883 / 6675.
  bool sack_ok = false;
  RxRanges ooo;             // received beyond rcv.nxt, held in the rx ring
  SeqRanges sacked;         // our data the peer holds beyond snd.una
  tcp::SeqNum dsack_start, dsack_end;
  bool dsack_pending = false;
  uint8_t dupacks = 0;
  bool in_recovery = false;
  bool recovered_once = false;
  bool rexmit_now = false;  // retransmit at once, whatever the window (fast retransmit)
  tcp::SeqNum recover;      // snd.max when recovery began (RFC 6582)
  // RACK-TLP (RFC 8985 6.1): when each byte in flight was last sent, and the
  // most recently sent data the peer has delivered.
  SendLog sent_log;
  struct {
    Time xmit_ts = 0;         // send time of the most recently sent delivered data
    uint32_t order = 0;       // its send order (SendLog::Entry::order)
    tcp::SeqNum end_seq;      // its end: within an entry, what lies below went first
    Time rtt = 0;             // its round trip
    Time min_rtt = 0;
    tcp::SeqNum fack;         // highest end of delivered data, once fack_set
    bool fack_set = false;
    bool reordering_seen = false;
    uint8_t reo_wnd_mult = 1;
    uint8_t reo_wnd_persist = 0;
    bool dsack_round_open = false;
    tcp::SeqNum dsack_round;  // DSACKs until snd.una passes this are one round
    Time timer_at = 0;        // reordering timer (RFC 8985 6.3)
  } rack;
  // Delivery rate estimation (draft-cheng-iccrg-delivery-rate-estimation), for BBR.
  struct {
    uint64_t delivered = 0;      // bytes ACKed or SACKed over the connection's life
    Time delivered_time = 0;     // when `delivered` last grew
    Time first_sent = 0;         // send time of the most recently sent delivered data
    uint64_t app_limited = 0;    // delivered count ending an application-limited stretch, 0 none
    uint32_t acked = 0;          // newly delivered by the ACK being processed
    uint32_t sample_order = 0;   // the most recently sent data it delivered: order (0 none),
    Time sample_sent = 0;        // send time
    RateSnapshot sample;         // and the delivery state when it went out
  } rate;
  // A cwnd reduction that DSACKs prove spurious is undone (RFC 2883 5, as Linux).
  struct {
    bool armed = false;
    int32_t retransmits = 0;  // retransmitted segments not yet reported duplicate
    tcp::SeqNum marker;       // snd.una at the reduction
    uint32_t cwnd = 0, ssthresh = 0;
    CcState cc;
  } undo;

  // Delayed ACK (RFC 1122 4.2.3.2, RFC 5681 4.2).
  uint32_t rcv_unacked = 0; // bytes received since our last ACK
  uint16_t rcv_mss = 536;   // largest payload the peer sent (Linux's rcv_mss): its MSS less options
  uint8_t quickack = 0;     // ACKs still to send at once
  bool nodelay = false;
  bool cork = false;
  uint8_t tos = 0;          // IP_TOS
  uint8_t ttl = 64;         // IP_TTL (Linux's ip_default_ttl)
  // Keepalive (RFC 1122 4.2.3.6).
  bool keepalive = false;
  uint32_t keep_idle = 7200, keep_intvl = 75, keep_cnt = 9;  // Linux defaults, seconds
  uint8_t keep_probes = 0;
  Time last_rx = 0;         // last segment from the peer
  Time last_tx = 0;         // last data we sent (slow start after idle)

  // Byte streams: the engine's ends of the socket's rings (include/shunt/ring.h),
  // which keep the engine's own index private. tx: [tail, head) holds unacked +
  // unsent bytes; the byte at ring index i has sequence number iss + 1 + (i - tx_base).
  abi::ProducerEnd rx;
  abi::ConsumerEnd tx;
  uint32_t tx_base = 0;
  uint32_t orphan_window = 0;  // window advertised once closed and the rings are gone

  // RFC 6298 retransmission state.
  Time srtt = 0, rttvar = 0, rto = kSecond;
  uint32_t backoff = 0;
  bool rtt_timing = false;
  tcp::SeqNum rtt_seq;
  Time rtt_start = 0;

  // Deadlines (0 = off); the wheel holds the earliest.
  Time rto_at = 0;
  Time persist_at = 0;
  Time time_wait_at = 0;
  Time delack_at = 0;
  Time keepalive_at = 0;
  Time tlp_at = 0;         // tail loss probe (RFC 8985 7)
  bool tlp_sent = false;   // one probe per flight, until an ACK advances
  uint32_t limited_sent = 0; // bytes sent by limited transmit since snd.una moved

  // For shunt ss (and TCP_INFO): totals over the connection's life.
  uint64_t bytes_acked = 0, bytes_received = 0;
  uint32_t retransmits = 0;

  tcp::SeqNum fin_seq;     // sequence number of our FIN, once fin_sent
  uint8_t probes = 0;      // zero-window probes since the window closed
  int error = 0;           // errno to report (ECONNRESET, ECONNREFUSED, ETIMEDOUT)
  bool fin_queued = false; // application shut down writing
  bool fin_sent = false;   // our FIN went out at least once
  bool peer_fin = false;
  bool peer_fin_ahead = false;  // the peer's FIN came before a hole: taken at peer_fin_seq
  tcp::SeqNum peer_fin_seq;
  bool ack_pending = false;
  bool user_attached = false;  // an application holds it (accepted or connected)
  bool user_closed = false;    // the application closed it: it is an orphan
  bool in_output = false;
  bool in_events = false;
  bool loop_waiting = false;   // in loop_waiters_ (a connection to our own address)
  bool window_low = false;
  // Buffer autotuning (docs/architecture.md, Windows that grow): when the window
  // last fell below half (0: not since the application drained), and whether
  // SO_RCVBUF/SO_SNDBUF fixed the sizes.
  Time window_low_at = 0;
  bool rcvbuf_locked = false;
  bool sndbuf_locked = false;
  bool staged = false;         // rings are engine staging buffers (not yet accepted)
  uint32_t events = 0;
  uint64_t user = 0;
  ListenerId listener = kInvalidId;  // passive open, until accepted
  ConnId next_in_queue = kInvalidId;  // accept queue / TIME_WAIT FIFO / free list
  ConnId prev_in_queue = kInvalidId;
  uint32_t staging = kInvalidId;
  bool in_table = false;
};

// Engine counters: X(field, "name in shunt stat"). Drops are counted per reason
// in `drops` (drop.hh).
#define SHUNT_ENGINE_COUNTERS(X)                                          \
  X(rx_frames, "engine.rx_frames")                                        \
  X(tx_frames, "engine.tx_frames")                                        \
  X(rx_bytes, "engine.rx_bytes")                                          \
  X(tx_bytes, "engine.tx_bytes")                                          \
  X(arp_requests_sent, "arp.requests_sent")                               \
  X(arp_replies_sent, "arp.replies_sent")                                 \
  X(icmp_echo_replies, "icmp.echo_replies")                               \
  X(icmp_errors_received, "icmp.errors_received")                         \
  X(pmtu_updates, "ip.pmtu_updates")                                      \
  X(looped_frames, "ip.looped_frames")                                    \
  X(loop_waits, "ip.loop_waits") /* a sender found the loopback full */   \
  X(tcp_segments_in, "tcp.segments_in")                                   \
  X(tcp_segments_out, "tcp.segments_out")                                 \
  X(tcp_passive_opens, "tcp.passive_opens")                               \
  X(tcp_active_opens, "tcp.active_opens")                                 \
  X(tcp_established, "tcp.established")                                  \
  X(tcp_resets_sent, "tcp.resets_sent")                                   \
  X(tcp_resets_received, "tcp.resets_received")                           \
  X(tcp_retransmits, "tcp.retransmits")                                   \
  X(tcp_timeouts, "tcp.timeouts")                                         \
  X(tcp_rto_expired, "tcp.rto_expired") /* each one goes back N */        \
  X(tcp_time_wait_recycled, "tcp.time_wait_recycled")                     \
  X(tcp_fast_retransmits, "tcp.fast_retransmits")                         \
  X(tcp_recoveries, "tcp.recoveries")                                     \
  X(tcp_sack_retransmits, "tcp.sack_retransmits")                         \
  X(tcp_tail_loss_probes, "tcp.tail_loss_probes")                         \
  X(tcp_rack_marked_lost, "tcp.rack_marked_lost") /* ranges declared lost */ \
  X(tcp_spurious_undos, "tcp.spurious_undos") /* reductions undone by DSACK */ \
  X(tcp_rx_buffer_grown, "tcp.rx_buffer_grown") /* receive buffer doubled (autotuning) */ \
  X(tcp_tx_buffer_grown, "tcp.tx_buffer_grown") /* send buffer grown to twice the cwnd */ \
  X(tcp_send_log_overflows, "tcp.send_log_overflows")                     \
  X(tcp_sack_scoreboard_full, "tcp.sack_scoreboard_full")                 \
  X(tcp_ooo_queued, "tcp.ooo_queued")                                     \
  X(tcp_ooo_pruned, "tcp.ooo_pruned") /* out-of-order table full: its highest range forgotten */ \
  X(tcp_dsacks_sent, "tcp.dsacks_sent")                                   \
  X(tcp_dsacks_received, "tcp.dsacks_received")                           \
  X(tcp_challenge_acks, "tcp.challenge_acks")                             \
  X(tcp_syn_cookies_sent, "tcp.syn_cookies_sent")                         \
  X(tcp_syn_cookies_accepted, "tcp.syn_cookies_accepted")                 \
  X(tcp_keepalive_probes, "tcp.keepalive_probes")                         \
  X(tcp_delayed_acks, "tcp.delayed_acks")                                 \
  X(tcp_fast_path, "tcp.fast_path")                                       \
  X(tcp_orphan_fins, "tcp.orphan_fins") /* peer FINs taken by orphans */

struct EngineCounters {
#define SHUNT_X(field, name) uint64_t field = 0;
  SHUNT_ENGINE_COUNTERS(SHUNT_X)
#undef SHUNT_X
  uint64_t drops[static_cast<size_t>(Drop::kCount)] = {};
};

class Engine {
 public:
  Engine(const EngineConfig& config, FrameSink& sink);
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const EngineConfig& config() const { return cfg_; }
  const EngineCounters& counters() const { return ctr_; }

  // ---- Batch steps ----
  Drop input(std::span<const uint8_t> frame, Time now);
  void poll(Time now);
  void flush(Time now);
  // Frames to our own address that flush() left for the next turn (it delivers
  // at most kLoopRounds rounds): the daemon has work while this is non-zero.
  uint32_t looped_pending() const { return loop_head_ - loop_tail_; }
  // Gratuitous ARP announcing our address (RFC 5227 style), at start.
  void announce();
  // True while any timer is armed.
  bool has_timers() const { return wheel_.size() != 0; }
  // When poll() next has something to do (timer ticks are milliseconds), or
  // kNoDeadline.
  static constexpr Time kNoDeadline = ~Time{0};
  Time next_deadline() const {
    uint64_t tick = wheel_.next_deadline();
    return tick == TimerWheel::kNever ? kNoDeadline : Time(tick) * kMillisecond;
  }
  // No connection still has a FIN or data to get across: everything is LISTEN,
  // FIN-WAIT-2, TIME-WAIT or closed (a graceful stop waits for this).
  bool quiescent() const;

  // ---- Listeners ----
  int listen(uint16_t port, uint32_t backlog, uint64_t user, ListenerId* out);
  void unlisten(ListenerId l);
  ConnId accept(ListenerId l);  // kInvalidId when the queue is empty
  // Puts an accepted connection the application never saw (handed ahead by the
  // daemon, docs/architecture.md "Accepting without a round trip") back at the
  // end of its listener's queue, its received bytes back in a staging ring.
  // False, changing nothing, when it cannot go back as it came: the listener is
  // gone, it left ESTABLISHED/CLOSE-WAIT, the application sent on it, or its bytes
  // do not fit a staging ring (or none is free).
  bool requeue(ConnId c, ListenerId l);
  uint32_t accept_queue_len(ListenerId l) const;
  bool port_in_use(uint16_t port) const;

  // ---- Connections ----
  int connect(uint16_t local_port, uint32_t remote_ip, uint16_t remote_port,
              abi::ProducerEnd rx, abi::ConsumerEnd tx, uint64_t user, Time now, ConnId* out);
  // Hands an accepted connection its final rings; staged rx bytes move over.
  void attach(ConnId c, abi::ProducerEnd rx, abi::ConsumerEnd tx, uint64_t user);
  void tx_ready(ConnId c);
  int set_option(ConnId c, TcpOption opt, uint32_t value);
  // getsockopt(TCP_INFO) as Linux fills it, from what the engine tracks; `state`
  // is left for the caller, which knows Linux's numbering (control.h).
  void tcp_info(ConnId c, Time now, abi::TcpInfo* out) const;
  void rx_drained(ConnId c);
  void shutdown_write(ConnId c);
  // The application gives the connection up. Returns true when the rings are
  // already released (else kEvDetached follows).
  bool close(ConnId c, bool abort, Time now);

  const Tcb& tcb(ConnId c) const { return conns_[c]; }
  uint32_t live_connections() const { return live_conns_; }

  // Calls fn(user, events) once per connection or listener with pending events.
  template <typename Fn>
  void drain_events(Fn&& fn) {
    for (uint32_t i = 0; i < event_list_.size(); ++i) {
      uint32_t e = event_list_[i];
      if (e & kListenerBit) {
        Listener& l = listeners_[e & ~kListenerBit];
        l.in_events = false;
        if (l.active) fn(l.user, kEvAcceptable);
      } else {
        Tcb& c = conns_[e];
        c.in_events = false;
        uint32_t ev = c.events;
        c.events = 0;
        if (c.user != 0 && ev != 0) fn(c.user, ev);
        maybe_free(e);
      }
    }
    event_list_.clear();
  }

  // Diagnostics (shunt ss): fn(id, tcb) for every connection in use, fn(port,
  // backlog, queued, user) for every listener.
  template <typename Fn>
  void for_each_connection(Fn&& fn) const {
    for (ConnId c = 0; c < conns_.size(); ++c) {
      const Tcb& t = conns_[c];
      if (t.state != TcpState::kClosed || t.user_attached || t.rx.valid()) fn(c, t);
    }
  }
  template <typename Fn>
  void for_each_listener(Fn&& fn) const {
    for (const Listener& l : listeners_)
      if (l.active) fn(l.port, l.backlog, l.queued, l.user);
  }

  // Lookup by 4-tuple (tests, daemon diagnostics).
  ConnId find(uint32_t remote_ip, uint16_t remote_port, uint16_t local_port) const;

  // ---- UDP (udp.cc) ----
  UdpTable& udp() { return udp_; }
  const UdpTable& udp() const { return udp_; }
  // One datagram from socket `id` to dst:dport (host order), in IPv4 fragments when
  // it exceeds the MTU. 0, or -EMSGSIZE/-EINVAL/-EBADF; a datagram lost on the way
  // (no route, ARP queue full, no tx buffer) is counted, not reported.
  int udp_send(UdpId id, uint32_t dst, uint16_t dport, std::span<const uint8_t> payload, Time now);
  // An ICMP error (type, code) quoting `quoted` (the offending IPv4 header and the
  // 8 bytes after it) about a datagram we sent: tells its socket if connected.
  Drop udp_icmp_error(uint8_t type, uint8_t code, std::span<const uint8_t> quoted);

 private:
  static constexpr uint32_t kListenerBit = 0x80000000u;

  struct Listener {
    bool active = false;
    bool in_events = false;
    uint16_t port = 0;
    uint32_t backlog = 0;
    uint32_t pending = 0;  // SYN_RECEIVED children + queued, for the backlog
    uint32_t queued = 0;
    ConnId head = kInvalidId, tail = kInvalidId;
    uint64_t user = 0;
  };
  // Linux's sk_acceptq_is_full: a backlog of N holds N + 1 (listen(fd, 0) one).
  static bool accept_queue_full(const Listener& l) { return l.queued > l.backlog; }

  struct ArpEntry {
    uint32_t ip = 0;
    wire::MacAddr mac{};
    bool resolved = false;
    Time expires = 0;
    Time requested = 0;  // the last request sent for it (a broadcast, or a poll)
    uint8_t pending = 0;
    uint8_t polls = 0;   // unanswered polls of a stale entry
  };
  static constexpr uint32_t kArpEntries = 64;
  static constexpr uint32_t kArpPendingFrames = 4;
  static constexpr uint32_t kMaxFrame = 1514 + 4;
  // Loopback (docs/architecture.md, Local connections): frames to our own
  // address wait here, in order, and flush() receives them. Senders stop short
  // of the last kLoopReserve frames, which are left for ACKs, RSTs and SYNs.
  static constexpr uint32_t kLoopFrames = 512;
  static constexpr uint32_t kLoopReserve = 16;
  static constexpr uint32_t kLoopRounds = 8;
  static constexpr uint32_t kLoopBatch = 2;  // frames received between outputs

  // ---- Link and network layers (engine.cc) ----
  Drop input_arp(std::span<const uint8_t> packet, Time now);
  Drop input_icmp(const wire::Ipv4& ip, Time now);
  ArpEntry* arp_lookup(uint32_t ip);
  ArpEntry* arp_learn(uint32_t ip, const wire::MacAddr& mac, Time now);
  void send_arp(uint16_t op, const wire::MacAddr& dst_mac, uint32_t target_ip,
                const wire::MacAddr& target_mac);
  // Space for one IPv4 frame to dst: the sink's buffer, or an ARP pending slot.
  // Returns nullptr (and counts) when neither exists.
  uint8_t* begin_ip_frame(uint32_t dst, Time now);
  void end_ip_frame(size_t len);
  bool on_link(uint32_t ip) const;
  // Loopback: room for a data segment to our own address; else c waits for it.
  bool loop_room_for(ConnId c);
  void deliver_looped(Time now);
  void flush_output(Time now);

  // ---- UDP and IPv4 fragments (udp.cc) ----
  Drop input_udp(const wire::Ipv4& ip, Time now);
  Drop input_fragment(std::span<const uint8_t> packet, Time now);
  void send_port_unreachable(const wire::Ipv4& ip, std::span<const uint8_t> datagram, Time now);

  // ---- TCP input (tcp_input.cc) ----
  Drop input_tcp(const wire::Ipv4& ip, Time now);
  Drop listen_input(Listener& l, ListenerId lid, const wire::TcpSegment& seg, Time now);
  ConnId new_passive_child(Listener& l, ListenerId lid, const wire::TcpSegment& seg, Time now);
  void take_staging(Tcb& t);
  void negotiate_options(Tcb& t, const wire::TcpSegment& syn, Time now);
  uint32_t cookie_hash(const wire::TcpSegment& s, uint32_t irs, uint32_t counter) const;
  void send_syn_cookie(const wire::TcpSegment& syn, Time now);
  Drop cookie_ack_input(Listener& l, ListenerId lid, const wire::TcpSegment& seg, Time now);
  Drop syn_sent_input(ConnId c, const wire::TcpSegment& seg, Time now);
  Drop segment_arrives(ConnId c, const wire::TcpSegment& seg, Time now);
  bool fast_path(ConnId c, const wire::TcpSegment& seg, Time now);
  bool seq_acceptable(const Tcb& t, const wire::TcpSegment& seg) const;
  bool paws_reject(const Tcb& t, const wire::TcpSegment& seg, Time now) const;
  void update_ts_recent(Tcb& t, const wire::TcpSegment& seg, Time now);
  void ack_now(ConnId c);
  void challenge_ack(ConnId c, Time now);
  Drop process_rst(ConnId c, const wire::TcpSegment& seg, Time now);
  Drop process_ack(ConnId c, const wire::TcpSegment& seg, Time now);
  void ack_advance(ConnId c, const wire::TcpSegment& seg, Time now);
  // ---- Loss detection and recovery (tcp_recovery.cc) ----
  void on_duplicate_ack(ConnId c, Time now);
  void enter_recovery(ConnId c, Time now);
  bool take_sack(Tcb& t, const wire::TcpSegment& seg, Time now);
  void take_dsack(Tcb& t, tcp::SeqNum start, tcp::SeqNum end);
  void rack_delivered(Tcb& t, tcp::SeqNum from, tcp::SeqNum to, const wire::TcpSegment& seg, Time now);
  Time rack_reo_wnd(const Tcb& t) const;
  void rack_detect_loss(Tcb& t, Time now);
  void rack_after_ack(ConnId c, Time now);
  void rack_timer(ConnId c, Time now);
  bool has_lost(const Tcb& t) const;
  void log_sent(Tcb& t, tcp::SeqNum seq, uint32_t len, bool retransmission, Time now);
  void note_delivered(Tcb& t, uint32_t bytes, Time now);
  void cc_after_ack(ConnId c, Time now);
  void grow_send_buffer(Tcb& t);
  void note_dsack(Tcb& t, tcp::SeqNum start, tcp::SeqNum end);
  Drop process_text(ConnId c, const wire::TcpSegment& seg, Time now);
  Drop queue_out_of_order(ConnId c, tcp::SeqNum seq, std::span<const uint8_t> payload);
  void schedule_ack(ConnId c, uint32_t bytes, Time now);
  void process_fin(ConnId c, const wire::TcpSegment& seg, Time now);
  void take_fin(ConnId c, Time now);
  Drop tcp_icmp_error(uint8_t type, uint8_t code, uint16_t next_mtu,
                      std::span<const uint8_t> quoted, Time now);
  // ---- TCP output (tcp_output.cc) ----
  uint32_t ts_clock(const Tcb& t, Time now) const;
  uint32_t seg_payload(const Tcb& t) const;
  uint32_t sacked_in(const Tcb& t, tcp::SeqNum from, tcp::SeqNum to) const;
  void fill_sack_blocks(Tcb& t, wire::TcpSegment* s);
  uint32_t pipe(const Tcb& t) const;
  bool next_hole(const Tcb& t, tcp::SeqNum from, tcp::SeqNum limit, tcp::SeqNum* start,
                 uint32_t* len) const;
  void retransmit_lost(ConnId c, Time now);
  void send_new_data(ConnId c, Time now);
  void arm_tail_loss_probe(Tcb& t, Time now);
  void arm_recovery_timer(Tcb& t, Time now);
  void tail_loss_probe(ConnId c, Time now);
  void recovery_probe(ConnId c, Time now);
  // ---- TCP bookkeeping and timers (tcp.cc) ----
  bool keepalive_due(ConnId c, Time now);
  uint32_t max_window(const Tcb& t) const;
  void update_rtt(Tcb& t, Time sample);
  Time current_rto(const Tcb& t) const;  // rto with the backoff applied
  void send_reset_for(const wire::TcpSegment& seg, Time now);
  void output(ConnId c, Time now);
  void send_segment(Tcb& t, tcp::SeqNum seq, uint8_t flags, uint32_t len, Time now);
  void on_timer(ConnId c, Time now);
  void arm_timer(ConnId c);
  void set_state(ConnId c, TcpState s, Time now);
  void reset_conn(ConnId c, int error);  // peer reset or fatal timeout: no RST sent
  void abort_conn(ConnId c, Time now);   // we send RST and drop everything
  void queue_output(ConnId c);
  void note_event(ConnId c, uint32_t ev);
  void note_listener_event(ListenerId l);
  void detach_rings(ConnId c);
  void maybe_free(ConnId c);
  ConnId alloc_conn(Time now);
  void free_conn(ConnId c);
  void table_insert(ConnId c);
  void table_remove(ConnId c);
  uint32_t hash_tuple(uint32_t rip, uint16_t rport, uint16_t lport) const;
  tcp::SeqNum make_isn(uint32_t rip, uint16_t rport, uint16_t lport, Time now) const;
  uint32_t rx_window(const Tcb& t) const;
  uint16_t our_mss() const { return uint16_t(cfg_.mtu - wire::kIpv4Header - wire::kTcpHeader); }
  uint32_t tx_unsent(const Tcb& t) const;
  void enqueue_accept(ConnId c);
  void unlink_accept(ConnId c);
  void time_wait_push(ConnId c);
  void time_wait_unlink(ConnId c);

  EngineConfig cfg_;
  FrameSink& sink_;
  EngineCounters ctr_;
  uint16_t ip_id_ = 1;

  std::vector<Tcb> conns_;
  ConnId free_head_ = kInvalidId;
  uint32_t live_conns_ = 0;
  std::vector<uint32_t> table_;  // open addressing, linear probing, kInvalidId = empty
  uint32_t table_mask_ = 0;
  std::vector<Listener> listeners_;
  std::vector<uint16_t> listener_by_port_;  // 0 = none, else index + 1
  ConnId tw_head_ = kInvalidId, tw_tail_ = kInvalidId;

  // Staging rings for connections not yet accepted.
  std::vector<abi::RingIndices> staging_idx_;
  std::vector<uint8_t> staging_bytes_;
  std::vector<uint32_t> staging_free_;
  abi::RingIndices empty_tx_idx_;
  uint8_t empty_tx_byte_ = 0;

  std::vector<ArpEntry> arp_;
  std::vector<uint8_t> arp_pending_;  // kArpEntries * kArpPendingFrames * kMaxFrame
  std::vector<uint16_t> arp_pending_len_;
  uint8_t* pending_frame_ = nullptr;  // set by begin_ip_frame when it used an ARP slot
  ArpEntry* pending_entry_ = nullptr;
  std::vector<uint8_t> loop_bytes_;   // kLoopFrames * kMaxFrame
  std::vector<uint16_t> loop_len_;
  uint32_t loop_head_ = 0, loop_tail_ = 0;  // frames [tail, head) wait, free-running
  bool loop_frame_ = false;           // the frame being built is a looped one
  bool delivering_looped_ = false;    // input() is receiving a looped frame
  std::vector<ConnId> loop_waiters_;  // senders that found the loop full

  Time challenge_window_ = 0;
  Time now_ = 0;  // the latest time poll() was given, for calls made without one
  uint32_t challenge_count_ = 0;
  TimerWheel wheel_;
  std::vector<ConnId> output_list_;
  std::vector<uint32_t> event_list_;

  UdpTable udp_;
  Reassembly reasm_;
};

}  // namespace shunt
