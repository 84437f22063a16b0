// A region laid out by abi::Layout in a memfd, as shuntd would hand it over. Used by
// the unit tests (one mapping) and by the fake daemon (mapped by both processes).
#pragma once

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

  bool create(const abi::Layout& l, uint32_t id, uint32_t nic_ip, uint32_t prefix) {
    size = l.size();
    memfd = memfd_create("shunt-test-region", MFD_CLOEXEC);
    if (memfd < 0 || ftruncate(memfd, off_t(size)) != 0) return false;
    base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (base == MAP_FAILED) {
      base = nullptr;
      return false;
    }
    hdr = new (base) abi::RegionHeader{};
    hdr->magic = abi::kMagic;
    hdr->version = abi::kVersion;
    hdr->size = size;
    hdr->region_id = id;
    hdr->queue_pair_count = l.queue_pair_count;
    hdr->slot_count = l.slot_count;
    hdr->rx_ring_size = l.rx_ring_size;
    hdr->tx_ring_size = l.tx_ring_size;
    hdr->nic_ip = nic_ip;
    hdr->nic_prefix_len = prefix;
    hdr->queues_offset = l.queues_offset();
    hdr->slots_offset = l.slots_offset();
    hdr->rings_offset = l.rings_offset();
    for (uint32_t i = 0; i < l.queue_pair_count; ++i) new (abi::queue_pair(base, *hdr, i)) abi::QueuePair;
    for (uint32_t i = 0; i < l.slot_count; ++i) new (abi::slot(base, *hdr, i)) abi::SocketSlot{};
    return abi::region_fits(*hdr, size);
  }
  abi::SocketSlot* slot(uint32_t i) const { return abi::slot(base, *hdr, i); }
  abi::ByteRing rx(uint32_t i) const {
    return abi::ByteRing(&slot(i)->rx, abi::rx_bytes(base, *hdr, i), hdr->rx_ring_size);
  }
  abi::ByteRing tx(uint32_t i) const {
    return abi::ByteRing(&slot(i)->tx, abi::tx_bytes(base, *hdr, i), hdr->tx_ring_size);
  }
  void destroy() {
    if (base != nullptr) munmap(base, size);
    if (memfd >= 0) close(memfd);
    base = nullptr;
    memfd = -1;
  }
};

}  // namespace shunt::test
