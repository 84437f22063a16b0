#!/usr/bin/env bash
# The demo: stock nginx (master + 1 worker) over shunt on one end of a veth pair,
# fetched with curl and loaded with wrk from a kernel host in another namespace.
#
#   scripts/demo.sh            install deps, build, run the demo (as root)
#   scripts/demo.sh --kernel   the same with nginx on the kernel stack (a baseline)
#
# Environment: BUILD_DIR (default build), SHUNT_DEMO_NET (third octet of
# 198.18.NET.0/24, default 7), SHUNT_DEMO_SKIP_BUILD=1 to skip install and build.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=scripts/lib-netns.sh
source scripts/lib-netns.sh
# shellcheck source=scripts/lib-nginx.sh
source scripts/lib-nginx.sh

mode=shunt
case ${1:-} in
  "") ;;
  --kernel) mode=kernel ;;
  *)
    echo "usage: scripts/demo.sh [--kernel]" >&2
    exit 2
    ;;
esac
if ((EUID != 0)); then
  echo "demo: run as root (it creates network namespaces)" >&2
  exit 1
fi
build=${BUILD_DIR:-build}
net=${SHUNT_DEMO_NET:-7}

if [[ ${SHUNT_DEMO_SKIP_BUILD:-0} != 1 ]]; then
  echo "== installing dependencies"
  scripts/install-deps.sh
  echo "== building"
  cmake -S . -B "$build"
  cmake --build "$build" -j2
fi
shunt=$root/$build/bin/shunt
[[ $build == /* ]] && shunt=$build/bin/shunt

name=shunt-demo-$$
tmp=$(mktemp -d /tmp/shunt-demo.XXXXXX)
chmod 755 "$tmp"
export SHUNT_RUNDIR=$tmp/run
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  nginx_stop "$tmp/site" || true
  if [[ $mode == shunt && -S $SHUNT_RUNDIR/shuntd.sock ]]; then
    timeout 15 "$shunt" stop || true
  fi
  netns_down "$name"
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== namespaces $name-s (shunt, vA) and $name-k (kernel host, vB)"
netns_up "$name" "$net"
addr=$NETNS_SHUNT_IP
nginx_site "$tmp/site" "$addr" 80
nginx_cmd=(nginx -p "$tmp/site" -c "$tmp/site/nginx.conf" -e "$tmp/site/error.log")

if [[ $mode == shunt ]]; then
  echo "== $shunt run --nic $NETNS_SHUNT_IF --ip $addr/$NETNS_PREFIX -- nginx (in $NETNS_SHUNT)"
  ip netns exec "$NETNS_SHUNT" "$shunt" run --nic "$NETNS_SHUNT_IF" --ip "$addr/$NETNS_PREFIX" \
    -- "${nginx_cmd[@]}" &
else
  echo "== nginx on the kernel stack, $addr on $NETNS_SHUNT_IF (in $NETNS_SHUNT)"
  netns_kernel_baseline
  ip netns exec "$NETNS_SHUNT" "${nginx_cmd[@]}" &
fi
nginx_pid=$!

if ! nginx_wait_up "http://$addr/" "$NETNS_KERNEL" "$nginx_pid"; then
  echo "== nginx error log" >&2
  cat "$tmp/site/error.log" >&2 2>/dev/null || true
  if [[ -f $SHUNT_RUNDIR/shuntd.log ]]; then
    echo "== shuntd log" >&2
    tail -n 30 "$SHUNT_RUNDIR/shuntd.log" >&2
  fi
  exit 1
fi

echo "== curl http://$addr/ (from $NETNS_KERNEL)"
ip netns exec "$NETNS_KERNEL" curl -sS --fail --max-time 10 "http://$addr/"

echo "== wrk -t1 -c16 -d5s http://$addr/"
ip netns exec "$NETNS_KERNEL" timeout 60 wrk -t1 -c16 -d5s "http://$addr/" || true

if [[ $mode == shunt ]]; then
  echo "== shunt stat"
  "$shunt" stat || true
fi
echo "== done"
