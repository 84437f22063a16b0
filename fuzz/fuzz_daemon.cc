// libFuzzer target: shuntd's side of the trust boundary. Two applications attach
// to a daemon on an in-memory port (tests/daemon/rig.hh) and do what hostile ones
// can: arbitrary commands, arbitrary bytes anywhere in their regions, ring
// indices set to anything, hang-ups, while a remote host connects, sends and
// closes. The daemon must never crash (ASan/UBSan), and must keep serving: after
// each input a fresh application attaches and gets an answer, and the counters of
// what is held are consistent.
#include <arpa/inet.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "daemon_input.hh"
#include "daemon/log.hh"
#include "rig.hh"

using namespace shunt;
using namespace shunt::test;
namespace op = shunt::fuzz::daemon_op;

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_daemon: %s\n", what);
  std::abort();
}

struct Reader {
  const uint8_t* p;
  size_t left;
  bool take(void* out, size_t n) {
    if (left < n) return false;
    std::memcpy(out, p, n);
    p += n;
    left -= n;
    return true;
  }
  bool byte(uint8_t* b) { return take(b, 1); }
};

struct Remote {
  PlainRings rings{1 << 14};
  ConnId conn = kInvalidId;
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  g_log_level = -1;  // the daemon's log lines would drown the fuzzer's
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  DaemonRig rig(8);
  if (!rig.started) fail(rig.start_error.c_str());
  std::unique_ptr<TestApp> apps[2] = {rig.attach(), rig.attach()};
  if (!apps[0] || !apps[1]) fail("attach");
  Remote remotes[4];
  uint16_t next_remote_port = 40000;
  uint64_t cookie = 1;
  Reader in{data, size};
  for (int steps = 0; steps < 512; ++steps) {
    uint8_t code;
    if (!in.byte(&code)) break;
    switch (code % op::kCount) {
      case op::kCommand: {
        uint8_t a[7];
        if (!in.take(a, sizeof a)) goto done;
        TestApp& app = *apps[a[0] & 1];
        abi::Command c{};
        c.cookie = cookie++;
        c.op = a[2] % 16;
        c.slot = a[3] == 0xff ? abi::kNoSlot : a[3] % 20;
        c.ip = htonl((a[4] & 0x80) ? kRemoteIp : kNicIp);
        c.port = htons(op::kPorts[a[4] & 3]);
        c.arg = int8_t(a[5]);
        c.arg2 = a[5];
        c.flags = a[6] & 1;
        app.push(c, a[1] & 1);
        break;
      }
      case op::kScribble: {
        uint8_t a;
        uint32_t off;
        uint8_t len;
        if (!in.byte(&a) || !in.take(&off, 4) || !in.byte(&len)) goto done;
        TestApp& app = *apps[a & 1];
        off %= uint32_t(app.size);
        uint8_t bytes[255];
        if (!in.take(bytes, len)) goto done;
        uint32_t n = std::min<uint32_t>(len, uint32_t(app.size) - off);
        std::memcpy(static_cast<uint8_t*>(app.base) + off, bytes, n);
        break;
      }
      case op::kIndex: {
        uint8_t a[3];
        uint32_t v;
        if (!in.take(a, 3) || !in.take(&v, 4)) goto done;
        abi::SocketSlot* s = apps[a[0] & 1]->slot(a[1] % 16);
        abi::Index* idx[4] = {&s->rx.head, &s->rx.tail, &s->tx.head, &s->tx.tail};
        idx[a[2] & 3]->value.store(v);
        break;
      }
      case op::kRemoteConnect: {
        uint8_t a;
        if (!in.byte(&a)) goto done;
        Remote& r = remotes[a % 4];
        if (r.conn != kInvalidId) break;
        ConnId c;
        if (rig.remote->connect(next_remote_port++, kNicIp, op::kPorts[(a >> 2) & 1],
                                abi::ProducerEnd(r.rings.rx()), abi::ConsumerEnd(r.rings.tx()),
                                uint64_t(a % 4) + 1, Daemon::now_us(), &c) == 0)
          r.conn = c;
        break;
      }
      case op::kRemoteSend: {
        uint8_t a[2];
        if (!in.take(a, 2)) goto done;
        Remote& r = remotes[a[0] % 4];
        if (r.conn == kInvalidId) break;
        uint8_t buf[255];
        std::memset(buf, 'a' + a[1] % 26, sizeof buf);
        r.rings.tx().write(buf, a[1]);
        rig.remote->tx_ready(r.conn);
        break;
      }
      case op::kRemoteClose: {
        uint8_t a[2];
        if (!in.take(a, 2)) goto done;
        Remote& r = remotes[a[0] % 4];
        if (r.conn == kInvalidId) break;
        rig.remote->close(r.conn, a[1] & 1, Daemon::now_us());
        r.conn = kInvalidId;
        break;
      }
      case op::kTurns: {
        uint8_t n;
        if (!in.byte(&n)) goto done;
        rig.turns(n % 16 + 1);
        break;
      }
      case op::kHangUp: {
        uint8_t a;
        if (!in.byte(&a)) goto done;
        apps[a & 1]->close_ctl();
        rig.daemon->poll_control(0);
        rig.turn();
        apps[a & 1] = rig.attach();
        // Every region may be held by closing connections still draining: a
        // refusal (EUSERS) then is the daemon's right answer.
        if (!apps[a & 1]) goto out_of_regions;
        break;
      }
      case op::kAppWrite: {
        uint8_t a[3];
        if (!in.take(a, 3)) goto done;
        TestApp& app = *apps[a[0] & 1];
        uint32_t slot = a[1] % 16;
        uint8_t buf[255];
        std::memset(buf, 'A' + a[2] % 26, sizeof buf);
        app.tx(slot).write(buf, a[2]);
        app.slot(slot)->tx_notice.store(1);
        app.push(command(abi::Op::kTxReady, slot));
        break;
      }
      case op::kAppRead: {
        uint8_t a[2];
        if (!in.take(a, 2)) goto done;
        TestApp& app = *apps[a[0] & 1];
        uint32_t slot = a[1] % 16;
        uint8_t buf[4096];
        while (app.rx(slot).read(buf, sizeof buf) > 0) {
        }
        if (app.slot(slot)->flags.load() & abi::kFlagWantRxDrain)
          app.push(command(abi::Op::kRxDrained, slot));
        break;
      }
    }
    // An application the daemon cut off is replaced, as a restarted one would be.
    for (auto& app : apps) {
      if (!app->hung_up()) continue;
      app = rig.attach();
      if (!app) goto out_of_regions;
    }
  }
done:
  rig.turns(4);
  {
    // Still serving: a new application attaches and is answered.
    auto fresh = rig.attach();
    if (!fresh) {
      if (rig.stat("apps.regions") < rig.cfg.max_apps) fail("a new application cannot attach");
      return 0;
    }
    if (rig.call(*fresh, command(abi::Op::kNop)).result != 0)
      fail("a new application gets no answer");
    if (rig.stat("apps.regions") < rig.stat("apps.active")) fail("inconsistent application counts");
  }
  return 0;
out_of_regions:
  if (rig.stat("apps.regions") < rig.cfg.max_apps) fail("attach refused with regions free");
  return 0;
}
