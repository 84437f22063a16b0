#include "daemon/access.hh"

#include <grp.h>
#include <pwd.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdlib>

namespace shunt {

namespace {
bool all_digits(const std::string& s) {
  return !s.empty() && s.size() < 11 && s.find_first_not_of("0123456789") == std::string::npos;
}
}  // namespace

bool parse_allow(const std::string& text, AccessPolicy* out, std::string* error) {
  AccessPolicy p;
  auto fail = [&](const std::string& part, const std::string& why) {
    *error = "SHUNT_ALLOW=" + text + ": '" + part + "': " + why;
    return false;
  };
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    if (comma == std::string::npos) comma = text.size();
    std::string item = text.substr(pos, comma - pos);
    pos = comma + 1;
    if (item.empty()) {
      if (comma == text.size()) break;
      continue;
    }
    if (item == "any") {
      p.anyone = true;
      continue;
    }
    size_t colon = item.find(':');
    std::string kind = item.substr(0, colon);
    std::string name = colon == std::string::npos ? "" : item.substr(colon + 1);
    if (colon == std::string::npos || name.empty() || (kind != "user" && kind != "group"))
      return fail(item, "expected user:NAME, user:UID, group:NAME, group:GID or any");
    if (kind == "user") {
      if (all_digits(name)) {
        p.uids.push_back(uid_t(std::strtoul(name.c_str(), nullptr, 10)));
      } else if (const passwd* pw = getpwnam(name.c_str())) {
        p.uids.push_back(pw->pw_uid);
      } else {
        return fail(item, "no such user");
      }
    } else {
      if (all_digits(name)) {
        p.gids.push_back(gid_t(std::strtoul(name.c_str(), nullptr, 10)));
      } else if (const group* gr = getgrnam(name.c_str())) {
        p.gids.push_back(gr->gr_gid);
      } else {
        return fail(item, "no such group");
      }
    }
  }
  *out = p;
  return true;
}

bool peer_of(int fd, Peer* out) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return false;
  out->pid = cred.pid;
  out->uid = cred.uid;
  out->gid = cred.gid;
  out->groups.clear();
  gid_t groups[256];
  len = sizeof groups;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) == 0)
    out->groups.assign(groups, groups + len / sizeof(gid_t));
  return true;
}

bool admits(const AccessPolicy& policy, uid_t daemon_uid, const Peer& peer) {
  if (policy.anyone || peer.uid == 0 || peer.uid == daemon_uid) return true;
  if (std::find(policy.uids.begin(), policy.uids.end(), peer.uid) != policy.uids.end()) return true;
  for (gid_t g : policy.gids) {
    if (peer.gid == g) return true;
    if (std::find(peer.groups.begin(), peer.groups.end(), g) != peer.groups.end()) return true;
  }
  return false;
}

SocketAccess socket_access(const AccessPolicy& policy) {
  if (policy.anyone || !policy.uids.empty() || policy.gids.size() > 1) return {0666, gid_t(-1)};
  if (policy.gids.size() == 1) return {0660, policy.gids[0]};
  return {0600, gid_t(-1)};
}

}  // namespace shunt
