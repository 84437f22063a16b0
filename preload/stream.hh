// Byte copies between iovecs and a socket's rings, the application's half of
// ring.h. No blocking, no syscalls (except ring_fill_from_file, which reads a file
// straight into the tx ring for sendfile).
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>

#include "shunt/ring.h"

namespace shunt::preload {

// Bytes the consumer may read, clamped to the capacity: a corrupt head can make
// `readable` anything; never copy more than the ring holds.
inline uint32_t rx_available(const abi::ByteRing& rx) {
  uint32_t n = rx.readable();
  return n > rx.capacity() ? rx.capacity() : n;
}

// Copies up to `max` bytes from rx into the iovec array, starting `skip` bytes into
// the iovecs (so a MSG_WAITALL loop can continue where it stopped) and `offset` bytes
// past rx's tail (peeks that continue). Consumes what it copied unless `peek`.
// `discard` (MSG_TRUNC) consumes without copying. Returns the bytes taken. An
// iovec the process may not write stops the copy there and sets *fault.
size_t rx_to_iov(abi::ByteRing& rx, const iovec* iov, int iovcnt, size_t skip, size_t max,
                 uint32_t offset, bool peek, bool discard, bool* fault = nullptr);

// Appends up to `max` bytes of the iovecs (starting `skip` bytes in) to tx. Returns
// the bytes appended (0 when full). An iovec the process may not read stops the
// copy there and sets *fault.
size_t iov_to_tx(abi::ByteRing& tx, const iovec* iov, int iovcnt, size_t skip, size_t max,
                 bool* fault = nullptr);

// Reads up to `max` bytes from in_fd into tx's free space with pread at *offset
// (advancing it) or read when offset is null. Returns bytes added, 0 at end of file
// or when tx is full, or -errno.
using PreadFn = ssize_t (*)(int, void*, size_t, off_t);
using ReadFn = ssize_t (*)(int, void*, size_t);
ssize_t file_to_tx(abi::ByteRing& tx, int in_fd, off_t* offset, size_t max, PreadFn pread_fn,
                   ReadFn read_fn);

// Sum of iov lengths, or -EINVAL when iovcnt is out of range or the sum overflows
// ssize_t (the kernel's checks).
ssize_t iov_total(const iovec* iov, int iovcnt);

}  // namespace shunt::preload
