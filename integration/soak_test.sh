#!/usr/bin/env bash
# shellcheck disable=SC2154  # it_failures, in_kernel, shunt_run, ip: defined in lib.sh
# Soak (label long, not in the test command): nginx, memcached and redis under shunt
# on one shuntd, loaded from the kernel host for SOAK_SECS (default 600) with
# connection churn: wrk keep-alive and wrk with "Connection: close" (a connection
# per request) on nginx, memcslap runs of a few seconds each (new connections every
# run) on memcached, redis-benchmark without keep-alive (-k 0) on redis, all in
# rounds until the time is up.
#
#   integration/soak_test.sh BUILD_DIR
#
# Asserts: every client round exits 0 with no socket error, no non-2xx answer, no
# failed memcslap or redis operation; shuntd's resident memory after the last round
# is within 8 MiB of what it was after the first (flat, not growing with the hours);
# once the loads are over, daemon.sockets and daemon.slots are back to the idle
# baseline taken before them (no leaked connection or slot) and the servers answer.
set -uo pipefail
# shellcheck source=integration/lib.sh
source "$(dirname "$0")/lib.sh"

it_setup "${1:-}"
net=${SHUNT_TEST_NET:-91}
name=shunt-it-soak-$$
site=$IT_TMP/site
secs=${SOAK_SECS:-600}
export SHUNT_RUNDIR=$IT_TMP/run
export SHUNT_ALLOW=user:nobody  # memcached -u nobody
redis_pid='' mc_pid=''

stop_all() {
  local p
  for p in $mc_pid $redis_pid; do kill -KILL "$p" 2>/dev/null; done
  nginx_stop "$site"
  it_stop_shuntd
  netns_down "$name"
}
show_logs() { it_show_logs 30 "$IT_TMP"/*.log "$site/error.log"; }
it_cleanup_hooks+=(stop_all)

for c in nginx wrk memcached memcslap redis-server redis-benchmark redis-cli; do
  command -v "$c" >/dev/null || { it_fail "$c needed (scripts/install-deps.sh)"; exit 1; }
done
it_need "$IT_SHUNT" "$IT_SHUNTD" "$IT_PRELOAD"
it_netns_up "$name" "$net"
# redis-benchmark -k 0 closes a connection per request: TIME-WAIT on the kernel host.
"${in_kernel[@]}" sysctl -qw net.ipv4.tcp_tw_reuse=1

nginx_site "$site" "$ip" 80
head -c 1024 /dev/urandom >"$site/www/1k.bin"
chmod 644 "$site/www/1k.bin"
"${shunt_run[@]}" nginx -p "$site" -c "$site/nginx.conf" -e "$site/error.log" &
it_nginx_up "http://$ip/" "$NETNS_KERNEL" $!
"${shunt_run[@]}" memcached -u nobody -l "$ip" -p 11211 -t 4 >"$IT_TMP/memcached.log" 2>&1 &
mc_pid=$!
mkdir -p "$IT_TMP/redis"
"${shunt_run[@]}" redis-server --bind "$ip" --port 6379 --save '' --appendonly no \
  --protected-mode no --daemonize no --dir "$IT_TMP/redis" >"$IT_TMP/redis.log" 2>&1 &
redis_pid=$!
redis_ping() { [[ $("${in_kernel[@]}" timeout 2 redis-cli -h "$ip" -p 6379 ping 2>/dev/null) == PONG ]]; }
mc_version() { "${in_kernel[@]}" timeout 2 bash -c "exec 3<>/dev/tcp/$ip/11211; printf 'version\r\n' >&3; head -c 7 <&3" 2>/dev/null; }
for ((i = 0; i < 100; i++)); do
  redis_ping && [[ $(mc_version) == VERSION ]] && break
  sleep 0.2
done
it_check "redis answers PING" redis_ping
it_check "memcached answers version" test "$(mc_version)" = VERSION

shuntd_pid=$(pgrep -f "^$IT_SHUNTD" | head -n1)
sleep 1
base=$(stat_flat)

# One round of every load at once, about 20 s; appends each client's output to its
# log and prints the number of rounds that failed.
round() {
  local r=$1 bad=0 out rc
  "${in_kernel[@]}" timeout 60 wrk -t1 -c16 -d20s --timeout 5s "http://$ip/1k.bin" \
    >"$IT_TMP/r-wrk" 2>&1 &
  local p_wrk=$!
  "${in_kernel[@]}" timeout 60 wrk -t1 -c4 -d20s --timeout 5s -H "Connection: close" \
    "http://$ip/1k.bin" >"$IT_TMP/r-wrk-close" 2>&1 &
  local p_close=$!
  "${in_kernel[@]}" timeout 60 redis-benchmark -h "$ip" -p 6379 -t set,get -c 8 -k 0 \
    -n 5000 -q >"$IT_TMP/r-redis" 2>&1 &
  local p_redis=$!
  local end=$((SECONDS + 20)) slaps=0
  while ((SECONDS < end)); do
    "${in_kernel[@]}" timeout 30 memcslap --servers="$ip:11211" --concurrency=8 \
      --execute-number=2000 >>"$IT_TMP/r-slap" 2>&1 || bad=$((bad + 1))
    slaps=$((slaps + 1))
  done
  for p in $p_wrk $p_close $p_redis; do
    wait "$p" || bad=$((bad + 1))
  done
  for f in r-wrk r-wrk-close; do
    out=$(<"$IT_TMP/$f")
    if grep -qE 'Socket errors|Non-2xx' <<<"$out"; then bad=$((bad + 1)); fi
    grep -qE '^ *[0-9]+ requests in' <<<"$out" || bad=$((bad + 1))
  done
  grep -qiE 'error|fail' "$IT_TMP/r-redis" && bad=$((bad + 1))
  grep -qiE 'failed|error' "$IT_TMP/r-slap" && bad=$((bad + 1))
  {
    echo "== round $r"
    cat "$IT_TMP/r-wrk" "$IT_TMP/r-wrk-close"
    tr '\r' '\n' <"$IT_TMP/r-redis" | grep -v '^ *$' | grep -v 'rps='
    tail -n 3 "$IT_TMP/r-slap"
  } >>"$IT_TMP/loads.log"
  : >"$IT_TMP/r-slap"
  local ka cl
  ka=$(sed -n 's/^ *\([0-9]*\) requests in .*/\1/p' "$IT_TMP/r-wrk")
  cl=$(sed -n 's/^ *\([0-9]*\) requests in .*/\1/p' "$IT_TMP/r-wrk-close")
  it_log "round $r: wrk ${ka:-0} keep-alive + ${cl:-0} one-per-connection requests, 2 x 5000 redis ops on new connections, $slaps memcslap runs of 8 connections; shuntd VmRSS $(rss_kib "$shuntd_pid") KiB; $bad failures" >&2
  echo "$bad"
}

start=$SECONDS
rounds=0 failures=0 rss_first=0
while ((SECONDS - start < secs)); do
  rounds=$((rounds + 1))
  f=$(round "$rounds" | tail -n 1)
  failures=$((failures + f))
  ((rounds == 1)) && rss_first=$(rss_kib "$shuntd_pid")
done
rss_last=$(rss_kib "$shuntd_pid")
it_check "$rounds rounds in $((SECONDS - start)) s, no client failed ($failures)" test "$failures" = 0
it_check "shuntd's memory flat: VmRSS $rss_first KiB after round 1, $rss_last KiB at the end" \
  test $((rss_last - rss_first)) -lt 8192

# Back to the idle baseline once the loads are over (closing connections linger
# briefly in TIME-WAIT and orphans: up to 70 s).
for ((i = 0; i < 70; i++)); do
  now=$(stat_flat)
  [[ $(counter daemon.sockets "$now") == "$(counter daemon.sockets "$base")" &&
    $(counter daemon.slots "$now") == "$(counter daemon.slots "$base")" ]] && break
  sleep 1
done
it_check "daemon.sockets back to $(counter daemon.sockets "$base") ($(counter daemon.sockets "$now"))" \
  test "$(counter daemon.sockets "$now")" = "$(counter daemon.sockets "$base")"
it_check "daemon.slots back to $(counter daemon.slots "$base") ($(counter daemon.slots "$now"))" \
  test "$(counter daemon.slots "$now")" = "$(counter daemon.slots "$base")"
it_check "redis still answers" redis_ping
it_check "memcached still answers" test "$(mc_version)" = VERSION
it_check "nginx still answers" "${in_kernel[@]}" curl -sf -o /dev/null "http://$ip/1k.bin"
((it_failures == 0)) || show_logs
