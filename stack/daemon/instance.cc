#include "daemon/instance.hh"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace shunt {

std::string nic_key(const std::string& nic) {
  std::string key = nic;
  size_t at = nic.find("iface=");
  if (at != std::string::npos) key = nic.substr(at + 6, nic.find(',', at) - (at + 6));
  else key = nic.substr(0, nic.find(','));
  for (char& c : key)
    if (!isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_') c = '_';
  return key;
}

bool lock_nic(const std::string& nic, const std::string& rundir, const std::string& lock_dir,
              std::string* error) {
  // Interface names are per network namespace: so is the lock.
  struct stat ns{};
  std::string netns = stat("/proc/self/ns/net", &ns) == 0 ? std::to_string(ns.st_ino) : "0";
  mkdir(lock_dir.c_str(), 0755);
  std::string path = lock_dir + "/shuntd-" + netns + "-" + nic_key(nic) + ".lock";
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    *error = "SHUNT_NIC=" + nic + ": cannot open the lock " + path + ": " + std::strerror(errno);
    return false;
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    char who[512] = {};
    ssize_t n = pread(fd, who, sizeof who - 1, 0);
    std::string holder = n > 0 ? std::string(who, size_t(n)) : "another shuntd";
    while (!holder.empty() && holder.back() == '\n') holder.pop_back();
    *error = "SHUNT_NIC=" + nic + ": " + holder + " already drives this NIC";
    close(fd);
    return false;
  }
  std::string me = "shuntd (pid " + std::to_string(getpid()) + ", SHUNT_RUNDIR=" + rundir + ")\n";
  if (ftruncate(fd, 0) != 0 || pwrite(fd, me.data(), me.size(), 0) != ssize_t(me.size())) {
    // The lock holds without the note; only the message of a second daemon suffers.
  }
  return true;  // fd stays open: the lock is ours until we exit
}

}  // namespace shunt
