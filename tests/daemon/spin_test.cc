// ArrivalGaps: the idle daemon's spin grows to cover a steady turnaround and
// keeps to its base when arrivals scatter.
#include "daemon/spin.hh"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>

namespace shunt {
namespace {

constexpr Time kBase = 30;

TEST(ArrivalGaps, UntilAFrameHasArrivedTheBaseHolds) {
  ArrivalGaps gaps;
  EXPECT_EQ(gaps.budget(kBase), kBase);
  EXPECT_EQ(gaps.budget(0), 0u);
}

TEST(ArrivalGaps, ASteadyTurnaroundIsCoveredWithAMargin) {
  ArrivalGaps gaps;
  for (int i = 0; i < 40; ++i) gaps.sample(i % 2 == 0 ? 48 : 56);  // 48-56 us apart
  Time b = gaps.budget(kBase);
  EXPECT_GT(b, 56u);
  EXPECT_LE(b, 100u);
}

TEST(ArrivalGaps, AShortTurnaroundKeepsTheBase) {
  ArrivalGaps gaps;
  for (int i = 0; i < 40; ++i) gaps.sample(5);
  EXPECT_EQ(gaps.budget(kBase), kBase);
}

TEST(ArrivalGaps, ScatteredArrivalsMostlyKeepTheBase) {
  // Exponential gaps of mean 100 us (32 clients each waiting 3 ms): no spin
  // reaches most of them, so one beyond the base is seldom worth its CPU.
  ArrivalGaps gaps;
  uint64_t x = 12345;
  int longer = 0;
  constexpr int kGaps = 4000;
  for (int i = 0; i < kGaps; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    double u = double((x >> 11) + 1) / double(1ull << 53);
    if (gaps.budget(kBase) > kBase) ++longer;
    gaps.sample(Time(-100.0 * std::log(u)));
  }
  EXPECT_LT(longer, kGaps / 10);
}

TEST(ArrivalGaps, ALongSilenceIsForgottenAfterAFewExchanges) {
  ArrivalGaps gaps;
  for (int i = 0; i < 40; ++i) gaps.sample(50);
  ASSERT_GT(gaps.budget(kBase), 50u);
  gaps.sample(40000);  // a delayed ACK 40 ms later, or a pause in the traffic
  EXPECT_EQ(gaps.budget(kBase), kBase);
  int back = 0;
  while (gaps.budget(kBase) <= 50 && back < 100) {
    gaps.sample(50);
    ++back;
  }
  EXPECT_LE(back, 12);
}

TEST(ArrivalGaps, NoSpinAsksForNone) {
  ArrivalGaps gaps;
  for (int i = 0; i < 40; ++i) gaps.sample(50);
  EXPECT_EQ(gaps.budget(0), 0u);           // SHUNT_SPIN_US=0
  EXPECT_EQ(gaps.budget(500), 500u);       // a base past the estimate stands
}

}  // namespace
}  // namespace shunt
