#include "fd_table.hh"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>
#include <vector>

namespace shunt::preload {
namespace {

std::atomic<int> g_destroyed{0};

struct TestObj : FdObject {
  TestObj() : FdObject(FdKind::kTest, [](FdObject*) { ++g_destroyed; }) {}
};

class FdTableTest : public ::testing::Test {
 protected:
  void SetUp() override { g_destroyed = 0; }
  void TearDown() override { table.release_chunks(); }
  FdTable table;
};

TEST_F(FdTableTest, EmptyLookups) {
  EXPECT_EQ(table.peek(0), nullptr);
  EXPECT_EQ(table.peek(-1), nullptr);
  EXPECT_EQ(table.peek(FdTable::kMaxFds), nullptr);
  EXPECT_EQ(table.acquire(5), nullptr);
  EXPECT_EQ(table.remove(5), nullptr);
}

TEST_F(FdTableTest, InstallAcquireRemove) {
  TestObj o;
  ASSERT_TRUE(table.install(7, &o, nullptr));
  EXPECT_EQ(o.refs.load(), 1);
  EXPECT_EQ(table.peek(7), &o);
  EXPECT_EQ(table.peek(6), nullptr);
  FdObject* got = table.acquire(7);
  EXPECT_EQ(got, &o);
  EXPECT_EQ(o.refs.load(), 2);
  unref(got);
  EXPECT_EQ(table.remove(7), &o);
  EXPECT_EQ(table.peek(7), nullptr);
  EXPECT_EQ(g_destroyed, 0);
  unref(&o);  // the table's reference, handed to us by remove()
  EXPECT_EQ(g_destroyed, 1);
}

TEST_F(FdTableTest, OutOfRangeInstallFails) {
  TestObj o;
  EXPECT_FALSE(table.install(-1, &o, nullptr));
  EXPECT_FALSE(table.install(FdTable::kMaxFds, &o, nullptr));
  EXPECT_EQ(o.refs.load(), 0);
}

TEST_F(FdTableTest, HighFdsInSparseChunks) {
  TestObj a, b;
  ASSERT_TRUE(table.install(FdTable::kMaxFds - 1, &a, nullptr));
  ASSERT_TRUE(table.install(FdTable::kChunkSize, &b, nullptr));
  EXPECT_EQ(table.peek(FdTable::kMaxFds - 1), &a);
  EXPECT_EQ(table.peek(FdTable::kChunkSize), &b);
  EXPECT_EQ(table.peek(FdTable::kChunkSize - 1), nullptr);
  int seen = 0;
  table.for_each([&](int fd, FdObject* o) {
    ++seen;
    EXPECT_TRUE((fd == FdTable::kMaxFds - 1 && o == &a) || (fd == FdTable::kChunkSize && o == &b));
  });
  EXPECT_EQ(seen, 2);
}

// dup: two entries, one object; closing one keeps the object alive.
TEST_F(FdTableTest, DupSharesObject) {
  TestObj o;
  table.install(3, &o, nullptr);
  table.install(9, &o, nullptr);
  EXPECT_EQ(o.refs.load(), 2);
  unref(table.remove(3));
  EXPECT_EQ(g_destroyed, 0);
  EXPECT_EQ(table.peek(9), &o);
  unref(table.remove(9));
  EXPECT_EQ(g_destroyed, 1);
}

TEST_F(FdTableTest, InstallOverReturnsPrevious) {
  TestObj a, b;
  table.install(4, &a, nullptr);
  FdObject* prev = nullptr;
  table.install(4, &b, &prev);
  EXPECT_EQ(prev, &a);
  EXPECT_EQ(table.peek(4), &b);
  unref(prev);
  EXPECT_EQ(g_destroyed, 1);
  // Without `previous`, the old object's reference is dropped by install itself.
  TestObj c;
  table.install(4, &c, nullptr);
  EXPECT_EQ(g_destroyed, 2);
  unref(table.remove(4));
}

TEST_F(FdTableTest, DyingObjectIsNotAcquired) {
  TestObj o;
  table.install(11, &o, nullptr);
  o.refs.store(0);  // as if the last reference were being dropped right now
  EXPECT_EQ(table.acquire(11), nullptr);
  o.refs.store(1);
  unref(table.remove(11));
}

TEST_F(FdTableTest, GetChecksKind) {
  TestObj o;
  table.install(12, &o, nullptr);
  EXPECT_FALSE(table.get<FdObject>(12, FdKind::kSocket));
  EXPECT_EQ(o.refs.load(), 1);  // the failed get gave its reference back
  {
    Ref<FdObject> r = table.get<FdObject>(12, FdKind::kTest);
    EXPECT_TRUE(r);
    EXPECT_EQ(o.refs.load(), 2);
  }
  EXPECT_EQ(o.refs.load(), 1);
  unref(table.remove(12));
}

// Readers on many threads while a writer swaps and removes entries: every
// acquire returns null or a live object, and counts balance at the end.
TEST_F(FdTableTest, ConcurrentAcquireAndReplace) {
  constexpr int kObjs = 8;
  TestObj objs[kObjs];
  std::atomic<bool> stop{false};
  std::atomic<long> hits{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&] {
      while (!stop.load()) {
        for (int fd = 100; fd < 104; ++fd) {
          if (FdObject* o = table.acquire(fd)) {
            EXPECT_GE(o->refs.load(), 1);
            hits.fetch_add(1);
            unref(o);
          }
        }
      }
    });
  }
  // Churn until the readers have really raced with us (they may start late).
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (int i = 0; i < 20000 || (hits.load() < 1000 && std::chrono::steady_clock::now() < until);
       ++i) {
    int fd = 100 + i % 4;
    TestObj& o = objs[i % kObjs];
    // Keep each object referenced by the test so destroy never runs mid-test.
    o.refs.fetch_add(1);
    FdObject* prev = nullptr;
    table.install(fd, &o, &prev);
    if (prev != nullptr) unref(prev);
    if (i % 7 == 0)
      if (FdObject* r = table.remove(fd)) unref(r);
    unref(&o);
  }
  stop.store(true);
  for (auto& t : readers) t.join();
  for (int fd = 100; fd < 104; ++fd)
    if (FdObject* r = table.remove(fd)) unref(r);
  EXPECT_GT(hits.load(), 0);
  for (auto& o : objs) EXPECT_EQ(o.refs.load(), 0);
}

}  // namespace
}  // namespace shunt::preload
