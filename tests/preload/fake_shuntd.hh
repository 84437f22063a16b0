// A fake shuntd for tests: speaks docs/abi.md (attach, queue pairs, slots, rings,
// doorbells, kInherit) and connects sockets to each other in memory instead of
// running TCP. A connect to any address of the NIC's subnet reaches the shunted
// listener on that port, in any attached process; with no listener it is refused.
// One thread does everything, like the real daemon's loop.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>

namespace shunt::test {

struct FakeOptions {
  uint32_t queue_pairs = 4;
  uint32_t slots = 64;
  uint32_t ring_size = 16384;
  const char* nic_ip = "198.18.250.1";
  uint32_t prefix_len = 24;
  int reply_status = 0;  // < 0: refuse every attach with it (e.g. -EPROTO)
};

class FakeShuntd {
 public:
  explicit FakeShuntd(FakeOptions o = {});
  ~FakeShuntd();
  // Listens at <rundir>/shuntd.sock and starts the loop.
  bool start(const std::string& rundir);
  void stop();

  int attaches() const { return attaches_.load(); }
  int inherits() const { return inherits_.load(); }
  int commands(int op) const { return op >= 0 && op < 16 ? commands_[op].load() : 0; }

 private:
  struct Impl;
  void run();
  FakeOptions opts_;
  Impl* impl_ = nullptr;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<int> attaches_{0}, inherits_{0};
  std::atomic<int> commands_[16] = {};
};

}  // namespace shunt::test
