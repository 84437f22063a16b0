// Environment configuration, read once (README: same names as `shunt run` options).
//   SHUNT_DISABLE=1   do nothing at all: every call goes to libc
//   SHUNT_RUNDIR      directory of shuntd.sock (default /run/shunt)
//   SHUNT_SPIN_US     spin budget before a blocking call sleeps (default 50)
//   SHUNT_LOG         error | warn (default) | debug
#pragma once

#include <cstdint>

namespace shunt::preload {

enum class LogLevel : int { kError = 0, kWarn = 1, kDebug = 2 };

struct Config {
  bool disabled = false;
  char socket_path[108] = {};  // sun_path of the control socket
  bool path_too_long = false;
  uint32_t spin_us = 50;
  LogLevel log_level = LogLevel::kWarn;
};

const Config& config();

}  // namespace shunt::preload
