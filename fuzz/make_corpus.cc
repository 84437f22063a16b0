// Writes the seed corpora: make_corpus DIR → DIR/wire/* (fuzz_wire) and
// DIR/engine/* (fuzz_engine). Seeds are valid traffic: SYN, SYN-ACK, data, ACKs
// with SACK blocks, FIN, RST, an ARP request, an ICMP echo; for the engine, whole
// conversations (passive and active opens, data both ways, loss and
// retransmission, out-of-order data, zero window, close from either side).
#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "daemon_input.hh"
#include "engine_input.hh"
#include "wire/wire.hh"

using namespace shunt;
using namespace shunt::fuzz;
using Bytes = std::vector<uint8_t>;

namespace {

std::string g_dir;

void save(const std::string& sub, const std::string& name, const Bytes& b) {
  std::string path = g_dir + "/" + sub + "/" + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || std::fwrite(b.data(), 1, b.size(), f) != b.size()) {
    std::perror(path.c_str());
    std::exit(1);
  }
  std::fclose(f);
}

constexpr wire::MacAddr kLocalMac{0x02, 0x00, 0x5e, 0x00, 0x00, 0x01};
constexpr wire::MacAddr kPeerMac{0x02, 0x00, 0x5e, 0x00, 0x00, 0x02};

// Options as Linux writes them on a SYN: MSS, SACK-permitted, timestamps, window scale.
Bytes syn_options() {
  return {2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0x10, 0, 0, 0, 0, 0, 1, 3, 3, 7};
}
Bytes ts_option(uint32_t val, uint32_t ecr) {
  Bytes b = {1, 1, 8, 10};
  for (uint32_t v : {val, ecr})
    for (int i = 3; i >= 0; --i) b.push_back(uint8_t(v >> (8 * i)));
  return b;
}
Bytes sack_option(uint32_t l, uint32_t r) {
  Bytes b = {1, 1, 5, 10};
  for (uint32_t v : {l, r})
    for (int i = 3; i >= 0; --i) b.push_back(uint8_t(v >> (8 * i)));
  return b;
}

// A TCP segment (header + options + payload) with a correct checksum.
Bytes tcp_segment(uint16_t sport, uint16_t dport, uint32_t seq, uint32_t ack, uint8_t flags,
                  uint16_t window, const Bytes& opts, const std::string& payload) {
  size_t hlen = wire::kTcpHeader + ((opts.size() + 3) & ~size_t{3});
  Bytes t(hlen + payload.size(), 0);
  wire::store16(&t[0], sport);
  wire::store16(&t[2], dport);
  wire::store32(&t[4], seq);
  wire::store32(&t[8], ack);
  t[12] = uint8_t((hlen / 4) << 4);
  t[13] = flags;
  wire::store16(&t[14], window);
  if (!opts.empty()) std::memcpy(&t[20], opts.data(), opts.size());
  if (!payload.empty()) std::memcpy(&t[hlen], payload.data(), payload.size());
  uint32_t sum = wire::pseudo_header_sum(kPeerIp, kLocalIp, wire::kProtoTcp, uint16_t(t.size()));
  wire::store16(&t[16], wire::checksum_finish(wire::checksum_add(sum, t.data(), t.size())));
  return t;
}

Bytes ip_frame(uint8_t proto, const Bytes& l4) {
  Bytes f(wire::kEthHeader + wire::kIpv4Header + l4.size());
  wire::write_eth(f.data(), kLocalMac, kPeerMac, wire::kEtherIpv4);
  wire::write_ipv4(f.data() + wire::kEthHeader, kPeerIp, kLocalIp, proto, uint16_t(l4.size()), 1);
  std::memcpy(f.data() + wire::kEthHeader + wire::kIpv4Header, l4.data(), l4.size());
  return f;
}

Bytes icmp_echo(const std::string& data) {
  Bytes m(8 + data.size(), 0);
  m[0] = 8;
  wire::store16(&m[4], 0x1234);
  wire::store16(&m[6], 1);
  std::memcpy(&m[8], data.data(), data.size());
  wire::store16(&m[2], wire::checksum_finish(wire::checksum_add(0, m.data(), m.size())));
  return m;
}

Bytes arp_request() {
  Bytes f(60, 0);
  wire::write_eth(f.data(), wire::kBroadcastMac, kPeerMac, wire::kEtherArp);
  wire::write_arp(f.data() + wire::kEthHeader, wire::Arp{.op = 1,
                                                         .sender_mac = kPeerMac,
                                                         .sender_ip = kPeerIp,
                                                         .target_mac = {},
                                                         .target_ip = kLocalIp});
  return f;
}

Bytes with_mode(uint8_t mode, const Bytes& b) {
  Bytes out{mode};
  out.insert(out.end(), b.begin(), b.end());
  return out;
}

void wire_corpus() {
  const std::string get = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  save("wire", "syn", with_mode(0, ip_frame(6, tcp_segment(49152, 80, kPeerIsn, 0, wire::kSyn, 64240, syn_options(), ""))));
  save("wire", "synack", with_mode(0, ip_frame(6, tcp_segment(443, 40000, kPeerIsn, 1001, wire::kSyn | wire::kAck, 65160, syn_options(), ""))));
  save("wire", "data", with_mode(0, ip_frame(6, tcp_segment(49152, 80, kPeerIsn + 1, 1001, wire::kAck | wire::kPsh, 502, ts_option(5, 6), get))));
  Bytes sack = ts_option(7, 8);
  Bytes blocks = sack_option(3000, 4000);
  sack.insert(sack.end(), blocks.begin(), blocks.end());
  save("wire", "ack_sack", with_mode(0, ip_frame(6, tcp_segment(49152, 80, kPeerIsn + 1, 2001, wire::kAck, 502, sack, ""))));
  save("wire", "fin", with_mode(0, ip_frame(6, tcp_segment(49152, 80, kPeerIsn + 1, 1001, wire::kFin | wire::kAck, 502, {}, ""))));
  save("wire", "rst", with_mode(0, ip_frame(6, tcp_segment(49152, 80, kPeerIsn + 1, 0, wire::kRst, 0, {}, ""))));
  save("wire", "arp_request", with_mode(0, arp_request()));
  save("wire", "icmp_echo", with_mode(0, ip_frame(1, icmp_echo("ping data 0123456789"))));
  save("wire", "bare_tcp_syn", with_mode(1, tcp_segment(49152, 80, kPeerIsn, 0, wire::kSyn, 64240, syn_options(), "")));
  save("wire", "bare_tcp_sack", with_mode(1, tcp_segment(49152, 80, 1, 2, wire::kAck, 100, sack, "x")));
  save("wire", "bare_icmp", with_mode(3, icmp_echo("abc")));
  // Options packed tight: timestamps, window scale and three SACK blocks in 40 bytes
  // on a SYN (the parser keeps them all; a writer must not need more than 40).
  Bytes tight = {8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 3, 3, 7, 5, 26};
  for (uint32_t v : {100u, 200u, 300u, 400u, 500u, 600u})
    for (int i = 3; i >= 0; --i) tight.push_back(uint8_t(v >> (8 * i)));
  tight.push_back(0);
  save("wire", "bare_tcp_syn_tight_options", with_mode(1, tcp_segment(49152, 80, 1, 0, wire::kSyn, 100, tight, "")));
}

// ---- Engine conversations ----

struct Conv : Writer {
  // A segment for the listener's tuple (remote port 49152 + r) or an active open's.
  Conv& seg(uint8_t sel, uint8_t flags, uint8_t seqmode, uint32_t seq, uint32_t ack, uint16_t window,
            const Bytes& opts, const std::string& payload, bool end = true) {
    op(kTcp, end).u8(sel).u8(flags).u8(seqmode);
    if ((seqmode & 3) == 1) u32(seq); else u16(uint16_t(seq));
    if (((seqmode >> 2) & 3) == 1) u32(ack); else u16(uint16_t(ack));
    u16(window).u8(uint8_t(opts.size())).bytes(opts).u16(uint16_t(payload.size()));
    bytes(Bytes(payload.begin(), payload.end()));
    return *this;
  }
  // In-order from the peer: seq = rcv.nxt, ack = snd.nxt.
  Conv& next(uint8_t sel, uint8_t flags, const std::string& payload = "", uint16_t window = 502,
             const Bytes& opts = {}) {
    return seg(sel, flags, 0, 0, 0, window, opts, payload);
  }
  Conv& advance(uint16_t units, uint8_t unit) { op(kAdvance).u16(uint16_t(units << 2 | unit)); return *this; }
  Conv& ms(uint16_t n) { return advance(n, 1); }
  Conv& sec(uint16_t n) { return advance(uint16_t(n * 10), 2); }
  Conv& accept() { op(kAccept); return *this; }
  Conv& write(uint8_t slot, uint16_t n) { op(kWrite).u8(slot).u16(n); return *this; }
  Conv& read(uint8_t slot, uint16_t n = 0xffff) { op(kRead).u8(slot).u16(n); return *this; }
  Conv& close(uint8_t slot, bool abort = false) { op(kClose).u8(slot).u8(abort); return *this; }
  Conv& shutdown(uint8_t slot) { op(kShutdown).u8(slot); return *this; }
  Conv& connect(uint8_t b) { op(kConnect).u8(b); return *this; }
  // Passive open on remote port 49152 + r, accepted into the first free slot.
  Conv& passive(uint8_t r, const Bytes& opts = syn_options()) {
    seg(r, wire::kSyn, 0, 0, 0, 64240, opts, "");
    next(r, wire::kAck);
    return accept();
  }
  // Active open from local port 40000 + (b & 3): the peer answers SYN-ACK.
  Conv& active(uint8_t b, const Bytes& opts = syn_options()) {
    connect(b);
    seg(uint8_t(4 | (b & 3) | ((b & 4) << 1)), wire::kSyn | wire::kAck, 1, kPeerIsn, 0, 65160, opts, "");
    return *this;
  }
};

const std::string kGet = "GET /index.html HTTP/1.1\r\nHost: 198.18.0.1\r\n\r\n";

void engine_corpus() {
  Conv c;
  // nginx-like: request, response, the client closes first.
  c.passive(0).next(0, wire::kAck | wire::kPsh, kGet).read(0).write(0, 3000).ms(1);
  c.next(0, wire::kAck).next(0, wire::kFin | wire::kAck).read(0).close(0).ms(1).next(0, wire::kAck).sec(61);
  save("engine", "passive_get", c.out);

  // curl-like: active open, request out, response in, we close first; TIME-WAIT.
  c = Conv{};
  c.active(0).write(0, 60).ms(1).next(4, wire::kAck | wire::kPsh, std::string(1400, 'r'));
  c.next(4, wire::kAck | wire::kPsh, std::string(1400, 's')).read(0).close(0).ms(1);
  c.next(4, wire::kAck).next(4, wire::kFin | wire::kAck).sec(61);
  save("engine", "active_get", c.out);

  // Loss: 16 KiB out, nothing acked, RTOs, then duplicate ACKs with SACK blocks.
  c = Conv{};
  c.passive(1).write(0, 16000).ms(1).ms(300).ms(600);
  for (int i = 0; i < 4; ++i) {
    Bytes opts = ts_option(5000 + i, 0);
    Bytes s = sack_option(0, 0);  // blocks rewritten by the fuzzer; a shape to start from
    opts.insert(opts.end(), s.begin(), s.end());
    c.seg(1, wire::kAck, 2 << 2, 0, 0, 502, opts, "");  // ack = snd.una: a duplicate ACK
  }
  c.ms(10).seg(1, wire::kAck, 3 << 2, 0, 0, 502, {}, "").sec(2).close(0).sec(200);  // ack = snd.max
  save("engine", "loss_sack", c.out);

  // Out-of-order data in, then the hole filled.
  c = Conv{};
  c.passive(2).seg(2, wire::kAck | wire::kPsh, 0, 1000, 0, 502, {}, std::string(500, 'b'));
  c.seg(2, wire::kAck | wire::kPsh, 0, 2000, 0, 502, {}, std::string(500, 'd'));
  c.seg(2, wire::kAck | wire::kPsh, 0, 0, 0, 502, {}, std::string(1000, 'a'));
  c.seg(2, wire::kAck | wire::kPsh, 0, 0, 0, 502, {}, std::string(500, 'c')).read(0).close(0, true);
  save("engine", "out_of_order", c.out);

  // Zero window: the peer stops reading; persist probes; the window reopens.
  c = Conv{};
  c.active(1).write(0, 20000).ms(1).next(5, wire::kAck, "", 0).sec(1).sec(3).sec(10);
  c.next(5, wire::kAck, "", 502).ms(1).shutdown(0).ms(5).next(5, wire::kAck).sec(100);
  save("engine", "zero_window", c.out);

  // Our receive window fills (the app does not read), then drains.
  c = Conv{};
  c.passive(3);
  for (int i = 0; i < 6; ++i) c.next(3, wire::kAck | wire::kPsh, std::string(1000, char('e' + i)), 502, {}).ms(1);
  c.read(0, 2000).ms(1).read(0).next(3, wire::kRst).close(0);
  save("engine", "window_full", c.out);

  // Simultaneous close, then a reset in TIME-WAIT; a SYN to a closed port.
  c = Conv{};
  c.active(2).close(0).next(6, wire::kFin | wire::kAck).ms(1).next(6, wire::kAck).next(6, wire::kRst);
  c.seg(0x04 | 3, wire::kSyn, 1, 77, 0, 1000, {}, "").sec(70);
  save("engine", "simultaneous_close", c.out);

  // ARP, ICMP echo, a raw valid SYN, and a SYN with a bad checksum.
  c = Conv{};
  c.op(kArp).u8(1).op(kArp).u8(2).op(kIcmp).u16(56).bytes(Bytes(56, 'p'));
  Bytes syn = ip_frame(6, tcp_segment(49153, 80, kPeerIsn, 0, wire::kSyn, 64240, syn_options(), ""));
  c.op(kRaw).u16(uint16_t(syn.size())).u8(0).bytes(syn);
  c.seg(0x80 | 2, wire::kSyn, 0, 0, 0, 64240, syn_options(), "").op(kListen).u8(1).op(kListen).u8(8);
  save("engine", "arp_icmp_raw", c.out);

  // A SYN flood past the backlog, the tx side starved for a while.
  c = Conv{};
  c.op(kStarve).u8(5);
  for (uint8_t r = 0; r < 4; ++r) c.seg(r, wire::kSyn, 0, 0, 0, 64240, syn_options(), "", false);
  c.op(kListen).u8(1);
  c.sec(5).accept();
  save("engine", "syn_flood_starved", c.out);
}

// fuzz_daemon: an application listening and serving one connection, then each
// way it can misbehave on top of that.
void daemon_corpus() {
  namespace d = shunt::fuzz::daemon_op;
  auto serve = [] {
    Bytes b = {d::kCommand, 0, 0, 1 /* kBind */, 0xff, 0, 0, 0, d::kTurns, 1,
               d::kCommand, 0, 0, 2 /* kListen */, 0, 0, 16, 0, d::kTurns, 2,
               d::kRemoteConnect, 0, d::kTurns, 6,
               d::kCommand, 0, 0, 4 /* kAccept */, 0, 0, 0, 0, d::kTurns, 2,
               d::kRemoteSend, 0, 100, d::kTurns, 4, d::kAppRead, 0, 1,
               d::kAppWrite, 0, 1, 200, d::kTurns, 4};
    return b;
  };
  save("daemon", "serve", serve());
  Bytes b = serve();
  b.insert(b.end(), {d::kRemoteClose, 0, 0, d::kTurns, 8, d::kCommand, 0, 0, 5 /* kClose */, 1, 0,
                     0, 0, d::kTurns, 8});
  save("daemon", "serve_close", b);
  b = serve();
  b.insert(b.end(), {d::kScribble, 0, 0, 0, 0, 0, 16});
  for (int i = 0; i < 16; ++i) b.push_back(uint8_t(0xa5 ^ i));
  b.insert(b.end(), {d::kTurns, 15});
  save("daemon", "serve_scribble_header", b);
  b = serve();
  b.insert(b.end(), {d::kIndex, 0, 1, 2, 0x40, 0x42, 0x0f, 0, d::kAppWrite, 0, 1, 1, d::kTurns, 4});
  save("daemon", "serve_bad_tx_head", b);
  b = serve();
  b.insert(b.end(), {d::kRemoteSend, 0, 255, d::kTurns, 2, d::kHangUp, 0, d::kTurns, 8});
  save("daemon", "serve_hang_up", b);
  b = serve();
  b.insert(b.end(), {d::kCommand, 1, 0, 10 /* kUdpBind */, 0xff, 1, 0, 0, d::kTurns, 2,
                     d::kAppWrite, 1, 0, 40, d::kTurns, 2});
  save("daemon", "udp_garbage_records", b);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  g_dir = argv[1];
  for (const char* sub : {"", "/wire", "/engine", "/daemon"}) mkdir((g_dir + sub).c_str(), 0755);
  wire_corpus();
  engine_corpus();
  daemon_corpus();
  return 0;
}
