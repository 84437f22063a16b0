// The engine fuzzer's input format, shared by the harness (fuzz_engine.cc) and the
// seed-corpus generator (make_corpus.cc).
//
// An input is a sequence of records, each one opcode byte and its arguments; a
// reader past the end reads zeros, so every byte string is a valid input. The
// opcode's low 7 bits (mod kOpCount) pick the record; its high bit (kEndBatch)
// ends the batch after it: poll(now), flush(now), drain_events, check output —
// otherwise records accumulate in one batch, as frames of one rx burst do.
//
//   kTcp      sel flags seqmode seq ack window(2) optlen opts[optlen] paylen(2) payload
//             sel: bit 2 clear: local port 80 (the listener), remote port
//             49152 + (sel & 3); bit 2 set: local port 40000 + (sel & 3), remote
//             port 443 + (sel >> 3 & 1) (the harness's active opens). Bit 6: the
//             segment comes from a second host on the subnet. Bit 7: the TCP
//             checksum is left wrong (every other segment gets correct checksums).
//             seqmode bits 0-1: seq = 0 rcv.nxt + (int16)seq, 1 raw u32, 2 irs +
//             (int16)seq, 3 rcv.nxt + 65535 + (int16)seq; bits 2-3: ack =
//             0 snd.nxt + (int16)ack, 1 raw u32, 2 snd.una + (int16)ack, 3 snd.max +
//             (int16)ack. Relative fields are 2 bytes, raw ones 4 (big endian).
//             With no connection for the tuple, relative values count from kPeerIsn
//             (seq) and 0 (ack). optlen is taken mod 41 and padded with EOL bytes to
//             a multiple of 4; paylen mod 1461. Short input: payload bytes are a
//             pattern.
//   kRaw      len(2) fix bytes[len]: a frame as is (len mod 1601); fix bit 0: write
//             the IPv4 header checksum, bit 1: the TCP/ICMP checksum, bit 2: our MAC
//             as destination, bit 3: IPv4 addresses from the peer to us.
//   kAdvance  d(2): time passes by (d >> 2) units of 1 µs, 1 ms, 100 ms or 10 s
//             (d & 3); then poll and flush (the batch ends).
//   kAccept   -: accept one connection from the listener into a free app slot.
//   kWrite    slot len(2): the app writes len (mod 32768) bytes; tx_ready.
//   kRead     slot len(2): the app reads up to len bytes; rx_drained.
//   kClose    slot how: close(abort = how & 1).
//   kShutdown slot: shutdown_write.
//   kConnect  b: connect from port 40000 + (b & 3) to the peer's port 443 + (b >> 2 & 1)
//             (b & 0x10: to an address off the subnet, which has no route).
//   kArp      b: the peer's ARP request (b & 1) or reply; b & 2: from another host.
//   kIcmp     len(2): an echo request with len (mod 1473) bytes of data.
//   kListen   b: b & 1: stop listening on port 80, else listen again (backlog b >> 1).
//   kStarve   n: the sink has no buffer for the next n frames (tx ring full).
#pragma once

#include <cstdint>
#include <vector>

namespace shunt::fuzz {

enum Op : uint8_t {
  kTcp,
  kRaw,
  kAdvance,
  kAccept,
  kWrite,
  kRead,
  kClose,
  kShutdown,
  kConnect,
  kArp,
  kIcmp,
  kListen,
  kStarve,
  kOpCount
};
inline constexpr uint8_t kEndBatch = 0x80;

inline constexpr uint32_t kLocalIp = 0xc6120001;   // 198.18.0.1
inline constexpr uint32_t kPeerIp = 0xc6120002;    // 198.18.0.2
inline constexpr uint32_t kOtherIp = 0xc6120003;   // 198.18.0.3
inline constexpr uint32_t kOffLinkIp = 0xc6130009; // 198.19.0.9: no gateway, no route
inline constexpr uint16_t kListenPort = 80;
inline constexpr uint32_t kPeerIsn = 0xfffff000u;  // near the wrap on purpose
inline constexpr uint32_t kSlots = 8;              // app sockets at once

// Helpers to write inputs (the corpus generator).
struct Writer {
  std::vector<uint8_t> out;
  Writer& u8(uint8_t v) {
    out.push_back(v);
    return *this;
  }
  Writer& u16(uint16_t v) { return u8(uint8_t(v >> 8)).u8(uint8_t(v)); }
  Writer& u32(uint32_t v) { return u16(uint16_t(v >> 16)).u16(uint16_t(v)); }
  Writer& bytes(const std::vector<uint8_t>& b) {
    out.insert(out.end(), b.begin(), b.end());
    return *this;
  }
  Writer& op(Op o, bool end_batch = true) { return u8(uint8_t(o | (end_batch ? kEndBatch : 0))); }
};

}  // namespace shunt::fuzz
