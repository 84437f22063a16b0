// SeqNum: modular comparisons and in_window, table-driven around 0, 2^31 and 2^32.
#include <gtest/gtest.h>

#include "engine/seq.hh"

namespace shunt::tcp {
namespace {

struct Cmp {
  uint32_t a, b;
  int32_t diff;  // a - b as the signed distance
};

// a < b exactly when a - b < 0; the table crosses 2^32 (wrap) and sits at the
// 2^31 horizon, where "before" flips.
constexpr Cmp kCmp[] = {
    {0, 0, 0},
    {1, 0, 1},
    {0, 1, -1},
    {0, 0xffffffff, 1},            // 0 follows 2^32 - 1
    {0xffffffff, 0, -1},
    {5, 0xfffffff0, 21},           // across the wrap
    {0xfffffff0, 5, -21},
    {0x7fffffff, 0, 0x7fffffff},   // the farthest "after"
    {0x80000000, 1, 0x7fffffff},
    {0x80000001, 0, -0x7fffffff},  // past the horizon: "before"
    {0x80000000, 0, INT32_MIN},    // exactly 2^31 apart: before, by two's complement
    {0x10, 0x80000010, INT32_MIN},
    {0xffffff00, 0x7fffff00, INT32_MIN},
    {0xffffff00, 0x7fffff01, 0x7fffffff},
};

TEST(SeqNum, DifferenceAndOrder) {
  for (const auto& c : kCmp) {
    SCOPED_TRACE(::testing::Message() << std::hex << "a=0x" << c.a << " b=0x" << c.b);
    SeqNum a(c.a), b(c.b);
    EXPECT_EQ(a - b, c.diff);
    EXPECT_EQ(a < b, c.diff < 0);
    EXPECT_EQ(a <= b, c.diff <= 0);
    EXPECT_EQ(a > b, c.diff > 0);
    EXPECT_EQ(a >= b, c.diff >= 0);
    EXPECT_EQ(a == b, c.diff == 0);
    EXPECT_EQ(max(a, b), c.diff < 0 ? b : a);
    EXPECT_EQ(min(a, b), c.diff < 0 ? a : b);
  }
}

TEST(SeqNum, AdditionWraps) {
  SeqNum s(0xfffffff0);
  EXPECT_EQ((s + 0x10).raw(), 0u);
  EXPECT_EQ((s + 0x20).raw(), 0x10u);
  s += 0xffffffff;
  EXPECT_EQ(s.raw(), 0xffffffefu);
  EXPECT_TRUE(SeqNum(0xfffffff0) + 100 > SeqNum(0xfffffff0));
  EXPECT_EQ((SeqNum(0xfffffff0) + 100) - SeqNum(0xfffffff0), 100);
}

struct Win {
  uint32_t seq, lo, len;
  bool in;
};

constexpr Win kWin[] = {
    {100, 100, 10, true},          // lo itself
    {109, 100, 10, true},          // last byte
    {110, 100, 10, false},         // one past
    {99, 100, 10, false},          // one before
    {100, 100, 0, false},          // empty window holds nothing
    {0xfffffffa, 0xfffffffa, 16, true},
    {0, 0xfffffffa, 16, true},     // across 2^32
    {9, 0xfffffffa, 16, true},
    {10, 0xfffffffa, 16, false},
    {0xfffffff9, 0xfffffffa, 16, false},
    {0x7ffffffe, 0x7ffffff0, 0x20, true},  // across 2^31
    {0x80000005, 0x7ffffff0, 0x20, true},
    {0x80000010, 0x7ffffff0, 0x20, false},
    {0x7fffffef, 0x7ffffff0, 0x20, false},
    {0xffffffff, 0, 0xffffffff, false},    // the whole space but one
    {0xfffffffe, 0, 0xffffffff, true},
    {0x12345678, 0x12345679, 0xffffffff, false},  // lo - 1 is the one byte left out
    {0x12345677, 0x12345679, 0xffffffff, true},
};

TEST(SeqNum, InWindow) {
  for (const auto& w : kWin) {
    SCOPED_TRACE(::testing::Message() << std::hex << "seq=0x" << w.seq << " lo=0x" << w.lo
                                      << " len=0x" << w.len);
    EXPECT_EQ(SeqNum(w.seq).in_window(SeqNum(w.lo), w.len), w.in);
  }
}

TEST(SeqNum, InWindowAgreesWithComparisons) {
  // For windows under 2^31: lo <= s < lo + len exactly when in_window.
  const uint32_t bases[] = {0, 1, 0x7fffff00, 0x7fffffff, 0x80000000, 0xffffff00, 0xffffffff};
  const uint32_t lens[] = {1, 2, 100, 65535, 0x40000000};
  const int64_t offs[] = {-2, -1, 0, 1, 99, 100, 65534, 65535, 65536, 0x3fffffff, 0x40000000};
  for (uint32_t lo : bases)
    for (uint32_t len : lens)
      for (int64_t off : offs) {
        SeqNum l(lo), s(uint32_t(lo + off));
        bool cmp = l <= s && s < l + len;
        EXPECT_EQ(s.in_window(l, len), cmp) << std::hex << lo << " " << len << " " << off;
      }
}

}  // namespace
}  // namespace shunt::tcp
