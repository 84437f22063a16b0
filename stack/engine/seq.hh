// TCP sequence numbers: 32-bit modular arithmetic (RFC 9293 3.4).
#pragma once

#include <cstdint>

namespace shunt::tcp {

class SeqNum {
 public:
  constexpr SeqNum() = default;
  constexpr explicit SeqNum(uint32_t v) : v_(v) {}
  constexpr uint32_t raw() const { return v_; }

  constexpr SeqNum operator+(uint32_t n) const { return SeqNum(v_ + n); }
  constexpr SeqNum operator-(uint32_t n) const { return SeqNum(v_ - n); }
  constexpr SeqNum& operator+=(uint32_t n) { v_ += n; return *this; }
  // Distance from `o` to this, as a signed quantity (valid within 2^31).
  constexpr int32_t operator-(SeqNum o) const { return int32_t(v_ - o.v_); }
  constexpr bool operator==(const SeqNum&) const = default;
  constexpr bool operator<(SeqNum o) const { return *this - o < 0; }
  constexpr bool operator<=(SeqNum o) const { return *this - o <= 0; }
  constexpr bool operator>(SeqNum o) const { return *this - o > 0; }
  constexpr bool operator>=(SeqNum o) const { return *this - o >= 0; }

  // lo <= this < lo + len, modulo 2^32.
  constexpr bool in_window(SeqNum lo, uint32_t len) const { return v_ - lo.v_ < len; }

 private:
  uint32_t v_ = 0;
};

constexpr SeqNum max(SeqNum a, SeqNum b) { return a < b ? b : a; }
constexpr SeqNum min(SeqNum a, SeqNum b) { return a < b ? a : b; }

}  // namespace shunt::tcp
