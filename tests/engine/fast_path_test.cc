// Differential test of the ESTABLISHED fast path (header prediction, tcp_input.cc
// fast_path) against the full RFC 9293 path (docs/architecture.md, Conventions): two engines, one with
// EngineConfig::fast_path on and one with it off, get the same seeded random
// sequence of peer segments, application calls and clock steps. After every step
// both must have emitted the same frames (byte for byte), returned the same drop
// reason, reported the same events, and hold the same connection state.
#include <gtest/gtest.h>

#include <deque>
#include <memory>
#include <sstream>

#include "harness.hh"

namespace shunt::test {
namespace {

uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

struct Variant {
  const char* name;
  bool ts, sack;
  int8_t wscale;  // the peer's, -1 = none
  bool delayed_ack;
};
void PrintTo(const Variant& v, std::ostream* os) { *os << v.name; }

// Everything observable about a connection, as text (a mismatch prints a diff).
std::string describe(const Engine& e, ConnId c) {
  const Tcb& t = e.tcb(c);
  std::ostringstream os;
  auto ranges = [&](const char* name, const auto& r) {
    os << name << "={";
    for (uint16_t i = 0; i < r.n; ++i) os << r.r[i].start.raw() << "-" << r.r[i].end.raw() << " ";
    os << "recent=" << int(r.recent) << "}\n";
  };
  auto ring = [&](const char* name, const auto& r) {
    os << name << "=";
    if (r.valid())
      os << r.head() << "/" << r.tail();
    else
      os << "none";
    os << "\n";
  };
  os << "state=" << state_name(t.state) << "\n"
     << "snd.una=" << t.snd.una.raw() << " nxt=" << t.snd.nxt.raw() << " max=" << t.snd.max.raw()
     << " wl1=" << t.snd.wl1.raw() << " wl2=" << t.snd.wl2.raw() << " wnd=" << t.snd.wnd
     << " mss=" << t.snd.mss << "\n"
     << "rcv.nxt=" << t.rcv.nxt.raw() << " adv_wnd=" << t.rcv.adv_wnd << "\n"
     << "cwnd=" << t.cwnd << " ssthresh=" << t.ssthresh << " cc.w_max=" << t.cc.w_max
     << " cc.k=" << t.cc.k << " cc.w_est=" << t.cc.w_est << " cc.epoch=" << t.cc.epoch_start
     << " cc.ack_bytes=" << t.cc.ack_bytes << "\n"
     << "ts_recent=" << t.ts_recent << " at=" << t.ts_recent_at << "\n"
     << "dsack=" << t.dsack_pending << " " << t.dsack_start.raw() << "-" << t.dsack_end.raw()
     << " dupacks=" << int(t.dupacks) << " in_recovery=" << t.in_recovery
     << " recovered_once=" << t.recovered_once << " rexmit_now=" << t.rexmit_now
     << " recover=" << t.recover.raw() << "\n"
     << "rack.xmit_ts=" << t.rack.xmit_ts << " end_seq=" << t.rack.end_seq.raw()
     << " rtt=" << t.rack.rtt << " min_rtt=" << t.rack.min_rtt << " fack=" << t.rack.fack.raw()
     << " reordering_seen=" << t.rack.reordering_seen << " timer_at=" << t.rack.timer_at << "\n"
     << "rcv_unacked=" << t.rcv_unacked << " quickack=" << int(t.quickack)
     << " ack_pending=" << t.ack_pending << " window_low=" << t.window_low << "\n"
     << "srtt=" << t.srtt << " rttvar=" << t.rttvar << " rto=" << t.rto
     << " backoff=" << t.backoff << " rtt_timing=" << t.rtt_timing
     << " rtt_seq=" << t.rtt_seq.raw() << " rtt_start=" << t.rtt_start << "\n"
     << "rto_at=" << t.rto_at << " persist_at=" << t.persist_at << " delack_at=" << t.delack_at
     << " keepalive_at=" << t.keepalive_at << " probes=" << int(t.probes) << "\n"
     << "last_rx=" << t.last_rx << " last_tx=" << t.last_tx << " keep_probes="
     << int(t.keep_probes) << " tx_base=" << t.tx_base << " error=" << t.error << "\n";
  os << "sent_log=";
  for (uint8_t i = 0; i < t.sent_log.n; ++i) {
    const auto& x = t.sent_log.e[i];
    os << x.start.raw() << "-" << x.end.raw() << "@" << x.sent << (x.retransmitted ? "r" : "")
       << (x.lost ? "l" : "") << " ";
  }
  os << "\n";
  ranges("ooo", t.ooo);
  ranges("sacked", t.sacked);
  ring("rx", t.rx);
  ring("tx", t.tx);
  return os.str();
}

// One engine and its application.
struct Side {
  explicit Side(const EngineConfig& cfg) : eng(std::make_unique<Engine>(cfg, sink)) {}
  CollectSink sink;
  std::unique_ptr<Engine> eng;
  AppRings app{8192, 16384};
  ConnId c = kInvalidId;
};

class Twin {
 public:
  Twin(const Variant& v, uint64_t seed) : v_(v), rng_(seed) {
    EngineConfig cfg{.mac = kLocalMac,
                     .ip = kLocalIp,
                     .prefix_len = 24,
                     .max_connections = 8,
                     .max_listeners = 2,
                     .staging_buffers = 2,
                     .staging_size = 4096};
    cfg.delayed_ack = v.delayed_ack;
    cfg.fast_path = true;
    fast_ = std::make_unique<Side>(cfg);
    cfg.fast_path = false;
    full_ = std::make_unique<Side>(cfg);
  }

  const Engine& fast() const { return *fast_->eng; }
  const Engine& full() const { return *full_->eng; }
  const Tcb& tcb() const { return fast_->eng->tcb(fast_->c); }
  std::string log() const {
    std::string s;
    for (const auto& l : log_) s += "\n  " + l;
    return s;
  }

  // ARP, connect, SYN-ACK with the variant's options, ESTABLISHED.
  void establish() {
    both_input(arp_frame(1, kRemoteMac, kRemoteIp, wire::MacAddr{}, kLocalIp));
    for (Side* s : {fast_.get(), full_.get()}) {
      ASSERT_EQ(s->eng->connect(kLocalPort, kRemoteIp, kRemotePort, s->app.erx(), s->app.etx(),
                                kUser, now_, &s->c),
                0);
      s->eng->flush(now_);
    }
    ASSERT_NO_FATAL_FAILURE(compare("connect"));
    now_ += 5 * kMillisecond;
    Seg sa{.seq = kRemoteIsn, .ack = tcb().iss.raw() + 1, .flags = kSyn | kAck, .window = 65535,
           .mss = kPeerMss, .wscale = v_.wscale, .sack_permitted = v_.sack, .ts = v_.ts,
           .tsval = peer_ts_, .tsecr = our_ts_};
    ASSERT_NO_FATAL_FAILURE(both_input(tcp_frame(sa)));
    ASSERT_EQ(tcb().state, TcpState::kEstablished);
    peer_ack_ = tcb().snd.una.raw();
    for (Side* s : {fast_.get(), full_.get()})
      ASSERT_EQ(s->eng->set_option(s->c, TcpOption::kNoDelay, 1), 0);
  }

  void step(int n) {
    now_ += rnd(3) * kMillisecond;
    peer_ts_ += rnd(2);
    const Tcb& t = tcb();
    uint32_t una = t.snd.una.raw(), max = t.snd.max.raw();
    if (int32_t(peer_ack_ - una) < 0) peer_ack_ = una;
    uint32_t r = rnd(100);
    std::ostringstream what;
    what << "step " << n << " t=" << (now_ - kT0) / kMillisecond << "ms: ";
    if (r < 30) {  // in-order data, sometimes acknowledging more of ours
      if (rnd(3) == 0) advance_ack(max);
      uint32_t len = 1 + rnd(kPeerMss);
      Seg s = seg(t.rcv.nxt.raw(), len);
      if (rnd(2)) s.flags |= kPsh;
      what << "data in order len " << len;
      send(what.str(), s);
    } else if (r < 44) {  // a pure ACK moving forward
      advance_ack(max);
      what << "ack " << peer_ack_ - (t.iss.raw() + 1);
      send(what.str(), seg(t.rcv.nxt.raw(), 0));
    } else if (r < 52) {  // a duplicate ACK
      what << "dup ack";
      send(what.str(), seg(t.rcv.nxt.raw(), 0));
    } else if (r < 57) {  // the peer's window changes
      window_ = uint16_t(rnd(4) == 0 ? rnd(64) : rnd(65536));
      what << "window " << window_;
      send(what.str(), seg(t.rcv.nxt.raw(), 0));
    } else if (r < 64) {  // out of order
      uint32_t gap = 1 + rnd(6000);
      uint32_t len = 1 + rnd(kPeerMss);
      what << "data out of order gap " << gap << " len " << len;
      send(what.str(), seg(t.rcv.nxt.raw() + gap, len));
    } else if (r < 70) {  // old data again, wholly or partly below rcv.nxt
      uint32_t got = t.rcv.nxt.raw() - (kRemoteIsn + 1);
      if (got == 0) return;
      uint32_t back = 1 + rnd(std::min<uint32_t>(got, 3000));
      uint32_t len = 1 + rnd(kPeerMss);
      what << "duplicate data back " << back << " len " << len;
      send(what.str(), seg(t.rcv.nxt.raw() - back, len));
    } else if (r < 77) {  // the application writes
      uint32_t len = rnd(5000);
      std::string data(len, '\0');
      for (auto& ch : data) ch = char(rnd(256));
      what << "app write " << len;
      log_.push_back(what.str());
      for (Side* s : {fast_.get(), full_.get()}) {
        s->app.write(data);
        s->eng->tx_ready(s->c);
        s->eng->flush(now_);
      }
      compare(what.str());
    } else if (r < 85) {  // the application reads
      uint32_t len = rnd(6000);
      what << "app read " << len;
      log_.push_back(what.str());
      std::string got[2];
      int i = 0;
      for (Side* s : {fast_.get(), full_.get()}) {
        got[i++] = s->app.read(len);
        s->eng->rx_drained(s->c);
        s->eng->flush(now_);
      }
      EXPECT_EQ(got[0], got[1]);
      EXPECT_EQ(got[0], expected_rx(got[0].size())) << "the stream is the peer's bytes in order";
      read_ += got[0].size();
      compare(what.str());
    } else if (r < 92) {  // time passes: RTO, delayed ACK, persist timers
      now_ += rnd(400) * kMillisecond;
      what << "time passes";
      log_.push_back(what.str());
      compare(what.str());
    } else if (r < 96) {  // timestamp trouble: an old TSval, or none
      Seg s = seg(t.rcv.nxt.raw(), rnd(2) ? 1 + rnd(100) : 0);
      if (rnd(2)) {
        s.tsval = peer_ts_ - 1 - rnd(1000);
        what << "old tsval";
      } else {
        s.ts = false;
        what << "no timestamps";
      }
      what << " len " << s.payload.size();
      send(what.str(), s);
    } else {  // SACK blocks for some of our data in flight
      Seg s = seg(t.rcv.nxt.raw(), 0);
      uint32_t flight = max - una;
      if (flight > 2) {
        uint32_t l = una + 1 + rnd(flight - 1);
        uint32_t rr = l + 1 + rnd(max - l);
        if (int32_t(rr - max) > 0) rr = max;
        s.sack.push_back({l, rr});
      }
      what << "sack";
      send(what.str(), s);
    }
    // Timers and flush, as the daemon's loop does every time round.
    for (Side* s : {fast_.get(), full_.get()}) {
      s->eng->poll(now_);
      s->eng->flush(now_);
    }
    compare(what.str() + " (poll)");
  }

 private:
  uint32_t rnd(uint32_t n) { return n == 0 ? 0 : uint32_t(splitmix64(rng_) % n); }
  // The peer's byte stream: a function of the offset, so resends are consistent.
  static char peer_byte(uint32_t off) { return char((off * 131u + (off >> 8) * 7u) & 0xff); }
  std::string expected_rx(size_t n) const {
    std::string s(n, '\0');
    for (size_t i = 0; i < n; ++i) s[i] = peer_byte(uint32_t(read_ + i));
    return s;
  }
  void advance_ack(uint32_t max) {
    uint32_t room = max - peer_ack_;
    if (room) peer_ack_ += 1 + rnd(room);
  }
  Seg seg(uint32_t seq, uint32_t len) {
    Seg s{.seq = seq, .ack = peer_ack_, .flags = kAck, .window = window_};
    uint32_t off = seq - (kRemoteIsn + 1);
    s.payload.resize(len);
    for (uint32_t i = 0; i < len; ++i) s.payload[i] = peer_byte(off + i);
    if (tcb().ts_ok) {
      s.ts = true;
      s.tsval = peer_ts_;
      s.tsecr = our_ts_;
    }
    return s;
  }
  void send(const std::string& what, const Seg& s) {
    std::ostringstream os;
    os << what << " | " << s;
    log_.push_back(os.str());
    if (log_.size() > 12) log_.pop_front();
    both_input(tcp_frame(s));
  }
  void both_input(const std::vector<uint8_t>& frame) {
    Drop a = fast_->eng->input(frame, now_);
    Drop b = full_->eng->input(frame, now_);
    EXPECT_EQ(a, b) << "drop reasons differ";
    fast_->eng->flush(now_);
    full_->eng->flush(now_);
    compare(log_.empty() ? "input" : log_.back());
  }
  void compare(const std::string& what) {
    SCOPED_TRACE(what);
    ASSERT_EQ(fast_->sink.frames.size(), full_->sink.frames.size()) << "frame counts differ";
    for (size_t i = 0; i < fast_->sink.frames.size(); ++i) {
      const auto& fa = fast_->sink.frames[i];
      ASSERT_EQ(fa, full_->sink.frames[i]) << "frame " << i << " differs";
      if (auto p = parse_tcp_frame(fa); p && p->seg.ts) our_ts_ = p->seg.tsval;
    }
    frames_ += fast_->sink.frames.size();
    fast_->sink.frames.clear();
    full_->sink.frames.clear();
    std::map<uint64_t, uint32_t> ev[2];
    fast_->eng->drain_events([&](uint64_t u, uint32_t e) { ev[0][u] |= e; });
    full_->eng->drain_events([&](uint64_t u, uint32_t e) { ev[1][u] |= e; });
    ASSERT_EQ(ev[0], ev[1]) << "events differ";
    if (fast_->c != kInvalidId) {
      ASSERT_EQ(describe(*fast_->eng, fast_->c), describe(*full_->eng, full_->c))
          << "connection state differs (left: fast path)";
    }
  }

 public:
  uint64_t frames_ = 0;

 private:
  Variant v_;
  uint64_t rng_;
  std::unique_ptr<Side> fast_, full_;
  Time now_ = kT0;
  uint32_t peer_ts_ = 0x7ffffff0u;  // crosses 2^31 during the run
  uint32_t our_ts_ = 0;
  uint32_t peer_ack_ = 0;
  uint16_t window_ = 65535;
  uint64_t read_ = 0;
  std::deque<std::string> log_;
};

class FastPath : public ::testing::TestWithParam<Variant> {};

TEST_P(FastPath, SameOutputAndStateAsTheFullPath) {
  constexpr int kSeeds = 12, kSteps = 600;
  uint64_t fast_hits = 0;
  for (uint64_t seed = 1; seed <= kSeeds; ++seed) {
    SCOPED_TRACE(::testing::Message() << "seed " << seed);
    Twin twin(GetParam(), seed);
    ASSERT_NO_FATAL_FAILURE(twin.establish());
    for (int n = 0; n < kSteps; ++n) {
      twin.step(n);
      if (::testing::Test::HasFailure()) {
        ADD_FAILURE() << "diverged; last steps:" << twin.log();
        return;
      }
    }
    EXPECT_EQ(twin.tcb().state, TcpState::kEstablished);
    EXPECT_EQ(twin.full().counters().tcp_fast_path, 0u);
    fast_hits += twin.fast().counters().tcp_fast_path;
  }
  // Without this the test would pass with a fast path that never matches.
  EXPECT_GT(fast_hits, uint64_t(kSeeds) * kSteps / 20) << "the fast path (almost) never ran";
  std::printf("[ fastpath ] %s: %llu segments took the fast path over %d seeds\n",
              GetParam().name, (unsigned long long)fast_hits, kSeeds);
}

INSTANTIATE_TEST_SUITE_P(
    Variants, FastPath,
    ::testing::Values(Variant{"plain", false, false, -1, false},
                      Variant{"plain_delack", false, false, -1, true},
                      Variant{"timestamps", true, false, -1, false},
                      Variant{"all_options", true, true, 3, false},
                      Variant{"all_options_delack", true, true, 3, true}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace shunt::test
