#!/usr/bin/env bash
# shunt against the Linux kernel, in the same run (docs/benchmarks.md).
#
#   bench/run.sh [--smoke] [--trials N] [--secs S] [--only WORKLOAD[,...]] [--out DIR] [BUILD_DIR]
#
# Runs every workload (or those of --only) for shunt and for the kernel in
# alternation, N trials each (default 5; --smoke: one trial of 1 s, small sizes),
# servers and shuntd pinned to one CPU and clients to the other, and writes
# DIR (default bench/results/<UTC timestamp>/): report.md, results.json, PNG plots
# and raw/ (every tool's output). Progress on stderr. Root (network namespaces).
# Exit: 0; 1 when a workload that ran produced no number (or the report failed);
# 2 usage; 77 not root (skipped, for ctest).
#
# Workloads: nginx-keepalive nginx-close bulk-curl loss conn-scale memcached redis
# sockperf bulk-iperf3 nginx-restart shunt-to-shunt engine passthrough.
set -uo pipefail

usage() {
  sed -n 's/^#   //p' "$0" | head -n 1 >&2
  exit 2
}

B_SMOKE=0
trials=
secs=
only=
out=
build=
cmdline="bench/run.sh $*"
while (($#)); do
  case $1 in
    --smoke) B_SMOKE=1 ;;
    --trials) trials=${2:-}; shift ;;
    --secs) secs=${2:-}; shift ;;
    --only) only=${2:-}; shift ;;
    --out) out=${2:-}; shift ;;
    -h | --help) usage ;;
    -*) echo "run.sh: unknown option $1" >&2; usage ;;
    *) [[ -z $build ]] || usage; build=$1 ;;
  esac
  shift
done
[[ -z $trials || $trials =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: --trials wants a positive number" >&2; exit 2; }
[[ -z $secs || $secs =~ ^[1-9][0-9]*$ ]] || { echo "run.sh: --secs wants whole seconds" >&2; exit 2; }

root=$(cd "$(dirname "$0")/.." && pwd)
if ((EUID != 0)); then
  echo "run.sh: needs root (network namespaces); skipped" >&2
  exit 77
fi
B_BUILD=$(cd "${build:-$root/build}" 2>/dev/null && pwd) || { echo "run.sh: no build directory ${build:-$root/build}" >&2; exit 2; }
for f in bin/shunt bin/shuntd lib/libshunt.so; do
  [[ -e $B_BUILD/$f ]] || { echo "run.sh: $B_BUILD/$f does not exist (build first: cmake --build $B_BUILD)" >&2; exit 1; }
done
if ! /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
  echo "run.sh: /usr/bin/python3 with matplotlib needed (python3-matplotlib; scripts/install-deps.sh)" >&2
  exit 1
fi

# Sizes and durations: the full run, or the smoke run (one short trial of each).
if ((B_SMOKE)); then
  B_TRIALS=${trials:-1} B_SECS=${secs:-1}
  B_KA_CONNS="1 32 1000" B_SCALE_CONNS="100 10000" B_SCALE_WARMUP=5
  B_BULK_MB=16 B_LOSS_MB=4 B_LOSS_RATES="0 1 5" B_REDIS_N=5000
  B_MAXTIME=60 B_LOSS_MAXTIME=60
else
  B_TRIALS=${trials:-5} B_SECS=${secs:-5}
  B_KA_CONNS="1 32 1000" B_SCALE_CONNS="100 1000 4000 10000" B_SCALE_WARMUP=15
  B_BULK_MB=256 B_LOSS_MB=64 B_LOSS_RATES="0 1 5" B_REDIS_N=100000
  B_MAXTIME=120 B_LOSS_MAXTIME=300
fi
B_UL_MPS=10000
B_CPU_DELAY_MS=3
# Overrides, for experiments (docs/benchmarks.md).
B_KA_CONNS=${BENCH_KA_CONNS:-$B_KA_CONNS}
B_SCALE_CONNS=${BENCH_SCALE_CONNS:-$B_SCALE_CONNS}
B_SCALE_WARMUP=${BENCH_SCALE_WARMUP:-$B_SCALE_WARMUP}
B_BULK_MB=${BENCH_BULK_MB:-$B_BULK_MB}
B_LOSS_MB=${BENCH_LOSS_MB:-$B_LOSS_MB}
B_LOSS_RATES=${BENCH_LOSS_RATES:-$B_LOSS_RATES}
B_UL_MPS=${BENCH_UL_MPS:-$B_UL_MPS}
B_CPU_DELAY_MS=${BENCH_CPU_DELAY_MS:-$B_CPU_DELAY_MS}
B_STEER=${BENCH_STEER:-1}  # 0: every receive on the sending CPU, as a bare veth does
[[ $B_STEER == [01] ]] || { echo "run.sh: BENCH_STEER wants 0 or 1, not '$B_STEER'" >&2; exit 2; }

stamp=$(date -u +%Y%m%dT%H%M%SZ)
B_OUT=${out:-$root/bench/results/$stamp}
mkdir -p "$B_OUT/raw" || exit 1
B_OUT=$(cd "$B_OUT" && pwd)
rm -rf "${B_OUT:?}/raw"/* "$B_OUT"/report.md "$B_OUT"/results.json "$B_OUT"/*.png "$B_OUT/progress.log"
B_TMP=$(mktemp -d /dev/shm/shunt-bench.XXXXXX) || exit 1
chmod 755 "$B_TMP"

# shellcheck source=bench/lib-bench.sh
source "$root/bench/lib-bench.sh"
# shellcheck source=bench/workloads.sh
source "$root/bench/workloads.sh"
B_JSONL=$B_OUT/raw/results.jsonl
: >"$B_JSONL"

cleanup_done=0
cleanup() {
  ((cleanup_done)) && return 0
  cleanup_done=1
  local p
  for p in "${B_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  [[ -n ${B_RUNDIR:-} ]] && b_shuntd_stop "$B_RUNDIR"
  [[ -n ${B_M_RUN1:-} ]] && b_shuntd_stop "$B_M_RUN1"
  [[ -n ${B_M_RUN2:-} ]] && b_shuntd_stop "$B_M_RUN2"
  b_shuntd_stop "$B_TMP/run-restart"
  b_layout_down
  for p in "${B_PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  for p in "$B_TMP"/nginx-*/error.log; do
    [[ -s $p ]] && cp "$p" "$B_OUT/raw/$(basename "$(dirname "$p")")-error.log"
  done
  for p in "$B_TMP"/run-*/shuntd.log; do
    [[ -s $p ]] && cp "$p" "$B_OUT/raw/shuntd-$(basename "$(dirname "$p")").log"
  done
  rm -rf "$B_TMP"
}
# shellcheck disable=SC2317  # run by the trap
on_exit() {
  local rc=$?
  cleanup
  exit "$rc"
}
trap on_exit EXIT
trap 'echo "run.sh: interrupted" >&2; exit 130' INT TERM

# Which workloads.
selected=("${B_WORKLOADS[@]}")
if [[ -n $only ]]; then
  selected=()
  IFS=, read -ra want <<<"$only"
  for w in "${B_WORKLOADS[@]}"; do
    for x in "${want[@]}"; do [[ $x == "$w" ]] && selected+=("$w"); done
  done
  for x in "${want[@]}"; do
    [[ " ${B_WORKLOADS[*]} " == *" $x "* ]] || { echo "run.sh: unknown workload '$x' (known: ${B_WORKLOADS[*]})" >&2; exit 2; }
  done
fi

# Facts about the run, for the report.
t_start=$EPOCHREALTIME
b_meta start "$(date -u +%Y-%m-%dT%H:%M:%S)"
b_meta command "$cmdline"
b_meta smoke "$B_SMOKE"
b_meta trials "$B_TRIALS"
b_meta secs "$B_SECS"
b_meta selected "${selected[*]}"
b_meta commit "$(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)"
b_meta kernel "$(uname -r)"
b_meta cpus "$(nproc)"
b_meta cpu_model "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
b_meta loadavg_start "$(cut -d' ' -f1-3 /proc/loadavg)"
b_meta server_cpu "$B_SERVER_CPU"
b_meta client_cpu "$B_CLIENT_CPU"
b_meta pinning "servers (nginx master and worker, memcached, redis-server, sockperf, iperf3) and shuntd on CPU $B_SERVER_CPU; clients (wrk, curl, memcaslap, redis-benchmark, sockperf, iperf3) on CPU $B_CLIENT_CPU; shunt to shunt: daemon A and the servers on CPU $B_SERVER_CPU, daemon B and the clients on CPU $B_CLIENT_CPU; engine_bench unpinned (its kernel half uses two threads); passthrough_bench on CPU $B_SERVER_CPU"
b_meta steer "$B_STEER"
b_meta loss_mb "$B_LOSS_MB"
b_meta bulk_mb "$B_BULK_MB"
b_meta cpu_delay_ms "$B_CPU_DELAY_MS"
b_meta ul_mps "$B_UL_MPS"
b_meta clk_tck "$B_TCK"
b_meta irq_time_accounting "$(zcat /proc/config.gz 2>/dev/null | grep -q '^CONFIG_IRQ_TIME_ACCOUNTING=y' && echo on || echo off)"
b_meta hz "$(zcat /proc/config.gz 2>/dev/null | sed -n 's/^CONFIG_HZ=//p')"
b_meta shunt_mode "${SHUNT_MODE:-adaptive}"
b_meta spin_us "${SHUNT_SPIN_US:-default}"
for t in nginx wrk memcached memcaslap redis-server redis-benchmark sockperf iperf3 curl; do
  command -v "$t" >/dev/null && b_meta "version.$t" "$(case $t in
    nginx) nginx -v 2>&1 ;;
    wrk) wrk --version 2>&1 | head -n 1 | cut -d' ' -f1-2 ;;
    memcached) memcached -V 2>&1 ;;
    memcaslap) memcaslap -V 2>&1 | head -n 1 ;;
    redis-server) redis-server --version 2>&1 | cut -d' ' -f1-3 ;;
    redis-benchmark) redis-benchmark --version 2>&1 ;;
    sockperf) sockperf --version 2>&1 | head -n 1 ;;
    iperf3) iperf3 --version 2>&1 | head -n 1 ;;
    curl) curl --version 2>&1 | head -n 1 | cut -d' ' -f1-2 ;;
  esac)"
done

# The plan: how many steps (trials x cases x 2 stacks per workload).
declare -A need cases
for w in "${selected[@]}"; do
  fn=wl_${w//-/_}
  need[$w]=$("${fn}_need")
  cases[$w]=$("${fn}_cases")
  b_meta "cases.$w" "$(paste -sd'|' <<<"${cases[$w]}")"
  B_TOTAL=$((B_TOTAL + B_TRIALS * $(wc -l <<<"${cases[$w]}") * 2))
done
b_log "$((${#selected[@]})) workloads, $B_TOTAL measurements, $B_TRIALS trial(s) of ${B_SECS}s; report in $B_OUT"

# b_step W CASE STACK TRIAL: one measurement, one result line, one progress line.
b_step() {
  local w=$1 c=$2 stack=$3 trial=$4 fn=wl_${1//-/_} rc t0 head key unit ok=true raw
  B_STEP=$((B_STEP + 1))
  M=()
  B_ERR=
  B_NOTE=
  raw=raw/$w/$(tr -c 'A-Za-z0-9.=@-' '_' <<<"$c" | sed 's/_*$//')-$stack-$trial.txt
  B_RAWF=$B_OUT/$raw
  mkdir -p "$(dirname "$B_RAWF")"
  : >"$B_RAWF"
  t0=$EPOCHREALTIME
  "${fn}_trial" "$c" "$stack" "$trial" >>"$B_RAWF" 2>&1
  rc=$?
  head=$("${fn}_head" "$c")
  key=${head%% *}
  unit=${head#* }
  if ((rc != 0)); then
    ok=false
    [[ -n $B_ERR ]] || B_ERR="exit $rc"
  elif [[ -z ${M[$key]:-} ]]; then
    ok=false
    B_ERR="no $key"
  fi
  b_emit_result "$w" "$c" "$stack" "$trial" "$ok" "$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }')" "$raw"
  if [[ $ok == true ]]; then
    b_progress "$w $c $stack trial $trial/$B_TRIALS: $(awk -v v="${M[$key]}" 'BEGIN { printf((v >= 100 || v <= -100) ? "%.0f" : "%.4g", v) }') $unit${B_NOTE:+ ($B_NOTE)}"
  else
    b_progress "$w $c $stack trial $trial/$B_TRIALS: FAILED: $B_ERR"
  fi
}

# The layout; every workload runs on it (or next to it). If it cannot be set up,
# every measurement fails with that reason (not "not run": it is expected to work).
B_ERR=
layout_err=
if ! b_layout_up >>"$B_OUT/raw/setup-layout.log" 2>&1; then
  layout_err="the layout could not be set up: ${B_ERR:-see raw/setup-layout.log}"
  b_log "$layout_err"
fi

# b_fail_all W CASES... ERROR: every measurement of W recorded as failed with ERROR.
b_fail_all() {
  local w=$1 err=${!#} t c stack
  local -a cs=("${@:2:$#-2}")
  for ((t = 1; t <= B_TRIALS; t++)); do
    for c in "${cs[@]}"; do
      for stack in shunt kernel; do
        B_STEP=$((B_STEP + 1))
        M=()
        B_ERR=$err
        B_NOTE=
        b_emit_result "$w" "$c" "$stack" "$t" false 0 "raw/setup-$w.log"
      done
    done
  done
  b_progress "$w: FAILED: $err"
}

for ((wi = 0; wi < ${#selected[@]}; wi++)); do
  w=${selected[$wi]}
  B_PENDING=("${selected[@]:wi+1}")
  fn=wl_${w//-/_}
  mapfile -t wcases <<<"${cases[$w]}"
  n=$((B_TRIALS * ${#wcases[@]} * 2))
  if [[ -n ${need[$w]} ]]; then
    b_not_run "$w" "${need[$w]}"
    B_STEP=$((B_STEP + n))
    b_progress "$w: not run: ${need[$w]}"
    continue
  fi
  if [[ -n $layout_err ]]; then
    b_fail_all "$w" "${wcases[@]}" "$layout_err"
    continue
  fi
  B_ERR=
  if ! "${fn}_setup" >>"$B_OUT/raw/setup-$w.log" 2>&1; then
    b_fail_all "$w" "${wcases[@]}" "setup failed: ${B_ERR:-see raw/setup-$w.log}"
    "${fn}_teardown" >>"$B_OUT/raw/setup-$w.log" 2>&1
    continue
  fi
  for ((t = 1; t <= B_TRIALS; t++)); do
    for c in "${wcases[@]}"; do
      for stack in shunt kernel; do b_step "$w" "$c" "$stack" "$t"; done
    done
  done
  "${fn}_teardown" >>"$B_OUT/raw/setup-$w.log" 2>&1
done

[[ -z $layout_err ]] && b_meta oversized_frames "$(b_oversized_frames)"
[[ -n $B_RUNDIR ]] && b_stat "$B_RUNDIR" >"$B_OUT/raw/shunt-stat-end.txt"
cp "$B_RUNDIR/shuntd.log" "$B_OUT/raw/shuntd.log" 2>/dev/null
# How the main daemon waits when idle (docs/architecture.md, The daemon loop).
if grep -q 'raises no wake-up' "$B_OUT/raw/shuntd.log" 2>/dev/null; then
  b_meta shuntd_idle "naps (50 us to 1 ms) and polls: it found no AF_XDP socket to sleep on"
else
  b_meta shuntd_idle "sleeps on the AF_XDP socket"
fi
b_meta loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg)"
b_meta end "$(date -u +%Y-%m-%dT%H:%M:%S)"
b_meta duration_s "$(awk -v a="$t_start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')"
cleanup

check=()
((B_SMOKE)) && check=(--check)
"$B_PY" "$B_REPORT" build "$B_OUT" "${check[@]}"
rc=$?
for f in report.md results.json latency_cdf.png throughput_vs_connections.png throughput_vs_loss.png; do
  if [[ ! -s $B_OUT/$f ]]; then
    echo "run.sh: $B_OUT/$f was not written" >&2
    rc=1
  fi
done
b_log "report: $B_OUT/report.md ($(awk -v a="$t_start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }') s)"
exit "$rc"
