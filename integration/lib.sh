# shellcheck shell=bash
# Helpers shared by the integration tests. Each test: `source lib.sh`, then it_setup.

it_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib-netns.sh
source "$it_root/scripts/lib-netns.sh"
# shellcheck source=scripts/lib-nginx.sh
source "$it_root/scripts/lib-nginx.sh"

it_failures=0
it_failed_checks=()  # repeated in the last line, where a truncated log still shows them
it_name=$(basename "$0" .sh)

it_log() { echo "[$it_name] $*"; }
it_fail() {
  echo "[$it_name] FAIL: $*" >&2
  it_failures=$((it_failures + 1))
  it_failed_checks+=("$*")
}
it_pass() { echo "[$it_name] ok: $*"; }
# it_check DESCRIPTION COMMAND...: runs COMMAND, records pass or fail.
it_check() {
  local what=$1
  shift
  if "$@"; then it_pass "$what"; else it_fail "$what"; fi
}

# it_setup BUILD_DIR: checks what every test needs; sets IT_BUILD IT_SHUNT IT_SHUNTD
# IT_PRELOAD and IT_TMP (removed at exit, with the hooks in it_cleanup_hooks).
it_cleanup_hooks=()
# shellcheck disable=SC2034  # IT_* are for the tests that source this file
it_setup() {
  local build=${1:-}
  if [[ -z $build ]]; then
    echo "usage: $0 BUILD_DIR" >&2
    exit 2
  fi
  if ((EUID != 0)); then
    echo "[$it_name] SKIP: needs root (network namespaces)"
    exit 77
  fi
  IT_BUILD=$(cd "$build" && pwd)
  IT_SHUNT=$IT_BUILD/bin/shunt
  IT_SHUNTD=$IT_BUILD/bin/shuntd
  IT_PRELOAD=$IT_BUILD/lib/libshunt.so
  IT_TMP=$(mktemp -d "/tmp/shunt-$it_name.XXXXXX")
  chmod 755 "$IT_TMP"
  trap it_exit EXIT
  trap 'exit 130' INT TERM
}

it_exit() {
  local rc=$? hook
  trap - EXIT INT TERM
  for hook in "${it_cleanup_hooks[@]}"; do
    $hook || true
  done
  rm -rf "$IT_TMP"
  if ((rc == 0 && it_failures > 0)); then rc=1; fi
  if ((rc == 0)); then
    echo "[$it_name] PASS"
  else
    echo "[$it_name] FAILED ($it_failures checks, exit $rc)" >&2
    local what
    for what in "${it_failed_checks[@]}"; do echo "[$it_name] failed: $what" >&2; done
  fi
  exit "$rc"
}

# it_need FILE...: each must exist, else the test fails (the build must make them).
it_need() {
  local f missing=0
  for f in "$@"; do
    if [[ ! -e $f ]]; then
      echo "[$it_name] FAIL: $f does not exist (not built?)" >&2
      missing=1
    fi
  done
  ((missing == 0)) || exit 1
}

# it_stop_shuntd: stops the daemon answering on $SHUNT_RUNDIR, if one does.
it_stop_shuntd() {
  if [[ -S $SHUNT_RUNDIR/shuntd.sock ]]; then timeout 15 "$IT_SHUNT" stop >/dev/null 2>&1; fi
  return 0
}

# stat_flat: `shunt stat --flat` of the daemon on $SHUNT_RUNDIR (empty if none
# answers); counter NAME STAT: one counter's value in such an output.
stat_flat() { timeout 10 "$IT_SHUNT" stat --flat 2>/dev/null; }
counter() { awk -v k="$1" '$1 == k { print $2; exit }' <<<"$2"; }
# counter_settles NAME WANT [TENTHS]: until counter NAME of the daemon equals WANT
# (up to TENTHS tenths of a second, default 50: zombies drain, applications
# detach); its last value in COUNTER_NOW; non-zero when it never got there.
counter_settles() {
  local i
  for ((i = 0; i < ${3:-50}; i++)); do
    COUNTER_NOW=$(counter "$1" "$(stat_flat)")
    [[ $COUNTER_NOW == "$2" ]] && return 0
    sleep 0.1
  done
  return 1
}
# rss_kib PID: the resident memory of process PID in KiB (0 if it is gone).
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# it_show_logs LINES [FILE...]: the last LINES of each FILE and of shuntd's log, on
# stderr (for a failing test).
it_show_logs() {
  local lines=$1 f
  shift
  for f in "$@" "${SHUNT_RUNDIR:-/nonexistent}/shuntd.log"; do
    [[ -f $f ]] || continue
    echo "---- $f" >&2
    tail -n "$lines" "$f" >&2
  done
}

# it_netns_up NAME NET: netns_up, then for the test: ip and kip (the shunt end's
# and the kernel host's addresses), in_shunt and in_kernel (command prefixes into
# each namespace), and shunt_run (`shunt run` on the NIC, ending with --).
# shellcheck disable=SC2034  # for the tests that source this file
it_netns_up() {
  netns_up "$1" "$2" || return 1
  ip=$NETNS_SHUNT_IP
  kip=$NETNS_KERNEL_IP
  in_shunt=(ip netns exec "$NETNS_SHUNT")
  in_kernel=(ip netns exec "$NETNS_KERNEL")
  shunt_run=("${in_shunt[@]}" "$IT_SHUNT" run --nic "$NETNS_SHUNT_IF" --ip "$ip/$NETNS_PREFIX" --)
}

# uptime_s: seconds since boot (/proc/uptime). A step of the wall clock (NTP, a
# virtual machine resynchronising its clock) does not move it.
uptime_s() { cut -d' ' -f1 /proc/uptime; }
# uptime_since T0: seconds on uptime_s from T0 to now, two decimals.
uptime_since() { awk -v a="$1" -v b="$(uptime_s)" 'BEGIN { printf "%.2f", b - a }'; }

# wrk_clock_stepped OUTPUT ELAPSED: wrk's own run time, which it reads from the
# wall clock, exceeds ELAPSED (seconds on uptime_s around the run) by more than a
# second: the wall clock stepped during the run. wrk ages requests on that clock
# too, so it then counts every request in flight as a timeout.
wrk_clock_stepped() {
  local took
  took=$(sed -n 's/^ *[0-9][0-9]* requests in \([0-9.]*[a-z]*\),.*/\1/p' <<<"$1")
  awk -v t="$took" -v e="$2" 'BEGIN {
    s = t + 0
    if (t ~ /ms$/) s /= 1000; else if (t ~ /us$/) s /= 1e6
    else if (t ~ /m$/) s *= 60; else if (t ~ /h$/) s *= 3600
    exit !(t != "" && s > e + 1) }'
}

# it_wrk CMD...: runs a wrk command line, its output in WRK_OUT and its exit
# status in WRK_RC; once more when the wall clock stepped during the run, which
# makes wrk's timeout count meaningless (wrk_clock_stepped).
# shellcheck disable=SC2034  # WRK_* are for the tests that source this file
it_wrk() {
  local try t0
  for try in 1 2; do
    t0=$(uptime_s)
    WRK_OUT=$("$@" 2>&1)
    WRK_RC=$?
    wrk_clock_stepped "$WRK_OUT" "$(uptime_since "$t0")" || return 0
    echo "$WRK_OUT"
    it_log "the wall clock stepped during wrk's run (try $try of 2)"
  done
}

# it_check_wrk OUTPUT RC MIN: wrk exited 0, made at least MIN requests, and saw no
# socket error and no non-2xx answer. Sets WRK_REQUESTS.
it_check_wrk() {
  local out=$1 rc=$2 min=$3 errors non2xx
  WRK_REQUESTS=$(sed -n 's/^ *\([0-9][0-9]*\) requests in .*/\1/p' <<<"$out")
  WRK_REQUESTS=${WRK_REQUESTS:-0}
  it_check "wrk exits 0 (rc $rc)" test "$rc" = 0
  it_check "wrk completed requests ($WRK_REQUESTS)" test "$WRK_REQUESTS" -ge "$min"
  errors=$(grep -E '^ *Socket errors:' <<<"$out" || true)
  if [[ -z $errors ]] || [[ $errors =~ connect\ 0,\ read\ 0,\ write\ 0,\ timeout\ 0$ ]]; then
    it_pass "wrk: no socket errors"
  else
    it_fail "wrk: ${errors# }"
  fi
  non2xx=$(sed -n 's/^ *Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p' <<<"$out")
  it_check "wrk: no non-2xx answers (${non2xx:-0})" test "${non2xx:-0}" = 0
}

# it_nginx_up URL NETNS PID [WHAT]: nginx (pid PID) answers URL from NETNS within
# nginx_wait_up's bound; else the test fails here, with the test's show_logs.
it_nginx_up() {
  local url=$1 ns=$2 pid=$3 what=${4:-nginx}
  if ! nginx_wait_up "$url" "$ns" "$pid"; then
    it_fail "$what answers on $url"
    if declare -F show_logs >/dev/null; then show_logs; fi
    exit 1
  fi
  it_pass "$what answers on $url"
}
