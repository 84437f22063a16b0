#include "libc.hh"

#include <dlfcn.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>

namespace shunt::preload {

Libc g_libc;
std::atomic<bool> g_libc_resolved{false};

namespace {

pthread_once_t g_once = PTHREAD_ONCE_INIT;

void resolve() {
#define SHUNT_LIBC_RESOLVE(ret, name, params) \
  g_libc.name = reinterpret_cast<ret(*) params>(dlsym(RTLD_NEXT, #name));
  SHUNT_LIBC_SYMBOLS(SHUNT_LIBC_RESOLVE)
#undef SHUNT_LIBC_RESOLVE
  g_libc_resolved.store(true, std::memory_order_release);
}

}  // namespace

void resolve_libc() { pthread_once(&g_once, resolve); }

}  // namespace shunt::preload
