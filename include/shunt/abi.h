// shunt shared-memory ABI, version 5 (version 3: byte rings whose capacity grows
// while they hold bytes, SocketSlot::rx_geometry/tx_geometry; version 4: kTcpInfo;
// version 5: wake cells, one bell per application thread, so that the daemon wakes
// the threads that wait for what changed and not every sleeping thread; version 6:
// connections handed ahead on a listener's rx ring, claimed with kAccepted).
//
// One region per application process: a memfd created by shuntd at attach time,
// mapped by the daemon and by the application (at different addresses, so every
// reference inside is an offset from the region base, never a pointer).
//
//   RegionHeader                      (offset 0)
//   QueuePair[queue_pair_count]       (queues_offset)   one per application thread
//   SocketSlot[slot_count]            (slots_offset)    per-socket state + ring indices
//   ring bytes                        (rings_offset)    slot i: rx at i*(rx+tx), tx after it
//                                                       (bytes reserved: a ring's largest
//                                                       capacity; its geometry says how
//                                                       much of them it uses)
//
// Who writes what. Every field below names its single writer. The daemon treats
// every app-written field as untrusted input: indices are masked before use and a
// value that breaks an invariant disconnects that application
// (docs/architecture.md, Trust boundary).
//
// Ordering. Producers write payload, then publish the index with a release store;
// consumers read the index with an acquire load, then the payload. Sleep/wake uses
// the Dekker pattern with seq_cst on both sides: a sleeper announces itself
// (its bit in cells_sleeping, or waiters++), re-checks, then blocks on an eventfd;
// a waker publishes, then reads the sleepers and rings an eventfd only if someone
// sleeps. So the data path makes no syscall while both sides are busy.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>

namespace shunt::abi {

inline constexpr uint32_t kMagic = 0x544e4853;  // "SHNT" little-endian
inline constexpr uint32_t kVersion = 6;
inline constexpr size_t kCacheLine = 64;
inline constexpr uint32_t kNoSlot = 0xffffffffu;

// A free-running 32-bit index alone on its cache line (one writer per line).
struct alignas(kCacheLine) Index {
  std::atomic<uint32_t> value{0};
};
static_assert(sizeof(Index) == kCacheLine);
static_assert(std::atomic<uint32_t>::is_always_lock_free);

// Indices of a single-producer single-consumer ring. head: producer, tail: consumer.
// Entries (or bytes) in use = head - tail (mod 2^32), never above the capacity.
struct RingIndices {
  Index head;
  Index tail;
};
static_assert(sizeof(RingIndices) == 2 * kCacheLine);

// ---- Control operations: application thread -> daemon (command queue) ----

enum class Op : uint16_t {
  kNop = 0,
  kBind = 1,       // ip, port (0 = ephemeral), arg = SO_REUSEADDR; -> slot, bound port
  kListen = 2,     // slot, arg = backlog
  kConnect = 3,    // slot (kNoSlot = auto-bind), ip, port; -> slot, local ip/port
  kAccept = 4,     // slot = listener; -> new slot, peer ip/port (-EAGAIN when none)
  kClose = 5,      // slot; no completion
  kShutdown = 6,   // slot, arg = SHUT_RD/WR/RDWR
  kTxReady = 7,    // slot has new bytes in its tx ring; no completion
  kRxDrained = 8,  // app freed rx ring space after the daemon asked; no completion
  kSetOption = 9,  // slot, arg = ShuntOption, arg2 = value
  // Datagram (UDP) sockets, version 2. kClose and kTxReady apply to them too.
  kUdpBind = 10,     // ip (NIC address), port (0 = ephemeral), arg2 = inode; -> slot, local ip/port
  kUdpConnect = 11,  // slot (kNoSlot = bind an ephemeral port first), ip, port (both 0 =
                     // disconnect), arg2 = inode; -> slot, local + remote ip/port
  // Version 4.
  kTcpInfo = 12,     // slot; -> the connection's TcpInfo in the queue pair's reply
  // Version 6.
  kAccepted = 13,    // slot = a connection taken from a listener's handed records
                     // (HandedConn), arg = its generation, arg2 = the new fd's inode;
                     // no completion
};

// kSetOption: arg = SockOption, arg2 = value. Options set on a listener pass to
// the connections it accepts, as Linux's do.
enum class SockOption : int32_t {
  kNoDelay = 1,     // TCP_NODELAY, 0/1
  kKeepAlive = 2,   // SO_KEEPALIVE, 0/1
  kLingerZero = 3,  // SO_LINGER {on, 0}: close sends RST
  kCork = 4,        // TCP_CORK, 0/1
  kQuickAck = 5,    // TCP_QUICKACK, 0/1
  kKeepIdle = 6,    // TCP_KEEPIDLE, seconds
  kKeepIntvl = 7,   // TCP_KEEPINTVL, seconds
  kKeepCnt = 8,     // TCP_KEEPCNT
  kCongestion = 9,  // TCP_CONGESTION: 0 "reno", 1 "cubic", 2 "bbr"
  kRcvBuf = 10,     // SO_RCVBUF: bytes the rx ring may hold (half what the kernel reports)
  kSndBuf = 11,     // SO_SNDBUF: bytes the tx ring may hold (likewise)
  kTos = 12,        // IP_TOS: the TOS byte of every segment (ECN bits clear)
  kTtl = 13,        // IP_TTL: 1..255
  kCount
};

// Command flags.
inline constexpr uint16_t kCmdNoReply = 1u << 0;  // kSetOption: no completion wanted

struct Command {
  uint64_t cookie;  // echoed in the completion
  uint16_t op;      // Op
  uint16_t flags;   // kCmd*
  uint32_t slot;
  uint32_t ip;      // network byte order
  uint16_t port;    // network byte order
  uint16_t reserved;
  int32_t arg;
  uint64_t arg2;    // kBind/kConnect: inode of the kernel placeholder socket
  uint8_t pad[24];
};
static_assert(sizeof(Command) == 64);
static_assert(offsetof(Command, arg2) == 32);

struct Completion {
  uint64_t cookie;
  int32_t result;        // >= 0 success, else -errno
  uint32_t slot;
  uint32_t local_ip;     // network byte order
  uint32_t remote_ip;
  uint16_t local_port;
  uint16_t remote_port;
  uint8_t pad[36];
};
static_assert(sizeof(Completion) == 64);

inline constexpr uint32_t kQueueDepth = 256;  // power of two

// Wake cells (version 5): the thread that holds queue pair c, for c below
// kWakeCells and below the last pair (shared by the threads beyond the count), has
// a bell of its own, an eventfd it registers over the control socket (kWakeCell).
inline constexpr uint32_t kWakeCells = 64;
inline constexpr uint64_t kAllCells = ~uint64_t{0};

// kTcpInfo's answer: Linux's struct tcp_info (linux/tcp.h) as of 5.4, byte for
// byte, so the application copies it out as getsockopt(TCP_INFO) would. Times in
// microseconds unless named _ms; windows and MSS in bytes; cwnd and ssthresh in
// segments. Fields shunt does not track are 0, as Linux leaves what it lacks.
struct TcpInfo {
  uint8_t state;         // LinuxTcpState (control.h)
  uint8_t ca_state;      // 0 open, 3 recovery, 4 loss
  uint8_t retransmits;   // RTO backoff of the current flight
  uint8_t probes;        // zero-window or keepalive probes unanswered
  uint8_t backoff;
  uint8_t options;       // TCPI_OPT_*: 1 timestamps, 2 SACK, 4 window scale
  uint8_t wscale;        // snd_wscale | rcv_wscale << 4
  uint8_t app_limited;
  uint32_t rto, ato, snd_mss, rcv_mss;
  uint32_t unacked, sacked, lost, retrans, fackets;  // segments
  uint32_t last_data_sent_ms, last_ack_sent_ms, last_data_recv_ms, last_ack_recv_ms;
  uint32_t pmtu, rcv_ssthresh, rtt, rttvar, snd_ssthresh, snd_cwnd, advmss, reordering;
  uint32_t rcv_rtt, rcv_space, total_retrans;
  uint64_t pacing_rate, max_pacing_rate, bytes_acked, bytes_received;
  uint32_t segs_out, segs_in, notsent_bytes, min_rtt, data_segs_in, data_segs_out;
  uint64_t delivery_rate, busy_time, rwnd_limited, sndbuf_limited;
  uint32_t delivered, delivered_ce;
  uint64_t bytes_sent, bytes_retrans;
  uint32_t dsack_dups, reord_seen, rcv_ooopack, snd_wnd;
};
static_assert(sizeof(TcpInfo) == 232);
static_assert(offsetof(TcpInfo, rto) == 8 && offsetof(TcpInfo, total_retrans) == 100 &&
              offsetof(TcpInfo, bytes_acked) == 120 && offsetof(TcpInfo, snd_wnd) == 228);

// One per application thread. sq: app produces, daemon consumes. cq: the reverse.
// `reply` holds the answer of a command whose result does not fit a completion
// (kTcpInfo); the daemon writes it before the completion, and one thread holds a
// queue pair from command to completion, so the answer is that thread's.
struct QueuePair {
  RingIndices sq_idx;
  RingIndices cq_idx;
  Command sq[kQueueDepth];
  Completion cq[kQueueDepth];
  alignas(kCacheLine) TcpInfo reply;
  // Version 5, written by the application: the token its thread's kWakeCell
  // carried (0: none). The daemon rings the bell it holds for this cell only
  // while the token matches; else the app doorbell (a new thread took the cell,
  // after exec, and its bell is not there yet).
  alignas(kCacheLine) std::atomic<uint64_t> bell_token;
  // Bumped by its thread each time it announces a sleep: a thread the daemon
  // woke for a connection (EPOLLEXCLUSIVE) that has not slept again since is not
  // picked for the next one.
  std::atomic<uint32_t> sleep_seq;
};
static_assert(sizeof(QueuePair) % kCacheLine == 0);

// ---- Per-socket slot ----

enum class SlotState : uint32_t {
  kFree = 0,
  kBound = 1,
  kListening = 2,
  kConnecting = 3,
  kConnected = 4,
  kClosed = 5,  // connection over (reset, refused, timed out, or fully closed)
  kZombie = 6,  // closed by the app; daemon still drains its tx ring
};

// Slot flags (daemon writes).
inline constexpr uint32_t kFlagPeerFin = 1u << 0;    // no more bytes will arrive
inline constexpr uint32_t kFlagReset = 1u << 1;      // connection reset / failed
inline constexpr uint32_t kFlagWriteShut = 1u << 2;  // our side sent FIN
inline constexpr uint32_t kFlagWantRxDrain = 1u << 3;  // tell me (kRxDrained) when rx frees up

struct alignas(kCacheLine) SocketSlot {
  // Written by the daemon.
  std::atomic<uint32_t> state;        // SlotState
  std::atomic<uint32_t> flags;        // kFlag*
  std::atomic<int32_t> error;         // pending SO_ERROR (errno), 0 if none
  std::atomic<uint32_t> accept_ready; // listener: connections waiting in its queue
  std::atomic<uint32_t> event_seq;    // bumped on every change an app may wait for
  std::atomic<uint32_t> generation;   // bumped each time the slot is handed out
  std::atomic<uint32_t> error_seq;    // datagram slots: bumped with each new `error` (ICMP
                                      // errors repeat; each is reported once)
  // Each ring's geometry (RingGeometry in ring.h, packed; 0: the whole reserved
  // ring) and the bytes it may hold (0: its capacity), the kernel's SO_RCVBUF and
  // SO_SNDBUF space. The daemon writes both for both rings: it produces rx and
  // consumes tx (docs/abi.md, Ring geometry).
  std::atomic<uint64_t> rx_geometry;
  std::atomic<uint64_t> tx_geometry;
  std::atomic<uint32_t> rx_limit;
  std::atomic<uint32_t> tx_limit;
  uint8_t pad0[kCacheLine - 56];
  // Notice flags, a handshake: the application sets one (exchange 1 -> 0 means
  // "queue the command"), the daemon stores 0 before it acts on the command, so
  // bytes written after that store are announced again. The only line with two
  // writers, each writing once per notice.
  std::atomic<uint32_t> tx_notice;    // 1 while a kTxReady is queued and unhandled
  std::atomic<uint32_t> rx_notice;    // 1 while a kRxDrained is queued and unhandled
  // Version 5, written by the application: the wake cells of the threads that
  // have slept waiting for this slot (bit c: cell c), cleared when the slot is
  // taken. A hint: the daemon rings those cells' bells when the slot changes.
  std::atomic<uint64_t> wake_cells;
  // Likewise, the cells that wait for this listener through an EPOLLEXCLUSIVE
  // entry: of those asleep, among every process holding the listener, the daemon
  // wakes one for each connection that arrives (docs/abi.md, Wake cells).
  std::atomic<uint64_t> wake_cells_exclusive;
  uint8_t pad1[kCacheLine - 24];
  RingIndices rx;  // daemon produces bytes, app consumes
  RingIndices tx;  // app produces bytes, daemon consumes
};
static_assert(sizeof(SocketSlot) == 6 * kCacheLine);
static_assert(offsetof(SocketSlot, error_seq) == 24);
static_assert(offsetof(SocketSlot, rx_geometry) == 32);
static_assert(offsetof(SocketSlot, tx_notice) == kCacheLine);
static_assert(offsetof(SocketSlot, wake_cells) == kCacheLine + 8);
static_assert(offsetof(SocketSlot, wake_cells_exclusive) == kCacheLine + 16);
static_assert(offsetof(SocketSlot, rx) == 2 * kCacheLine);

// ---- Datagram records (UDP slots, version 2) ----
//
// A UDP slot's rx and tx rings carry records instead of a byte stream:
//
//   DgramHeader (8 bytes) | payload (len bytes) | zero to three bytes of padding
//
// so that every record starts at a multiple of 4 of the stream. ip/port name the
// peer: on rx the datagram's source (daemon writes), on tx its destination (app
// writes). A producer copies the whole record, then moves head past it with one
// release store: a consumer that sees `head - tail >= 8` sees a whole record, and
// consumes it with one release store of tail. Records wrap around the ring's end
// like stream bytes (ByteRing::copy_in/copy_out). A record whose len exceeds
// kMaxDatagram or the bytes published is corrupt: the daemon disconnects an
// application that writes one (docs/architecture.md, Trust boundary).
struct DgramHeader {
  uint16_t len;   // payload bytes, <= kMaxDatagram
  uint16_t port;  // network byte order
  uint32_t ip;    // network byte order
};
static_assert(sizeof(DgramHeader) == 8);
static_assert(offsetof(DgramHeader, ip) == 4);

inline constexpr uint32_t kMaxDatagram = 65507;  // 65535 - 20 (IPv4 header) - 8 (UDP header)
inline constexpr uint32_t dgram_record_size(uint32_t len) {
  return uint32_t(sizeof(DgramHeader)) + ((len + 3u) & ~3u);
}
inline constexpr uint32_t kMaxDgramRecord = dgram_record_size(kMaxDatagram);
static_assert(kMaxDgramRecord == 65516);

// ---- Connections handed ahead (version 6) ----
//
// kAccept answers one connection and may hand the calling process more, already
// accepted for it, as datagram records on the listener slot's rx ring (which a
// listener has no other use for): a DgramHeader naming the peer (len =
// sizeof(HandedConn)), then a HandedConn. accept() takes the next record with no
// round trip and claims its slot with kAccepted. A connection not yet claimed
// when the process gives the listener up goes back to the listener's queue for
// its other holders, as the kernel's queue outlives one of them
// (docs/architecture.md, "Accepting without a round trip").
struct HandedConn {
  uint32_t slot;        // in this region, kConnected
  uint32_t generation;  // the slot's, for kAccepted
};
static_assert(sizeof(HandedConn) == 8);
inline constexpr uint32_t kHandedRecord = dgram_record_size(sizeof(HandedConn));

struct alignas(kCacheLine) RegionHeader {
  // Written once by the daemon before the region is handed over; read-only after.
  uint32_t magic;
  uint32_t version;
  uint64_t size;
  uint32_t region_id;
  uint32_t queue_pair_count;
  uint32_t slot_count;
  uint32_t rx_ring_size;  // bytes reserved per rx ring, power of two
  uint32_t tx_ring_size;  // bytes reserved per tx ring, power of two
  uint32_t nic_ip;        // network byte order
  uint32_t nic_prefix_len;
  uint32_t gateway_ip;    // network byte order, 0 if none
  uint64_t queues_offset;
  uint64_t slots_offset;
  uint64_t rings_offset;
  // Set by the daemon while it sleeps and wants its doorbell rung; the application
  // that rings clears it (docs/abi.md, Queue pairs). The daemon never reads it.
  alignas(kCacheLine) std::atomic<uint32_t> daemon_sleeping;
  // Written by the application.
  alignas(kCacheLine) std::atomic<uint32_t> app_waiters;  // threads blocked on the app doorbell
  std::atomic<uint32_t> queue_pairs_claimed;               // threads that took a queue pair
  // Version 5: bit c set while the thread of wake cell c sleeps on its cell bell
  // (docs/abi.md, Wake cells). Such a thread is not counted in app_waiters.
  std::atomic<uint64_t> cells_sleeping;
};
static_assert(sizeof(RegionHeader) == 4 * kCacheLine);
static_assert(offsetof(RegionHeader, rings_offset) == 64);
static_assert(offsetof(RegionHeader, daemon_sleeping) == 2 * kCacheLine);
static_assert(offsetof(RegionHeader, app_waiters) == 3 * kCacheLine);
static_assert(offsetof(RegionHeader, cells_sleeping) == 3 * kCacheLine + 8);

// Layout helpers: the single place that says where things are.
struct Layout {
  uint32_t queue_pair_count;
  uint32_t slot_count;
  uint32_t rx_ring_size;
  uint32_t tx_ring_size;

  constexpr uint64_t queues_offset() const { return sizeof(RegionHeader); }
  constexpr uint64_t slots_offset() const {
    return queues_offset() + uint64_t{queue_pair_count} * sizeof(QueuePair);
  }
  constexpr uint64_t rings_offset() const {
    uint64_t end = slots_offset() + uint64_t{slot_count} * sizeof(SocketSlot);
    return (end + 4095) & ~uint64_t{4095};
  }
  constexpr uint64_t ring_stride() const { return uint64_t{rx_ring_size} + tx_ring_size; }
  constexpr uint64_t size() const { return rings_offset() + uint64_t{slot_count} * ring_stride(); }
};

// Accessors used by both sides over a mapped region, from a Layout each side keeps
// in its own memory: the daemon's from its configuration, the application's read
// once at attach (layout_of, after region_fits). Neither follows offsets in the
// header, which the application can rewrite at any time.
inline RegionHeader* header(void* base) { return static_cast<RegionHeader*>(base); }
inline Layout layout_of(const RegionHeader& h) {
  return Layout{h.queue_pair_count, h.slot_count, h.rx_ring_size, h.tx_ring_size};
}
inline QueuePair* queue_pair(void* base, const Layout& l, uint32_t i) {
  return reinterpret_cast<QueuePair*>(static_cast<char*>(base) + l.queues_offset()) + i;
}
inline SocketSlot* slot(void* base, const Layout& l, uint32_t i) {
  return reinterpret_cast<SocketSlot*>(static_cast<char*>(base) + l.slots_offset()) + i;
}
inline uint8_t* rx_bytes(void* base, const Layout& l, uint32_t i) {
  return static_cast<uint8_t*>(base) + l.rings_offset() + uint64_t{i} * l.ring_stride();
}
inline uint8_t* tx_bytes(void* base, const Layout& l, uint32_t i) {
  return rx_bytes(base, l, i) + l.rx_ring_size;
}

// Lays a fresh (zeroed) region of l.size() bytes out: the header with its
// read-only fields, then every queue pair and slot in their initial state. The one
// place a region is initialised (shuntd at attach, the tests' fake regions).
// Addresses are host order here and network order in the header.
inline RegionHeader* init_region(void* base, const Layout& l, uint32_t region_id, uint32_t nic_ip,
                                 uint32_t nic_prefix_len, uint32_t gateway_ip) {
  auto* h = new (base) RegionHeader{};
  h->magic = kMagic;
  h->version = kVersion;
  h->size = l.size();
  h->region_id = region_id;
  h->queue_pair_count = l.queue_pair_count;
  h->slot_count = l.slot_count;
  h->rx_ring_size = l.rx_ring_size;
  h->tx_ring_size = l.tx_ring_size;
  h->nic_ip = __builtin_bswap32(nic_ip);
  h->nic_prefix_len = nic_prefix_len;
  h->gateway_ip = __builtin_bswap32(gateway_ip);
  h->queues_offset = l.queues_offset();
  h->slots_offset = l.slots_offset();
  h->rings_offset = l.rings_offset();
  for (uint32_t i = 0; i < l.queue_pair_count; ++i) new (queue_pair(base, l, i)) QueuePair;
  for (uint32_t i = 0; i < l.slot_count; ++i) new (slot(base, l, i)) SocketSlot{};
  return h;
}

// True when the header describes a region of `mapped` bytes laid out by Layout.
inline bool region_fits(const RegionHeader& h, uint64_t mapped) {
  Layout l{h.queue_pair_count, h.slot_count, h.rx_ring_size, h.tx_ring_size};
  auto pow2 = [](uint32_t v) { return v != 0 && (v & (v - 1)) == 0; };
  return h.magic == kMagic && h.version == kVersion && pow2(h.rx_ring_size) &&
         pow2(h.tx_ring_size) && h.queues_offset == l.queues_offset() &&
         h.slots_offset == l.slots_offset() && h.rings_offset == l.rings_offset() &&
         h.size == l.size() && l.size() <= mapped;
}

}  // namespace shunt::abi
