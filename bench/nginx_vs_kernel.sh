#!/usr/bin/env bash
# nginx serving a 1 KiB file over the veth, through shunt and through the kernel,
# runs interleaved in one session (the machine is shared and noisy: compare
# ratios, not absolute figures). Prints each run, the medians and the ratio.
#
#   bench/nginx_vs_kernel.sh [BUILD_DIR] [RUNS] [SECONDS] [CONNECTIONS]
#
# Root; uses namespaces shunt-bench-PID-{s,k} and 198.18.9.0/24; cleans up.
set -uo pipefail
cd "$(dirname "$0")/.."
build=$(realpath "${1:-build}")
runs=${2:-3}
secs=${3:-5}
conns=${4:-16}
# shellcheck source=scripts/lib-netns.sh
source scripts/lib-netns.sh
# shellcheck source=scripts/lib-nginx.sh
source scripts/lib-nginx.sh

name=shunt-bench-$$
tmp=$(mktemp -d)
export SHUNT_RUNDIR=$tmp/run
nginx_pid=
cleanup() {
  [[ -n $nginx_pid ]] && kill "$nginx_pid" 2>/dev/null
  [[ -S $SHUNT_RUNDIR/shuntd.sock ]] && timeout 15 "$build/bin/shunt" stop >/dev/null 2>&1
  netns_down "$name"
  rm -rf "$tmp"
}
trap cleanup EXIT

# One run: mode shunt|kernel; prints requests/s.
run_once() {
  local mode=$1
  netns_up "$name" 9
  rm -rf "$tmp/site"
  nginx_site "$tmp/site" "$NETNS_SHUNT_IP" 80
  head -c 1024 /dev/urandom >"$tmp/site/www/1k.bin"
  chmod 644 "$tmp/site/www/1k.bin"
  local cmd=(nginx -p "$tmp/site" -c "$tmp/site/nginx.conf" -e "$tmp/site/error.log")
  if [[ $mode == shunt ]]; then
    ip netns exec "$NETNS_SHUNT" "$build/bin/shunt" run --nic "$NETNS_SHUNT_IF" \
      --ip "$NETNS_SHUNT_IP/$NETNS_PREFIX" -- "${cmd[@]}" >"$tmp/nginx.out" 2>&1 &
  else
    netns_kernel_baseline
    ip netns exec "$NETNS_SHUNT" "${cmd[@]}" >"$tmp/nginx.out" 2>&1 &
  fi
  nginx_pid=$!
  if ! nginx_wait_up "http://$NETNS_SHUNT_IP/" "$NETNS_KERNEL" "$nginx_pid" >/dev/null 2>&1; then
    echo 0
    return
  fi
  ip netns exec "$NETNS_KERNEL" timeout $((secs + 30)) wrk -t1 -c"$conns" -d"${secs}s" \
    "http://$NETNS_SHUNT_IP/1k.bin" 2>/dev/null | awk '/^Requests\/sec/ {print int($2)}'
  nginx_stop "$tmp/site" >/dev/null 2>&1
  nginx_pid=
  [[ $mode == shunt ]] && timeout 15 "$build/bin/shunt" stop >/dev/null 2>&1
  netns_down "$name"
}

median() { sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : int((a[NR / 2] + a[NR / 2 + 1]) / 2)}'; }

shunt_rates=()
kernel_rates=()
for ((i = 1; i <= runs; i++)); do
  s=$(run_once shunt)
  k=$(run_once kernel)
  echo "run $i: shunt ${s:-0} req/s, kernel ${k:-0} req/s"
  shunt_rates+=("${s:-0}")
  kernel_rates+=("${k:-0}")
done
ms=$(printf '%s\n' "${shunt_rates[@]}" | median)
mk=$(printf '%s\n' "${kernel_rates[@]}" | median)
echo "median: shunt $ms req/s, kernel $mk req/s, ratio $(awk -v a="$ms" -v b="$mk" 'BEGIN {printf "%.2f", b ? a / b : 0}')"
