// Shunted sockets across execve (docs/architecture.md, "exec").
//
// The kernel keeps an fd open across execve unless it is close-on-exec, but the
// new program image starts with an empty fd table and no attachment. So, before
// the exec, the old image writes its sockets (those with an fd that stays open)
// and the regions their bytes live in into a memfd, keeps that memfd, the regions'
// memfds, doorbells and control socket open across the exec, and names the memfd
// in SHUNT_EXEC_FD. The new image adopts the attachment before main (same region,
// same slots: the daemon sees one process all along) and closes, with kClose, the
// shunted sockets whose every fd was close-on-exec, as the kernel closed theirs.
#pragma once

#include <cerrno>
#include <vector>

namespace shunt::preload {

// What one exec carries; undone when the exec fails.
class ExecCarry {
 public:
  ExecCarry() = default;
  ExecCarry(const ExecCarry&) = delete;
  ExecCarry& operator=(const ExecCarry&) = delete;
  ~ExecCarry();
  // False: nothing to carry (no shunted socket survives the exec, or the target
  // will not load libshunt.so: setuid, file capabilities, statically linked).
  bool prepare(const char* target, char* const envp[]);
  char* const* envp() const { return env_.data(); }
  void undo();  // the exec failed: every fd back as it was

 private:
  std::vector<int> cleared_;  // fds whose FD_CLOEXEC prepare() cleared
  std::vector<char*> env_;    // the new image's environment (null-terminated)
  std::vector<char*> owned_;  // strings of env_ that prepare() allocated
  int state_fd_ = -1;
};

// exec through `run(envp)`, carrying the shunted sockets to the image at `target`.
template <typename Run>
int exec_carrying(const char* target, char* const envp[], Run&& run) {
  ExecCarry carry;
  if (!carry.prepare(target, envp)) return run(envp);
  int r = run(const_cast<char* const*>(carry.envp()));
  int saved = errno;
  carry.undo();
  errno = saved;
  return r;
}

// execvp's search: the file PATH finds for `file` (into buf), or file itself.
const char* exec_search_path(const char* file, char* buf, unsigned len);

}  // namespace shunt::preload
