// A region laid out by abi::Layout in a memfd, as shuntd would hand it over. Used by
// the unit tests (one mapping) and by the fake daemon (mapped by both processes).
#pragma once

#include <arpa/inet.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <new>

#include "shunt/abi.h"
#include "shunt/ring.h"

namespace shunt::test {

struct TestRegion {
  int memfd = -1;
  void* base = nullptr;
  uint64_t size = 0;
  abi::RegionHeader* hdr = nullptr;
  abi::Layout layout{};

  bool create(const abi::Layout& l, uint32_t id, uint32_t nic_ip, uint32_t prefix) {
    size = l.size();
    memfd = memfd_create("shunt-test-region", MFD_CLOEXEC);
    if (memfd < 0 || ftruncate(memfd, off_t(size)) != 0) return false;
    base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (base == MAP_FAILED) {
      base = nullptr;
      return false;
    }
    // nic_ip and the prefix come in network order here (as the header keeps them).
    hdr = abi::init_region(base, l, id, ntohl(nic_ip), prefix, 0);
    layout = l;
    return abi::region_fits(*hdr, size);
  }
  abi::SocketSlot* slot(uint32_t i) const { return abi::slot(base, layout, i); }
  abi::ByteRing rx(uint32_t i) const {
    return abi::ByteRing(&slot(i)->rx, abi::rx_bytes(base, layout, i), layout.rx_ring_size);
  }
  abi::ByteRing tx(uint32_t i) const {
    return abi::ByteRing(&slot(i)->tx, abi::tx_bytes(base, layout, i), layout.tx_ring_size);
  }
  void destroy() {
    if (base != nullptr) munmap(base, size);
    if (memfd >= 0) close(memfd);
    base = nullptr;
    memfd = -1;
  }
};

}  // namespace shunt::test
