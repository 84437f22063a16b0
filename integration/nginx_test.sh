#!/usr/bin/env bash
# shellcheck disable=SC2154  # it_failures: defined in lib.sh
# Stock nginx (master + 1 worker) under shunt on a veth end; clients in the kernel
# host's namespace.
#
#   integration/nginx_test.sh BUILD_DIR [--kernel] [--workers N]
#
# Asserts: a 1 KiB and a 1 MiB file come back over curl with matching sha256; a 5 s
# wrk run (16 connections) ends with no socket errors and no non-2xx answers; shunt
# stat shows the traffic (port rx/tx packets at least the request count, accepted
# connections at least wrk's and curl's). --kernel runs the same on the kernel stack
# (a check of the test itself and a baseline; no shunt involved). --workers N: N
# worker processes sharing the listener (nginx adds it to each worker's epoll with
# EPOLLEXCLUSIVE), and a second wrk run with a new connection per request, so the
# workers take turns accepting.
set -uo pipefail
# shellcheck source=integration/lib.sh
source "$(dirname "$0")/lib.sh"

it_setup "${1:-}"
shift
mode=shunt nworkers=1
while (($# > 0)); do
  case $1 in
    --kernel) mode=kernel ;;
    --workers) nworkers=${2:?--workers N}; shift ;;
    *) echo "usage: $0 BUILD_DIR [--kernel] [--workers N]" >&2; exit 2 ;;
  esac
  shift
done
net=${SHUNT_TEST_NET:-7}
name=shunt-it-nginx-$$
site=$IT_TMP/site
export SHUNT_RUNDIR=$IT_TMP/run

stop_all() {
  nginx_stop "$site"
  it_stop_shuntd
  netns_down "$name"
}
show_logs() { it_show_logs 50 "$site/error.log"; }
it_cleanup_hooks+=(stop_all)

command -v nginx curl wrk sha256sum >/dev/null || { it_fail "nginx, curl, wrk, sha256sum needed (scripts/install-deps.sh)"; exit 1; }
[[ $mode == shunt ]] && it_need "$IT_SHUNT" "$IT_SHUNTD" "$IT_PRELOAD"

netns_up "$name" "$net"
addr=$NETNS_SHUNT_IP
client=(ip netns exec "$NETNS_KERNEL")
nginx_site "$site" "$addr" 80
sed -i "s/^worker_processes 1;/worker_processes $nworkers;/" "$site/nginx.conf"
head -c 1024 /dev/urandom >"$site/www/1k.bin"
head -c $((1024 * 1024)) /dev/urandom >"$site/www/1m.bin"
chmod 644 "$site/www/"*.bin

nginx_cmd=(nginx -p "$site" -c "$site/nginx.conf" -e "$site/error.log")
if [[ $mode == shunt ]]; then
  it_log "shunt run --nic $NETNS_SHUNT_IF --ip $addr/$NETNS_PREFIX -- nginx"
  ip netns exec "$NETNS_SHUNT" "$IT_SHUNT" run --nic "$NETNS_SHUNT_IF" --ip "$addr/$NETNS_PREFIX" \
    -- "${nginx_cmd[@]}" &
else
  it_log "nginx on the kernel stack"
  netns_kernel_baseline
  ip netns exec "$NETNS_SHUNT" "${nginx_cmd[@]}" &
fi
nginx_pid=$!
it_nginx_up "http://$addr/" "$NETNS_KERNEL" "$nginx_pid"

# The worker count is what we asked for.
workers=$(pgrep -c -P "$(<"$site/nginx.pid")" || true)
it_check "nginx runs master + $nworkers worker(s) (workers: $workers)" test "$workers" = "$nworkers"

for f in 1k.bin 1m.bin; do
  want=$(sha256sum <"$site/www/$f" | cut -d' ' -f1)
  got=$("${client[@]}" curl -sS --fail --max-time 30 "http://$addr/$f" | sha256sum | cut -d' ' -f1)
  it_check "curl $f sha256 matches" test "$got" = "$want"
done

it_wrk "${client[@]}" timeout 60 wrk -t1 -c16 -d5s --timeout 5s "http://$addr/1k.bin"
out=$WRK_OUT wrk_rc=$WRK_RC
echo "$out"
it_check_wrk "$out" "$wrk_rc" 100
requests=$WRK_REQUESTS
if ((nworkers > 1)); then
  it_wrk "${client[@]}" timeout 60 wrk -t1 -c16 -d3s --timeout 5s -H "Connection: close" "http://$addr/1k.bin"
  echo "$WRK_OUT"
  it_check_wrk "$WRK_OUT" "$WRK_RC" 100
  requests=$((requests + WRK_REQUESTS))
  alive=$(pgrep -c -P "$(<"$site/nginx.pid")" || true)
  it_check "all $nworkers workers still run after the short connections ($alive)" test "$alive" = "$nworkers"
fi

# The answers still came back byte for byte after the load.
got=$("${client[@]}" curl -sS --fail --max-time 30 "http://$addr/1m.bin" | sha256sum | cut -d' ' -f1)
it_check "curl 1m.bin after wrk sha256 matches" test "$got" = "$(sha256sum <"$site/www/1m.bin" | cut -d' ' -f1)"

if [[ $mode == shunt ]]; then
  stat=$(timeout 15 "$IT_SHUNT" stat --flat 2>&1)
  echo "$stat"
  counter() { awk -v k="$1" '$1 == k { print $2; exit }' <<<"$stat"; }
  rx=$(counter port.rx_packets)
  tx=$(counter port.tx_packets)
  accepted=$(counter tcp.connections_accepted)
  # Each request is at least one frame in and one out; the 1 MiB file alone is
  # more than 700 frames out.
  it_check "port.rx_packets ${rx:-missing} >= requests $requests" test "${rx:-0}" -ge "$requests"
  it_check "port.tx_packets ${tx:-missing} >= requests $requests + 700" test "${tx:-0}" -ge $((requests + 700))
  it_check "tcp.connections_accepted ${accepted:-missing} >= 16" test "${accepted:-0}" -ge 16
  if ! kill -0 "$nginx_pid" 2>/dev/null; then it_fail "nginx still runs after the load"; fi
fi
((it_failures == 0)) || show_logs
