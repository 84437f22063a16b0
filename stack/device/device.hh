// The device layer: one DPDK port, one rx and one tx queue. The only code in
// shunt that includes DPDK headers (docs/architecture.md, Parts).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "daemon/fault.hh"
#include "daemon/port.hh"
#include "engine/engine.hh"

struct rte_mbuf;
struct rte_mempool;
struct rte_pcapng;

namespace shunt {

// The fault injector's view of an mbuf (defined in device.cc, where DPDK is).
struct MbufOps {
  rte_mempool* pool = nullptr;
  rte_mbuf* copy(rte_mbuf* m);
  void free(rte_mbuf* m);
  std::span<uint8_t> bytes(rte_mbuf* m);
};
using MbufInjector = fault::Injector<rte_mbuf*, MbufOps>;

class Device final : public Port {
 public:
  static constexpr uint16_t kBurst = 32;
  static constexpr int kRxBurstsPerTurn = 8;

  // Initializes EAL and the port. On failure returns false with *error naming
  // the setting (SHUNT_NIC …) and what DPDK said.
  bool open(const std::string& nic, int huge, const std::vector<std::string>& eal_extra,
            std::string* error);
  // Faults to inject in front of the port (tests); call before open().
  void set_fault(const fault::Spec& spec) { fault_spec_ = spec; }
  void close();

  wire::MacAddr mac() const override { return mac_; }
  const std::string& driver() const override { return driver_; }
  uint16_t mtu() const override { return mtu_; }
  std::span<const int> wake_fds() const override { return wake_fds_; }
  bool holds_frames() const override;

  // Up to kRxBurstsPerTurn bursts while they come full: a turn that also sends
  // (on a veth the peer's receive runs inside the transmit kick) must take in
  // more than one burst, or the receive ring overflows under bulk input.
  uint16_t receive(Engine& engine, Time now) override {
    uint16_t total = 0;
    for (int i = 0; i < kRxBurstsPerTurn; ++i) {
      uint16_t n = receive_frames([&](std::span<const uint8_t> frame) { engine.input(frame, now); });
      total = uint16_t(total + n);
      if (n < kBurst) break;
    }
    return total;
  }

  // Receives up to kBurst frames and hands each to fn(frame bytes).
  // With SHUNT_FAULT the frames pass the rx injector first, and frames it held
  // back earlier are handed over when their time comes.
  template <typename Fn>
  uint16_t receive_frames(Fn&& fn) {
    uint16_t n = rx_burst();
    if (capture_ && n > 0) capture_burst(rx_, n, true);
    if (tx_fault_) tx_now_ = fault_clock();  // frames the engine sends in this turn
    if (rx_fault_) return receive_faulty(n, fn);
    for (uint16_t i = 0; i < n; ++i) {
      auto frame = frame_of(i);
      if (!frame.empty()) fn(frame);
    }
    release_rx(n);
    return n;
  }

  // FrameSink: frames are batched and sent by flush().
  std::span<uint8_t> tx_buffer() override;
  void tx_commit(size_t len) override;
  void flush() override;

  PortStats stats() override;

  int start_capture(int fd, uint64_t max_packets) override;
  bool capturing() const override { return capture_ != nullptr; }
  uint64_t captured() const override { return capture_written_; }
  void stop_capture() override;

 private:
  uint16_t rx_burst();
  std::span<const uint8_t> frame_of(uint16_t i);
  void release_rx(uint16_t n);
  void queue_tx(rte_mbuf* m);  // after the tx injector: into the burst
  void send_tx();
  fault::Time fault_clock();  // µs, CLOCK_MONOTONIC like the daemon's
  void capture_burst(rte_mbuf* const* pkts, uint16_t n, bool rx);

  template <typename Fn>
  uint16_t receive_faulty(uint16_t n, Fn& fn) {
    fault::Time now = fault_clock();
    uint16_t delivered = 0;
    auto deliver = [&](rte_mbuf* m) {
      std::span<uint8_t> frame = mbuf_ops_.bytes(m);
      fn(std::span<const uint8_t>(frame));
      mbuf_ops_.free(m);
      ++delivered;
    };
    rx_fault_->release(now, deliver);
    for (uint16_t i = 0; i < n; ++i) {
      if (frame_of(i).empty()) {
        mbuf_ops_.free(rx_[i]);  // counted by frame_of
        continue;
      }
      rx_fault_->push(rx_[i], now, deliver);
    }
    return n > delivered ? n : delivered;
  }

  uint16_t port_ = 0;
  bool opened_ = false;
  rte_mempool* pool_ = nullptr;
  rte_mbuf* rx_[kBurst] = {};
  rte_mbuf* tx_[kBurst] = {};
  uint16_t tx_count_ = 0;
  rte_mbuf* tx_spare_ = nullptr;  // allocated by tx_buffer, not yet committed
  wire::MacAddr mac_{};
  std::string driver_;
  uint16_t mtu_ = 1500;
  PortStats own_;
  std::vector<int> wake_fds_;  // the PMD's kernel sockets (AF_XDP, AF_PACKET)
  rte_pcapng* capture_ = nullptr;
  rte_mempool* capture_pool_ = nullptr;
  uint64_t capture_limit_ = 0;  // 0: no limit
  uint64_t capture_written_ = 0;
  fault::Spec fault_spec_;
  MbufOps mbuf_ops_;
  std::unique_ptr<MbufInjector> rx_fault_, tx_fault_;  // null: no faults that way
  fault::Time tx_now_ = 0;  // the clock at the last receive or flush
};

}  // namespace shunt
