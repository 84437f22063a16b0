#include "route.hh"

#include <arpa/inet.h>
#include <gtest/gtest.h>

namespace shunt::preload {
namespace {

uint32_t ip(const char* s) {
  in_addr a{};
  EXPECT_EQ(inet_pton(AF_INET, s, &a), 1);
  return a.s_addr;
}

const NicRoute kNic{ip("198.18.7.1"), 24, ip("198.18.7.254")};

TEST(Route, PrefixMask) {
  EXPECT_EQ(prefix_mask(0), 0u);
  EXPECT_EQ(prefix_mask(8), 0xff000000u);
  EXPECT_EQ(prefix_mask(24), 0xffffff00u);
  EXPECT_EQ(prefix_mask(31), 0xfffffffeu);
  EXPECT_EQ(prefix_mask(32), 0xffffffffu);
  EXPECT_EQ(prefix_mask(40), 0xffffffffu);
}

TEST(Route, SubnetMembership) {
  EXPECT_TRUE(in_subnet(kNic, ip("198.18.7.1")));
  EXPECT_TRUE(in_subnet(kNic, ip("198.18.7.2")));
  EXPECT_TRUE(in_subnet(kNic, ip("198.18.7.255")));
  EXPECT_FALSE(in_subnet(kNic, ip("198.18.8.2")));
  EXPECT_FALSE(in_subnet(kNic, ip("198.19.0.1")));
  NicRoute host{ip("198.18.7.1"), 32, 0};
  EXPECT_TRUE(in_subnet(host, ip("198.18.7.1")));
  EXPECT_FALSE(in_subnet(host, ip("198.18.7.2")));
  NicRoute none{};
  EXPECT_FALSE(in_subnet(none, ip("0.0.0.0")));
}

TEST(Route, BindDecision) {
  EXPECT_EQ(route_bind(kNic, ip("198.18.7.1")), BindRoute::kShunt);
  EXPECT_EQ(route_bind(kNic, ip("0.0.0.0")), BindRoute::kWildcard);
  EXPECT_EQ(route_bind(kNic, ip("127.0.0.1")), BindRoute::kKernel);
  // Another address of the subnet is not ours to bind: the kernel decides (EADDRNOTAVAIL).
  EXPECT_EQ(route_bind(kNic, ip("198.18.7.2")), BindRoute::kKernel);
  EXPECT_EQ(route_bind(NicRoute{}, ip("0.0.0.0")), BindRoute::kWildcard);
}

TEST(Route, ConnectDecision) {
  EXPECT_TRUE(route_connect(kNic, ip("198.18.7.2")));
  EXPECT_TRUE(route_connect(kNic, ip("198.18.7.1")));  // our own address: through the stack
  EXPECT_FALSE(route_connect(kNic, ip("198.18.8.2")));  // behind the gateway: kernel in v1
  EXPECT_FALSE(route_connect(kNic, ip("127.0.0.1")));
  EXPECT_FALSE(route_connect(kNic, ip("0.0.0.0")));
  EXPECT_FALSE(route_connect(kNic, ip("224.0.0.1")));
  EXPECT_FALSE(route_connect(kNic, ip("255.255.255.255")));
  // A /0 "subnet" still never captures loopback.
  NicRoute all{ip("198.18.7.1"), 0, 0};
  EXPECT_TRUE(route_connect(all, ip("8.8.8.8")));
  EXPECT_FALSE(route_connect(all, ip("127.0.0.53")));
  EXPECT_FALSE(route_connect(NicRoute{}, ip("198.18.7.2")));
}

}  // namespace
}  // namespace shunt::preload
