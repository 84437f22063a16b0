// The few C++ runtime pieces the interposer uses, so that libshunt.so links
// against libc alone (no libstdc++ loaded into the application). Linked only into
// the shared library, and kept local by exports.map.
#include <cstdlib>
#include <new>

void* operator new(std::size_t n) {
  void* p = std::malloc(n != 0 ? n : 1);
  if (p == nullptr) std::abort();  // no exceptions here (-fno-exceptions)
  return p;
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return std::malloc(n != 0 ? n : 1); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace std {
const nothrow_t nothrow{};
[[noreturn]] void __throw_length_error(const char*) { std::abort(); }
[[noreturn]] void __throw_system_error(int) { std::abort(); }
[[noreturn]] void __throw_bad_alloc() { std::abort(); }
[[noreturn]] void __throw_bad_array_new_length() { std::abort(); }
}  // namespace std
