#include "device/device.hh"

#include <dirent.h>
#include <rte_bus_vdev.h>
#include <rte_dev.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_log.h>
#include <rte_mbuf.h>
#include <rte_pcapng.h>
#include <rte_cycles.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cstring>
#include <set>
#include <vector>

#include "daemon/log.hh"

namespace shunt {

namespace {
bool is_interface(const std::string& name) {
  struct stat st;
  return name.find_first_of(",/") == std::string::npos &&
         stat(("/sys/class/net/" + name).c_str(), &st) == 0;
}
bool hugepages_available() {
  FILE* f = std::fopen("/proc/sys/vm/nr_hugepages", "r");
  if (!f) return false;
  long n = 0;
  bool ok = std::fscanf(f, "%ld", &n) == 1 && n > 0;
  std::fclose(f);
  return ok;
}
std::string device_name(const std::string& spec) { return spec.substr(0, spec.find(',')); }

// The process's open descriptors, not counting the one that lists them: it is
// closed again at once, and the PMD's socket may well get its number next.
std::set<int> open_fds() {
  std::set<int> fds;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.' && std::atoi(e->d_name) != dirfd(d)) fds.insert(std::atoi(e->d_name));
    closedir(d);
  }
  return fds;
}

// The kernel sockets a PMD opened (AF_XDP: 44, AF_PACKET: 17) between two
// snapshots of the descriptor table. They turn readable when frames arrive, which
// DPDK 22.11 does not report for these ports (rte_eth_dev_rx_intr_enable returns
// -ENOTSUP): the daemon sleeps on them when idle.
std::vector<int> new_packet_sockets(const std::set<int>& before) {
  constexpr int kAfXdp = 44;
  std::vector<int> out;
  for (int fd : open_fds()) {
    if (before.count(fd)) continue;
    int domain = 0;
    socklen_t len = sizeof domain;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 &&
        (domain == kAfXdp || domain == AF_PACKET))
      out.push_back(fd);
  }
  return out;
}
}  // namespace

bool Device::open(const std::string& nic, int huge, const std::vector<std::string>& eal_extra,
                  std::string* error) {
  bool iface = is_interface(nic);
  bool spec = nic.rfind("net_", 0) == 0 || nic.find(',') != std::string::npos ||
              nic.find(':') != std::string::npos;
  if (!iface && !spec) {
    *error = "SHUNT_NIC=" + nic +
             ": no such network interface, and not a DPDK device spec (net_xxx0,...)";
    return false;
  }
  // One daemon per NIC: a per-process file prefix and no shared config keep
  // several daemons (and their tests) apart.
  // Telemetry stays on: shuntd publishes its counters there (/shunt/stats).
  std::vector<std::string> args = {"shuntd", "--no-shconf",
                                   "--file-prefix=shuntd" + std::to_string(getpid()),
                                   "--log-level=lib.eal:error", "--log-level=pmd.*:error"};
  bool pci = !iface && nic.rfind("net_", 0) != 0;  // a PCI address
  if (!pci) args.push_back("--no-pci");
  if (huge == 0 || (huge < 0 && !hugepages_available())) {
    args.push_back("--no-huge");
    args.push_back("-m");
    args.push_back("256");
  }
  if (pci) {
    args.push_back("-a");
    args.push_back(nic);
  }
  for (auto& a : eal_extra) args.push_back(a);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  if (rte_eal_init(int(args.size()), argv.data()) < 0) {
    *error = std::string("DPDK EAL init failed (SHUNT_EAL=") + (std::getenv("SHUNT_EAL") ? std::getenv("SHUNT_EAL") : "") +
             "): " + rte_strerror(rte_errno);
    return false;
  }
  // A plain interface name: AF_XDP first, AF_PACKET where XDP is not available.
  std::vector<std::string> candidates;
  if (iface) {
    candidates = {"net_af_xdp0,iface=" + nic, "net_af_packet0,iface=" + nic};
  } else if (!pci) {
    candidates = {nic};
  }
  std::string tried;
  bool found = false;
  std::set<int> fds_before = open_fds();
  for (auto& c : candidates) {
    int rc = rte_dev_probe(c.c_str());
    if (rc == 0 && rte_eth_dev_get_port_by_name(device_name(c).c_str(), &port_) == 0) {
      driver_ = c;
      found = true;
      break;
    }
    tried += (tried.empty() ? "" : "; ") + c + ": " + rte_strerror(-rc);
  }
  if (pci) {
    found = rte_eth_dev_count_avail() > 0;
    port_ = 0;
    driver_ = nic;
    if (!found) tried = "no port found at that PCI address";
  }
  if (!found) {
    *error = "SHUNT_NIC=" + nic + ": DPDK could not open the device (" + tried + ")";
    return false;
  }

  pool_ = rte_pktmbuf_pool_create("shunt_mbufs", 8191, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                  rte_socket_id());
  if (!pool_) {
    *error = std::string("mbuf pool: ") + rte_strerror(rte_errno);
    return false;
  }
  rte_eth_conf conf{};
  int rc = rte_eth_dev_configure(port_, 1, 1, &conf);
  uint16_t nrx = 1024, ntx = 1024;
  if (rc == 0) rc = rte_eth_dev_adjust_nb_rx_tx_desc(port_, &nrx, &ntx);
  if (rc == 0) rc = rte_eth_rx_queue_setup(port_, 0, nrx, rte_eth_dev_socket_id(port_), nullptr, pool_);
  if (rc == 0) rc = rte_eth_tx_queue_setup(port_, 0, ntx, rte_eth_dev_socket_id(port_), nullptr);
  if (rc == 0) rc = rte_eth_dev_start(port_);
  if (rc != 0) {
    *error = "SHUNT_NIC=" + nic + ": port setup failed: " + rte_strerror(-rc);
    return false;
  }
  wake_fds_ = new_packet_sockets(fds_before);
  rte_ether_addr a;
  rte_eth_macaddr_get(port_, &a);
  std::memcpy(mac_.data(), a.addr_bytes, 6);
  uint16_t mtu = 0;
  if (rte_eth_dev_get_mtu(port_, &mtu) == 0 && mtu >= 576 && mtu <= 1500) mtu_ = mtu;
  mbuf_ops_.pool = pool_;
  // Separate random streams per direction: rx faults do not shift tx faults.
  if (fault_spec_.active() && fault_spec_.rx)
    rx_fault_ = std::make_unique<MbufInjector>(fault_spec_, 0, mbuf_ops_);
  if (fault_spec_.active() && fault_spec_.tx)
    tx_fault_ = std::make_unique<MbufInjector>(fault_spec_, 1, mbuf_ops_);
  opened_ = true;
  return true;
}

rte_mbuf* MbufOps::copy(rte_mbuf* m) { return rte_pktmbuf_copy(m, pool, 0, UINT32_MAX); }
void MbufOps::free(rte_mbuf* m) { rte_pktmbuf_free(m); }
std::span<uint8_t> MbufOps::bytes(rte_mbuf* m) {
  return {rte_pktmbuf_mtod(m, uint8_t*), m->data_len};
}

fault::Time Device::fault_clock() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return fault::Time(ts.tv_sec) * 1000000 + fault::Time(ts.tv_nsec) / 1000;
}

bool Device::holds_frames() const {
  return (rx_fault_ && rx_fault_->held() != 0) || (tx_fault_ && tx_fault_->held() != 0);
}

void Device::close() {
  if (!opened_) return;
  stop_capture();
  flush();
  if (rx_fault_) rx_fault_->clear();
  if (tx_fault_) tx_fault_->clear();
  if (tx_spare_) rte_pktmbuf_free(tx_spare_);
  tx_spare_ = nullptr;
  rte_eth_dev_stop(port_);
  rte_eth_dev_close(port_);
  opened_ = false;
  rte_eal_cleanup();
}

uint16_t Device::rx_burst() { return rte_eth_rx_burst(port_, 0, rx_, kBurst); }

std::span<const uint8_t> Device::frame_of(uint16_t i) {
  rte_mbuf* m = rx_[i];
  if (m->nb_segs != 1) {
    ++own_.rx_multiseg_dropped;  // jumbo/LRO chains: not configured, so not expected
    return {};
  }
  return {rte_pktmbuf_mtod(m, const uint8_t*), m->data_len};
}

void Device::release_rx(uint16_t n) {
  if (n) rte_pktmbuf_free_bulk(rx_, n);
}

std::span<uint8_t> Device::tx_buffer() {
  if (!tx_spare_) {
    tx_spare_ = rte_pktmbuf_alloc(pool_);
    if (!tx_spare_) return {};
  }
  return {rte_pktmbuf_mtod(tx_spare_, uint8_t*), rte_pktmbuf_tailroom(tx_spare_)};
}

void Device::tx_commit(size_t len) {
  rte_mbuf* m = tx_spare_;
  tx_spare_ = nullptr;
  m->data_len = uint16_t(len);
  m->pkt_len = uint32_t(len);
  if (tx_fault_) {
    tx_fault_->push(m, tx_now_, [this](rte_mbuf* f) { queue_tx(f); });
  } else {
    queue_tx(m);
  }
}

void Device::queue_tx(rte_mbuf* m) {
  tx_[tx_count_++] = m;
  if (tx_count_ == kBurst) send_tx();
}

void Device::flush() {
  if (tx_fault_) {
    tx_now_ = fault_clock();
    tx_fault_->release(tx_now_, [this](rte_mbuf* f) { queue_tx(f); });
  }
  send_tx();
}

void Device::send_tx() {
  if (capture_ && tx_count_ > 0) capture_burst(tx_, tx_count_, false);
  uint16_t sent = 0;
  // A full tx ring empties within microseconds; a few tries, then count and drop.
  for (int tries = 0; sent < tx_count_ && tries < 64; ++tries)
    sent += rte_eth_tx_burst(port_, 0, tx_ + sent, uint16_t(tx_count_ - sent));
  if (sent < tx_count_) {
    own_.tx_dropped += tx_count_ - sent;
    rte_pktmbuf_free_bulk(tx_ + sent, tx_count_ - sent);
  }
  tx_count_ = 0;
}

PortStats Device::stats() {
  PortStats s = own_;
  rte_eth_stats e{};
  if (rte_eth_stats_get(port_, &e) == 0) {
    s.rx_packets = e.ipackets;
    s.tx_packets = e.opackets;
    s.rx_bytes = e.ibytes;
    s.tx_bytes = e.obytes;
    s.rx_missed = e.imissed;
    s.rx_errors = e.ierrors;
    s.tx_errors = e.oerrors;
    s.rx_nombuf = e.rx_nombuf;
  }
  if (rx_fault_) s.rx_fault = rx_fault_->counters();
  if (tx_fault_) s.tx_fault = tx_fault_->counters();
  return s;
}

// ---- Capture (rte_pcapng) ----

int Device::start_capture(int fd, uint64_t max_packets) {
  if (capture_) return -EBUSY;
  if (!capture_pool_) {
    // Copies live only until the end of the burst that made them.
    capture_pool_ = rte_pktmbuf_pool_create("shunt_capture", 1023, 0, 0,
                                            uint16_t(rte_pcapng_mbuf_size(RTE_MBUF_DEFAULT_BUF_SIZE)),
                                            rte_socket_id());
    if (!capture_pool_) return -ENOMEM;
  }
  int own = dup(fd);
  if (own < 0) return -errno;
  capture_ = rte_pcapng_fdopen(own, nullptr, nullptr, "shuntd", nullptr);
  if (!capture_) {
    ::close(own);
    return -(rte_errno ? rte_errno : EIO);
  }
  capture_limit_ = max_packets;
  capture_written_ = 0;
  return 0;
}

void Device::stop_capture() {
  if (!capture_) return;
  rte_pcapng_write_stats(capture_, port_, nullptr, 0, 0, capture_written_, own_.capture_dropped);
  rte_pcapng_close(capture_);  // closes the descriptor
  capture_ = nullptr;
}

// Copies the burst into the capture file: one write per burst, only while a
// capture runs. The copies come from a pool of their own and are freed by the write.
void Device::capture_burst(rte_mbuf* const* pkts, uint16_t n, bool rx) {
  rte_mbuf* copies[kBurst];
  uint16_t k = 0;
  uint64_t tsc = rte_get_tsc_cycles();
  for (uint16_t i = 0; i < n && k < kBurst; ++i) {
    if (capture_limit_ != 0 && capture_written_ + k >= capture_limit_) break;
    rte_mbuf* c = rte_pcapng_copy(port_, 0, pkts[i], capture_pool_, UINT32_MAX, tsc,
                                  rx ? RTE_PCAPNG_DIRECTION_IN : RTE_PCAPNG_DIRECTION_OUT);
    if (c) copies[k++] = c;
    else ++own_.capture_dropped;
  }
  if (k > 0 && rte_pcapng_write_packets(capture_, copies, k) < 0) {
    log_error("capture: writing the file failed; capture stopped");
    stop_capture();
    return;
  }
  capture_written_ += k;
  own_.capture_packets += k;
  if (capture_limit_ != 0 && capture_written_ >= capture_limit_) stop_capture();
}

}  // namespace shunt
