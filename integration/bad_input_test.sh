#!/usr/bin/env bash
# shellcheck disable=SC2154  # it_failures: defined in lib.sh
# Wrong input is refused clearly, and a missing daemon costs an application nothing.
#
#   integration/bad_input_test.sh BUILD_DIR [cli|daemon|failopen|all]
#
# cli       the shunt tool: bad options and variables are named with their values;
#           a daemon that dies at start makes `shunt run` fail and show its log.
# daemon    shuntd with a wrong SHUNT_NIC or SHUNT_IP exits non-zero, naming the
#           variable and the value.
# failopen  applications under LD_PRELOAD=libshunt.so with SHUNT_RUNDIR pointing to
#           an empty directory work on the kernel stack, and curl prints the shunt
#           warning exactly once.
set -uo pipefail
# shellcheck source=integration/lib.sh
source "$(dirname "$0")/lib.sh"

it_setup "${1:-}"
section=${2:-all}
name=shunt-it-bad-$$
net=${SHUNT_TEST_NET:-8}
down() { netns_down "$name"; }
it_cleanup_hooks+=(down)

# expect_fail DESCRIPTION NEEDLE... -- COMMAND...: COMMAND exits non-zero (not by
# timeout) within 30 s (a shell function: within its own bound), and its output (stdout + stderr) contains every NEEDLE.
expect_fail() {
  local what=$1 out rc needle ok=1
  shift
  local -a needles=()
  while [[ $1 != -- ]]; do
    needles+=("$1")
    shift
  done
  shift
  if declare -F -- "$1" >/dev/null; then
    out=$("$@" 2>&1 </dev/null)  # a function here bounds its own time
  else
    out=$(timeout 30 "$@" 2>&1 </dev/null)
  fi
  rc=$?
  if ((rc == 0)); then
    it_fail "$what: exit status 0, expected failure"
    ok=0
  elif ((rc == 124)); then
    it_fail "$what: still running after 30 s"
    ok=0
  fi
  for needle in "${needles[@]}"; do
    if ! grep -qF -- "$needle" <<<"$out"; then
      it_fail "$what: output lacks '$needle'"
      ok=0
    fi
  done
  if ((ok)); then
    it_pass "$what (exit $rc)"
  else
    echo "---- output of: $*" >&2
    echo "$out" >&2
  fi
}

section_cli() {
  it_need "$IT_SHUNT"
  local empty=$IT_TMP/cli-empty
  mkdir -p "$empty"
  # A stand-in libshunt.so: these cases never reach exec.
  export SHUNT_PRELOAD=$IT_SHUNT
  export SHUNT_RUNDIR=$empty
  unset SHUNT_NIC SHUNT_IP SHUNT_GATEWAY
  expect_fail "run --ip abc" "--ip" "abc" -- "$IT_SHUNT" run --nic vA --ip abc -- true
  expect_fail "SHUNT_IP=198.18.7.300/24" "SHUNT_IP" "198.18.7.300/24" -- \
    env SHUNT_IP=198.18.7.300/24 "$IT_SHUNT" run --nic vA -- true
  expect_fail "SHUNT_IP=198.18.7.1/33" "SHUNT_IP" "198.18.7.1/33" -- \
    env SHUNT_IP=198.18.7.1/33 "$IT_SHUNT" run --nic vA -- true
  expect_fail "SHUNT_GATEWAY=x" "SHUNT_GATEWAY" "'x'" -- \
    env SHUNT_GATEWAY=x "$IT_SHUNT" run --nic vA --ip 198.18.7.1/24 -- true
  expect_fail "run without NIC and daemon" "SHUNT_NIC" "--nic" -- \
    "$IT_SHUNT" run --ip 198.18.7.1/24 -- true
  expect_fail "run without command" "command" -- "$IT_SHUNT" run --nic vA --ip 198.18.7.1/24
  expect_fail "unknown option" "--bogus" -- "$IT_SHUNT" run --bogus -- true
  expect_fail "unknown command" "frobnicate" -- "$IT_SHUNT" frobnicate
  expect_fail "SHUNT_DAEMON missing" "SHUNT_DAEMON" "/nonexistent/shuntd" -- \
    env SHUNT_DAEMON=/nonexistent/shuntd "$IT_SHUNT" run --nic vA --ip 198.18.7.1/24 -- true
  expect_fail "SHUNT_PRELOAD missing" "SHUNT_PRELOAD" "/nonexistent/libshunt.so" -- \
    env SHUNT_PRELOAD=/nonexistent/libshunt.so "$IT_SHUNT" run --nic vA --ip 198.18.7.1/24 -- true
  expect_fail "stat without daemon" "$empty/shuntd.sock" -- "$IT_SHUNT" stat
  it_check "stop without daemon exits 0" "$IT_SHUNT" stop

  # A daemon that refuses its input: `shunt run` fails, shows the log, runs nothing.
  local fake=$IT_TMP/fake-shuntd marker=$IT_TMP/cmd-ran
  # shellcheck disable=SC2016  # expanded by the fake daemon, not here
  printf '#!/bin/sh\necho "fake shuntd: SHUNT_NIC=$SHUNT_NIC SHUNT_IP=$SHUNT_IP rundir=$SHUNT_RUNDIR: refused" >&2\nexit 3\n' >"$fake"
  chmod +x "$fake"
  expect_fail "daemon exits at start" "SHUNT_NIC=nosuchif0 SHUNT_IP=198.18.7.1/24 rundir=$empty/r1: refused" -- \
    env SHUNT_DAEMON="$fake" "$IT_SHUNT" run --nic nosuchif0 --ip 198.18.7.1/24 --rundir "$empty/r1" \
    -- touch "$marker"
  it_check "command not run when the daemon failed" test ! -e "$marker"
  it_check "daemon log in the rundir" grep -q refused "$empty/r1/shuntd.log"
  unset SHUNT_PRELOAD SHUNT_RUNDIR
}

# run_shuntd NIC IP: shuntd in the shunt namespace with these variables.
run_shuntd() {
  local rundir
  rundir=$(mktemp -d "$IT_TMP/daemon.XXXXXX")
  ip netns exec "$NETNS_SHUNT" env SHUNT_NIC="$1" SHUNT_IP="$2" SHUNT_RUNDIR="$rundir" \
    timeout 20 "$IT_SHUNTD"
}

section_daemon() {
  it_need "$IT_SHUNTD"
  netns_up "$name" "$net"
  local ip=$NETNS_SHUNT_IP/$NETNS_PREFIX
  expect_fail "shuntd SHUNT_NIC=nosuchif0" "SHUNT_NIC" "nosuchif0" -- run_shuntd nosuchif0 "$ip"
  expect_fail "shuntd SHUNT_IP=198.18.$net.300/24" "SHUNT_IP" "198.18.$net.300/24" -- \
    run_shuntd "$NETNS_SHUNT_IF" "198.18.$net.300/24"
  expect_fail "shuntd SHUNT_IP=abc" "SHUNT_IP" "abc" -- run_shuntd "$NETNS_SHUNT_IF" abc
  # The same through the tool: the daemon's message reaches the user.
  expect_fail "shunt run with SHUNT_NIC=nosuchif0" "SHUNT_NIC" "nosuchif0" -- \
    ip netns exec "$NETNS_SHUNT" "$IT_SHUNT" run --nic nosuchif0 --ip "$ip" \
    --rundir "$IT_TMP/daemon-run" -- true
  down
}

section_failopen() {
  it_need "$IT_PRELOAD"
  netns_up "$name" "$net"
  local empty=$IT_TMP/failopen-empty site=$IT_TMP/failopen-site port=8080 out
  mkdir -p "$empty"
  nginx_site "$site" 127.0.0.1 "$port"
  local -a in_ns=(ip netns exec "$NETNS_KERNEL" env SHUNT_RUNDIR="$empty" LD_PRELOAD="$IT_PRELOAD")

  # A server under libshunt.so: master + worker, fork included.
  "${in_ns[@]}" nginx -p "$site" -c "$site/nginx.conf" -e "$site/error.log" 2>"$IT_TMP/nginx.err" &
  local nginx_pid=$!
  if ! nginx_wait_up "http://127.0.0.1:$port/" "$NETNS_KERNEL" "$nginx_pid"; then
    it_fail "nginx under LD_PRELOAD without a daemon serves on 127.0.0.1"
    cat "$IT_TMP/nginx.err" "$site/error.log" >&2 2>/dev/null
    down
    return
  fi
  it_pass "nginx under LD_PRELOAD without a daemon serves on 127.0.0.1"
  # nginx points its stderr at the error log once started: the warning is in one of them.
  it_check "nginx under LD_PRELOAD printed the shunt warning" \
    grep -qi shunt "$IT_TMP/nginx.err" "$site/error.log"

  # A client under libshunt.so: works, and warns once.
  out=$("${in_ns[@]}" curl -sS --fail --max-time 10 "http://127.0.0.1:$port/" 2>"$IT_TMP/curl.err")
  it_check "curl under LD_PRELOAD without a daemon gets the page" cmp -s <(echo "$out") "$site/www/index.html"
  local warnings
  warnings=$(grep -ci shunt "$IT_TMP/curl.err")
  it_check "curl printed the shunt warning exactly once ($warnings)" test "$warnings" = 1
  if [[ $warnings != 1 ]]; then
    echo "---- curl stderr" >&2
    cat "$IT_TMP/curl.err" >&2
  fi

  # bash's /dev/tcp: plain read/write on a connected socket.
  out=$("${in_ns[@]}" timeout 10 bash -c \
    "exec 3<>/dev/tcp/127.0.0.1/$port; printf 'GET / HTTP/1.0\r\nHost: x\r\n\r\n' >&3; cat <&3" 2>/dev/null)
  it_check "bash /dev/tcp under LD_PRELOAD gets 200" grep -q "^HTTP/1.1 200" <<<"$out"

  nginx_stop "$site"
  down
}

case $section in
  cli) section_cli ;;
  daemon) section_daemon ;;
  failopen) section_failopen ;;
  all)
    section_cli
    section_daemon
    section_failopen
    ;;
  *)
    echo "usage: $0 BUILD_DIR [cli|daemon|failopen|all]" >&2
    exit 2
    ;;
esac
