// TimerWheel: one deadline per id, expiry in tick order, far deadlines kept.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <vector>

#include "engine/timer_wheel.hh"

namespace shunt {
namespace {

std::vector<uint32_t> expire(TimerWheel& w, uint64_t now) {
  std::vector<uint32_t> fired;
  w.expire(now, [&](uint32_t id) { fired.push_back(id); });
  return fired;
}

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

TEST(TimerWheel, FiresAtDeadlineNotBefore) {
  TimerWheel w(8, 16);
  w.schedule(3, 10);
  EXPECT_TRUE(w.scheduled(3));
  EXPECT_EQ(w.deadline(3), 10u);
  EXPECT_EQ(w.size(), 1u);
  EXPECT_TRUE(expire(w, 9).empty());
  EXPECT_EQ(expire(w, 10), std::vector<uint32_t>{3});
  EXPECT_FALSE(w.scheduled(3));
  EXPECT_EQ(w.size(), 0u);
  EXPECT_TRUE(expire(w, 100).empty()) << "an expired timer fires once";
}

TEST(TimerWheel, RescheduleKeepsOneEntry) {
  TimerWheel w(8, 16);
  w.schedule(1, 5);
  w.schedule(1, 7);
  EXPECT_EQ(w.size(), 1u);
  EXPECT_TRUE(expire(w, 6).empty()) << "the old deadline is gone";
  EXPECT_EQ(expire(w, 7), std::vector<uint32_t>{1});
  w.schedule(1, 9);
  w.schedule(1, 8);  // earlier is allowed too
  EXPECT_EQ(expire(w, 8), std::vector<uint32_t>{1});
}

TEST(TimerWheel, CancelRemoves) {
  TimerWheel w(8, 16);
  w.schedule(1, 5);
  w.schedule(2, 5);
  w.cancel(1);
  w.cancel(1);  // idempotent
  w.cancel(4);  // never scheduled
  EXPECT_EQ(w.size(), 1u);
  EXPECT_EQ(expire(w, 5), std::vector<uint32_t>{2});
}

TEST(TimerWheel, ManyIdsInOneSlot) {
  TimerWheel w(8, 16);
  for (uint32_t id = 0; id < 8; ++id) w.schedule(id, 3);
  w.cancel(4);
  auto fired = expire(w, 3);
  EXPECT_THAT(fired, UnorderedElementsAre(0, 1, 2, 3, 5, 6, 7));
}

TEST(TimerWheel, DeadlineBeyondOneTurnWaitsItsTurn) {
  TimerWheel w(4, 16);
  w.schedule(1, 5 + 16);   // same slot as 5, one turn later
  w.schedule(2, 5 + 64);   // four turns later
  w.schedule(3, 5);
  EXPECT_EQ(expire(w, 5), std::vector<uint32_t>{3});
  EXPECT_TRUE(expire(w, 20).empty());
  EXPECT_EQ(expire(w, 21), std::vector<uint32_t>{1});
  EXPECT_TRUE(expire(w, 68).empty());
  EXPECT_EQ(expire(w, 69), std::vector<uint32_t>{2});
  EXPECT_EQ(w.size(), 0u);
}

TEST(TimerWheel, LongJumpFiresEverythingDue) {
  TimerWheel w(8, 16);
  w.schedule(1, 3);
  w.schedule(2, 40);
  w.schedule(3, 1000);
  w.schedule(4, 5000);
  EXPECT_THAT(expire(w, 1000), UnorderedElementsAre(1, 2, 3));
  EXPECT_EQ(expire(w, 5000), std::vector<uint32_t>{4});
}

TEST(TimerWheel, PastDeadlineFiresOnNextExpire) {
  TimerWheel w(4, 16);
  EXPECT_TRUE(expire(w, 100).empty());
  w.schedule(1, 50);  // already past: clamped to now
  EXPECT_EQ(expire(w, 100), std::vector<uint32_t>{1});
}

TEST(TimerWheel, CallbackMayReschedule) {
  TimerWheel w(4, 16);
  w.schedule(1, 2);
  std::vector<uint64_t> at;
  for (uint64_t now = 0; now <= 20; ++now)
    w.expire(now, [&](uint32_t id) {
      at.push_back(now);
      w.schedule(id, now + 5);
    });
  EXPECT_THAT(at, ElementsAre(2, 7, 12, 17));
  EXPECT_TRUE(w.scheduled(1));
  EXPECT_EQ(w.deadline(1), 22u);
}

}  // namespace
}  // namespace shunt
