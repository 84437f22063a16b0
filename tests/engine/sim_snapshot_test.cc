// A seeded network simulator whose results are a checked-in table. Two engines
// (every option on unless a scenario says otherwise) exchange a byte stream each
// way over an in-memory wire with faults: loss, duplication, reordering (a frame
// held back one step), corruption (one byte flipped: the checksum must catch it),
// a 1-byte MSS (the SYNs' MSS options rewritten on the wire), a tiny MTU, and a
// receiver that stops reading for half a second (zero window, persist probes).
// Time is virtual, 1 ms per step, so a frame's one-way trip is one step.
//
// Every transfer must arrive byte-exact within its bound. The per-run numbers
// (virtual time to finish, retransmissions, fast retransmits, frames) form a
// table that must equal tests/engine/sim_snapshot.txt: any change in the engine's
// loss recovery or timing shows up here as a diff to be looked at.
//
// After a deliberate change, regenerate the table and review its diff:
//   SHUNT_UPDATE_SNAPSHOT=1 build/bin/engine_tests --gtest_filter='SimSnapshot.*'
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <vector>

#include "harness.hh"
#include "sim.hh"

namespace shunt::test {
namespace {

constexpr Time kStep = kMillisecond;
constexpr uint16_t kServerPort = 5001;
constexpr uint16_t kClientPort = 40000;
constexpr uint64_t kServerUser = 1, kClientUser = 2, kListenerUser = 3;

uint64_t splitmix64(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

struct Scenario {
  const char* name;
  double loss = 0, dup = 0, reorder = 0, corrupt = 0;
  size_t bytes = 256 * 1024;  // each way
  Time bound = 10 * kSecond;  // virtual
  uint16_t mtu = 1500;
  bool options = true;        // timestamps and SACK
  bool mss_one = false;       // the SYNs' MSS options become 1 on the wire
  uint32_t rx_ring = 1 << 16;
  Time pause_from = 0, pause_until = 0;  // the server does not read meanwhile
};

using App = SimApp;

EngineConfig node_config(uint32_t ip, const wire::MacAddr& mac, const Scenario& sc) {
  EngineConfig c = sim_config(ip, mac, sc.mtu);
  c.timestamps = c.sack = sc.options;
  return c;
}

struct Result {
  bool done = false;
  Time elapsed = 0;
  uint64_t frames = 0, lost = 0, corrupted = 0;
};

class Sim {
 public:
  Sim(const Scenario& sc, uint64_t seed)
      : sc_(sc), rng_(seed), server(node_config(kLocalIp, kLocalMac, sc)), client(node_config(kRemoteIp, kRemoteMac, sc)) {
    for (App* a : {&server_app, &client_app}) a->rings = std::make_unique<AppRings>(sc.rx_ring, 1 << 16);
    server_app.pause_from = now + sc.pause_from;
    server_app.pause_until = now + sc.pause_until;
    fill(server_app, seed * 100 + 1);
    fill(client_app, seed * 100 + 2);
  }

  Result run() {
    server_app.eng = &server.eng;
    client_app.eng = &client.eng;
    EXPECT_EQ(server.eng.listen(kServerPort, 4, kListenerUser, &listener_), 0);
    EXPECT_EQ(client.eng.connect(kClientPort, kLocalIp, kServerPort, client_app.rings->erx(),
                                 client_app.rings->etx(), kClientUser, now, &client_app.c),
              0);
    Time start = now;
    for (uint64_t steps = 0; steps < sc_.bound / kStep; ++steps) {
      step();
      if (server_app.finished() && client_app.finished()) {
        result.done = true;
        break;
      }
    }
    result.elapsed = now - start;
    return result;
  }

  Time now = kT0;
  Result result;

 private:
  const Scenario& sc_;
  uint64_t rng_;

 public:
  SimNode server, client;
  App server_app, client_app;

 private:
  void fill(App& app, uint64_t seed) {
    app.to_send.resize(sc_.bytes);
    for (auto& b : app.to_send) b = uint8_t(splitmix64(seed));
  }
  double uniform() { return double(splitmix64(rng_) >> 11) * 0x1.0p-53; }

  void step() {
    for (auto& f : to_server_) server.eng.input(f, now);
    for (auto& f : to_client_) client.eng.input(f, now);
    to_server_.clear();
    to_client_.clear();
    auto on_event = [&](uint64_t user, uint32_t ev) {
      if (user == kListenerUser && (ev & kEvAcceptable)) {
        ConnId c = server.eng.accept(listener_);
        if (c == kInvalidId) return;
        server_app.c = c;
        server.eng.attach(c, server_app.rings->erx(), server_app.rings->etx(), kServerUser);
      }
    };
    server.eng.drain_events(on_event);
    client.eng.drain_events(on_event);
    server_app.pump(now);
    client_app.pump(now);
    for (SimNode* n : {&server, &client}) {
      n->eng.poll(now);
      n->eng.flush(now);
    }
    transmit(server, to_client_, held_client_);
    transmit(client, to_server_, held_server_);
    now += kStep;
  }

  // The wire: frames sent this step arrive next step; held frames a step later.
  void transmit(SimNode& from, std::vector<std::vector<uint8_t>>& next,
                std::vector<std::vector<uint8_t>>& held) {
    std::vector<std::vector<uint8_t>> later;
    for (auto& f : from.out) {
      ++result.frames;
      if (sc_.mss_one) rewrite_mss(f);
      if (uniform() < sc_.loss) {
        ++result.lost;
        continue;
      }
      if (uniform() < sc_.dup) next.push_back(f);
      if (uniform() < sc_.corrupt && f.size() > 34) {
        // Past the IPv4 header: the TCP checksum must catch it.
        size_t at = 34 + size_t(splitmix64(rng_) % (f.size() - 34));
        f[at] ^= uint8_t(1 + splitmix64(rng_) % 255);
        ++result.corrupted;
      }
      if (uniform() < sc_.reorder) later.push_back(std::move(f));
      else next.push_back(std::move(f));
    }
    from.out.clear();
    for (auto& f : held) next.push_back(std::move(f));
    held = std::move(later);
  }

  // A middlebox that clamps every SYN's MSS option to 1.
  static void rewrite_mss(std::vector<uint8_t>& f) {
    auto t = parse_tcp_frame(f);
    if (!t || !(t->seg.flags & kSyn) || t->seg.mss == 0) return;
    t->seg.mss = 1;
    f = tcp_frame(t->seg, t->src_ip, t->dst_ip, t->eth.dst, t->eth.src);
  }

  ListenerId listener_ = kInvalidId;
  std::vector<std::vector<uint8_t>> to_server_, to_client_, held_server_, held_client_;
};

const Scenario kScenarios[] = {
    {.name = "clean"},
    {.name = "loss1", .loss = 0.01, .bound = 20 * kSecond},
    {.name = "loss5_dup2_reord2", .loss = 0.05, .dup = 0.02, .reorder = 0.02, .bound = 60 * kSecond},
    {.name = "loss20", .loss = 0.20, .bytes = 32 * 1024, .bound = 300 * kSecond},
    {.name = "reorder10_dup5", .dup = 0.05, .reorder = 0.10, .bound = 20 * kSecond},
    {.name = "corrupt2", .corrupt = 0.02, .bound = 20 * kSecond},
    {.name = "noopts_loss5", .loss = 0.05, .bound = 60 * kSecond, .options = false},
    {.name = "mtu296_loss2", .loss = 0.02, .bytes = 64 * 1024, .bound = 30 * kSecond, .mtu = 296},
    // Options off: with timestamps a 1-byte MSS leaves no room for a payload.
    {.name = "mss1", .bytes = 2048, .bound = 30 * kSecond, .options = false, .mss_one = true},
    {.name = "zero_window", .bound = 20 * kSecond, .rx_ring = 16 * 1024,
     .pause_from = 20 * kMillisecond, .pause_until = 520 * kMillisecond},
};
constexpr uint64_t kSeeds[] = {1, 2};

std::filesystem::path snapshot_path() {
  return std::filesystem::path(__FILE__).parent_path() / "sim_snapshot.txt";
}

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(SimSnapshot, TransfersMatchTheStoredTable) {
  std::ostringstream table;
  table << "# scenario           seed  time_ms  retransmits  fast_retransmits  frames\n";
  for (const Scenario& sc : kScenarios) {
    for (uint64_t seed : kSeeds) {
      SCOPED_TRACE(::testing::Message() << sc.name << " seed " << seed);
      Sim sim(sc, seed);
      Result r = sim.run();
      const auto& cs = sim.client.eng.counters();
      const auto& ss = sim.server.eng.counters();
      EXPECT_TRUE(r.done) << "not finished within " << sc.bound / kSecond << " s; client got "
                          << sim.client_app.received.size() << ", server got "
                          << sim.server_app.received.size() << " of " << sc.bytes;
      EXPECT_TRUE(sim.server_app.received == sim.client_app.to_send) << "client -> server bytes";
      EXPECT_TRUE(sim.client_app.received == sim.server_app.to_send) << "server -> client bytes";
      uint64_t bad_sums = cs.drops[size_t(Drop::kTcpBadChecksum)] + ss.drops[size_t(Drop::kTcpBadChecksum)];
      if (sc.corrupt > 0) {
        EXPECT_GT(bad_sums, 0u) << "corrupted frames must fail the checksum";
      } else {
        EXPECT_EQ(bad_sums, 0u);
      }
      if (sc.mss_one) {
        // The engine takes MSS 1 as it stands; a floor such as Linux's 48 would do too.
        EXPECT_LE(sim.client.eng.tcb(sim.client_app.c).snd.mss, 64);
        EXPECT_LE(sim.server.eng.tcb(sim.server_app.c).snd.mss, 64);
        EXPECT_GE(r.frames, 2 * sc.bytes / 64) << "tiny segments each way";
      }
      if (sc.pause_until > 0) {
        EXPECT_GT(r.elapsed, sc.pause_until) << "the pause must show";
      }
      char line[160];
      std::snprintf(line, sizeof line, "%-20s %5llu %8llu %12llu %17llu %7llu\n", sc.name,
                    (unsigned long long)seed, (unsigned long long)(r.elapsed / kMillisecond),
                    (unsigned long long)(cs.tcp_retransmits + ss.tcp_retransmits),
                    (unsigned long long)(cs.tcp_fast_retransmits + ss.tcp_fast_retransmits),
                    (unsigned long long)r.frames);
      table << line;
    }
  }
  std::printf("%s", table.str().c_str());
  std::filesystem::path path = snapshot_path();
  const char* update = std::getenv("SHUNT_UPDATE_SNAPSHOT");
  if (update && std::string(update) == "1") {
    std::ofstream(path) << table.str();
    std::printf("[ snapshot ] wrote %s\n", path.c_str());
    return;
  }
  std::string stored = read_file(path);
  EXPECT_EQ(stored, table.str())
      << "the simulator's results differ from " << path << "\n--- stored:\n" << stored
      << "--- now:\n" << table.str()
      << "If the change is intended, rerun with SHUNT_UPDATE_SNAPSHOT=1 and review the diff.";
}

}  // namespace
}  // namespace shunt::test
