// Whole programs under LD_PRELOAD=libshunt.so: with no daemon (fail-open), with
// SHUNT_DISABLE, and against the fake shuntd, where the probe's scenarios check the
// kernel's socket semantics through the shunted path.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <atomic>
#include <thread>
#include <vector>

#include "fake_shuntd.hh"
#include "probe_wait.hh"
#include "shunt/abi.h"

extern char** environ;

namespace shunt::test {
namespace {

struct ProbeRun {
  int exit_code = -1;
  std::string out, err;
};

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

class ProbeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/shunt-preload-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir = tmpl;
  }
  void TearDown() override {
    if (fake) fake->stop();
    unlink((dir + "/out").c_str());
    unlink((dir + "/err").c_str());
    rmdir(dir.c_str());
  }
  void start_fake(FakeOptions o = {}) {
    fake = std::make_unique<FakeShuntd>(o);
    ASSERT_TRUE(fake->start(dir));
  }
  ProbeRun run(const std::string& scenario, std::vector<std::string> env = {}) {
    // SHUNT_PROBE_LOG=debug in the test's environment: debug logs from every probe.
    if (const char* l = getenv("SHUNT_PROBE_LOG")) env.insert(env.begin(), std::string("SHUNT_LOG=") + l);
    for (char** e = environ; *e != nullptr; ++e) {
      std::string v = *e;
      if (v.rfind("LD_PRELOAD=", 0) == 0 || v.rfind("SHUNT_", 0) == 0) continue;
      env.push_back(v);
    }
    env.push_back(std::string("LD_PRELOAD=") + SHUNT_LIB_PATH);
    env.push_back("SHUNT_RUNDIR=" + dir);
    std::vector<char*> envp;
    for (auto& v : env) envp.push_back(v.data());
    envp.push_back(nullptr);
    std::string out = dir + "/out", err = dir + "/err";
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    std::string probe = SHUNT_PROBE_PATH;
    char* argv[] = {probe.data(), const_cast<char*>(scenario.c_str()), nullptr};
    pid_t pid = -1;
    ProbeRun r;
    if (posix_spawn(&pid, probe.c_str(), &fa, nullptr, argv, envp.data()) != 0) return r;
    posix_spawn_file_actions_destroy(&fa);
    probe_pid = pid;
    int status = 0;
    for (int waited = 0; waited < 60000; waited += 10) {  // a hung probe fails, never hangs
      if (waitpid(pid, &status, WNOHANG) == pid) {
        r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        break;
      }
      usleep(10000);
    }
    if (r.exit_code == -1) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
    }
    probe_pid = -1;
    r.out = slurp(out);
    r.err = slurp(err);
    return r;
  }
  int lines_with(const std::string& text, const std::string& needle) {
    int n = 0;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);)
      if (line.find(needle) != std::string::npos) ++n;
    return n;
  }
  std::string dir;
  std::unique_ptr<FakeShuntd> fake;
  std::atomic<pid_t> probe_pid{-1};  // the probe run() waits for
};

// ---- no daemon ----

TEST_F(ProbeTest, FailOpenWarnsExactlyOnceAndUsesTheKernel) {
  ProbeRun r = run("failopen");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "ok failopen\n");
  EXPECT_EQ(r.err, "shunt: cannot reach shuntd at " + dir +
                       "/shuntd.sock (No such file or directory); using the kernel stack\n");
}

TEST_F(ProbeTest, FailOpenOnAbiMismatch) {
  FakeOptions o;
  o.reply_status = -EPROTO;
  start_fake(o);
  ProbeRun r = run("failopen");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(lines_with(r.err, "shunt:"), 1) << r.err;
  EXPECT_EQ(lines_with(r.err, "ABI version mismatch"), 1) << r.err;
  EXPECT_EQ(lines_with(r.err, "using the kernel stack"), 1) << r.err;
}

TEST_F(ProbeTest, DisabledDoesNothing) {
  start_fake();
  ProbeRun r = run("passthrough", {"SHUNT_DISABLE=1"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(fake->attaches(), 0);
}

TEST_F(ProbeTest, PassthroughWithoutDaemon) {
  ProbeRun r = run("passthrough");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(lines_with(r.err, "shunt:"), 1);
}

// ---- with the fake daemon ----

TEST_F(ProbeTest, PassthroughWithDaemonSendsNothingToIt) {
  start_fake();
  ProbeRun r = run("passthrough");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err, "");
  EXPECT_EQ(fake->attaches(), 1);  // the first AF_INET stream socket attaches
  EXPECT_EQ(fake->commands(int(abi::Op::kBind)), 0);
  EXPECT_EQ(fake->commands(int(abi::Op::kConnect)), 0);
}

TEST_F(ProbeTest, KernelRoutesStayInTheKernel) {
  start_fake();
  ProbeRun r = run("kernel_routes");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(fake->commands(int(abi::Op::kBind)), 0);
  EXPECT_EQ(fake->commands(int(abi::Op::kConnect)), 0);
}

class Shunted : public ProbeTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(Shunted, Scenario) {
  start_fake();
  ProbeRun r = run(GetParam(), {"SHUNT_LOG=warn"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, std::string("ok ") + GetParam() + "\n") << r.err;
  EXPECT_GE(fake->commands(int(abi::Op::kBind)) + fake->commands(int(abi::Op::kConnect)), 1);
  if (std::string(GetParam()) == "fork") {
    EXPECT_GE(fake->inherits(), 1);
    EXPECT_GE(fake->attaches(), 2);
  }
}

INSTANTIATE_TEST_SUITE_P(Probe, Shunted,
                         ::testing::Values("basic", "epoll", "errors", "dup", "sendfile",
                                           "wildcard", "poll", "fork", "threads", "other_entries", "linger",
                                           "restart", "nested_epoll"),
                         [](const auto& info) { return std::string(info.param); });

// UDP (udp_probe.cc), with rings big enough for the largest datagram.
class ShuntedUdp : public ProbeTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(ShuntedUdp, Scenario) {
  FakeOptions o;
  o.ring_size = 1 << 17;
  start_fake(o);
  ProbeRun r = run(GetParam(), {"SHUNT_LOG=warn"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, std::string("ok ") + GetParam() + "\n") << r.err;
  EXPECT_GE(fake->commands(int(abi::Op::kUdpBind)) + fake->commands(int(abi::Op::kUdpConnect)), 1);
}

INSTANTIATE_TEST_SUITE_P(Probe, ShuntedUdp,
                         ::testing::Values("udp_basic", "udp_mmsg", "udp_epoll", "udp_wildcard",
                                           "udp_threads", "udp_big", "udp_fork"),
                         [](const auto& info) { return std::string(info.param); });

TEST_F(ProbeTest, UdpKernelRoutesStayInTheKernel) {
  start_fake();
  ProbeRun r = run("udp_kernel_routes");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "ok udp_kernel_routes\n") << r.err;
  EXPECT_EQ(fake->commands(int(abi::Op::kUdpBind)), 0);
  EXPECT_EQ(fake->commands(int(abi::Op::kUdpConnect)), 0);
}

TEST_F(ProbeTest, DaemonGoneResetsShuntedSocketsAndNewOnesUseTheKernel) {
  start_fake();
  std::thread killer([&] {
    // Once the probe has accepted and sleeps in its read, the daemon dies.
    for (int i = 0; i < 1000 && slurp(dir + "/out").find("ready") == std::string::npos; ++i)
      usleep(10000);
    if (pid_t p = probe_pid.load(); p > 0) probe::wait_asleep(p, p);
    fake->stop();
  });
  ProbeRun r = run("daemon_gone");
  killer.join();
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "ready\nok daemon_gone\n") << r.err;
  EXPECT_EQ(lines_with(r.err, "shuntd hung up"), 1) << r.err;
}

TEST_F(ProbeTest, DebugLogPrintsControlOps) {
  start_fake();
  ProbeRun r = run("basic", {"SHUNT_LOG=debug"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_GE(lines_with(r.err, "op 1 "), 1) << r.err;  // kBind
  EXPECT_GE(lines_with(r.err, "op 4 "), 1) << r.err;  // kAccept
}

}  // namespace
}  // namespace shunt::test
