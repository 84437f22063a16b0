// Control-socket protocol between libshunt.so (or the shunt tool) and shuntd.
//
// An AF_UNIX SOCK_SEQPACKET socket at $SHUNT_RUNDIR/shuntd.sock. Each message is
// one fixed struct (or text, for kStats); file descriptors travel with SCM_RIGHTS
// (include/shunt/scm.h). The daemon reads the peer's credentials (SO_PEERCRED) when
// it attaches: who may attach is the daemon's SHUNT_ALLOW policy. The connection's
// lifetime is the application's attachment: when it hangs up (the process died or
// exec'd), the daemon closes that process's sockets as the kernel would; when the
// daemon hangs up, the application's shunted sockets are reset (docs/abi.md).
#pragma once

#include <cstdint>

#include "shunt/abi.h"

namespace shunt::ctl {

inline constexpr const char* kSocketName = "shuntd.sock";
inline constexpr const char* kDefaultRundir = "/run/shunt";
inline constexpr uint32_t kMaxInherit = 64;  // fds per inherit message (scm::kMaxFds)

enum class Type : uint32_t {
  kAttach = 1,   // -> AttachReply + fds [memfd, app doorbell, daemon doorbell]
  kInherit = 2,  // after fork: InheritRequest + placeholder fds -> InheritReply
  kStats = 3,    // -> text: one "group.name value" line per counter, up to kStatsMax bytes
  kStop = 4,     // daemon shuts down gracefully after replying
  kSockets = 5,  // -> SocketList messages until one with `last` set
  kCapture = 6,  // fd of a writable file; count = packets (0: until hang-up)
                 // -> CaptureReply when started, another when done
  kWakeCell = 7, // an attached application: fd of an eventfd, the bell of wake
                 // cell `count` (abi::kWakeCells), and its `token`; no reply
};

struct Request {
  uint32_t type;
  uint32_t abi_version;
  int32_t pid;
  uint32_t count;                           // kInherit: entries used; kCapture: packets
  uint32_t parent_region;                   // kInherit: region the slots belong to
  uint32_t parent_slots[kMaxInherit];       // kInherit: one per fd sent, same order
  uint64_t token;                           // kWakeCell: the queue pair's bell_token
};

struct AttachReply {
  int32_t status;  // 0 or -errno: -EPROTO ABI mismatch, -EACCES not admitted
                   // (SHUNT_ALLOW), -EUSERS every region in use
  uint32_t region_id;
  uint64_t region_size;
};

struct InheritReply {
  int32_t status;
  uint32_t count;
  uint32_t slots[kMaxInherit];  // abi::kNoSlot where the fd was not a shunted socket
};

inline constexpr uint32_t kStatsMax = 65536;

// ---- kSockets: what `shunt ss` prints ----

enum class Proto : uint8_t { kTcp = 1, kUdp = 2 };

// TCP states with Linux's numbering (include/net/tcp_states.h), as ss knows them.
enum class LinuxTcpState : uint8_t {
  kEstablished = 1, kSynSent, kSynRecv, kFinWait1, kFinWait2, kTimeWait, kClose,
  kCloseWait, kLastAck, kListen, kClosing,
};

struct SocketInfo {
  uint8_t proto;          // Proto
  uint8_t state;          // LinuxTcpState (UDP: kClose unconnected, kEstablished connected)
  uint8_t snd_wscale, rcv_wscale;
  uint32_t local_ip, remote_ip;      // network byte order
  uint16_t local_port, remote_port;  // network byte order
  uint32_t rx_queue;      // bytes received and not read; listener: connections queued
  uint32_t tx_queue;      // bytes not yet acknowledged; listener: backlog
  uint32_t cwnd;          // bytes
  uint32_t ssthresh;      // bytes, 0xffffffff: infinite
  uint32_t srtt_us, rttvar_us, rto_us;
  uint32_t mss;           // send MSS
  uint32_t snd_wnd, rcv_wnd;
  uint32_t retransmits;   // segments retransmitted on this connection
  uint32_t backoff;       // RTO backoff
  int32_t pid;            // a process holding it, 0 for none (an orphan)
  uint32_t holders;       // processes holding it
  uint64_t inode;         // the holder's placeholder socket
  uint64_t bytes_acked, bytes_received;
  uint8_t congestion;     // 0 reno, 1 cubic
  uint8_t pad[7];
};
static_assert(sizeof(SocketInfo) == 104);

inline constexpr uint32_t kSocketsPerMessage = 512;

struct SocketList {
  uint32_t count;  // entries that follow
  uint32_t last;   // nonzero on the final message
  SocketInfo sockets[kSocketsPerMessage];
};

// ---- kCapture ----

struct CaptureReply {
  int32_t status;     // 0, or -errno (ENOTSUP: the port cannot capture; EBUSY: one runs)
  uint32_t done;      // 0: capture started; 1: finished
  uint64_t packets;   // written so far
};

}  // namespace shunt::ctl
