// Test harness for the I/O-free engine: one Engine at 198.18.0.1 talking to a
// scripted peer at 198.18.0.2. Tests write the peer's segments as designated
// initializers and read the engine's output back as the same Seg type, so a
// test reads like a packet trace:
//
//   recv(Seg{.seq = kRemoteIsn, .flags = kSyn, .mss = kPeerMss});
//   Seg synack = sent_one();
//   EXPECT_EQ(synack.flags, kSyn | kAck);
//
// Every frame the engine emits is parsed with the wire parsers, so its Ethernet,
// IPv4 and TCP checksums and lengths are verified on the way.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "engine/engine.hh"

namespace shunt {
// Failures print names, not bytes.
inline void PrintTo(Drop d, std::ostream* os) { *os << "Drop::" << drop_name(d); }
inline void PrintTo(TcpState s, std::ostream* os) { *os << state_name(s); }
}  // namespace shunt

namespace shunt::test {

using wire::kAck;
using wire::kFin;
using wire::kPsh;
using wire::kRst;
using wire::kSyn;
using wire::kUrg;

constexpr uint32_t ip4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  return uint32_t(a) << 24 | uint32_t(b) << 16 | uint32_t(c) << 8 | d;
}

inline constexpr uint32_t kLocalIp = ip4(198, 18, 0, 1);
inline constexpr uint32_t kRemoteIp = ip4(198, 18, 0, 2);
inline constexpr wire::MacAddr kLocalMac{0x02, 0x00, 0x5e, 0x00, 0x00, 0x01};
inline constexpr wire::MacAddr kRemoteMac{0x02, 0x00, 0x5e, 0x00, 0x00, 0x02};
inline constexpr wire::MacAddr kOtherMac{0x02, 0x00, 0x5e, 0x00, 0x00, 0x99};
inline constexpr uint16_t kLocalPort = 80;
inline constexpr uint16_t kRemotePort = 49152;
// The peer's ISN sits 16 below 2^32: its 16th data byte has sequence number 0.
inline constexpr uint32_t kRemoteIsn = 0xfffffff0u;
// Our ISN in the established fixtures is pushed this close to 2^32 (see
// time_for_isn), so our own data wraps too.
inline constexpr uint32_t kLocalIsnTarget = 0xffffff00u;
inline constexpr uint16_t kPeerMss = 1000;
inline constexpr uint16_t kOurMss = 1460;  // mtu 1500 - 40
inline constexpr uint64_t kUser = 7;
inline constexpr uint64_t kListenUser = 9;
inline constexpr Time kT0 = 1000 * kSecond;

// One RFC 2018 SACK block [left, right).
struct SackBlock {
  uint32_t left = 0, right = 0;
  bool operator==(const SackBlock&) const = default;
};

// A TCP segment as the peer writes it, or as the engine sent it. The RFC 7323
// and RFC 2018 options after `payload` are absent unless a test sets them.
struct Seg {
  uint16_t src_port = kRemotePort;
  uint16_t dst_port = kLocalPort;
  uint32_t seq = 0;
  uint32_t ack = 0;
  uint8_t flags = 0;
  uint16_t window = 65535;
  uint16_t mss = 0;
  std::string payload;
  int8_t wscale = -1;           // window scale option, -1 = absent
  bool sack_permitted = false;
  bool ts = false;              // timestamps option present
  uint32_t tsval = 0;
  uint32_t tsecr = 0;
  std::vector<SackBlock> sack;  // SACK blocks, first = first on the wire

  uint32_t seq_len() const {
    return uint32_t(payload.size()) + ((flags & kSyn) ? 1 : 0) + ((flags & kFin) ? 1 : 0);
  }
};

inline std::string flags_str(uint8_t f) {
  static constexpr struct { uint8_t bit; const char* name; } kNames[] = {
      {kSyn, "SYN"}, {kFin, "FIN"}, {kRst, "RST"}, {kPsh, "PSH"}, {kAck, "ACK"}, {kUrg, "URG"}};
  std::string s;
  for (auto [bit, name] : kNames)
    if (f & bit) {
      if (!s.empty()) s += '|';
      s += name;
    }
  return s.empty() ? "none" : s;
}

inline std::ostream& operator<<(std::ostream& os, const Seg& s) {
  os << s.src_port << ">" << s.dst_port << " " << flags_str(s.flags) << " seq=" << s.seq
     << " ack=" << s.ack << " win=" << s.window;
  if (s.mss) os << " mss=" << s.mss;
  if (s.wscale >= 0) os << " ws=" << int(s.wscale);
  if (s.sack_permitted) os << " sackOK";
  if (s.ts) os << " ts=" << s.tsval << "/" << s.tsecr;
  for (const SackBlock& b : s.sack) os << " sack=" << b.left << "-" << b.right;
  return os << " len=" << s.payload.size();
}

inline std::string trace(const std::vector<Seg>& segs) {
  std::ostringstream os;
  for (const Seg& s : segs) os << "\n  " << s;
  return segs.empty() ? "\n  (nothing)" : os.str();
}

// ---- Frame builders (the peer's side) ----

inline std::vector<uint8_t> tcp_frame(const Seg& s, uint32_t src_ip = kRemoteIp,
                                      uint32_t dst_ip = kLocalIp,
                                      const wire::MacAddr& dst_mac = kLocalMac,
                                      const wire::MacAddr& src_mac = kRemoteMac) {
  wire::TcpSegment t{.src_ip = src_ip,
                     .dst_ip = dst_ip,
                     .src_port = s.src_port,
                     .dst_port = s.dst_port,
                     .seq = s.seq,
                     .ack = s.ack,
                     .flags = s.flags,
                     .window = s.window,
                     .mss = s.mss,
                     .wscale = s.wscale,
                     .sack_permitted = s.sack_permitted,
                     .has_ts = s.ts,
                     .tsval = s.tsval,
                     .tsecr = s.tsecr};
  t.sack_count = uint8_t(std::min<size_t>(s.sack.size(), wire::kMaxSackBlocks));
  for (uint8_t i = 0; i < t.sack_count; ++i) t.sack[i] = {s.sack[i].left, s.sack[i].right};
  size_t hlen = wire::tcp_header_len(t);
  std::vector<uint8_t> f(wire::kEthHeader + wire::kIpv4Header + hlen + s.payload.size());
  uint8_t* p = f.data() + wire::kEthHeader + wire::kIpv4Header;
  std::memcpy(p + hlen, s.payload.data(), s.payload.size());
  t.payload = {p + hlen, s.payload.size()};
  wire::write_tcp(p, t);
  wire::write_ipv4(f.data() + wire::kEthHeader, src_ip, dst_ip, wire::kProtoTcp,
                   uint16_t(hlen + s.payload.size()), 0x4242);
  wire::write_eth(f.data(), dst_mac, src_mac, wire::kEtherIpv4);
  return f;
}

inline std::vector<uint8_t> arp_frame(uint16_t op, const wire::MacAddr& sender_mac,
                                      uint32_t sender_ip, const wire::MacAddr& target_mac,
                                      uint32_t target_ip,
                                      const wire::MacAddr& eth_dst = wire::kBroadcastMac) {
  std::vector<uint8_t> f(60, 0);
  wire::write_eth(f.data(), eth_dst, sender_mac, wire::kEtherArp);
  wire::write_arp(f.data() + wire::kEthHeader, wire::Arp{.op = op,
                                                         .sender_mac = sender_mac,
                                                         .sender_ip = sender_ip,
                                                         .target_mac = target_mac,
                                                         .target_ip = target_ip});
  return f;
}

// An IPv4 frame carrying `payload` as protocol `proto` (ICMP and friends).
inline std::vector<uint8_t> ip_frame(uint8_t proto, const std::vector<uint8_t>& payload,
                                     uint32_t src_ip = kRemoteIp, uint32_t dst_ip = kLocalIp,
                                     const wire::MacAddr& dst_mac = kLocalMac) {
  std::vector<uint8_t> f(wire::kEthHeader + wire::kIpv4Header + payload.size());
  wire::write_eth(f.data(), dst_mac, kRemoteMac, wire::kEtherIpv4);
  wire::write_ipv4(f.data() + wire::kEthHeader, src_ip, dst_ip, proto, uint16_t(payload.size()),
                   0x4343);
  std::memcpy(f.data() + wire::kEthHeader + wire::kIpv4Header, payload.data(), payload.size());
  return f;
}

inline std::vector<uint8_t> icmp_echo(uint8_t type, uint16_t id, uint16_t seqno,
                                      std::string_view data) {
  std::vector<uint8_t> m(8 + data.size());
  m[0] = type;
  wire::store16(m.data() + 4, id);
  wire::store16(m.data() + 6, seqno);
  std::memcpy(m.data() + 8, data.data(), data.size());
  wire::store16(m.data() + 2, wire::checksum_finish(wire::checksum_add(0, m.data(), m.size())));
  return m;
}

// ---- Frame parsers (the engine's output) ----

struct TcpFrame {
  wire::EthHeader eth;
  uint32_t src_ip = 0, dst_ip = 0;
  Seg seg;
};

// Parses a frame as Ethernet/IPv4/TCP with every check the engine's own input
// makes; nullopt when it is anything else or malformed.
inline std::optional<TcpFrame> parse_tcp_frame(const std::vector<uint8_t>& f) {
  TcpFrame out;
  if (!wire::parse_eth(f, &out.eth) || out.eth.type != wire::kEtherIpv4) return std::nullopt;
  wire::Ipv4 ip;
  if (wire::parse_ipv4(std::span(f).subspan(wire::kEthHeader), &ip) != wire::ParseError::kNone ||
      ip.proto != wire::kProtoTcp)
    return std::nullopt;
  wire::TcpSegment t;
  if (wire::parse_tcp(ip, &t) != wire::ParseError::kNone) return std::nullopt;
  out.src_ip = ip.src;
  out.dst_ip = ip.dst;
  out.seg = Seg{.src_port = t.src_port,
                .dst_port = t.dst_port,
                .seq = t.seq,
                .ack = t.ack,
                .flags = t.flags,
                .window = t.window,
                .mss = t.mss,
                .payload = std::string(t.payload.begin(), t.payload.end()),
                .wscale = t.wscale,
                .sack_permitted = t.sack_permitted,
                .ts = t.has_ts,
                .tsval = t.tsval,
                .tsecr = t.tsecr};
  for (uint8_t i = 0; i < t.sack_count; ++i) out.seg.sack.push_back({t.sack[i][0], t.sack[i][1]});
  return out;
}

inline std::optional<wire::Arp> parse_arp_frame(const std::vector<uint8_t>& f,
                                                wire::EthHeader* eth = nullptr) {
  wire::EthHeader e;
  if (!wire::parse_eth(f, &e) || e.type != wire::kEtherArp) return std::nullopt;
  wire::Arp a;
  if (wire::parse_arp(std::span(f).subspan(wire::kEthHeader), &a) != wire::ParseError::kNone)
    return std::nullopt;
  if (eth) *eth = e;
  return a;
}

// ---- Sinks and rings ----

class CollectSink : public FrameSink {
 public:
  static constexpr size_t kBufSize = 1514;

  std::span<uint8_t> tx_buffer() override {
    if (starved) return {};
    buf_.assign(kBufSize, 0xee);  // poison: unwritten bytes show up in tests
    return buf_;
  }
  void tx_commit(size_t len) override {
    if (len > kBufSize) ADD_FAILURE() << "tx_commit(" << len << ") past the buffer";
    frames.emplace_back(buf_.begin(), buf_.begin() + std::min(len, kBufSize));
  }

  std::vector<std::vector<uint8_t>> frames;
  bool starved = false;

 private:
  std::vector<uint8_t> buf_;
};

// An application's rx/tx byte rings over plain memory.
// With `initial`, both rings start at that size and may grow to their whole
// memory, as a daemon's do (geometry and limit words, abi.h).
struct AppRings {
  explicit AppRings(uint32_t rx_cap = 4096, uint32_t tx_cap = 16384, uint32_t initial = 0)
      : rx_bytes(rx_cap), tx_bytes(tx_cap), initial(initial) {}
  AppRings(const AppRings&) = delete;
  AppRings& operator=(const AppRings&) = delete;

  abi::ByteRing rx() {
    return {&rx_idx, rx_bytes.data(), uint32_t(rx_bytes.size()), &rx_geometry, &rx_limit};
  }
  abi::ByteRing tx() {
    return {&tx_idx, tx_bytes.data(), uint32_t(tx_bytes.size()), &tx_geometry, &tx_limit};
  }
  // The engine's ends of the same rings (what the daemon hands the engine).
  abi::ProducerEnd erx() {
    if (initial == 0) return abi::ProducerEnd(rx());
    return abi::ProducerEnd(&rx_idx, rx_bytes.data(),
                            abi::RingShape(uint32_t(rx_bytes.size()), initial, &rx_geometry, &rx_limit),
                            rx_idx.head.value.load());
  }
  abi::ConsumerEnd etx() {
    if (initial == 0) return abi::ConsumerEnd(tx());
    return abi::ConsumerEnd(&tx_idx, tx_bytes.data(),
                            abi::RingShape(uint32_t(tx_bytes.size()), initial, &tx_geometry, &tx_limit),
                            tx_idx.tail.value.load());
  }

  uint32_t write(std::string_view s) { return tx().write(s.data(), uint32_t(s.size())); }
  std::string read(uint32_t max = ~0u) {
    std::string s(std::min(max, rx().readable()), '\0');
    s.resize(rx().read(s.data(), uint32_t(s.size())));
    return s;
  }

  abi::RingIndices rx_idx, tx_idx;
  std::vector<uint8_t> rx_bytes, tx_bytes;
  uint32_t initial;
  std::atomic<uint64_t> rx_geometry{0}, tx_geometry{0};  // 0: the whole memory
  std::atomic<uint32_t> rx_limit{0}, tx_limit{0};
};

inline std::string pattern(size_t n, size_t offset = 0) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = char('a' + (offset + i) % 26);
  return s;
}

// ---- The fixture ----

class EngineTest : public ::testing::Test {
 protected:
  // State-machine tests see every ACK at once; delayed ACKs have their own tests
  // (tcp_timers_test.cc), which turn them back on.
  static EngineConfig default_config() {
    EngineConfig c{.mac = kLocalMac,
                   .ip = kLocalIp,
                   .prefix_len = 24,
                   .max_connections = 64,
                   .max_listeners = 8,
                   .staging_buffers = 8,
                   .staging_size = 4096};
    c.delayed_ack = false;
    return c;
  }

  explicit EngineTest(EngineConfig cfg = default_config())
      : cfg_(cfg), eng_(std::make_unique<Engine>(cfg_, sink_)) {}

  Engine& eng() { return *eng_; }

  // The peer asks who we are: the engine learns its MAC and answers.
  void seed_arp() {
    size_t before = sink_.frames.size();
    ASSERT_EQ(eng_->input(arp_frame(1, kRemoteMac, kRemoteIp, wire::MacAddr{}, kLocalIp), now_),
              Drop::kNone);
    ASSERT_EQ(sink_.frames.size(), before + 1);
    ASSERT_TRUE(parse_arp_frame(sink_.frames.back()));
    sink_.frames.pop_back();
    arp_seeded_at_ = now_;
  }

  // One batch with one frame: input, then flush.
  Drop input(const std::vector<uint8_t>& frame) {
    Drop d = eng_->input(frame, now_);
    eng_->flush(now_);
    return d;
  }
  Drop recv(const Seg& s) { return input(tcp_frame(s)); }

  // Virtual time passes; timers run; output is flushed. The peer keeps the ARP
  // cache warm (its entry would expire after 60 s) so long timer tests see TCP only.
  void advance(Time dt) { advance_to(now_ + dt); }
  void advance_to(Time t) {
    now_ = t;
    if (arp_seeded_at_ != 0 && now_ - arp_seeded_at_ > 30 * kSecond) seed_arp();
    eng_->poll(now_);
    eng_->flush(now_);
  }

  // TCP segments the engine emitted since the last call.
  std::vector<Seg> sent() {
    std::vector<Seg> out;
    for (const auto& f : sink_.frames) {
      auto t = parse_tcp_frame(f);
      if (!t) {
        ADD_FAILURE() << "engine emitted a frame that is not valid TCP (" << f.size() << " bytes)";
        continue;
      }
      EXPECT_EQ(t->eth.dst, kRemoteMac);
      EXPECT_EQ(t->eth.src, kLocalMac);
      EXPECT_EQ(t->src_ip, kLocalIp);
      EXPECT_EQ(t->dst_ip, kRemoteIp);
      out.push_back(t->seg);
    }
    sink_.frames.clear();
    return out;
  }
  // Exactly one segment was emitted; returns it.
  Seg sent_one() {
    auto v = sent();
    EXPECT_EQ(v.size(), 1u) << "expected one segment, got:" << trace(v);
    return v.empty() ? Seg{.flags = 0xff} : v.front();
  }
  void expect_silent() {
    auto v = sent();
    EXPECT_TRUE(v.empty()) << "expected no output, got:" << trace(v);
  }

  // user -> events since the last call.
  std::map<uint64_t, uint32_t> events() {
    std::map<uint64_t, uint32_t> ev;
    eng_->drain_events([&](uint64_t user, uint32_t e) { ev[user] |= e; });
    return ev;
  }

  // A time at which connect()/a SYN for (kRemoteIp, kRemotePort, kLocalPort) gets
  // an ISN of `target` or target + 1, on a whole millisecond. RFC 6528 makes the
  // ISN F(tuple, secret) + now / 4, so F is read from a scratch engine at time 0.
  Time time_for_isn(uint32_t target) {
    CollectSink scratch_sink;
    Engine scratch(cfg_, scratch_sink);
    AppRings rings;
    ConnId c;
    EXPECT_EQ(scratch.connect(kLocalPort, kRemoteIp, kRemotePort, rings.erx(), rings.etx(), 1, 0, &c),
              0);
    uint32_t f = scratch.tcb(c).iss.raw();
    for (uint32_t adj = 0; adj < 2; ++adj)
      for (uint64_t m = 1; m < 1000; ++m) {
        Time t = 4 * (uint64_t(uint32_t(target + adj - f)) + (m << 32));
        if (t % kMillisecond == 0) return t;
      }
    ADD_FAILURE() << "no time gives ISN " << target;
    return kT0;
  }

  CollectSink sink_;
  EngineConfig cfg_;
  std::unique_ptr<Engine> eng_;
  Time now_ = kT0;
  Time arp_seeded_at_ = 0;
};

// A connection we opened (connect) and took to ESTABLISHED, with our ISN and the
// peer's both just below 2^32. The peer announced MSS kPeerMss and window 65535.
class EstablishedTest : public EngineTest {
 protected:
  using EngineTest::EngineTest;

  void SetUp() override { ASSERT_NO_FATAL_FAILURE(establish()); }

  void establish(uint32_t rx_cap = 4096, uint32_t tx_cap = 16384, uint32_t initial = 0) {
    now_ = time_for_isn(kLocalIsnTarget);
    ASSERT_NO_FATAL_FAILURE(seed_arp());
    app_ = std::make_unique<AppRings>(rx_cap, tx_cap, initial);
    ASSERT_EQ(eng().connect(kLocalPort, kRemoteIp, kRemotePort, app_->erx(), app_->etx(), kUser,
                            now_, &c_),
              0);
    eng().flush(now_);
    Seg syn = sent_one();
    ASSERT_EQ(syn.flags, kSyn);
    iss_ = syn.seq;
    ASSERT_GE(iss_, kLocalIsnTarget) << "the ISN is meant to sit just below 2^32";
    advance(10 * kMillisecond);
    Seg synack{.seq = kRemoteIsn, .ack = iss_ + 1, .flags = kSyn | kAck, .mss = peer_opts_.mss};
    synack.wscale = peer_opts_.wscale;
    synack.sack_permitted = peer_opts_.sack;
    if (peer_opts_.ts) {
      synack.ts = true;
      synack.tsval = peer_tsval();
      synack.tsecr = syn.tsval;
    }
    ASSERT_EQ(recv(synack), Drop::kNone);
    Seg ack = sent_one();
    ASSERT_EQ(ack.flags, kAck);
    ASSERT_EQ(ack.ack, kRemoteIsn + 1);
    ASSERT_EQ(tcb().state, TcpState::kEstablished);
    // Segments leave as soon as they may: Nagle has its own tests.
    ASSERT_EQ(eng().set_option(c_, TcpOption::kNoDelay, 1), 0);
    eng().flush(now_);
    events();
  }

  const Tcb& tcb() const { return eng_->tcb(c_); }
  // Sequence number of byte `off` of our stream / of the peer's stream.
  uint32_t snd(uint32_t off) const { return iss_ + 1 + off; }
  static uint32_t rcv(uint32_t off) { return kRemoteIsn + 1 + off; }

  // The application writes and tells the engine; the batch is flushed.
  void app_send(std::string_view data) {
    ASSERT_EQ(app_->write(data), data.size());
    eng().tx_ready(c_);
    eng().flush(now_);
  }

  // The peer's TSval clock: 1 ms ticks from an arbitrary origin.
  uint32_t peer_tsval() const { return uint32_t(now_ / kMillisecond) + 0x70000000u; }
  // What the engine's TSval reads now (its clock plus the connection's offset).
  uint32_t our_tsval() const { return uint32_t(now_ / kMillisecond) + tcb().ts_offset; }

  // What the peer's SYN-ACK offers in establish(); by default MSS only, so the
  // classic tests see no timestamps, SACK or window scaling.
  struct PeerOptions {
    uint16_t mss = kPeerMss;
    int8_t wscale = -1;
    bool sack = false;
    bool ts = false;
  };
  PeerOptions peer_opts_;

  ConnId c_ = kInvalidId;
  uint32_t iss_ = 0;
  std::unique_ptr<AppRings> app_;
};

// An established connection whose peer negotiated everything: MSS 1460, window
// scale kPeerShift, SACK and timestamps. Our rings are 64 KiB, so our window
// field is free >> window_shift. peer_data/peer_ack stamp the peer's timestamps
// (TSval from its clock, TSecr echoing ours) and scale the window it announces.
class OptionsEstablishedTest : public EstablishedTest {
 protected:
  static constexpr int8_t kPeerShift = 2;
  static constexpr uint32_t kPeerWindow = 65535u << kPeerShift;

  explicit OptionsEstablishedTest(EngineConfig cfg = default_config()) : EstablishedTest(cfg) {
    peer_opts_ = PeerOptions{.mss = 1460, .wscale = kPeerShift, .sack = true, .ts = true};
  }
  void SetUp() override { ASSERT_NO_FATAL_FAILURE(establish(1 << 16, 1 << 16)); }

  // Adds the peer's timestamps to s.
  Seg stamped(Seg s) const {
    s.ts = true;
    s.tsval = peer_tsval();
    s.tsecr = our_tsval();
    return s;
  }
  Drop peer_ack(uint32_t off, uint32_t window = kPeerWindow, std::vector<SackBlock> sack = {},
                uint32_t peer_off = 0) {
    return recv(stamped(Seg{.seq = rcv(peer_off), .ack = snd(off), .flags = kAck,
                            .window = uint16_t(window >> kPeerShift), .sack = std::move(sack)}));
  }
  Drop peer_data(uint32_t peer_off, std::string data, uint32_t ack_off = 0) {
    return recv(stamped(Seg{.seq = rcv(peer_off), .ack = snd(ack_off), .flags = kAck | kPsh,
                            .window = uint16_t(kPeerWindow >> kPeerShift),
                            .payload = std::move(data)}));
  }
  // Our bytes [from, to) as a SACK block.
  SackBlock sacked(uint32_t from, uint32_t to) const { return {snd(from), snd(to)}; }
  uint64_t drops(Drop d) const { return eng_->counters().drops[static_cast<size_t>(d)]; }
};

}  // namespace shunt::test
