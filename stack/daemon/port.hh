// The daemon's network port: what the loop needs of a NIC. The DPDK device
// (device.hh) is one; tests and fuzz targets use an in-memory one
// (memory_port.hh), so that the daemon runs without DPDK.
#pragma once

#include <cerrno>
#include <cstdint>
#include <span>
#include <string>

#include "daemon/fault.hh"
#include "engine/engine.hh"

namespace shunt {

// Port counters: X(field, "name in shunt stat").
#define SHUNT_PORT_COUNTERS(X)                                        \
  X(rx_packets, "port.rx_packets")                                    \
  X(tx_packets, "port.tx_packets")                                    \
  X(rx_bytes, "port.rx_bytes")                                        \
  X(tx_bytes, "port.tx_bytes")                                        \
  X(rx_missed, "port.rx_missed")                                      \
  X(rx_errors, "port.rx_errors")                                      \
  X(tx_errors, "port.tx_errors")                                      \
  X(rx_nombuf, "port.rx_nombuf")                                      \
  X(tx_dropped, "port.tx_dropped")          /* the port would not take them */ \
  X(rx_multiseg_dropped, "port.rx_multiseg_dropped")                  \
  X(capture_packets, "capture.packets")     /* written to capture files */     \
  X(capture_dropped, "capture.dropped")     /* no buffer for the copy */

struct PortStats {
#define SHUNT_X(field, name) uint64_t field = 0;
  SHUNT_PORT_COUNTERS(SHUNT_X)
#undef SHUNT_X
  fault::Counters rx_fault, tx_fault;  // SHUNT_FAULT: what the injector did
};

class Port : public FrameSink {
 public:
  // Receives one burst and hands every frame to engine.input(frame, now).
  // Returns the frames received (work done).
  virtual uint16_t receive(Engine& engine, Time now) = 0;
  // Sends what the engine committed since the last flush.
  virtual void flush() = 0;
  virtual PortStats stats() = 0;
  virtual const std::string& driver() const = 0;
  virtual wire::MacAddr mac() const = 0;
  virtual uint16_t mtu() const = 0;

  // Descriptors that turn readable when frames arrive, so an idle daemon can sleep
  // in epoll instead of polling. Empty: the port must be polled.
  virtual std::span<const int> wake_fds() const { return {}; }
  // True while frames wait inside the port for a time to come (the fault
  // injector's delay line): the daemon must not sleep past a millisecond.
  virtual bool holds_frames() const { return false; }

  // Packet capture to a pcapng file (shunt capture): every frame received and
  // sent, from now until max_packets were written (0: no limit) or stop_capture().
  // 0, or -errno (-ENOTSUP: this port cannot capture).
  virtual int start_capture(int fd, uint64_t max_packets) {
    (void)fd;
    (void)max_packets;
    return -ENOTSUP;
  }
  virtual bool capturing() const { return false; }
  // Packets the current (or last) capture wrote.
  virtual uint64_t captured() const { return 0; }
  virtual void stop_capture() {}

};

}  // namespace shunt
