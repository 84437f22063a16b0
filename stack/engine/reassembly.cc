#include "engine/reassembly.hh"

#include <cstring>

namespace shunt {

namespace {
void count(uint64_t* drops, Drop d) { ++drops[static_cast<size_t>(d)]; }
}  // namespace

Reassembly::Reassembly(uint32_t contexts, uint64_t timeout_us)
    : count_(contexts == 0 ? 1 : contexts), timeout_(timeout_us) {}

void Reassembly::release(uint32_t i) {
  if (!ctx_[i].used) return;
  ctx_[i].used = false;
  --in_use_;
}

Drop Reassembly::add(const Fragment& f, uint64_t now, uint64_t* drops, bool* complete,
                     Reassembled* out) {
  *complete = false;
  const size_t len = f.payload.size();
  const uint32_t end = f.offset + uint32_t(len);
  // RFC 791: every fragment but the last carries a multiple of 8 bytes. Empty
  // fragments carry nothing to keep (Linux ignores them too).
  if (len == 0 || (f.more && (len % 8) != 0)) return Drop::kIpFragMalformed;
  if (end > kMaxPayload) return Drop::kIpFragTooBig;  // the "ping of death"
  if (ctx_.empty()) {
    ctx_.resize(count_);
    buffers_.resize(size_t(count_) * kBufferSize);
  }

  // Find the datagram's context (RFC 791: src, dst, protocol, id), expiring stale
  // ones on the way, and remember a free one and the oldest.
  uint32_t found = count_, free_i = count_, oldest = count_;
  for (uint32_t i = 0; i < count_; ++i) {
    Context& c = ctx_[i];
    if (c.used && now - c.created >= timeout_) {
      release(i);
      count(drops, Drop::kIpFragTimeout);
    }
    if (!c.used) {
      if (free_i == count_) free_i = i;
      continue;
    }
    if (c.src == f.src && c.dst == f.dst && c.proto == f.proto && c.id == f.id) found = i;
    if (oldest == count_ || c.created < ctx_[oldest].created) oldest = i;
  }
  if (found == count_) {
    if (free_i == count_) {
      release(oldest);
      count(drops, Drop::kIpFragEvicted);
      free_i = oldest;
    }
    found = free_i;
    Context& c = ctx_[found];
    c.used = true;
    ++in_use_;
    c.src = f.src;
    c.dst = f.dst;
    c.proto = f.proto;
    c.id = f.id;
    c.created = now;
    c.total = 0;
    c.have_last = false;
    c.received = 0;
    c.nfrags = 0;
    c.ttl = f.ttl;
    c.tos = f.tos;
  }
  Context& c = ctx_[found];

  // The end of the datagram: a last fragment fixes it; nothing may lie beyond it,
  // and a second last fragment must agree (Linux ip_frag_queue: "corrupted").
  if (!f.more) {
    bool past = c.nfrags > 0 && c.frags[c.nfrags - 1].end > end;
    if ((c.have_last && c.total != end) || past) {
      release(found);
      return Drop::kIpFragOverlap;
    }
  } else if (c.have_last && end > c.total) {
    release(found);
    return Drop::kIpFragOverlap;
  }

  // Where it goes among the ranges held (ordered, disjoint).
  uint32_t pos = 0;
  while (pos < c.nfrags && c.frags[pos].start < f.offset) ++pos;
  auto overlaps = [&](uint32_t i) {
    return i < c.nfrags && c.frags[i].start < end && f.offset < c.frags[i].end;
  };
  for (uint32_t i : {pos == 0 ? 0u : pos - 1, pos}) {
    if (!overlaps(i)) continue;
    if (c.frags[i].start == f.offset && c.frags[i].end == end) return Drop::kIpFragDuplicate;
    release(found);  // RFC 5722: an overlapping fragment discards the whole datagram
    return Drop::kIpFragOverlap;
  }
  if (c.nfrags == kMaxFragments) {
    release(found);
    return Drop::kIpFragTooMany;
  }
  std::memmove(&c.frags[pos + 1], &c.frags[pos], (c.nfrags - pos) * sizeof(Range));
  c.frags[pos] = Range{uint16_t(f.offset), uint16_t(end)};
  ++c.nfrags;
  std::memcpy(buffer(found) + f.offset, f.payload.data(), len);
  c.received += uint32_t(len);
  if (!f.more) {
    c.have_last = true;
    c.total = end;
  }
  if (f.offset == 0) {  // RFC 791: the first fragment's header is the datagram's
    c.ttl = f.ttl;
    c.tos = f.tos;
  }
  // Disjoint ranges inside [0, total) whose sizes add up to total cover it all.
  if (c.have_last && c.received == c.total) {
    *complete = true;
    *out = Reassembled{.src = c.src,
                       .dst = c.dst,
                       .proto = c.proto,
                       .ttl = c.ttl,
                       .tos = c.tos,
                       .id = c.id,
                       .payload = {buffer(found), c.total}};
    release(found);  // the buffer stays valid until the next add()
  }
  return Drop::kNone;
}

}  // namespace shunt
