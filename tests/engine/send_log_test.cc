// The send log RACK reads (stack/engine/send_log.hh): ranges in send order,
// coalesced per batch, cut by retransmissions, bounded.
#include <gtest/gtest.h>

#include "engine/send_log.hh"

namespace shunt {
namespace {

using tcp::SeqNum;

SeqNum s(uint32_t v) { return SeqNum(v); }

TEST(SendLog, OneBatchIsOneEntryAndANewTimeIsANewOne) {
  SendLog log;
  EXPECT_TRUE(log.record(s(100), s(200), 5, false));
  EXPECT_TRUE(log.record(s(200), s(300), 5, false));
  ASSERT_EQ(log.n, 1);
  EXPECT_EQ(log.e[0].end, s(300));
  EXPECT_TRUE(log.record(s(300), s(400), 6, false));
  ASSERT_EQ(log.n, 2);
  EXPECT_GT(log.e[1].order, log.e[0].order);
  EXPECT_EQ(log.e[1].sent, 6u);
}

TEST(SendLog, ARetransmissionLeavesItsOldEntryAndGoesLast) {
  SendLog log;
  log.record(s(0), s(1000), 1, false);
  EXPECT_TRUE(log.record(s(400), s(500), 2, true));
  ASSERT_EQ(log.n, 3);
  EXPECT_EQ(log.e[0].start, s(0));
  EXPECT_EQ(log.e[0].end, s(400));
  EXPECT_EQ(log.e[1].start, s(500));
  EXPECT_EQ(log.e[1].end, s(1000));
  EXPECT_EQ(log.e[0].order, log.e[1].order) << "the halves keep their send order";
  EXPECT_EQ(log.e[2].start, s(400));
  EXPECT_TRUE(log.e[2].retransmitted);
  EXPECT_EQ(log.e[2].sent, 2u);
  // A retransmission over several entries removes them whole.
  EXPECT_TRUE(log.record(s(0), s(1000), 3, true));
  ASSERT_EQ(log.n, 1);
  EXPECT_EQ(log.e[0].sent, 3u);
}

TEST(SendLog, TrimDropsAndCutsWhatIsAcknowledged) {
  SendLog log;
  log.record(s(0), s(100), 1, false);
  log.record(s(100), s(200), 2, false);
  log.trim_below(s(150));
  ASSERT_EQ(log.n, 1);
  EXPECT_EQ(log.e[0].start, s(150));
  log.trim_below(s(200));
  EXPECT_EQ(log.n, 0);
}

TEST(SendLog, WhenFullTheClosestNeighboursMergeTakingTheLaterTime) {
  SendLog log;
  for (uint32_t i = 0; i < SendLog::kMax; ++i) log.record(s(i * 10), s(i * 10 + 10), i * 100, false);
  ASSERT_EQ(log.n, SendLog::kMax);
  // Entries 5 and 6 are 1 apart in time, every other pair 100.
  log.e[6].sent = log.e[5].sent + 1;
  EXPECT_TRUE(log.record(s(SendLog::kMax * 10), s(SendLog::kMax * 10 + 10), 1000000, false));
  ASSERT_EQ(log.n, SendLog::kMax);
  EXPECT_EQ(log.e[5].start, s(50));
  EXPECT_EQ(log.e[5].end, s(70));
  EXPECT_EQ(log.e[5].sent, 501u) << "the later time: loss is declared later, never earlier";
}

TEST(SendLog, WithNothingToMergeTheOldestUnlostEntryIsForgotten) {
  SendLog log;
  // Every other range: no two entries continue each other.
  for (uint32_t i = 0; i < SendLog::kMax; ++i) log.record(s(i * 20), s(i * 20 + 10), i, false);
  log.e[0].lost = true;
  EXPECT_FALSE(log.record(s(5000), s(5010), 100, false));
  ASSERT_EQ(log.n, SendLog::kMax);
  EXPECT_EQ(log.e[0].start, s(0)) << "a range waiting to be resent stays";
  EXPECT_EQ(log.e[1].start, s(40)) << "the oldest other one went";
}

TEST(SendLog, SplitKeepsTimeAndFlagsAndRefusesWhenFull) {
  SendLog log;
  log.record(s(0), s(100), 7, true);
  EXPECT_TRUE(log.split(0, s(30)));
  ASSERT_EQ(log.n, 2);
  EXPECT_EQ(log.e[0].end, s(30));
  EXPECT_EQ(log.e[1].start, s(30));
  EXPECT_TRUE(log.e[1].retransmitted);
  EXPECT_EQ(log.e[1].sent, 7u);
  EXPECT_FALSE(log.split(0, s(0))) << "only strictly inside";
}

}  // namespace
}  // namespace shunt
