// SHUNT_FAULT parsing: every accepted form, and every error naming the variable,
// the value and the bad part.
#include <gtest/gtest.h>

#include <cstdio>
#include <stdlib.h>

#include <string>

#include "daemon/config.hh"

namespace shunt {
namespace {

fault::Spec parse_ok(const std::string& text) {
  fault::Spec s;
  std::string error;
  EXPECT_TRUE(parse_fault_spec(text, &s, &error)) << text << ": " << error;
  return s;
}

std::string parse_error(const std::string& text) {
  fault::Spec s;
  s.drop = 0.5;  // must be left alone on error
  std::string error;
  EXPECT_FALSE(parse_fault_spec(text, &s, &error)) << text;
  EXPECT_EQ(s.drop, 0.5) << text;
  return error;
}

TEST(FaultSpec, EmptyInjectsNothing) {
  fault::Spec s = parse_ok("");
  EXPECT_FALSE(s.active());
  EXPECT_TRUE(s.rx);
  EXPECT_TRUE(s.tx);
  EXPECT_EQ(format_fault_spec(s), "none");
}

TEST(FaultSpec, TheIssueExample) {
  fault::Spec s = parse_ok("drop=0.05,reorder=0.1,dup=0.01,corrupt=0.001,seed=7");
  EXPECT_DOUBLE_EQ(s.drop, 0.05);
  EXPECT_DOUBLE_EQ(s.reorder, 0.1);
  EXPECT_DOUBLE_EQ(s.dup, 0.01);
  EXPECT_DOUBLE_EQ(s.corrupt, 0.001);
  EXPECT_EQ(s.seed, 7u);
  EXPECT_EQ(s.delay_us, 0u);
  EXPECT_TRUE(s.rx && s.tx);
  EXPECT_TRUE(s.active());
  EXPECT_EQ(format_fault_spec(s), "drop=0.05,reorder=0.1,dup=0.01,corrupt=0.001,delay=0,seed=7,dir=both");
}

TEST(FaultSpec, DelayDirectionAndBounds) {
  fault::Spec s = parse_ok("delay=20,dir=rx");
  EXPECT_EQ(s.delay_us, 20000u);
  EXPECT_TRUE(s.rx);
  EXPECT_FALSE(s.tx);
  EXPECT_TRUE(s.active());
  s = parse_ok("drop=1,dir=tx");
  EXPECT_FALSE(s.rx);
  EXPECT_TRUE(s.tx);
  EXPECT_DOUBLE_EQ(s.drop, 1.0);
  s = parse_ok("drop=0,dup=1e-3,dir=both,delay=10000,seed=18446744073709551615");
  EXPECT_DOUBLE_EQ(s.dup, 0.001);
  EXPECT_EQ(s.delay_us, 10000u * 1000);
  EXPECT_EQ(s.seed, 18446744073709551615ull);
  // A trailing comma or an empty item is harmless.
  EXPECT_DOUBLE_EQ(parse_ok("drop=0.2,").drop, 0.2);
  // Only the seed set: nothing injected.
  EXPECT_FALSE(parse_ok("seed=3").active());
}

TEST(FaultSpec, ErrorsNameTheVariableTheValueAndThePart) {
  struct Case {
    const char* text;
    const char* part;
    const char* why;
  } cases[] = {
      {"drop=0.05,bogus=1", "'bogus=1'", "unknown key"},
      {"drop=1.5", "'drop=1.5'", "[0, 1]"},
      {"drop=-0.1", "'drop=-0.1'", "[0, 1]"},
      {"reorder=abc", "'reorder=abc'", "[0, 1]"},
      {"dup=nan", "'dup=nan'", "[0, 1]"},
      {"corrupt=inf", "'corrupt=inf'", "[0, 1]"},
      {"corrupt=0.1x", "'corrupt=0.1x'", "[0, 1]"},
      {"drop", "'drop'", "KEY=VALUE"},
      {"drop=", "'drop='", "KEY=VALUE"},
      {"=0.1", "'=0.1'", "KEY=VALUE"},
      {"delay=10001", "'delay=10001'", "milliseconds"},
      {"delay=1.5", "'delay=1.5'", "milliseconds"},
      {"delay=-1", "'delay=-1'", "milliseconds"},
      {"seed=x", "'seed=x'", "unsigned 64-bit integer"},
      {"seed=99999999999999999999", "'seed=99999999999999999999'", "unsigned 64-bit integer"},
      {"dir=up", "'dir=up'", "rx, tx or both"},
      {"drop=0.1;reorder=0.1", "'drop=0.1;reorder=0.1'", "[0, 1]"},
  };
  for (const Case& c : cases) {
    std::string e = parse_error(c.text);
    EXPECT_NE(e.find(std::string("SHUNT_FAULT=") + c.text), std::string::npos) << e;
    EXPECT_NE(e.find(c.part), std::string::npos) << e;
    EXPECT_NE(e.find(c.why), std::string::npos) << e;
  }
}

// load_config reads SHUNT_FAULT and stops on a bad one.
class LoadConfig : public ::testing::Test {
 protected:
  void SetUp() override {
    setenv("SHUNT_NIC", "vA", 1);
    setenv("SHUNT_IP", "198.18.7.1/24", 1);
  }
  void TearDown() override {
    unsetenv("SHUNT_NIC");
    unsetenv("SHUNT_IP");
    unsetenv("SHUNT_FAULT");
    unsetenv("SHUNT_SPIN_US");
    unsetenv("SHUNT_CONGESTION");
    unsetenv("SHUNT_SOCKETS");
  }
};

TEST_F(LoadConfig, NoFaultByDefault) {
  unsetenv("SHUNT_FAULT");
  DaemonConfig cfg;
  std::string error;
  ASSERT_TRUE(load_config(&cfg, &error)) << error;
  EXPECT_FALSE(cfg.fault.active());
}

TEST_F(LoadConfig, ReadsShuntFault) {
  setenv("SHUNT_FAULT", "drop=0.05,reorder=0.1", 1);
  DaemonConfig cfg;
  std::string error;
  ASSERT_TRUE(load_config(&cfg, &error)) << error;
  EXPECT_DOUBLE_EQ(cfg.fault.drop, 0.05);
  EXPECT_DOUBLE_EQ(cfg.fault.reorder, 0.1);
}

TEST_F(LoadConfig, BadShuntFaultStops) {
  setenv("SHUNT_FAULT", "drop=2", 1);
  DaemonConfig cfg;
  std::string error;
  EXPECT_FALSE(load_config(&cfg, &error));
  EXPECT_NE(error.find("SHUNT_FAULT=drop=2"), std::string::npos) << error;
}

TEST_F(LoadConfig, CongestionFollowsTheHostKernelByDefault) {
  unsetenv("SHUNT_CONGESTION");
  char host[32] = {};
  if (FILE* f = std::fopen("/proc/sys/net/ipv4/tcp_congestion_control", "r")) {
    if (std::fscanf(f, "%31s", host) != 1) host[0] = 0;
    std::fclose(f);
  }
  CcAlgorithm want = CcAlgorithm::kCubic;  // what shunt picks when it lacks the host's
  cc_parse(host, &want);
  DaemonConfig cfg;
  cfg.congestion = want == CcAlgorithm::kReno ? CcAlgorithm::kBbr : CcAlgorithm::kReno;
  std::string error;
  ASSERT_TRUE(load_config(&cfg, &error)) << error;
  EXPECT_EQ(cfg.congestion, want) << "host default '" << host << "'";
}

TEST_F(LoadConfig, SpinAndCongestionAreReadAndCheckedByName) {
  setenv("SHUNT_SPIN_US", "75", 1);
  setenv("SHUNT_CONGESTION", "reno", 1);
  DaemonConfig cfg;
  std::string error;
  ASSERT_TRUE(load_config(&cfg, &error)) << error;
  EXPECT_EQ(cfg.idle_spin_us, 75u);
  EXPECT_EQ(cfg.congestion, CcAlgorithm::kReno);
  setenv("SHUNT_SPIN_US", "1ms", 1);
  EXPECT_FALSE(load_config(&cfg, &error));
  EXPECT_NE(error.find("SHUNT_SPIN_US=1ms"), std::string::npos) << error;
  setenv("SHUNT_SPIN_US", "75", 1);
  setenv("SHUNT_CONGESTION", "vegas", 1);
  EXPECT_FALSE(load_config(&cfg, &error));
  EXPECT_NE(error.find("SHUNT_CONGESTION=vegas"), std::string::npos) << error;
}

TEST_F(LoadConfig, SocketsPerApplicationAreReadAndBounded) {
  DaemonConfig cfg;
  std::string error;
  ASSERT_TRUE(load_config(&cfg, &error)) << error;
  EXPECT_EQ(cfg.slots_per_app, 4096u);
  setenv("SHUNT_SOCKETS", "12000", 1);
  ASSERT_TRUE(load_config(&cfg, &error)) << error;
  EXPECT_EQ(cfg.slots_per_app, 12000u);
  for (const char* bad : {"63", "16385", "4k", "-1"}) {
    setenv("SHUNT_SOCKETS", bad, 1);
    error.clear();
    EXPECT_FALSE(load_config(&cfg, &error)) << bad;
    EXPECT_NE(error.find(std::string("SHUNT_SOCKETS=") + bad), std::string::npos) << error;
  }
}

}  // namespace
}  // namespace shunt
