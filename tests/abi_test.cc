// The shared-memory ABI: layout, entry rings, byte rings, and two processes
// sharing a memfd region.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <numeric>
#include <vector>

#include "shunt/abi.h"
#include "shunt/ring.h"

namespace shunt::abi {
namespace {

TEST(Layout, OffsetsAreOrderedAlignedAndFitTheSize) {
  Layout l{4, 16, 4096, 8192};
  EXPECT_EQ(l.queues_offset(), sizeof(RegionHeader));
  EXPECT_EQ(l.slots_offset(), l.queues_offset() + 4 * sizeof(QueuePair));
  EXPECT_EQ(l.rings_offset() % 4096, 0u);
  EXPECT_GE(l.rings_offset(), l.slots_offset() + 16 * sizeof(SocketSlot));
  EXPECT_EQ(l.size(), l.rings_offset() + 16 * (4096 + 8192));
}

// The header init_region writes, copied out of a scratch region.
void fill_header(RegionHeader* h, const Layout& l) {
  std::vector<uint64_t> mem(l.size() / sizeof(uint64_t) + 1);
  std::memcpy(static_cast<void*>(h), init_region(mem.data(), l, 3, 0xc6120701, 24, 0), sizeof *h);
}

TEST(Layout, InitRegionWritesAHeaderThatFits) {
  Layout l{2, 8, 4096, 4096};
  RegionHeader h;
  fill_header(&h, l);
  EXPECT_TRUE(region_fits(h, l.size()));
  EXPECT_EQ(h.region_id, 3u);
  EXPECT_EQ(h.nic_ip, htonl(0xc6120701));
  EXPECT_EQ(h.nic_prefix_len, 24u);
  EXPECT_EQ(h.gateway_ip, 0u);
}

TEST(Layout, RegionFitsRejectsEveryInconsistentHeader) {
  Layout l{2, 8, 4096, 4096};
  RegionHeader h;
  fill_header(&h, l);
  EXPECT_TRUE(region_fits(h, l.size()));
  EXPECT_FALSE(region_fits(h, l.size() - 1));  // mapping shorter than the layout
  h.version = kVersion + 1;
  EXPECT_FALSE(region_fits(h, l.size()));
  fill_header(&h, l);
  h.magic = 0;
  EXPECT_FALSE(region_fits(h, l.size()));
  fill_header(&h, l);
  h.rx_ring_size = 3000;  // not a power of two
  EXPECT_FALSE(region_fits(h, l.size()));
  fill_header(&h, l);
  h.slots_offset += 64;
  EXPECT_FALSE(region_fits(h, l.size()));
}

TEST(EntryRing, FifoOrderFullAndEmpty) {
  RingIndices idx;
  Command entries[4];
  EntryRing<Command> r(&idx, entries, 4);
  Command c{};
  for (uint64_t i = 0; i < 4; ++i) {
    c.cookie = i;
    EXPECT_TRUE(r.push(c));
  }
  EXPECT_FALSE(r.push(c));  // full
  for (uint64_t i = 0; i < 4; ++i) {
    ASSERT_TRUE(r.pop(&c));
    EXPECT_EQ(c.cookie, i);
  }
  EXPECT_FALSE(r.pop(&c));
}

TEST(EntryRing, IndicesWrapAroundTwoToThe32) {
  RingIndices idx;
  idx.head.value = idx.tail.value = 0xfffffffe;
  Command entries[4];
  EntryRing<Command> r(&idx, entries, 4);
  Command c{};
  for (uint64_t i = 0; i < 4; ++i) {
    c.cookie = i;
    ASSERT_TRUE(r.push(c));
  }
  EXPECT_TRUE(r.sane());
  for (uint64_t i = 0; i < 4; ++i) {
    ASSERT_TRUE(r.pop(&c));
    EXPECT_EQ(c.cookie, i);
  }
}

TEST(EntryRing, CorruptHeadIsDetected) {
  RingIndices idx;
  Command entries[4];
  EntryRing<Command> r(&idx, entries, 4);
  idx.head.value = 1000;  // a hostile producer claims 1000 entries in a ring of 4
  EXPECT_FALSE(r.sane());
}

TEST(ByteRing, WriteReadWrapAndPeek) {
  RingIndices idx;
  idx.head.value = idx.tail.value = 0xfffffff0u;  // wrap the 32-bit index too
  std::vector<uint8_t> mem(64);
  ByteRing r(&idx, mem.data(), 64);
  std::vector<uint8_t> in(100);
  std::iota(in.begin(), in.end(), 0);
  EXPECT_EQ(r.write(in.data(), 100), 64u);  // only capacity fits
  EXPECT_EQ(r.writable(), 0u);
  uint8_t out[100];
  EXPECT_EQ(r.read(out, 10, /*peek=*/true), 10u);
  EXPECT_EQ(r.readable(), 64u);
  EXPECT_EQ(r.read(out, 40), 40u);
  EXPECT_EQ(0, std::memcmp(out, in.data(), 40));
  EXPECT_EQ(r.write(in.data() + 64, 36), 36u);  // crosses the end of the buffer
  EXPECT_EQ(r.read(out, 100), 60u);
  EXPECT_EQ(0, std::memcmp(out, in.data() + 40, 60));
}

TEST(ByteRing, CorruptTailNeverOverReads) {
  RingIndices idx;
  std::vector<uint8_t> mem(64);
  ByteRing r(&idx, mem.data(), 64);
  idx.head.value = 5;
  idx.tail.value = 100;  // consumer ahead of producer: nothing is writable
  EXPECT_EQ(r.writable(), 0u);
  uint8_t out[128];
  // The reader clamps to the capacity even when head - tail is huge.
  EXPECT_LE(r.read(out, 128), 64u);
}

// A region in a memfd, mapped by two processes at different addresses: one
// streams bytes through a ByteRing and the other reads them back exactly.
TEST(SharedRegion, TwoProcessesStreamBytesThroughAMemfd) {
  Layout l{1, 2, 4096, 4096};
  int fd = memfd_create("abi-test", MFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(ftruncate(fd, off_t(l.size())), 0);
  void* base = mmap(nullptr, l.size(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(base, MAP_FAILED);
  init_region(base, l, 0, 0, 0, 0);
  constexpr uint32_t kTotal = 1 << 20;

  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Map again so the addresses differ: only offsets may be shared.
    void* mine = mmap(nullptr, l.size(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    RegionHeader* ch = header(mine);
    if (!region_fits(*ch, l.size())) _exit(2);
    ByteRing tx(&slot(mine, layout_of(*ch), 1)->tx, tx_bytes(mine, layout_of(*ch), 1),
                ch->tx_ring_size);
    uint8_t buf[1000];
    for (uint32_t sent = 0; sent < kTotal;) {
      uint32_t n = std::min<uint32_t>(sizeof(buf), kTotal - sent);
      for (uint32_t i = 0; i < n; ++i) buf[i] = uint8_t((sent + i) * 7);
      uint32_t w = tx.write(buf, n);
      sent += w;
    }
    _exit(0);
  }
  ByteRing rx(&slot(base, l, 1)->tx, tx_bytes(base, l, 1), l.tx_ring_size);
  uint8_t buf[777];
  uint32_t got = 0;
  bool ok = true;
  while (got < kTotal) {
    uint32_t n = rx.read(buf, sizeof(buf));
    for (uint32_t i = 0; i < n; ++i) ok &= buf[i] == uint8_t((got + i) * 7);
    got += n;
  }
  int status = 0;
  waitpid(child, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_TRUE(ok);
  EXPECT_EQ(got, kTotal);
  munmap(base, l.size());
  close(fd);
}

}  // namespace
}  // namespace shunt::abi
