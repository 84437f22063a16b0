// Copies to and from an application's buffers that answer EFAULT for a bad
// pointer, as the kernel does, instead of crashing the application: libshunt.so
// holds SIGSEGV and SIGBUS and jumps back out of a guarded copy that faults;
// any other fault goes to the application's own handler, or ends the process
// as it would have (docs/architecture.md, "Bad pointers"). Arming a guard is a
// sigsetjmp without the signal mask: no system call on the data path.
#pragma once

#include <setjmp.h>
#include <signal.h>

#include <atomic>
#include <cstddef>

namespace shunt::preload {

// The guard of the copy this thread is inside, null outside one.
// (__thread: constant-initialised, so no TLS wrapper from the C++ runtime.)
extern __thread sigjmp_buf* t_fault_guard __attribute__((tls_model("initial-exec")));

// Takes SIGSEGV and SIGBUS over, keeping what the application had installed
// (once per process; called when it attaches to shuntd).
void install_fault_guard();

// Runs copy(); false when it touched memory the process may not (it stopped
// there: what it copied before the fault is done, nothing after).
template <typename Copy>
bool guarded(Copy&& copy) {
  sigjmp_buf env;
  if (sigsetjmp(env, 0) != 0) return false;  // the handler cleared t_fault_guard
  t_fault_guard = &env;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  copy();
  std::atomic_signal_fence(std::memory_order_seq_cst);
  t_fault_guard = nullptr;
  return true;
}

// The interposed sigaction and signal for SIGSEGV and SIGBUS: what the
// application installs is recorded and called for faults not ours.
int guard_sigaction(int sig, const struct sigaction* act, struct sigaction* old);
bool guards_signal(int sig);

}  // namespace shunt::preload
