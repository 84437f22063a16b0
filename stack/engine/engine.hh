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

#include "engine/drop.hh"
#include "engine/seq.hh"
#include "engine/timer_wheel.hh"
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
    uint16_t mss = 536;  // peer's MSS (RFC 9293 3.7.1 default)
  } snd;
  struct {
    tcp::SeqNum nxt;
    uint32_t adv_wnd = 0;  // window in the last segment we sent
  } rcv;
  tcp::SeqNum iss, irs;

  uint32_t cwnd = 0;
  uint32_t ssthresh = 0xffffffff;

  // Byte streams. tx: [tail, head) holds unacked + unsent bytes; the byte at ring
  // index i has sequence number iss + 1 + (i - tx_base).
  abi::ByteRing rx, tx;
  uint32_t tx_base = 0;

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

  tcp::SeqNum fin_seq;     // sequence number of our FIN, once fin_sent
  uint8_t probes = 0;      // zero-window probes since the window closed
  int error = 0;           // errno to report (ECONNRESET, ECONNREFUSED, ETIMEDOUT)
  bool fin_queued = false; // application shut down writing
  bool fin_sent = false;   // our FIN went out at least once
  bool peer_fin = false;
  bool ack_pending = false;
  bool user_attached = false;  // an application holds it (accepted or connected)
  bool user_closed = false;    // the application closed it: it is an orphan
  bool in_output = false;
  bool in_events = false;
  bool window_low = false;
  bool staged = false;         // rings are engine staging buffers (not yet accepted)
  uint32_t events = 0;
  uint64_t user = 0;
  ListenerId listener = kInvalidId;  // passive open, until accepted
  ConnId next_in_queue = kInvalidId;  // accept queue / TIME_WAIT FIFO / free list
  ConnId prev_in_queue = kInvalidId;
  uint32_t staging = kInvalidId;
  bool in_table = false;
};

struct EngineCounters {
  uint64_t rx_frames = 0;
  uint64_t tx_frames = 0;
  uint64_t rx_bytes = 0;
  uint64_t tx_bytes = 0;
  uint64_t arp_requests_sent = 0;
  uint64_t arp_replies_sent = 0;
  uint64_t icmp_echo_replies = 0;
  uint64_t tcp_passive_opens = 0;
  uint64_t tcp_active_opens = 0;
  uint64_t tcp_established = 0;
  uint64_t tcp_resets_sent = 0;
  uint64_t tcp_resets_received = 0;
  uint64_t tcp_retransmits = 0;
  uint64_t tcp_timeouts = 0;
  uint64_t tcp_segments_in = 0;
  uint64_t tcp_segments_out = 0;
  uint64_t tcp_time_wait_recycled = 0;
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
  // Gratuitous ARP announcing our address (RFC 5227 style), at start.
  void announce();
  // True while any timer is armed.
  bool has_timers() const { return wheel_.size() != 0; }

  // ---- Listeners ----
  int listen(uint16_t port, uint32_t backlog, uint64_t user, ListenerId* out);
  void unlisten(ListenerId l);
  ConnId accept(ListenerId l);  // kInvalidId when the queue is empty
  uint32_t accept_queue_len(ListenerId l) const;
  bool port_in_use(uint16_t port) const;

  // ---- Connections ----
  int connect(uint16_t local_port, uint32_t remote_ip, uint16_t remote_port,
              abi::ByteRing rx, abi::ByteRing tx, uint64_t user, Time now, ConnId* out);
  // Hands an accepted connection its final rings; staged rx bytes move over.
  void attach(ConnId c, abi::ByteRing rx, abi::ByteRing tx, uint64_t user);
  void tx_ready(ConnId c);
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

  // Lookup by 4-tuple (tests, daemon diagnostics).
  ConnId find(uint32_t remote_ip, uint16_t remote_port, uint16_t local_port) const;

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

  struct ArpEntry {
    uint32_t ip = 0;
    wire::MacAddr mac{};
    bool resolved = false;
    Time expires = 0;
    Time requested = 0;
    uint8_t pending = 0;
  };
  static constexpr uint32_t kArpEntries = 64;
  static constexpr uint32_t kArpPendingFrames = 4;
  static constexpr uint32_t kMaxFrame = 1514 + 4;

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

  // ---- TCP (tcp.cc) ----
  Drop input_tcp(const wire::Ipv4& ip, Time now);
  Drop listen_input(Listener& l, ListenerId lid, const wire::TcpSegment& seg, Time now);
  Drop syn_sent_input(ConnId c, const wire::TcpSegment& seg, Time now);
  Drop segment_arrives(ConnId c, const wire::TcpSegment& seg, Time now);
  bool seq_acceptable(const Tcb& t, const wire::TcpSegment& seg) const;
  Drop process_rst(ConnId c, const wire::TcpSegment& seg);
  Drop process_ack(ConnId c, const wire::TcpSegment& seg, Time now);
  Drop process_text(ConnId c, const wire::TcpSegment& seg, Time now);
  void process_fin(ConnId c, const wire::TcpSegment& seg, Time now);
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

  TimerWheel wheel_;
  std::vector<ConnId> output_list_;
  std::vector<uint32_t> event_list_;
};

}  // namespace shunt
