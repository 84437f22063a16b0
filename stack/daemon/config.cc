#include "daemon/config.hh"

#include <arpa/inet.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include <unistd.h>

namespace shunt {

bool parse_ipv4(const std::string& text, uint32_t* out) {
  in_addr a;
  if (inet_pton(AF_INET, text.c_str(), &a) != 1) return false;
  *out = ntohl(a.s_addr);
  return true;
}

bool parse_ipv4_prefix(const std::string& text, uint32_t* ip, uint8_t* prefix) {
  auto slash = text.find('/');
  std::string addr = text.substr(0, slash);
  if (!parse_ipv4(addr, ip)) return false;
  if (slash == std::string::npos) {
    *prefix = 32;
    return true;
  }
  std::string p = text.substr(slash + 1);
  if (p.empty() || p.size() > 2 || p.find_first_not_of("0123456789") != std::string::npos)
    return false;
  int v = std::atoi(p.c_str());
  if (v < 1 || v > 32) return false;
  *prefix = uint8_t(v);
  return true;
}

std::string format_ipv4(uint32_t ip) {
  std::ostringstream s;
  s << (ip >> 24) << '.' << ((ip >> 16) & 255) << '.' << ((ip >> 8) & 255) << '.' << (ip & 255);
  return s.str();
}

bool parse_fault_spec(const std::string& text, fault::Spec* out, std::string* error) {
  fault::Spec spec;
  auto fail = [&](const std::string& part, const std::string& why) {
    *error = "SHUNT_FAULT=" + text + ": '" + part + "': " + why;
    return false;
  };
  size_t pos = 0;
  while (pos < text.size()) {
    size_t comma = text.find(',', pos);
    if (comma == std::string::npos) comma = text.size();
    std::string item = text.substr(pos, comma - pos);
    pos = comma + 1;
    if (item.empty()) continue;
    size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == item.size())
      return fail(item, "expected KEY=VALUE (keys: drop, reorder, dup, corrupt, delay, seed, dir)");
    std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    double* prob = key == "drop"      ? &spec.drop
                   : key == "reorder" ? &spec.reorder
                   : key == "dup"     ? &spec.dup
                   : key == "corrupt" ? &spec.corrupt
                                      : nullptr;
    if (prob) {
      char* end = nullptr;
      errno = 0;
      double p = std::strtod(value.c_str(), &end);
      // strtod takes "nan", "inf" and hex: only plain decimals in [0, 1] here.
      if (value.find_first_not_of("0123456789.eE+-") != std::string::npos || *end != '\0' ||
          errno != 0 || !(p >= 0.0 && p <= 1.0))
        return fail(item, "the probability must be a number in [0, 1]");
      *prob = p;
    } else if (key == "delay" || key == "seed") {
      errno = 0;
      uint64_t v = std::strtoull(value.c_str(), nullptr, 10);
      if (value.find_first_not_of("0123456789") != std::string::npos || errno == ERANGE)
        return fail(item, key == "delay" ? "the delay must be whole milliseconds, 0..10000"
                                         : "the seed must be an unsigned 64-bit integer");
      if (key == "seed") {
        spec.seed = v;
      } else {
        if (v > 10000) return fail(item, "the delay must be whole milliseconds, 0..10000");
        spec.delay_us = uint32_t(v * 1000);
      }
    } else if (key == "dir") {
      if (value == "rx") spec.rx = true, spec.tx = false;
      else if (value == "tx") spec.rx = false, spec.tx = true;
      else if (value == "both") spec.rx = spec.tx = true;
      else return fail(item, "dir must be rx, tx or both");
    } else {
      return fail(item, "unknown key (keys: drop, reorder, dup, corrupt, delay, seed, dir)");
    }
  }
  *out = spec;
  return true;
}

std::string format_fault_spec(const fault::Spec& s) {
  if (!s.active()) return "none";
  std::ostringstream o;
  o << "drop=" << s.drop << ",reorder=" << s.reorder << ",dup=" << s.dup
    << ",corrupt=" << s.corrupt << ",delay=" << s.delay_us / 1000 << ",seed=" << s.seed
    << ",dir=" << (s.rx && s.tx ? "both" : s.rx ? "rx" : "tx");
  return o.str();
}

namespace {
const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}
std::string bad(const char* var, const char* value, const std::string& why) {
  return std::string(var) + "=" + value + ": " + why;
}
}  // namespace

bool load_config(DaemonConfig* cfg, std::string* error) {
  const char* v = env("SHUNT_NIC");
  if (!v) {
    *error = "SHUNT_NIC is not set: give a DPDK device (e.g. net_af_xdp0,iface=veth0) "
             "or a network interface name";
    return false;
  }
  cfg->nic = v;
  v = env("SHUNT_IP");
  if (!v) {
    *error = "SHUNT_IP is not set: give the NIC's address as ADDR/PREFIX (e.g. 198.18.7.1/24)";
    return false;
  }
  if (!parse_ipv4_prefix(v, &cfg->ip, &cfg->prefix_len)) {
    *error = bad("SHUNT_IP", v, "not an IPv4 address with an optional /PREFIX (1-32)");
    return false;
  }
  if (cfg->ip == 0 || (cfg->ip >> 24) == 127 || (cfg->ip >> 28) >= 0xe) {
    *error = bad("SHUNT_IP", v, "not a usable unicast address");
    return false;
  }
  if ((v = env("SHUNT_GATEWAY"))) {
    if (!parse_ipv4(v, &cfg->gateway)) {
      *error = bad("SHUNT_GATEWAY", v, "not an IPv4 address");
      return false;
    }
    uint32_t mask = ~uint32_t{0} << (32 - cfg->prefix_len);
    if ((cfg->gateway & mask) != (cfg->ip & mask)) {
      *error = bad("SHUNT_GATEWAY", v, "not inside the subnet of SHUNT_IP");
      return false;
    }
  }
  if ((v = env("SHUNT_RUNDIR"))) cfg->rundir = v;
  if ((v = env("SHUNT_EAL"))) {
    std::istringstream s(v);
    for (std::string arg; s >> arg;) cfg->eal_extra.push_back(arg);
  }
  if ((v = env("SHUNT_HUGE"))) {
    std::string h = v;
    if (h == "1" || h == "yes") cfg->huge = 1;
    else if (h == "0" || h == "no") cfg->huge = 0;
    else if (h == "auto") cfg->huge = -1;
    else {
      *error = bad("SHUNT_HUGE", v, "expected 0, 1 or auto");
      return false;
    }
  }
  if ((v = env("SHUNT_MODE"))) {
    std::string m = v;
    if (m == "busy") cfg->mode = PollMode::kBusy;
    else if (m == "adaptive") cfg->mode = PollMode::kAdaptive;
    else {
      *error = bad("SHUNT_MODE", v, "expected busy or adaptive");
      return false;
    }
  }
  if ((v = env("SHUNT_CONGESTION"))) {
    if (!cc_parse(v, &cfg->congestion)) {
      *error = bad("SHUNT_CONGESTION", v, "expected reno, cubic or bbr");
      return false;
    }
  } else {
    // Like the kernel it stands in for: the host's default, where shunt has it.
    char name[32] = {};
    if (FILE* f = std::fopen("/proc/sys/net/ipv4/tcp_congestion_control", "r")) {
      if (std::fscanf(f, "%31s", name) != 1) name[0] = 0;
      std::fclose(f);
    }
    if (!cc_parse(name, &cfg->congestion)) cfg->congestion = CcAlgorithm::kCubic;
  }
  // Spinning pays only with a core to spare: on two, the daemon shares its core
  // with the application, and every microsecond it spins while the application
  // could run is one the application does not run.
  // Measured on 2 CPUs, nginx under wrk (bench/run.sh --only nginx-keepalive),
  // shunt/kernel at 1 and 32 connections and CPU per request at a fixed load:
  // 200 us always 1.40x, 0.83x, 1.54x; 200 us while waited for 1.54x, 0.96x,
  // 1.46x; 30 us while waited 0.95x, 1.12x, 0.95x; never 0.76x, 1.14x, 0.94x.
  cfg->spin_while_apps_run = sysconf(_SC_NPROCESSORS_ONLN) > 2;
  if (!cfg->spin_while_apps_run) cfg->idle_spin_us = 30;
  if ((v = env("SHUNT_SPIN_US"))) {
    char* end = nullptr;
    unsigned long us = std::strtoul(v, &end, 10);
    if (*end != '\0' || us > 1000000) {
      *error = bad("SHUNT_SPIN_US", v, "expected microseconds, 0 to 1000000");
      return false;
    }
    cfg->idle_spin_us = uint32_t(us);
  }
  if ((v = env("SHUNT_SOCKETS"))) {
    // Each slot reserves its rings' largest size of address space in every region
    // (8 MiB): 16384 of them are 128 GiB per application.
    char* end = nullptr;
    unsigned long n = std::strtoul(v, &end, 10);
    if (*v == '\0' || *end != '\0' || n < 64 || n > 16384) {
      *error = bad("SHUNT_SOCKETS", v, "expected sockets per application, 64 to 16384");
      return false;
    }
    cfg->slots_per_app = uint32_t(n);
  }
  if ((v = env("SHUNT_FAULT"))) {
    if (!parse_fault_spec(v, &cfg->fault, error)) return false;
  }
  if ((v = env("SHUNT_ALLOW"))) {
    if (!parse_allow(v, &cfg->allow, error)) return false;
    cfg->allow_text = v;
  }
  if ((v = env("SHUNT_LOG"))) {
    std::string l = v;
    if (l == "error" || l == "warn") cfg->log_level = 0;
    else if (l == "info") cfg->log_level = 1;
    else if (l == "debug") cfg->log_level = 2;
    else {
      *error = bad("SHUNT_LOG", v, "expected error, warn, info or debug");
      return false;
    }
  }
  return true;
}

}  // namespace shunt
