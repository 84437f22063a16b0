// Which sockets go to shuntd (docs/architecture.md, Which sockets). Pure functions of
// the NIC's address and the call's arguments, so that tests pin the policy down.
#pragma once

#include <netinet/in.h>

#include <bit>
#include <cstdint>

namespace shunt::preload {

struct NicRoute {
  uint32_t ip = 0;          // network byte order
  uint32_t prefix_len = 0;  // 0..32
  uint32_t gateway = 0;     // network byte order, 0 if none
};

// Network to host order, usable in constant expressions (ntohl is not, everywhere).
constexpr uint32_t host_order(uint32_t be) {
  return std::endian::native == std::endian::little ? __builtin_bswap32(be) : be;
}
constexpr uint32_t net_order(uint32_t host) { return host_order(host); }

// Host-order netmask of a prefix length (clamped to 32).
constexpr uint32_t prefix_mask(uint32_t len) {
  return len == 0 ? 0u : len >= 32 ? 0xffffffffu : ~((1u << (32 - len)) - 1u);
}

constexpr bool is_loopback(uint32_t ip_be) { return (host_order(ip_be) >> 24) == 127; }

// True when the NIC's subnet contains ip (network byte order).
constexpr bool in_subnet(const NicRoute& nic, uint32_t ip_be) {
  uint32_t mask = prefix_mask(nic.prefix_len);
  return nic.ip != 0 && (host_order(ip_be) & mask) == (host_order(nic.ip) & mask);
}

enum class BindRoute {
  kShunt,     // the NIC's own address: the socket lives in shuntd only
  kWildcard,  // INADDR_ANY: bind the kernel socket; at listen() listen on both
  kKernel,    // anything else (loopback, another interface): the kernel socket, forgotten
};

constexpr BindRoute route_bind(const NicRoute& nic, uint32_t ip_be) {
  if (nic.ip != 0 && ip_be == nic.ip) return BindRoute::kShunt;
  if (ip_be == net_order(INADDR_ANY)) return BindRoute::kWildcard;
  return BindRoute::kKernel;
}

// connect() from a socket not bound to anything: shunted when the NIC's subnet holds
// the destination. Loopback, the wildcard address (the kernel connects it to
// loopback) and multicast stay with the kernel whatever the prefix says. Destinations
// behind the gateway are not shunted in version 1 (the kernel's routing table would
// disagree for hosts it reaches over another interface).
constexpr bool route_connect(const NicRoute& nic, uint32_t dst_be) {
  uint32_t h = host_order(dst_be);
  if (dst_be == 0 || is_loopback(dst_be) || (h >> 28) == 0xe || h == 0xffffffffu) return false;
  return in_subnet(nic, dst_be);
}

}  // namespace shunt::preload
