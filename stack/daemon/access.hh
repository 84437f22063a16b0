// Who may attach to shuntd: root, the daemon's own user, and the users and groups
// named in SHUNT_ALLOW (docs/architecture.md "Who may attach"). Decided on the
// peer's credentials (SO_PEERCRED, SO_PEERGROUPS) when it attaches; a process
// admitted before it drops privileges (nginx's workers) stays attached.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <string>
#include <vector>

namespace shunt {

struct AccessPolicy {
  bool anyone = false;       // "any": every local user (the pre-SHUNT_ALLOW behaviour)
  std::vector<uid_t> uids;   // besides root and the daemon's own user
  std::vector<gid_t> gids;
};

// SHUNT_ALLOW: a comma-separated list of user:NAME, user:UID, group:NAME,
// group:GID, or the single word `any`. Empty: root and the daemon's user only.
// On error returns false with *error naming SHUNT_ALLOW, its value and the bad part.
bool parse_allow(const std::string& text, AccessPolicy* out, std::string* error);

struct Peer {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups, where the kernel tells them
};
// The credentials of the process at the other end of a unix socket.
bool peer_of(int fd, Peer* out);

bool admits(const AccessPolicy& policy, uid_t daemon_uid, const Peer& peer);

// The control socket's file mode and group that say what the policy says, as far
// as permissions can: 0600 for root and the daemon's user only; 0660 with the
// group when the policy names exactly one group and no user; 0666 otherwise (the
// credential check decides). gid -1: leave the group.
struct SocketAccess {
  mode_t mode;
  gid_t gid;
};
SocketAccess socket_access(const AccessPolicy& policy);

}  // namespace shunt
