// Control-socket protocol between libshunt.so and shuntd.
//
// An AF_UNIX SOCK_SEQPACKET socket at $SHUNT_RUNDIR/shuntd.sock. Each message is
// one fixed struct; file descriptors travel with SCM_RIGHTS. The connection's
// lifetime is the application's attachment: when it hangs up (the process died
// or exec'd), the daemon closes that process's sockets as the kernel would.
#pragma once

#include <cstdint>

#include "shunt/abi.h"

namespace shunt::ctl {

inline constexpr const char* kSocketName = "shuntd.sock";
inline constexpr const char* kDefaultRundir = "/run/shunt";
inline constexpr uint32_t kMaxInherit = 64;  // fds per inherit message (SCM_RIGHTS limit is 253)

enum class Type : uint32_t {
  kAttach = 1,   // -> AttachReply + fds [memfd, app doorbell, daemon doorbell]
  kInherit = 2,  // after fork: InheritRequest + placeholder fds -> InheritReply
  kStats = 3,    // -> text (counters), up to kStatsMax bytes
  kStop = 4,     // daemon exits after replying
};

struct Request {
  uint32_t type;
  uint32_t abi_version;
  int32_t pid;
  uint32_t count;                           // kInherit: entries used
  uint32_t parent_region;                   // kInherit: region the slots belong to
  uint32_t parent_slots[kMaxInherit];       // kInherit: one per fd sent, same order
};

struct AttachReply {
  int32_t status;  // 0 or -errno
  uint32_t region_id;
  uint64_t region_size;
};

struct InheritReply {
  int32_t status;
  uint32_t count;
  uint32_t slots[kMaxInherit];  // abi::kNoSlot where the fd was not a shunted socket
};

inline constexpr uint32_t kStatsMax = 16384;

}  // namespace shunt::ctl
