// libFuzzer target: the protocol engine fed arbitrary sequences of frames, time
// steps and socket calls (format: engine_input.hh). The engine listens on port 80
// at 198.18.0.1 and knows the peer 198.18.0.2 by ARP; segments are built around
// the listener's and the active opens' 4-tuples with correct checksums (unless the
// input asks otherwise) and sequence numbers relative to the connection's state,
// so mutations reach the TCP state machine instead of dying at the checksum.
//
// Found as crashes: ASan (heap errors, leaks, and the engine touching an app's
// rings after it released them: those are poisoned), UBSan (all checks fatal),
// and a frame the engine sends that its own parsers reject.
//
// SHUNT_FUZZ_TRACE=1 prints each record and each segment the engine sends (to read
// what a crashing input or a seed does: fuzz_engine FILE).
//
// SHUNT_FUZZ_DRAIN=1 adds a check at the end of each input: every app socket is
// closed, the listener goes, and virtual time runs for two hours with a silent
// peer; no connection may remain (orphans must not hold slots forever).
#include <sanitizer/asan_interface.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <vector>

#include "engine/engine.hh"
#include "engine_input.hh"
#include "shunt/ring.h"
#include "wire/wire.hh"

namespace shunt::fuzz {
namespace {

constexpr wire::MacAddr kLocalMac{0x02, 0x00, 0x5e, 0x00, 0x00, 0x01};
constexpr wire::MacAddr kPeerMac{0x02, 0x00, 0x5e, 0x00, 0x00, 0x02};
constexpr wire::MacAddr kOtherMac{0x02, 0x00, 0x5e, 0x00, 0x00, 0x03};
constexpr uint64_t kListenUser = 1;
constexpr uint64_t kSlotUser0 = 16;
constexpr uint32_t kMaxRecords = 512;
constexpr size_t kFrameMax = 1514;  // mtu 1500 + Ethernet header
constexpr Time kStart = 1000 * kSecond;

bool g_trace = false;

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_engine: %s\n", what);
  std::abort();
}

class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool done() const { return pos_ >= size_; }
  uint8_t u8() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint16_t u16() { return uint16_t(u8() << 8 | u8()); }
  uint32_t u32() { return uint32_t(u16()) << 16 | u16(); }
  // Up to n bytes of input into out; the rest a pattern.
  void fill(uint8_t* out, size_t n) {
    size_t take = std::min(n, size_ - std::min(pos_, size_));
    if (take) std::memcpy(out, data_ + pos_, take);
    pos_ += take;
    for (size_t i = take; i < n; ++i) out[i] = uint8_t('a' + i % 26);
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

// Frames the engine sends, each in an exactly sized heap block (ASan sees overruns).
class Sink : public FrameSink {
 public:
  std::span<uint8_t> tx_buffer() override {
    if (starve_ > 0) {
      --starve_;
      return {};
    }
    if (!spare_) spare_.reset(new uint8_t[kFrameMax]);
    return {spare_.get(), kFrameMax};
  }
  void tx_commit(size_t len) override {
    if (!spare_) fail("tx_commit without tx_buffer");
    if (len > kFrameMax) fail("tx_commit longer than the buffer");
    frames_.push_back({std::move(spare_), len});
  }
  struct Frame {
    std::unique_ptr<uint8_t[]> bytes;
    size_t len;
  };
  std::vector<Frame> take() { return std::move(frames_); }
  void starve(uint32_t n) { starve_ = n; }

 private:
  std::unique_ptr<uint8_t[]> spare_;
  std::vector<Frame> frames_;
  uint32_t starve_ = 0;
};

// Every frame out must pass the engine's own parsers: checksums, lengths, our address.
void check_output(Sink& sink) {
  for (auto& f : sink.take()) {
    std::span<const uint8_t> frame(f.bytes.get(), f.len);
    wire::EthHeader eth;
    if (!wire::parse_eth(frame, &eth)) fail("sent a frame shorter than an Ethernet header");
    if (eth.src != kLocalMac) fail("sent a frame with another source MAC");
    auto rest = frame.subspan(wire::kEthHeader);
    if (eth.type == wire::kEtherArp) {
      wire::Arp arp;
      if (wire::parse_arp(rest, &arp) != wire::ParseError::kNone) fail("sent a malformed ARP packet");
      continue;
    }
    if (eth.type != wire::kEtherIpv4) fail("sent a frame neither ARP nor IPv4");
    wire::Ipv4 ip;
    if (wire::parse_ipv4(rest, &ip) != wire::ParseError::kNone) fail("sent an IPv4 packet its parser rejects");
    if (ip.src != kLocalIp) fail("sent an IPv4 packet from another address");
    if (ip.proto == wire::kProtoTcp) {
      wire::TcpSegment seg;
      if (wire::parse_tcp(ip, &seg) != wire::ParseError::kNone) fail("sent a TCP segment its parser rejects");
      if (g_trace)
        std::fprintf(stderr, "    out: %u > %u flags 0x%02x seq %u ack %u win %u len %zu\n", seg.src_port,
                     seg.dst_port, seg.flags, seg.seq, seg.ack, seg.window, seg.payload.size());
    } else if (ip.proto == wire::kProtoIcmp) {
      wire::Icmp icmp;
      if (wire::parse_icmp(ip.payload, &icmp) != wire::ParseError::kNone) fail("sent an ICMP message its parser rejects");
    }
  }
}

// An application's socket: rings over memory poisoned whenever the engine must not
// touch it (before attach, after release).
struct Slot {
  enum State : uint8_t { kFree, kOpen, kClosing };
  struct Mem {
    abi::RingIndices rx_idx, tx_idx;
    alignas(64) uint8_t rx[4096];
    alignas(64) uint8_t tx[16384];
  };
  Mem mem;
  ConnId conn = kInvalidId;
  State state = kFree;

  abi::ByteRing rx_ring() { return {&mem.rx_idx, mem.rx, sizeof(mem.rx)}; }
  abi::ByteRing tx_ring() { return {&mem.tx_idx, mem.tx, sizeof(mem.tx)}; }
  void poison() { ASAN_POISON_MEMORY_REGION(&mem, sizeof(mem)); }
  void unpoison() { ASAN_UNPOISON_MEMORY_REGION(&mem, sizeof(mem)); }
  void take(ConnId c) {
    unpoison();
    for (abi::RingIndices* r : {&mem.rx_idx, &mem.tx_idx}) {
      r->head.value.store(0);
      r->tail.value.store(0);
    }
    conn = c;
    state = kOpen;
  }
  void release() {
    state = kFree;
    conn = kInvalidId;
    poison();
  }
};

uint16_t l4_checksum(uint32_t src, uint32_t dst, uint8_t proto, const uint8_t* p, size_t len) {
  uint32_t sum = proto == wire::kProtoTcp ? wire::pseudo_header_sum(src, dst, proto, uint16_t(len)) : 0;
  return wire::checksum_finish(wire::checksum_add(sum, p, len));
}

class Harness {
 public:
  Harness() {
    slots_ = static_cast<Slot*>(std::aligned_alloc(64, sizeof(Slot) * kSlots));
    for (uint32_t i = 0; i < kSlots; ++i) {
      new (&slots_[i]) Slot();
      slots_[i].poison();
    }
  }

  void run(const uint8_t* data, size_t size, bool drain_check) {
    EngineConfig cfg;
    cfg.mac = kLocalMac;
    cfg.ip = kLocalIp;
    cfg.prefix_len = 24;
    cfg.max_connections = 32;
    cfg.max_listeners = 4;
    cfg.staging_buffers = 4;
    cfg.staging_size = 4096;
    cfg.isn_secret = 0x5eed;
    now_ = kStart;
    engine_ = std::make_unique<Engine>(cfg, sink_);
    listening_ = engine_->listen(kListenPort, 16, kListenUser, &listener_) == 0;
    input_arp(1, kPeerIp, kPeerMac);
    end_batch();

    Reader in(data, size);
    for (uint32_t n = 0; n < kMaxRecords && !in.done(); ++n) {
      uint8_t op = in.u8();
      record(Op((op & 0x7f) % kOpCount), in);
      if (g_trace) trace(Op((op & 0x7f) % kOpCount));
      if (op & kEndBatch) end_batch();
    }
    end_batch();
    if (drain_check) drain();

    engine_.reset();
    sink_.take();
    sink_.starve(0);
    for (uint32_t i = 0; i < kSlots; ++i)
      if (slots_[i].state != Slot::kFree) slots_[i].release();
  }

 private:
  Engine& eng() { return *engine_; }

  void end_batch() {
    eng().poll(now_);
    eng().flush(now_);
    eng().drain_events([&](uint64_t user, uint32_t ev) {
      if (user < kSlotUser0 || user >= kSlotUser0 + kSlots) return;
      Slot& s = slots_[user - kSlotUser0];
      // The engine is done with the rings only after the app closed them.
      if ((ev & kEvDetached) && s.state == Slot::kClosing) s.release();
    });
    check_output(sink_);
  }

  void trace(Op op) {
    static constexpr const char* kNames[] = {"tcp",   "raw",     "advance", "accept",  "write", "read",   "close",
                                             "shutdown", "connect", "arp",  "icmp", "listen", "starve"};
    std::fprintf(stderr, "%-8s t=%llu live=%u", kNames[op], (unsigned long long)(now_ - kStart), eng().live_connections());
    for (uint32_t i = 0; i < kSlots; ++i)
      if (slots_[i].state == Slot::kOpen && slots_[i].conn != kInvalidId)
        std::fprintf(stderr, " [%u %s]", i, state_name(eng().tcb(slots_[i].conn).state));
    std::fprintf(stderr, "\n");
  }

  Slot* slot(uint8_t i) {
    Slot& s = slots_[i % kSlots];
    return s.state == Slot::kOpen ? &s : nullptr;
  }
  int free_slot() const {
    for (uint32_t i = 0; i < kSlots; ++i)
      if (slots_[i].state == Slot::kFree) return int(i);
    return -1;
  }

  void record(Op op, Reader& in) {
    switch (op) {
      case kTcp: input_tcp(in); break;
      case kRaw: input_raw(in); break;
      case kAdvance: {
        uint16_t d = in.u16();
        static constexpr Time kUnit[4] = {1, kMillisecond, 100 * kMillisecond, 10 * kSecond};
        now_ += Time(d >> 2) * kUnit[d & 3];
        end_batch();
        break;
      }
      case kAccept: {
        int i = free_slot();
        if (i < 0 || !listening_) break;
        ConnId c = eng().accept(listener_);
        if (c == kInvalidId) break;
        Slot& s = slots_[i];
        s.take(c);
        eng().attach(c, abi::ProducerEnd(s.rx_ring()), abi::ConsumerEnd(s.tx_ring()),
                     kSlotUser0 + uint64_t(i));
        break;
      }
      case kWrite: {
        Slot* s = slot(in.u8());
        uint16_t len = in.u16() % 32768;
        if (!s) break;
        uint8_t buf[32768];
        for (uint32_t k = 0; k < len; ++k) buf[k] = uint8_t(k * 7);
        s->tx_ring().write(buf, len);
        eng().tx_ready(s->conn);
        break;
      }
      case kRead: {
        Slot* s = slot(in.u8());
        uint16_t len = in.u16();
        if (!s) break;
        uint8_t buf[65536];
        s->rx_ring().read(buf, len);
        eng().rx_drained(s->conn);
        break;
      }
      case kClose: {
        Slot* s = slot(in.u8());
        uint8_t how = in.u8();
        if (!s) break;
        s->state = Slot::kClosing;
        if (eng().close(s->conn, how & 1, now_)) s->release();
        break;
      }
      case kShutdown: {
        Slot* s = slot(in.u8());
        if (s) eng().shutdown_write(s->conn);
        break;
      }
      case kConnect: {
        uint8_t b = in.u8();
        int i = free_slot();
        if (i < 0) break;
        Slot& s = slots_[i];
        s.take(kInvalidId);
        ConnId c = kInvalidId;
        uint32_t dst = (b & 0x10) ? kOffLinkIp : kPeerIp;
        int rc = eng().connect(uint16_t(40000 + (b & 3)), dst, uint16_t(443 + ((b >> 2) & 1)),
                               abi::ProducerEnd(s.rx_ring()), abi::ConsumerEnd(s.tx_ring()),
                               kSlotUser0 + uint64_t(i), now_, &c);
        if (rc != 0 || c == kInvalidId) {
          s.release();
        } else {
          s.conn = c;
        }
        break;
      }
      case kArp: {
        uint8_t b = in.u8();
        input_arp((b & 1) ? 1 : 2, (b & 2) ? kOtherIp : kPeerIp, (b & 2) ? kOtherMac : kPeerMac);
        break;
      }
      case kIcmp: {
        uint16_t len = in.u16() % 1473;
        std::vector<uint8_t> f(wire::kEthHeader + wire::kIpv4Header + 8 + len);
        uint8_t* icmp = f.data() + wire::kEthHeader + wire::kIpv4Header;
        icmp[0] = 8;
        in.fill(icmp + 4, 4 + len);
        wire::store16(icmp + 2, l4_checksum(0, 0, wire::kProtoIcmp, icmp, 8 + len));
        wire::write_ipv4(f.data() + wire::kEthHeader, kPeerIp, kLocalIp, wire::kProtoIcmp, uint16_t(8 + len), 7);
        wire::write_eth(f.data(), kLocalMac, kPeerMac, wire::kEtherIpv4);
        eng().input(f, now_);
        break;
      }
      case kListen: {
        uint8_t b = in.u8();
        if ((b & 1) && listening_) {
          eng().unlisten(listener_);
          listening_ = false;
        } else if (!(b & 1) && !listening_) {
          listening_ = eng().listen(kListenPort, b >> 1, kListenUser, &listener_) == 0;
        }
        break;
      }
      case kStarve: sink_.starve(in.u8() % 64); break;
      case kOpCount: break;
    }
  }

  void input_arp(uint16_t op, uint32_t sender_ip, const wire::MacAddr& sender_mac) {
    uint8_t f[60] = {};
    wire::write_eth(f, op == 1 ? wire::kBroadcastMac : kLocalMac, sender_mac, wire::kEtherArp);
    wire::write_arp(f + wire::kEthHeader, wire::Arp{.op = op,
                                                    .sender_mac = sender_mac,
                                                    .sender_ip = sender_ip,
                                                    .target_mac = op == 1 ? wire::MacAddr{} : kLocalMac,
                                                    .target_ip = kLocalIp});
    eng().input(std::span<const uint8_t>(f, sizeof(f)), now_);
  }

  void input_tcp(Reader& in) {
    uint8_t sel = in.u8();
    uint8_t flags = in.u8();
    uint8_t mode = in.u8();
    uint16_t lport, rport;
    if (!(sel & 4)) {
      lport = kListenPort;
      rport = uint16_t(49152 + (sel & 3));
    } else {
      lport = uint16_t(40000 + (sel & 3));
      rport = uint16_t(443 + ((sel >> 3) & 1));
    }
    bool other = sel & 0x40;
    uint32_t src = other ? kOtherIp : kPeerIp;
    ConnId c = eng().find(src, rport, lport);
    const Tcb* t = c != kInvalidId ? &eng().tcb(c) : nullptr;

    uint32_t seq, ack;
    if ((mode & 3) == 1) {
      seq = in.u32();
    } else {
      int16_t d = int16_t(in.u16());
      uint32_t base = !t ? kPeerIsn
                      : (mode & 3) == 0 ? t->rcv.nxt.raw()
                      : (mode & 3) == 2 ? t->irs.raw()
                                        : t->rcv.nxt.raw() + 65535;
      seq = base + uint32_t(int32_t(d));
    }
    if (((mode >> 2) & 3) == 1) {
      ack = in.u32();
    } else {
      int16_t d = int16_t(in.u16());
      uint32_t m = (mode >> 2) & 3;
      uint32_t base = !t ? 0 : m == 0 ? t->snd.nxt.raw() : m == 2 ? t->snd.una.raw() : t->snd.max.raw();
      ack = base + uint32_t(int32_t(d));
    }
    uint16_t window = in.u16();
    uint32_t optlen = in.u8() % 41;
    uint32_t optpad = (optlen + 3) & ~3u;
    uint8_t opts[40] = {};  // padding stays EOL (0)
    in.fill(opts, optlen);
    uint32_t paylen = in.u16() % 1461;
    uint32_t tcplen = wire::kTcpHeader + optpad + paylen;
    std::vector<uint8_t> f(wire::kEthHeader + wire::kIpv4Header + tcplen, 0);
    uint8_t* p = f.data() + wire::kEthHeader + wire::kIpv4Header;
    wire::store16(p, rport);
    wire::store16(p + 2, lport);
    wire::store32(p + 4, seq);
    wire::store32(p + 8, ack);
    p[12] = uint8_t(((wire::kTcpHeader + optpad) / 4) << 4);
    p[13] = flags;
    wire::store16(p + 14, window);
    std::memcpy(p + wire::kTcpHeader, opts, optpad);
    in.fill(p + wire::kTcpHeader + optpad, paylen);
    uint16_t sum = l4_checksum(src, kLocalIp, wire::kProtoTcp, p, tcplen);
    if (sel & 0x80) sum ^= 0x5a5a;
    wire::store16(p + 16, sum);
    wire::write_ipv4(f.data() + wire::kEthHeader, src, kLocalIp, wire::kProtoTcp, uint16_t(tcplen), 9);
    wire::write_eth(f.data(), kLocalMac, other ? kOtherMac : kPeerMac, wire::kEtherIpv4);
    Drop d = eng().input(f, now_);
    if (g_trace) std::fprintf(stderr, "    in: %u > %u flags 0x%02x seq %u ack %u len %u: %s\n", rport, lport, flags, seq, ack,
                              paylen, drop_name(d));
  }

  void input_raw(Reader& in) {
    uint16_t len = in.u16() % 1601;
    uint8_t fix = in.u8();
    std::vector<uint8_t> f(len);
    in.fill(f.data(), len);
    if (len >= wire::kEthHeader) {
      if (fix & 4) std::memcpy(f.data(), kLocalMac.data(), 6);
      uint8_t* ip = f.data() + wire::kEthHeader;
      size_t avail = len - wire::kEthHeader;
      if (wire::load16(f.data() + 12) == wire::kEtherIpv4 && avail >= wire::kIpv4Header) {
        size_t ihl = size_t(ip[0] & 0xf) * 4;
        if (fix & 8) {
          wire::store32(ip + 12, kPeerIp);
          wire::store32(ip + 16, kLocalIp);
        }
        if ((fix & 1) && ihl >= wire::kIpv4Header && ihl <= avail) {
          wire::store16(ip + 10, 0);
          wire::store16(ip + 10, wire::checksum_finish(wire::checksum_add(0, ip, ihl)));
        }
        size_t total = wire::load16(ip + 2);
        if ((fix & 2) && ihl >= wire::kIpv4Header && total >= ihl && total <= avail) {
          uint8_t* l4 = ip + ihl;
          size_t l4len = total - ihl;
          uint32_t s = wire::load32(ip + 12), d = wire::load32(ip + 16);
          if (ip[9] == wire::kProtoTcp && l4len >= wire::kTcpHeader) {
            wire::store16(l4 + 16, 0);
            wire::store16(l4 + 16, l4_checksum(s, d, wire::kProtoTcp, l4, l4len));
          } else if (ip[9] == wire::kProtoIcmp && l4len >= 4) {
            wire::store16(l4 + 2, 0);
            wire::store16(l4 + 2, l4_checksum(s, d, wire::kProtoIcmp, l4, l4len));
          }
        }
      }
    }
    eng().input(f, now_);
  }

  // Closes everything, then lets two hours pass with a silent peer: nothing may remain.
  void drain() {
    for (uint32_t i = 0; i < kSlots; ++i) {
      Slot& s = slots_[i];
      if (s.state != Slot::kOpen) continue;
      s.state = Slot::kClosing;
      if (eng().close(s.conn, false, now_)) s.release();
    }
    if (listening_) eng().unlisten(listener_);
    listening_ = false;
    end_batch();
    for (int i = 0; i < 720 && eng().live_connections() > 0; ++i) {
      now_ += 10 * kSecond;
      end_batch();
    }
    if (eng().live_connections() == 0) return;
    std::fprintf(stderr, "fuzz_engine: %u connections left after 2 h with every socket closed:\n",
                 eng().live_connections());
    for (uint32_t ip : {kPeerIp, kOtherIp})
      for (uint16_t r = 0; r < 4; ++r) {
        uint16_t tuples[3][2] = {{uint16_t(49152 + r), kListenPort},
                                 {443, uint16_t(40000 + r)},
                                 {444, uint16_t(40000 + r)}};
        for (auto& tp : tuples) {
          ConnId c = eng().find(ip, tp[0], tp[1]);
          if (c == kInvalidId) continue;
          const Tcb& t = eng().tcb(c);
          std::fprintf(stderr, "  %08x:%u -> :%u %s snd.una=%u snd.nxt=%u snd.max=%u rcv.nxt=%u user_closed=%d\n", ip,
                       tp[0], tp[1], state_name(t.state), t.snd.una.raw(), t.snd.nxt.raw(), t.snd.max.raw(),
                       t.rcv.nxt.raw(), int(t.user_closed));
        }
      }
    fail("connections outlive their sockets (orphans never time out)");
  }

  Sink sink_;
  std::unique_ptr<Engine> engine_;
  Slot* slots_;
  Time now_ = kStart;
  ListenerId listener_ = kInvalidId;
  bool listening_ = false;
};

}  // namespace
}  // namespace shunt::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static shunt::fuzz::Harness* harness = new shunt::fuzz::Harness();
  static const bool trace = [] {
    const char* v = std::getenv("SHUNT_FUZZ_TRACE");
    return shunt::fuzz::g_trace = v && *v && *v != '0';
  }();
  (void)trace;
  static const bool drain = [] {
    const char* v = std::getenv("SHUNT_FUZZ_DRAIN");
    return v && *v && *v != '0';
  }();
  harness->run(data, size, drain);
  return 0;
}
