// The pieces both simulators share (sim_test.cc, sim_bounds_test.cc): an
// engine with its frame sink, and an application that streams bytes out and
// collects what arrives.
#pragma once

#include <algorithm>
#include <memory>
#include <vector>

#include "harness.hh"

namespace shunt::test {

// One step of virtual time: a frame's one-way trip.
inline constexpr Time kSimStep = kMillisecond;
inline constexpr uint16_t kSimServerPort = 5001;
inline constexpr uint16_t kSimClientPort = 40000;
inline constexpr uint64_t kSimServerUser = 1, kSimClientUser = 2, kSimListenerUser = 3;

// The simulators' seeded random numbers (SplitMix64).
inline uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

inline EngineConfig sim_config(uint32_t ip, const wire::MacAddr& mac, uint16_t mtu = 1500) {
  return EngineConfig{.mac = mac, .ip = ip, .mtu = mtu, .max_connections = 16,
                      .max_listeners = 2, .staging_buffers = 4, .staging_size = 1 << 16};
}

class SimNode : public FrameSink {
 public:
  explicit SimNode(const EngineConfig& cfg)
      : buf_(size_t(cfg.mtu) + wire::kEthHeader), eng(cfg, *this) {}
  SimNode(uint32_t ip, const wire::MacAddr& mac) : SimNode(sim_config(ip, mac)) {}
  std::span<uint8_t> tx_buffer() override { return buf_; }
  void tx_commit(size_t len) override { out.emplace_back(buf_.begin(), buf_.begin() + len); }

  std::vector<std::vector<uint8_t>> out;

 private:
  std::vector<uint8_t> buf_;

 public:
  Engine eng;  // last: it keeps a reference to this sink
};

// Streams `to_send` out, then shuts down writing; reads everything unless
// `now` is inside the pause window.
struct SimApp {
  Engine* eng = nullptr;
  ConnId c = kInvalidId;
  std::unique_ptr<AppRings> rings = std::make_unique<AppRings>(1 << 16, 1 << 16);
  std::vector<uint8_t> to_send, received;
  size_t written = 0;
  bool shut = false;
  Time pause_from = 0, pause_until = 0;

  void pump(Time now = 0) {
    if (c == kInvalidId) return;
    if (written < to_send.size()) {
      uint32_t n = rings->tx().write(to_send.data() + written,
                                     uint32_t(std::min<size_t>(to_send.size() - written, 1u << 20)));
      written += n;
      if (n) eng->tx_ready(c);
    }
    if (written == to_send.size() && !shut) {
      eng->shutdown_write(c);
      shut = true;
    }
    if (now >= pause_from && now < pause_until) return;
    uint8_t buf[8192];
    bool any = false;
    while (uint32_t n = rings->rx().read(buf, sizeof buf)) {
      received.insert(received.end(), buf, buf + n);
      any = true;
    }
    if (any) eng->rx_drained(c);
  }
  bool finished() const {
    if (c == kInvalidId || received.size() != to_send.size() || !shut) return false;
    const Tcb& t = eng->tcb(c);
    return t.peer_fin && (t.state == TcpState::kTimeWait || t.state == TcpState::kClosed);
  }
};

}  // namespace shunt::test
