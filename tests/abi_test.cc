// The shared-memory ABI: layout, entry rings, byte rings, and two processes
// sharing a memfd region.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <linux/tcp.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <numeric>
#include <thread>
#include <vector>

#include "shunt/abi.h"
#include "shunt/ring.h"

namespace shunt::abi {
namespace {

// kTcpInfo's answer is copied out as the kernel's getsockopt(TCP_INFO) would.
TEST(Layout, TcpInfoIsLinuxsStructTcpInfo) {
  EXPECT_GE(sizeof(tcp_info), sizeof(TcpInfo)) << "these kernel headers are older than 5.4";
#define SHUNT_SAME(ours, linux) EXPECT_EQ(offsetof(TcpInfo, ours), offsetof(tcp_info, linux)) << #linux
  SHUNT_SAME(options, tcpi_options);
  SHUNT_SAME(rto, tcpi_rto);
  SHUNT_SAME(snd_mss, tcpi_snd_mss);
  SHUNT_SAME(unacked, tcpi_unacked);
  SHUNT_SAME(last_data_recv_ms, tcpi_last_data_recv);
  SHUNT_SAME(pmtu, tcpi_pmtu);
  SHUNT_SAME(rtt, tcpi_rtt);
  SHUNT_SAME(rttvar, tcpi_rttvar);
  SHUNT_SAME(snd_cwnd, tcpi_snd_cwnd);
  SHUNT_SAME(total_retrans, tcpi_total_retrans);
  SHUNT_SAME(bytes_acked, tcpi_bytes_acked);
  SHUNT_SAME(min_rtt, tcpi_min_rtt);
  SHUNT_SAME(delivery_rate, tcpi_delivery_rate);
  SHUNT_SAME(bytes_retrans, tcpi_bytes_retrans);
  SHUNT_SAME(snd_wnd, tcpi_snd_wnd);
#undef SHUNT_SAME
  tcp_info k{};
  k.tcpi_snd_wscale = 7;
  k.tcpi_rcv_wscale = 2;
  TcpInfo ours;
  std::memcpy(&ours, &k, sizeof ours);
  EXPECT_EQ(ours.wscale, 7 | 2 << 4) << "the window scales share a byte, snd in the low bits";
}

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
// ---- Rings that grow while they hold bytes (RingGeometry) ----

// A byte of stream position i.
uint8_t pattern(uint32_t i) { return uint8_t(i * 2654435761u >> 13); }

struct GrowingRing {
  static constexpr uint32_t kReserved = 1 << 16;
  RingIndices idx;
  std::atomic<uint64_t> geometry{0};
  std::atomic<uint32_t> limit{0};
  std::vector<uint8_t> bytes = std::vector<uint8_t>(kReserved, 0xee);
  ByteRing app{&idx, bytes.data(), kReserved, &geometry, &limit};
};

// The daemon produces (rx) and doubles the limit now and then while bytes are in
// the ring; the application reads them back in odd sizes, starting 2^32 - 3000
// into the index space so the indices wrap too. Every byte comes back in order.
TEST(RingGeometry, RxRingGrowsUnderTheReaderWithoutLosingAByte) {
  GrowingRing r;
  uint32_t start = 0u - 3000u;
  r.idx.head.value = start;
  r.idx.tail.value = start;
  ProducerEnd daemon(&r.idx, r.bytes.data(), RingShape(GrowingRing::kReserved, 4096, &r.geometry, &r.limit),
                     start);
  EXPECT_EQ(r.app.capacity(), 4096u);
  uint32_t written = 0, read = 0, grows = 0;
  std::vector<uint8_t> chunk(9000), got(9000);
  for (int step = 0; step < 20000 && read < (4u << 20); ++step) {
    uint32_t want = 1 + uint32_t(step * 7919) % 5000;
    uint32_t n = std::min(want, daemon.writable());
    for (uint32_t i = 0; i < n; ++i) chunk[i] = pattern(written + i);
    daemon.copy_in(daemon.head(), chunk.data(), n);
    daemon.produce(n);
    written += n;
    if (step % 97 == 0 && daemon.shape().limit() < GrowingRing::kReserved) {
      daemon.set_limit(daemon.shape().limit() * 2);
      ++grows;
    }
    uint32_t m = r.app.read(got.data(), 1 + uint32_t(step * 104729) % 7000);
    for (uint32_t i = 0; i < m; ++i) ASSERT_EQ(got[i], pattern(read + i)) << "byte " << read + i;
    read += m;
    daemon.refresh_shape();
    ASSERT_LE(written - read, GrowingRing::kReserved);
  }
  EXPECT_GE(read, 4u << 20);
  EXPECT_EQ(grows, 4u);
  EXPECT_EQ(r.app.capacity(), GrowingRing::kReserved) << "the reader sees the grown ring";
  EXPECT_EQ(daemon.capacity(), GrowingRing::kReserved);
}

// The tx direction with two threads: the application writes as fast as it can
// while the daemon consumes and grows the ring; the daemon checks every byte.
TEST(RingGeometry, TxRingGrowsUnderAConcurrentWriter) {
  GrowingRing r;
  ConsumerEnd daemon(&r.idx, r.bytes.data(), RingShape(GrowingRing::kReserved, 4096, &r.geometry, &r.limit),
                     0);
  constexpr uint32_t kTotal = 8u << 20;
  // Bounded in time, not in spins: under ctest -j the other thread can be off the
  // CPU for longer than any spin count takes.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  std::thread writer([&] {
    std::vector<uint8_t> chunk(6000);
    uint32_t written = 0;
    while (written < kTotal && std::chrono::steady_clock::now() < give_up) {
      uint32_t n = std::min<uint32_t>({r.app.writable(), uint32_t(chunk.size()), kTotal - written});
      if (n == 0) {
        std::this_thread::yield();  // on a loaded machine the reader may not be running
        continue;
      }
      for (uint32_t i = 0; i < n; ++i) chunk[i] = pattern(written + i);
      written += r.app.write(chunk.data(), n);
    }
  });
  std::vector<uint8_t> got(GrowingRing::kReserved);
  uint32_t read = 0, max_seen = 0;
  bool ok = true;
  for (uint32_t spins = 0; read < kTotal && ok && std::chrono::steady_clock::now() < give_up; ++spins) {
    uint32_t n = std::min(daemon.readable(), 3000u + spins % 5000);
    if (n == 0) std::this_thread::yield();
    daemon.copy_out(daemon.tail(), got.data(), n);
    for (uint32_t i = 0; i < n && ok; ++i) ok = got[i] == pattern(read + i);
    daemon.consume(n);
    read += n;
    max_seen = std::max(max_seen, n);
    if (read > (1u << 20) && daemon.shape().limit() < GrowingRing::kReserved && spins % 64 == 0)
      daemon.set_limit(daemon.shape().limit() * 2);
  }
  writer.join();
  EXPECT_TRUE(ok) << "a byte differed near stream position " << read;
  EXPECT_EQ(read, kTotal);
  EXPECT_EQ(daemon.shape().limit(), GrowingRing::kReserved);
  EXPECT_GT(max_seen, 4096u) << "the writer used the grown ring";
}

// A geometry word from the other side never maps outside the reserved bytes.
TEST(RingGeometry, HostileWordsStayInsideTheReservedRing) {
  for (uint64_t w : {uint64_t{0}, ~uint64_t{0}, uint64_t{0xff} << 32, uint64_t{31} << 40 | 7,
                     uint64_t{0x1234} | uint64_t{2} << 32 | uint64_t{40} << 40}) {
    RingGeometry g = RingGeometry::unpack(w, 16);
    EXPECT_LE(g.largest(), 1u << 16);
    for (uint32_t pos : {0u, 1u, 4095u, 65535u, 0x80000000u, 0xffffffffu}) {
      EXPECT_LT(g.offset(pos), 1u << 16);
      EXPECT_LE(g.offset(pos) + g.run(pos, 1u << 20), 1u << 16);
    }
  }
}

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
