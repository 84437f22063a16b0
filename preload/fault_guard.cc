#include "fault_guard.hh"

#include <dlfcn.h>
#include <signal.h>
#include <string.h>

#include <mutex>

#include "libc.hh"

namespace shunt::preload {

__thread sigjmp_buf* t_fault_guard __attribute__((tls_model("initial-exec"))) = nullptr;

namespace {

using SigactionFn = int (*)(int, const struct sigaction*, struct sigaction*);

// glibc's own sigaction, not whatever RTLD_NEXT finds: a sanitizer runtime loaded
// after libshunt.so interposes sigaction too, and may refuse a handler for SIGSEGV.
SigactionFn g_real_sigaction = nullptr;  // set under g_mu, before g_installed

SigactionFn find_real_sigaction() {
  void* libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
  void* f = libc != nullptr ? dlsym(libc, "sigaction") : nullptr;
  if (f == nullptr) f = dlsym(RTLD_NEXT, "sigaction");
  return reinterpret_cast<SigactionFn>(f);
}

std::mutex g_mu;
bool g_installed = false;
// What the application installed (or had before we took over), per signal.
struct sigaction g_app[2];

int index_of(int sig) { return sig == SIGSEGV ? 0 : 1; }

void on_fault(int sig, siginfo_t* info, void* uc) {
  if (sigjmp_buf* g = t_fault_guard) {
    t_fault_guard = nullptr;
    siglongjmp(*g, 1);  // SA_NODEFER: the signal is not left blocked
  }
  struct sigaction& app = g_app[index_of(sig)];
  if ((app.sa_flags & SA_SIGINFO) != 0 && app.sa_sigaction != nullptr) {
    if ((app.sa_flags & SA_RESETHAND) != 0) app.sa_handler = SIG_DFL, app.sa_flags = 0;
    app.sa_sigaction(sig, info, uc);
    return;
  }
  if (app.sa_handler != SIG_DFL && app.sa_handler != SIG_IGN) {
    void (*h)(int) = app.sa_handler;
    if ((app.sa_flags & SA_RESETHAND) != 0) app.sa_handler = SIG_DFL;
    h(sig);
    return;
  }
  const bool sent = info == nullptr || info->si_code <= 0;  // kill() or raise(), not a fault
  if (sent && app.sa_handler == SIG_IGN) return;
  // The default action: a faulting instruction runs again without us, a sent
  // signal is sent again, and the process ends as it would have (a core dump
  // with the same signal).
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  g_real_sigaction(sig, &dfl, nullptr);
  if (sent) raise(sig);
}

}  // namespace

bool guards_signal(int sig) { return sig == SIGSEGV || sig == SIGBUS; }

void install_fault_guard() {
  std::lock_guard<std::mutex> g(g_mu);
  if (g_installed) return;
  if (g_real_sigaction == nullptr) g_real_sigaction = find_real_sigaction();
  if (g_real_sigaction == nullptr) return;
  struct sigaction ours {};
  ours.sa_sigaction = on_fault;
  ours.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK | SA_RESTART;
  sigemptyset(&ours.sa_mask);
  for (int sig : {SIGSEGV, SIGBUS}) {
    if (g_real_sigaction(sig, &ours, &g_app[index_of(sig)]) != 0) return;
  }
  g_installed = true;
}

int guard_sigaction(int sig, const struct sigaction* act, struct sigaction* old) {
  std::unique_lock<std::mutex> g(g_mu);
  if (!g_installed) {
    g.unlock();
    return libc().sigaction(sig, act, old);
  }
  struct sigaction& app = g_app[index_of(sig)];
  if (old != nullptr) *old = app;
  if (act != nullptr) app = *act;
  return 0;
}

}  // namespace shunt::preload
