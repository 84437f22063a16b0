// A Port in memory: frames to receive are queued with deliver(), frames sent are
// kept in sent(). The daemon runs on it in the unit tests and the fuzz target,
// with no DPDK and no device.
#pragma once

#include <deque>
#include <string>
#include <vector>

#include "daemon/port.hh"

namespace shunt {

class MemoryPort final : public Port {
 public:
  static constexpr size_t kFrameMax = 1514;

  explicit MemoryPort(wire::MacAddr mac = {0x02, 0, 0, 0, 0, 1}) : mac_(mac) {}

  // ---- Test side ----
  void deliver(std::vector<uint8_t> frame) { inbox_.push_back(std::move(frame)); }
  // Frames flushed so far, oldest first; take_sent() empties the list.
  const std::vector<std::vector<uint8_t>>& sent() const { return sent_; }
  std::vector<std::vector<uint8_t>> take_sent() { return std::move(sent_); }

  // ---- Port ----
  uint16_t receive(Engine& engine, Time now) override {
    uint16_t n = 0;
    while (!inbox_.empty() && n < 32) {
      std::vector<uint8_t> f = std::move(inbox_.front());
      inbox_.pop_front();
      stats_.rx_packets++;
      stats_.rx_bytes += f.size();
      engine.input(f, now);
      ++n;
    }
    return n;
  }
  std::span<uint8_t> tx_buffer() override {
    buf_.resize(kFrameMax);
    return buf_;
  }
  void tx_commit(size_t len) override {
    pending_.emplace_back(buf_.begin(), buf_.begin() + long(std::min(len, kFrameMax)));
  }
  void flush() override {
    for (auto& f : pending_) {
      stats_.tx_packets++;
      stats_.tx_bytes += f.size();
      sent_.push_back(std::move(f));
    }
    pending_.clear();
  }
  PortStats stats() override { return stats_; }
  const std::string& driver() const override { return driver_; }
  wire::MacAddr mac() const override { return mac_; }
  uint16_t mtu() const override { return 1500; }

 private:
  wire::MacAddr mac_;
  std::string driver_ = "memory";
  PortStats stats_;
  std::deque<std::vector<uint8_t>> inbox_;
  std::vector<std::vector<uint8_t>> pending_, sent_;
  std::vector<uint8_t> buf_;
};

}  // namespace shunt
