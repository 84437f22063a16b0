// Waiting for a probe thread to be asleep in a call, for the probe programs
// (probe.cc, udp_probe.cc) and for the tests that run them (process_test.cc):
// a wake-up sent before that would test nothing.
#pragma once

#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

namespace probe {

// The kernel state letter of thread tid of process pid ('S': asleep in a call).
inline char thread_state(pid_t tid, pid_t pid = getpid()) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/task/%d/stat", int(pid), int(tid));
  FILE* f = fopen(path, "r");
  if (f == nullptr) return '?';
  char buf[512] = {};
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  const char* close_paren = strrchr(buf, ')');
  return n > 0 && close_paren != nullptr && close_paren[1] == ' ' ? close_paren[2] : '?';
}

// Waits (bounded: 5 s) until thread `tid` (of process `pid`) is asleep in a call,
// past its spin.
inline void wait_asleep(pid_t tid, pid_t pid = getpid()) {
  for (int i = 0; i < 5000 && thread_state(tid, pid) != 'S'; ++i) usleep(1000);
  usleep(20000);  // past the spin phase into the sleep, and still asleep
  for (int i = 0; i < 5000 && thread_state(tid, pid) != 'S'; ++i) usleep(1000);
}

}  // namespace probe
