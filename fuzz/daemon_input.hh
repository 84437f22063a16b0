// The input language of fuzz_daemon, shared with make_corpus (which writes seeds
// in it). An input is a sequence of operations, each an opcode byte and fixed
// arguments; a truncated operation ends the input.
#pragma once

#include <cstdint>

namespace shunt::fuzz::daemon_op {

enum : uint8_t {
  kCommand = 0,        // app, queue, op, slot, port index, arg, flags (7 bytes)
  kScribble = 1,       // app, offset (4, little-endian), length (1), then that many bytes
  kIndex = 2,          // app, slot, which (0 rx.head 1 rx.tail 2 tx.head 3 tx.tail), value (4)
  kRemoteConnect = 3,  // port index
  kRemoteSend = 4,     // connection, length
  kRemoteClose = 5,    // connection, abort
  kTurns = 6,          // count
  kHangUp = 7,         // app: its process goes; a new one attaches in its place
  kAppWrite = 8,       // app, slot, length: bytes into the tx ring, then kTxReady
  kAppRead = 9,        // app, slot: consume the rx ring, then kRxDrained if asked
  kCount
};

// Ports an operation names by index (80 and 8080 listen in most seeds).
inline constexpr uint16_t kPorts[4] = {80, 8080, 0, 9};

}  // namespace shunt::fuzz::daemon_op
