// The application's half of datagram records (abi.h "Datagram records"): records
// written from iovecs and read into iovecs across the ring's end, and the poll bits
// of a UDP slot (Linux's datagram_poll).
#include "dgram.hh"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "readiness.hh"
#include "test_region.hh"

namespace shunt::preload {
namespace {

constexpr uint32_t kRing = 256;

class DgramRingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(region.create(abi::Layout{1, 1, kRing, kRing}, 7, 0, 0));
    tx = region.tx(0);
    // Start near the end of the buffer and of the 32-bit index: records wrap.
    for (abi::RingIndices* r : {&region.slot(0)->tx, &region.slot(0)->rx})
      r->head.value = r->tail.value = 0xffffffff - kRing + 200 + 1;
  }
  void TearDown() override { region.destroy(); }
  test::TestRegion region;
  abi::ByteRing tx;
};

TEST_F(DgramRingTest, RecordFromIovecsReadsBackWhole) {
  std::string a = "hello, ", b = "datagram", c;
  iovec in[3] = {{a.data(), a.size()}, {c.data(), 0}, {b.data(), b.size()}};
  uint32_t len = uint32_t(a.size() + b.size());
  dgram_write_iov(tx, 0x0100007f, 0x3500, in, 3, len);
  EXPECT_EQ(tx.readable(), abi::dgram_record_size(len));
  EXPECT_EQ(tx.readable() % 4, 0u);
  abi::DgramHeader h;
  ASSERT_EQ(abi::dgram_front(tx, &h), abi::DgramFront::kOk);
  EXPECT_EQ(h.len, len);
  EXPECT_EQ(h.ip, 0x0100007fu);
  EXPECT_EQ(h.port, 0x3500);
  char x[4], y[64];
  iovec out[2] = {{x, sizeof x}, {y, sizeof y}};
  ASSERT_EQ(dgram_read_iov(tx, h, out, 2), len);
  EXPECT_EQ(std::string(x, 4) + std::string(y, len - 4), a + b);
  // A short buffer takes the head of the datagram only.
  iovec small{y, 3};
  EXPECT_EQ(dgram_read_iov(tx, h, &small, 1), 3u);
  EXPECT_EQ(std::string(y, 3), "hel");
  tx.consume(abi::dgram_record_size(h.len));
  EXPECT_EQ(abi::dgram_front(tx, &h), abi::DgramFront::kEmpty);
}

TEST_F(DgramRingTest, EmptyDatagramIsAHeaderAlone) {
  dgram_write_iov(tx, 1, 2, nullptr, 0, 0);
  abi::DgramHeader h;
  ASSERT_EQ(abi::dgram_front(tx, &h), abi::DgramFront::kOk);
  EXPECT_EQ(h.len, 0);
  EXPECT_EQ(tx.readable(), sizeof h);
}

TEST_F(DgramRingTest, ManyRecordsAroundTheRing) {
  abi::ByteRing rx = region.rx(0);
  for (uint32_t i = 0; i < 100; ++i) {
    std::string p(i % 37, char('a' + i % 26));
    ASSERT_TRUE(abi::dgram_push(rx, i, uint16_t(i), reinterpret_cast<const uint8_t*>(p.data()),
                                uint32_t(p.size())));
    abi::DgramHeader h;
    ASSERT_EQ(abi::dgram_front(rx, &h), abi::DgramFront::kOk);
    std::string got(h.len, '\0');
    ASSERT_EQ(abi::dgram_pop(rx, h, reinterpret_cast<uint8_t*>(got.data()), h.len), p.size());
    EXPECT_EQ(got, p);
    EXPECT_EQ(h.ip, i);
  }
}

TEST_F(DgramRingTest, FullRingRefusesAndCorruptHeaderIsDetected) {
  abi::ByteRing rx = region.rx(0);
  std::vector<uint8_t> big(kRing);
  EXPECT_FALSE(abi::dgram_push(rx, 0, 0, big.data(), kRing - 7)) << "needs 8 + len bytes";
  EXPECT_TRUE(abi::dgram_push(rx, 0, 0, big.data(), kRing - 8));
  EXPECT_FALSE(abi::dgram_push(rx, 0, 0, big.data(), 0));
  rx.consume(kRing);
  // A header that claims more than was published.
  abi::DgramHeader lie{100, 0, 0};
  rx.copy_in(rx.indices()->head.value, reinterpret_cast<const uint8_t*>(&lie), sizeof lie);
  rx.produce(16);
  abi::DgramHeader h;
  EXPECT_EQ(abi::dgram_front(rx, &h), abi::DgramFront::kCorrupt);
}

// ---- readiness ----

SlotSnapshot udp_slot(uint32_t rx_bytes, uint32_t tx_free, uint32_t cap = 1 << 18) {
  SlotSnapshot v;
  v.state = uint32_t(abi::SlotState::kBound);
  v.rx_readable = rx_bytes;
  v.tx_writable = tx_free;
  v.tx_capacity = cap;
  return v;
}

TEST(DgramReadiness, LikeDatagramPoll) {
  LocalView lv;
  EXPECT_EQ(dgram_readiness(udp_slot(0, 1 << 18), lv), uint32_t(EPOLLOUT | EPOLLWRNORM))
      << "idle: writable, never hung up (unlike a stream socket that is not connected)";
  EXPECT_EQ(dgram_readiness(udp_slot(8, 1 << 18), lv) & EPOLLIN, uint32_t(EPOLLIN));
  EXPECT_EQ(dgram_readiness(udp_slot(4, 1 << 18), lv) & EPOLLIN, 0u) << "no whole record";
  EXPECT_EQ(dgram_readiness(udp_slot(0, abi::kMaxDgramRecord - 1), lv) & EPOLLOUT, 0u);
  EXPECT_EQ(dgram_readiness(udp_slot(0, 2048, 4096), lv) & EPOLLOUT, uint32_t(EPOLLOUT))
      << "small rings: half free is enough (sock_writeable)";
  lv.shut_rd = true;
  EXPECT_EQ(dgram_readiness(udp_slot(0, 0), lv), uint32_t(EPOLLIN | EPOLLRDNORM | EPOLLRDHUP));
  lv.shut_wr = true;
  EXPECT_NE(dgram_readiness(udp_slot(0, 0), lv) & EPOLLHUP, 0u);
}

TEST(DgramReadiness, UnreportedErrorIsEpollErr) {
  LocalView lv;
  SlotSnapshot v = udp_slot(0, 0);
  v.error_seq = 3;
  lv.error_seq_seen = 2;
  EXPECT_EQ(dgram_readiness(v, lv), uint32_t(EPOLLERR));
  lv.error_seq_seen = 3;
  EXPECT_EQ(dgram_readiness(v, lv), 0u);
  lv.daemon_gone = true;
  EXPECT_EQ(dgram_readiness(v, lv) & (EPOLLIN | EPOLLOUT | EPOLLERR),
            uint32_t(EPOLLIN | EPOLLOUT | EPOLLERR))
      << "every waiter wakes and fails";
}

}  // namespace
}  // namespace shunt::preload
