// A call's scratch array: on the stack up to N elements, on the heap past them,
// so that poll and select over the few descriptors most programs pass do not
// allocate on every call.
#pragma once

#include <cstddef>
#include <vector>

namespace shunt::preload {

template <typename T, size_t N>
class InlineBuf {
 public:
  explicit InlineBuf(size_t n) {
    if (n > N) {
      heap_.resize(n);
      p_ = heap_.data();
    }
  }
  InlineBuf(const InlineBuf&) = delete;
  InlineBuf& operator=(const InlineBuf&) = delete;
  T& operator[](size_t i) { return p_[i]; }
  const T& operator[](size_t i) const { return p_[i]; }
  T* data() { return p_; }

 private:
  T inline_[N]{};
  std::vector<T> heap_;
  T* p_ = inline_;
};

}  // namespace shunt::preload
