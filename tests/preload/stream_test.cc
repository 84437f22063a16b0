// The interposer's half of the byte rings: iovec copies, peeks, wrap-around,
// partial writes, sendfile's direct file reads. Over a real region in a memfd.
#include "stream.hh"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <numeric>
#include <string>
#include <vector>

#include "fault_guard.hh"
#include "test_region.hh"

namespace shunt::preload {
namespace {

constexpr uint32_t kRing = 256;

class StreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(region.create(abi::Layout{1, 1, kRing, kRing}, 7, 0, 0));
    rx = region.rx(0);
    tx = region.tx(0);
  }
  void TearDown() override { region.destroy(); }
  // The daemon's side: put bytes in rx / take bytes from tx.
  void daemon_put(const std::string& s) { ASSERT_EQ(rx.write(s.data(), uint32_t(s.size())), s.size()); }
  std::string daemon_take() {
    std::string out(tx.readable(), '\0');
    tx.read(out.data(), uint32_t(out.size()));
    return out;
  }
  test::TestRegion region;
  abi::ByteRing rx, tx;
};

// A bad buffer is the kernel's EFAULT, not a crash: the copy stops at the iovec
// that faults; what came before is queued (or taken), nothing after.
TEST_F(StreamTest, CopiesStopAtAnIovecTheProcessMayNotTouch) {
  install_fault_guard();
  const size_t page = size_t(sysconf(_SC_PAGESIZE));
  void* forbidden = mmap(nullptr, page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(forbidden, MAP_FAILED);
  char good[] = "abc";
  iovec out[2] = {{good, 3}, {forbidden, 8}};
  bool fault = false;
  EXPECT_EQ(iov_to_tx(tx, out, 2, 0, 11, &fault), 3u);
  EXPECT_TRUE(fault);
  EXPECT_EQ(daemon_take(), "abc");
  daemon_put("xyz123");
  char first[2];
  iovec in[2] = {{first, 2}, {forbidden, 4}};
  fault = false;
  EXPECT_EQ(rx_to_iov(rx, in, 2, 0, 6, 0, false, false, &fault), 2u);
  EXPECT_TRUE(fault);
  EXPECT_EQ(rx_available(rx), 4u);  // the faulting iovec took nothing
  munmap(forbidden, page);
}

TEST_F(StreamTest, ReadIntoScatteredIovecs) {
  daemon_put("hello, world");
  char a[5], b[3], c[10];
  iovec iov[3] = {{a, 5}, {b, 3}, {c, 10}};
  EXPECT_EQ(rx_to_iov(rx, iov, 3, 0, 18, 0, false, false), 12u);
  EXPECT_EQ(std::string(a, 5), "hello");
  EXPECT_EQ(std::string(b, 3), ", w");
  EXPECT_EQ(std::string(c, 4), "orld");
  EXPECT_EQ(rx_available(rx), 0u);
}

TEST_F(StreamTest, PeekLeavesBytesAndOffsetPeeksFurther) {
  daemon_put("abcdef");
  char buf[4] = {};
  iovec iov{buf, 4};
  EXPECT_EQ(rx_to_iov(rx, &iov, 1, 0, 4, 0, true, false), 4u);
  EXPECT_EQ(std::string(buf, 4), "abcd");
  EXPECT_EQ(rx_available(rx), 6u);
  EXPECT_EQ(rx_to_iov(rx, &iov, 1, 0, 4, 4, true, false), 2u);
  EXPECT_EQ(std::string(buf, 2), "ef");
  EXPECT_EQ(rx_to_iov(rx, &iov, 1, 0, 4, 6, true, false), 0u);
}

TEST_F(StreamTest, SkipContinuesAPartialWaitall) {
  daemon_put("0123");
  char buf[8] = {};
  iovec iov[2] = {{buf, 3}, {buf + 3, 5}};
  EXPECT_EQ(rx_to_iov(rx, iov, 2, 0, 8, 0, false, false), 4u);
  daemon_put("4567");
  EXPECT_EQ(rx_to_iov(rx, iov, 2, 4, 4, 0, false, false), 4u);
  EXPECT_EQ(std::string(buf, 8), "01234567");
}

TEST_F(StreamTest, TruncDiscardsWithoutCopying) {
  daemon_put("secret");
  char buf[6] = {'x', 'x', 'x', 'x', 'x', 'x'};
  iovec iov{buf, 6};
  EXPECT_EQ(rx_to_iov(rx, &iov, 1, 0, 4, 0, false, true), 4u);
  EXPECT_EQ(std::string(buf, 6), "xxxxxx");
  EXPECT_EQ(rx_available(rx), 2u);
}

TEST_F(StreamTest, WrapAroundBothWays) {
  std::vector<char> big(200, 'a');
  iovec in{big.data(), big.size()};
  ASSERT_EQ(iov_to_tx(tx, &in, 1, 0, big.size()), 200u);
  daemon_take();
  std::string msg(150, '\0');
  std::iota(msg.begin(), msg.end(), 'A' - 10);
  iovec m{msg.data(), msg.size()};
  ASSERT_EQ(iov_to_tx(tx, &m, 1, 0, msg.size()), 150u);  // crosses the end of the ring
  EXPECT_EQ(daemon_take(), msg);

  daemon_put(std::string(200, 'z'));
  char sink[200];
  iovec s{sink, sizeof sink};
  rx_to_iov(rx, &s, 1, 0, 200, 0, false, false);
  daemon_put(msg);
  std::string out(150, '\0');
  iovec o{out.data(), out.size()};
  EXPECT_EQ(rx_to_iov(rx, &o, 1, 0, 150, 0, false, false), 150u);
  EXPECT_EQ(out, msg);
}

TEST_F(StreamTest, WriteIsPartialWhenTheRingFills) {
  std::string data(300, 'q');
  iovec iov{data.data(), data.size()};
  EXPECT_EQ(iov_to_tx(tx, &iov, 1, 0, 300), size_t(kRing));
  EXPECT_EQ(iov_to_tx(tx, &iov, 1, kRing, 300 - kRing), 0u);  // full
  daemon_take();
  EXPECT_EQ(iov_to_tx(tx, &iov, 1, kRing, 300 - kRing), size_t(300 - kRing));
  EXPECT_EQ(daemon_take(), std::string(300 - kRing, 'q'));
}

TEST_F(StreamTest, WriteSkipsIntoLaterIovecs) {
  char a[] = "ab", b[] = "cdef";
  iovec iov[2] = {{a, 2}, {b, 4}};
  EXPECT_EQ(iov_to_tx(tx, iov, 2, 3, 3), 3u);
  EXPECT_EQ(daemon_take(), "def");
}

TEST_F(StreamTest, IovTotalChecks) {
  char x[4];
  iovec ok[2] = {{x, 4}, {x, 4}};
  EXPECT_EQ(iov_total(ok, 2), 8);
  EXPECT_EQ(iov_total(ok, -1), -EINVAL);
  EXPECT_EQ(iov_total(ok, IOV_MAX + 1), -EINVAL);
  iovec huge[2] = {{x, size_t(SSIZE_MAX)}, {x, 1}};
  EXPECT_EQ(iov_total(huge, 2), -EINVAL);
  EXPECT_EQ(iov_total(nullptr, 0), 0);
}

// sendfile: pread straight into the ring, offset advanced, wrap handled, EOF short.
TEST_F(StreamTest, FileToTxWithOffset) {
  int fd = memfd_create("sendfile-src", 0);
  ASSERT_GE(fd, 0);
  std::string content;
  for (int i = 0; i < 400; ++i) content.push_back(char('a' + i % 26));
  ASSERT_EQ(write(fd, content.data(), content.size()), ssize_t(content.size()));
  // Move the ring's head near the end so the copy wraps.
  std::string pad(kRing - 10, '.');
  iovec p{pad.data(), pad.size()};
  iov_to_tx(tx, &p, 1, 0, pad.size());
  daemon_take();
  off_t off = 5;
  ssize_t n = file_to_tx(tx, fd, &off, 1000, ::pread, ::read);
  EXPECT_EQ(n, ssize_t(kRing));  // limited by ring space
  EXPECT_EQ(off, 5 + off_t(kRing));
  EXPECT_EQ(daemon_take(), content.substr(5, kRing));
  n = file_to_tx(tx, fd, &off, 1000, ::pread, ::read);
  EXPECT_EQ(n, ssize_t(400 - 5 - kRing));  // to end of file
  EXPECT_EQ(daemon_take(), content.substr(5 + kRing));
  EXPECT_EQ(file_to_tx(tx, fd, &off, 1000, ::pread, ::read), 0);  // EOF
  EXPECT_EQ(lseek(fd, 0, SEEK_CUR), 400);  // pread never moved the file position
  close(fd);
}

TEST_F(StreamTest, FileToTxWithoutOffsetUsesFilePosition) {
  int fd = memfd_create("sendfile-src2", 0);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, "0123456789", 10), 10);
  ASSERT_EQ(lseek(fd, 3, SEEK_SET), 3);
  EXPECT_EQ(file_to_tx(tx, fd, nullptr, 4, ::pread, ::read), 4);
  EXPECT_EQ(lseek(fd, 0, SEEK_CUR), 7);
  EXPECT_EQ(daemon_take(), "3456");
  close(fd);
}

TEST_F(StreamTest, FileToTxReportsErrors) {
  off_t off = 0;
  EXPECT_EQ(file_to_tx(tx, -1, &off, 10, ::pread, ::read), -EBADF);
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  EXPECT_EQ(file_to_tx(tx, p[0], &off, 10, ::pread, ::read), -ESPIPE);
  close(p[0]);
  close(p[1]);
}

}  // namespace
}  // namespace shunt::preload
