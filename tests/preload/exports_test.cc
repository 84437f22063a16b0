// libshunt.so exports exactly the interposed symbols (SHUNT_LIBC_SYMBOLS) and
// nothing of its own (no C++ runtime, no internals), and links no libstdc++.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <link.h>

#include <cstring>
#include <string>

#include "libc.hh"

namespace {

#define SHUNT_NAME(ret, name, params) #name,
const char* const kInterposed[] = {SHUNT_LIBC_SYMBOLS(SHUNT_NAME)};
#undef SHUNT_NAME

class Exports : public ::testing::Test {
 protected:
  void SetUp() override {
    handle = dlopen(SHUNT_LIB_PATH, RTLD_NOW | RTLD_LOCAL);
    ASSERT_NE(handle, nullptr) << dlerror();
  }
  void TearDown() override {
    if (handle != nullptr) dlclose(handle);
  }
  void* handle = nullptr;
};

TEST_F(Exports, EveryInterposedSymbolIsDefinedByTheLibrary) {
  for (const char* name : kInterposed) {
    void* sym = dlsym(handle, name);
    ASSERT_NE(sym, nullptr) << name;
    Dl_info info{};
    ASSERT_NE(dladdr(sym, &info), 0) << name;
    EXPECT_NE(strstr(info.dli_fname, "libshunt.so"), nullptr) << name << " from " << info.dli_fname;
  }
}

TEST_F(Exports, NothingElseLeaks) {
  const char* internal[] = {"_ZN5shunt7preload8fd_tableEv", "_Znwm", "_ZdlPv",
                            "_ZSt7nothrow", "_ZN5shunt7preload4libcEv"};
  for (const char* name : internal) EXPECT_EQ(dlsym(handle, name), nullptr) << name;
}

TEST_F(Exports, NoLibstdcxxDependency) {
  link_map* map = nullptr;
  ASSERT_EQ(dlinfo(handle, RTLD_DI_LINKMAP, &map), 0);
  // The library's own DT_NEEDED list: walk the dynamic section.
  bool libcxx = false;
  for (const ElfW(Dyn)* d = map->l_ld; d->d_tag != DT_NULL; ++d) {
    if (d->d_tag != DT_NEEDED) continue;
    const ElfW(Dyn)* strtab = map->l_ld;
    while (strtab->d_tag != DT_STRTAB && strtab->d_tag != DT_NULL) ++strtab;
    ASSERT_EQ(strtab->d_tag, DT_STRTAB);
    const char* name = reinterpret_cast<const char*>(strtab->d_un.d_ptr) + d->d_un.d_val;
    if (std::string(name).find("libstdc++") != std::string::npos) libcxx = true;
  }
  EXPECT_FALSE(libcxx);
}

}  // namespace
