// The fault injector's decisions, without DPDK: frames are handles into a test
// pool of byte buffers. Checks determinism under a seed, rates over many frames,
// conservation (every frame leaves exactly once or is freed), bounded holding,
// and release when traffic stops.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "daemon/fault.hh"

namespace shunt::fault {
namespace {

// Handles 1..capacity; 0 is "no frame" (Buf{}). A frame's first 4 bytes hold the
// number of the original it came from, so tests can follow it.
class FramePool {
 public:
  explicit FramePool(uint32_t capacity, size_t frame_len = 64)
      : bytes_(capacity + 1, std::vector<uint8_t>(frame_len)), used_(capacity + 1, false) {}

  uint32_t alloc() {
    for (uint32_t i = 1; i < used_.size(); ++i)
      if (!used_[i]) {
        used_[i] = true;
        ++allocs_;
        return i;
      }
    return 0;
  }
  uint32_t make(uint32_t serial) {
    uint32_t b = alloc();
    if (b == 0) return 0;
    std::fill(bytes_[b].begin(), bytes_[b].end(), uint8_t(0xa5));
    std::memcpy(bytes_[b].data(), &serial, sizeof(serial));
    return b;
  }
  void release(uint32_t b) {
    ASSERT_TRUE(b != 0 && b < used_.size() && used_[b]) << "double free or bad handle " << b;
    used_[b] = false;
  }
  uint32_t serial(uint32_t b) const {
    uint32_t s;
    std::memcpy(&s, bytes_[b].data(), sizeof(s));
    return s;
  }
  std::vector<uint8_t>& bytes(uint32_t b) { return bytes_[b]; }
  uint32_t in_use() const { return uint32_t(std::count(used_.begin(), used_.end(), true)); }
  bool fail_copies = false;

 private:
  std::vector<std::vector<uint8_t>> bytes_;
  std::vector<bool> used_;
  uint64_t allocs_ = 0;
};

struct PoolOps {
  FramePool* pool;
  uint32_t copy(uint32_t b) {
    if (pool->fail_copies) return 0;
    uint32_t c = pool->alloc();
    if (c != 0) pool->bytes(c) = pool->bytes(b);
    return c;
  }
  void free(uint32_t b) { pool->release(b); }
  std::span<uint8_t> bytes(uint32_t b) { return pool->bytes(b); }
};

using TestInjector = Injector<uint32_t, PoolOps>;

// What left the injector, in order: serials, and whether the bytes were intact.
struct Out {
  std::vector<uint32_t> serials;
  std::vector<bool> intact;
};

// Pushes n frames, one every `step` µs from t0, then releases everything held.
Out run(TestInjector& inj, FramePool& pool, uint32_t n, Time step = 10, Time t0 = 1000) {
  Out out;
  auto emit = [&](uint32_t b) {
    out.serials.push_back(pool.serial(b));
    const auto& v = pool.bytes(b);
    out.intact.push_back(std::all_of(v.begin() + 4, v.end(), [](uint8_t x) { return x == 0xa5; }));
    pool.release(b);
  };
  Time now = t0;
  for (uint32_t i = 0; i < n; ++i, now += step) {
    uint32_t b = pool.make(i);
    EXPECT_NE(b, 0u) << "test pool exhausted at frame " << i;
    if (b == 0) break;
    inj.push(b, now, emit);
  }
  inj.release(now + 60'000'000, emit);  // a minute later: everything is due
  EXPECT_EQ(inj.held(), 0u);
  return out;
}

Spec spec(double drop, double reorder, double dup, double corrupt, uint64_t seed = 7) {
  Spec s;
  s.drop = drop;
  s.reorder = reorder;
  s.dup = dup;
  s.corrupt = corrupt;
  s.seed = seed;
  return s;
}

TEST(FaultInjector, NoFaultsPassesEverythingInOrder) {
  FramePool pool(64);
  TestInjector inj(Spec{}, 0, PoolOps{&pool});
  Out out = run(inj, pool, 1000);
  ASSERT_EQ(out.serials.size(), 1000u);
  for (uint32_t i = 0; i < 1000; ++i) EXPECT_EQ(out.serials[i], i);
  EXPECT_EQ(inj.counters().frames, 1000u);
  EXPECT_EQ(pool.in_use(), 0u);
}

TEST(FaultInjector, SameSeedSameDecisionsOtherSeedOthers) {
  Spec s = spec(0.05, 0.1, 0.01, 0.01);
  auto once = [&](uint64_t seed, uint64_t stream) {
    FramePool pool(128);
    Spec t = s;
    t.seed = seed;
    TestInjector inj(t, stream, PoolOps{&pool});
    return run(inj, pool, 5000);
  };
  Out a = once(7, 0), b = once(7, 0), c = once(8, 0), d = once(7, 1);
  EXPECT_EQ(a.serials, b.serials);
  EXPECT_EQ(a.intact, b.intact);
  EXPECT_NE(a.serials, c.serials);  // another seed
  EXPECT_NE(a.serials, d.serials);  // the other direction's stream
}

// Rates within 5 standard deviations of the binomial over 200k frames.
TEST(FaultInjector, RatesMatchTheSpec) {
  constexpr uint32_t kN = 200'000;
  FramePool pool(256);
  TestInjector inj(spec(0.05, 0.1, 0.01, 0.002, 12345), 0, PoolOps{&pool});
  Out out = run(inj, pool, kN);
  const Counters& c = inj.counters();
  auto within = [&](const char* what, uint64_t got, double p, uint64_t trials) {
    double mean = p * double(trials), sd = std::sqrt(double(trials) * p * (1 - p));
    EXPECT_NEAR(double(got), mean, 5 * sd) << what << ": " << got << " of " << trials;
  };
  EXPECT_EQ(c.frames, kN);
  within("dropped", c.dropped, 0.05, kN);
  uint64_t kept = kN - c.dropped;
  within("corrupted", c.corrupted, 0.002, kept);
  within("duplicated", c.duplicated, 0.01, kept);
  // Every copy passes the reorder stage; a few find all slots taken.
  within("reordered", c.reordered, 0.1, kept + c.duplicated);
  EXPECT_EQ(c.dup_failed, 0u);
  // Conservation: each kept frame and each duplicate leaves exactly once.
  EXPECT_EQ(out.serials.size(), kept + c.duplicated);
  // A corrupted frame that is duplicated leaves twice; a flip in the first 4
  // bytes (the serial) does not show as damage.
  uint64_t damaged = uint64_t(std::count(out.intact.begin(), out.intact.end(), false));
  EXPECT_LE(damaged, 2 * c.corrupted);
  EXPECT_GE(damaged, c.corrupted / 2);
  EXPECT_EQ(pool.in_use(), 0u);
}

TEST(FaultInjector, DropOneDropsAllAndFreesThem) {
  FramePool pool(8);
  TestInjector inj(spec(1.0, 0, 0, 0), 0, PoolOps{&pool});
  Out out = run(inj, pool, 100);
  EXPECT_TRUE(out.serials.empty());
  EXPECT_EQ(inj.counters().dropped, 100u);
  EXPECT_EQ(pool.in_use(), 0u);
}

TEST(FaultInjector, DuplicatesFollowTheirOriginal) {
  FramePool pool(8);
  TestInjector inj(spec(0, 0, 1.0, 0), 0, PoolOps{&pool});
  Out out = run(inj, pool, 50);
  ASSERT_EQ(out.serials.size(), 100u);
  for (uint32_t i = 0; i < 50; ++i) {
    EXPECT_EQ(out.serials[2 * i], i);
    EXPECT_EQ(out.serials[2 * i + 1], i);
  }
  EXPECT_EQ(inj.counters().duplicated, 50u);
}

TEST(FaultInjector, NoBufferForADuplicateIsCountedNotFatal) {
  FramePool pool(8);
  pool.fail_copies = true;
  TestInjector inj(spec(0, 0, 1.0, 0), 0, PoolOps{&pool});
  Out out = run(inj, pool, 20);
  EXPECT_EQ(out.serials.size(), 20u);
  EXPECT_EQ(inj.counters().duplicated, 0u);
  EXPECT_EQ(inj.counters().dup_failed, 20u);
}

TEST(FaultInjector, CorruptFlipsExactlyOneBit) {
  FramePool pool(4, 200);
  TestInjector inj(spec(0, 0, 0, 1.0), 0, PoolOps{&pool});
  for (uint32_t i = 0; i < 500; ++i) {
    uint32_t b = pool.make(0);
    std::vector<uint8_t> before = pool.bytes(b);
    int emitted = 0;
    inj.push(b, 1000 + i, [&](uint32_t f) {
      ++emitted;
      int bits = 0;
      for (size_t k = 0; k < before.size(); ++k) bits += __builtin_popcount(before[k] ^ pool.bytes(f)[k]);
      EXPECT_EQ(bits, 1) << "frame " << i;
      pool.release(f);
    });
    EXPECT_EQ(emitted, 1);
  }
  EXPECT_EQ(inj.counters().corrupted, 500u);
}

// A held frame is overtaken by 1..kReorderGapMax later frames, never more, and
// nothing is lost or repeated.
TEST(FaultInjector, ReorderIsBoundedInDistance) {
  constexpr uint32_t kN = 20'000;
  FramePool pool(64);
  TestInjector inj(spec(0, 0.2, 0, 0, 99), 0, PoolOps{&pool});
  Out out = run(inj, pool, kN, /*step=*/1);
  ASSERT_EQ(out.serials.size(), kN);
  std::vector<uint32_t> pos(kN);
  for (uint32_t i = 0; i < kN; ++i) pos[out.serials[i]] = i;
  uint32_t late = 0;
  for (uint32_t i = 0; i < kN; ++i) {
    // Frame i is overtaken by at most kReorderGapMax frames that passed, plus
    // held frames released at the same moment (at most all the slots).
    EXPECT_LE(int64_t(pos[i]) - int64_t(i), int64_t(kReorderGapMax + kReorderSlots)) << "frame " << i;
    if (pos[i] > i) ++late;
  }
  std::vector<uint32_t> sorted = out.serials;
  std::sort(sorted.begin(), sorted.end());
  for (uint32_t i = 0; i < kN; ++i) ASSERT_EQ(sorted[i], i);
  EXPECT_GT(inj.counters().reordered, kN / 10);
  EXPECT_GT(late, kN / 10);
}

TEST(FaultInjector, HeldFrameLeavesWhenTrafficStops) {
  FramePool pool(4);
  TestInjector inj(spec(0, 1.0, 0, 0), 0, PoolOps{&pool});
  std::vector<uint32_t> out;
  auto emit = [&](uint32_t b) {
    out.push_back(pool.serial(b));
    pool.release(b);
  };
  inj.push(pool.make(1), 5000, emit);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(inj.held(), 1u);
  inj.release(5000 + kReorderMaxHold - 1, emit);
  EXPECT_TRUE(out.empty());
  inj.release(5000 + kReorderMaxHold, emit);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0], 1u);
  EXPECT_EQ(inj.held(), 0u);
}

// reorder=1 would hold everything: the slots bound it, frames beyond pass.
TEST(FaultInjector, HoldingIsBounded) {
  FramePool pool(kReorderSlots * 2 + 8);
  TestInjector inj(spec(0, 1.0, 0, 0), 0, PoolOps{&pool});
  uint32_t emitted = 0;
  auto emit = [&](uint32_t b) {
    ++emitted;
    pool.release(b);
  };
  for (uint32_t i = 0; i < kReorderSlots + 10; ++i) inj.push(pool.make(i), 100, emit);
  EXPECT_LE(inj.held(), kReorderSlots);
  EXPECT_EQ(emitted + inj.held(), kReorderSlots + 10);
  inj.clear();
  EXPECT_EQ(inj.held(), 0u);
  EXPECT_EQ(pool.in_use(), 0u);
}

TEST(FaultInjector, DelayHoldsEveryFrameInOrder) {
  FramePool pool(kDelayLimit + 16);
  Spec s;
  s.delay_us = 5000;
  TestInjector inj(s, 0, PoolOps{&pool});
  std::vector<uint32_t> out;
  auto emit = [&](uint32_t b) {
    out.push_back(pool.serial(b));
    pool.release(b);
  };
  for (uint32_t i = 0; i < 10; ++i) inj.push(pool.make(i), 1000 + i * 100, emit);
  EXPECT_TRUE(out.empty());
  inj.release(1000 + 5000 - 1, emit);
  EXPECT_TRUE(out.empty());
  inj.release(1000 + 5000 + 450, emit);  // frames 0..4 are due
  EXPECT_EQ(out, (std::vector<uint32_t>{0, 1, 2, 3, 4}));
  inj.release(1000 + 5000 + 900, emit);
  EXPECT_EQ(out.size(), 10u);
  for (uint32_t i = 0; i < 10; ++i) EXPECT_EQ(out[i], i);
  EXPECT_EQ(inj.counters().delayed, 10u);

  // The line holds kDelayLimit frames; more are dropped and counted.
  out.clear();
  for (uint32_t i = 0; i < kDelayLimit + 5; ++i) inj.push(pool.make(i), 100'000, emit);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(inj.counters().delay_overflow, 5u);
  EXPECT_EQ(inj.held(), kDelayLimit);
  inj.release(200'000, emit);
  EXPECT_EQ(out.size(), kDelayLimit);
  EXPECT_EQ(pool.in_use(), 0u);
}

}  // namespace
}  // namespace shunt::fault
