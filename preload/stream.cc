#include "stream.hh"

#include "fault_guard.hh"

#include <limits.h>

#include <algorithm>
#include <cerrno>

namespace shunt::preload {

size_t rx_to_iov(abi::ByteRing& rx, const iovec* iov, int iovcnt, size_t skip, size_t max,
                 uint32_t offset, bool peek, bool discard, bool* fault) {
  uint32_t avail = rx_available(rx);
  if (avail <= offset) return 0;
  size_t n = std::min<size_t>(avail - offset, max);
  if (n == 0) return 0;
  uint32_t pos = rx.indices()->tail.value.load(std::memory_order_relaxed) + offset;
  if (!discard) {
    size_t left = n;
    for (int i = 0; i < iovcnt && left > 0; ++i) {
      size_t len = iov[i].iov_len;
      if (skip >= len) {
        skip -= len;
        continue;
      }
      size_t take = std::min(len - skip, left);
      uint8_t* to = static_cast<uint8_t*>(iov[i].iov_base) + skip;
      if (!guarded([&] { rx.copy_out(pos, to, uint32_t(take)); })) {
        if (fault != nullptr) *fault = true;
        break;  // what the iovecs before took stays taken, as the kernel's copy
      }
      pos += uint32_t(take);
      left -= take;
      skip = 0;
    }
    n -= left;  // iovecs shorter than max
  }
  if (!peek) rx.consume(uint32_t(n));
  return n;
}

size_t iov_to_tx(abi::ByteRing& tx, const iovec* iov, int iovcnt, size_t skip, size_t max,
                 bool* fault) {
  size_t room = std::min<size_t>(tx.writable(), max);
  if (room == 0) return 0;
  uint32_t pos = tx.indices()->head.value.load(std::memory_order_relaxed);
  size_t done = 0;
  for (int i = 0; i < iovcnt && done < room; ++i) {
    size_t len = iov[i].iov_len;
    if (skip >= len) {
      skip -= len;
      continue;
    }
    size_t put = std::min(len - skip, room - done);
    const uint8_t* from = static_cast<const uint8_t*>(iov[i].iov_base) + skip;
    if (!guarded([&] { tx.copy_in(pos, from, uint32_t(put)); })) {
      if (fault != nullptr) *fault = true;
      break;  // the iovecs before go out; nothing of this one
    }
    pos += uint32_t(put);
    done += put;
    skip = 0;
  }
  if (done > 0) tx.produce(uint32_t(done));  // release: the daemon sees the bytes first
  return done;
}

ssize_t file_to_tx(abi::ByteRing& tx, int in_fd, off_t* offset, size_t max, PreadFn pread_fn,
                   ReadFn read_fn) {
  size_t done = 0;
  while (done < max) {
    uint32_t room = tx.writable();
    if (room == 0) break;
    uint32_t head = tx.indices()->head.value.load(std::memory_order_relaxed);
    uint32_t chunk = uint32_t(std::min<size_t>(room, max - done));
    uint8_t* at = tx.span(head, &chunk);
    ssize_t r = offset != nullptr ? pread_fn(in_fd, at, chunk, *offset) : read_fn(in_fd, at, chunk);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (done > 0) break;
      return -errno;
    }
    if (r == 0) break;  // end of file
    if (offset != nullptr) *offset += r;
    tx.produce(uint32_t(r));
    done += size_t(r);
    if (size_t(r) < chunk) break;  // short read: likely end of file, do not spin on it
  }
  return ssize_t(done);
}

ssize_t iov_total(const iovec* iov, int iovcnt) {
  if (iovcnt < 0 || iovcnt > IOV_MAX) return -EINVAL;
  size_t total = 0;
  for (int i = 0; i < iovcnt; ++i) {
    if (iov[i].iov_len > size_t(SSIZE_MAX) - total) return -EINVAL;
    total += iov[i].iov_len;
  }
  return ssize_t(total);
}

}  // namespace shunt::preload
