// The fault guard (preload/fault_guard.hh): a copy touching memory the process
// may not gives EFAULT instead of a crash, and a fault outside any guarded copy
// still reaches the handler the application installed.
#include "fault_guard.hh"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

namespace shunt::preload {
namespace {

// A page the process may neither read nor write.
struct NoAccessPage {
  NoAccessPage() : size(size_t(sysconf(_SC_PAGESIZE))) {
    p = mmap(nullptr, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  }
  ~NoAccessPage() { munmap(p, size); }
  size_t size;
  void* p;
};

TEST(FaultGuard, CopyFromForbiddenMemoryFailsAndTheProcessGoesOn) {
  install_fault_guard();
  NoAccessPage page;
  ASSERT_NE(page.p, MAP_FAILED);
  char out[16];
  EXPECT_FALSE(guarded([&] { memcpy(out, page.p, sizeof out); }));
  EXPECT_FALSE(guarded([&] { memcpy(page.p, out, sizeof out); }));
  EXPECT_TRUE(guarded([&] { memcpy(out, "fine", 5); }));  // the guard works again after a fault
  EXPECT_STREQ(out, "fine");
}

volatile sig_atomic_t g_app_handler_ran = 0;

TEST(FaultGuard, AFaultOutsideAGuardReachesTheApplicationsHandler) {
  install_fault_guard();
  struct sigaction app {}, before {};
  app.sa_handler = [](int) { g_app_handler_ran = 1; };
  sigemptyset(&app.sa_mask);
  ASSERT_EQ(guard_sigaction(SIGBUS, &app, &before), 0);
  struct sigaction now {};
  ASSERT_EQ(guard_sigaction(SIGBUS, nullptr, &now), 0);
  EXPECT_EQ(now.sa_handler, app.sa_handler);  // what the application installed, as it reads back
  raise(SIGBUS);
  EXPECT_EQ(g_app_handler_ran, 1);
  guard_sigaction(SIGBUS, &before, nullptr);
}

}  // namespace
}  // namespace shunt::preload
