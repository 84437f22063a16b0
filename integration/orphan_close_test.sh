#!/usr/bin/env bash
# shellcheck disable=SC2154  # it_failures: defined in lib.sh
# Connections that shunted programs close leave the kernel peer with no socket in
# LAST-ACK: shuntd keeps serving an orphan (a connection its process closed or
# left) until the peer's FIN is acknowledged.
#
#   integration/orphan_close_test.sh BUILD_DIR
#
#  1. Plain nginx in the kernel namespace; 300 sequential
#     `shunt run -- curl http://198.18.NET.2/` from the shunt namespace (one daemon,
#     started by the first). Every fetch answers 200 and is shunted (tcp.active_opens
#     grows by 300); 2 s after the last, `ss -tan state last-ack` in the kernel
#     namespace lists no socket.
#  2. memcached under shunt (`memcached -u nobody -l 198.18.NET.1 -t 4`), memccapable
#     from the kernel namespace passes; 2 s later no LAST-ACK socket on the kernel side.
set -uo pipefail
# shellcheck source=integration/lib.sh
source "$(dirname "$0")/lib.sh"

it_setup "${1:-}"
net=${SHUNT_TEST_NET:-63}
name=shunt-it-orphan-$$
site=$IT_TMP/site
export SHUNT_RUNDIR=$IT_TMP/run
fetches=${ORPHAN_FETCHES:-300}
memcached_pid=

stop_all() {
  if [[ -n $memcached_pid ]]; then kill "$memcached_pid" 2>/dev/null; fi
  nginx_stop "$site"
  it_stop_shuntd
  netns_down "$name"
}
show_logs() {
  local f
  for f in "$site/error.log" "$IT_TMP"/*.log "$SHUNT_RUNDIR/shuntd.log"; do
    [[ -f $f ]] || continue
    echo "---- $f" >&2
    tail -n 30 "$f" >&2
  done
}
it_cleanup_hooks+=(stop_all)

command -v nginx curl memcached memccapable ss >/dev/null ||
  { it_fail "nginx, curl, memcached, memccapable (libmemcached-tools), ss needed"; exit 1; }
it_need "$IT_SHUNT" "$IT_SHUNTD" "$IT_PRELOAD"

it_netns_up "$name" "$net"
# memcached drops to nobody before it makes its sockets: nobody must be admitted.
shunt_run=("${shunt_run[@]:0:${#shunt_run[@]}-1}" --allow user:nobody --)

# kernel_states: counts of the kernel side's TCP sockets by state (one "STATE N" a line).
kernel_states() { "${in_kernel[@]}" ss -tanH | awk '{ n[$1]++ } END { for (s in n) print s, n[s] }'; }
count_state() { "${in_kernel[@]}" ss -tanH state "$1" | wc -l; }

# ---- 1. shunted curl clients against a kernel nginx ----
nginx_site "$site" "$kip" 80
"${in_kernel[@]}" nginx -p "$site" -c "$site/nginx.conf" -e "$site/error.log" &
nginx_pid=$!
it_nginx_up "http://$kip/" "$NETNS_KERNEL" "$nginx_pid" "kernel nginx"

# The first shunt run starts the daemon; the rest use it.
codes=$(timeout 30 "${shunt_run[@]}" curl -s -o /dev/null --max-time 10 -w '%{http_code}' "http://$kip/")
if [[ $codes != 200 ]]; then
  it_fail "the first shunted curl gets 200 (got '${codes}')"
  show_logs
  exit 1
fi
chmod 755 "$SHUNT_RUNDIR"
opens0=$(counter tcp.active_opens "$(stat_flat)")
ok=0 bad=0 start=$SECONDS
for ((i = 0; i < fetches && SECONDS - start < 60; i++)); do
  code=$(timeout 15 "${shunt_run[@]}" curl -sS -o /dev/null --max-time 10 -w '%{http_code}' "http://$kip/" \
    2>"$IT_TMP/fetch.err")
  rc=$?
  if [[ $code == 200 ]]; then
    ok=$((ok + 1))
  else
    bad=$((bad + 1))
    if ((bad <= 3)); then
      it_log "fetch $i: exit $rc, HTTP code '$code': $(tr '\n' ' ' <"$IT_TMP/fetch.err")"
      grep -E '^(apps\.|daemon\.(slots|zombie_slots|sockets)|tcp\.live_connections)' <<<"$(stat_flat)" | tr '\n' ' '
      echo
    fi
  fi
done
it_log "$ok fetches answered 200, $bad did not, in $((SECONDS - start)) s"
it_check "all $fetches shunted fetches answered 200 ($ok)" test "$ok" = "$fetches"
stat1=$(stat_flat)
opens1=$(counter tcp.active_opens "$stat1")
grep -E '^(apps\.|daemon\.(slots|zombie_slots|sockets)|tcp\.live_connections)' <<<"$stat1" | tr '\n' ' '
echo
it_check "the fetches were shunted: tcp.active_opens +$((${opens1:-0} - ${opens0:-0})) >= $fetches" \
  test $((${opens1:-0} - ${opens0:-0})) -ge "$fetches"
sleep 2
it_log "kernel side 2 s after the last fetch: $(kernel_states | tr '\n' ' ')"
it_log "TIME-WAIT $(count_state time-wait), FIN-WAIT-1 $(count_state fin-wait-1), FIN-WAIT-2 $(count_state fin-wait-2), CLOSE-WAIT $(count_state close-wait)"
last_ack=$(count_state last-ack)
it_check "no LAST-ACK socket on the kernel side after the fetches ($last_ack)" test "$last_ack" = 0
if ((last_ack > 0)); then "${in_kernel[@]}" ss -tanoi state last-ack | head -n 10; fi
nginx_stop "$site"

# ---- 2. memcached under shunt, memccapable on the kernel side ----
"${shunt_run[@]}" memcached -u nobody -l "$ip" -p 11211 -t 4 >"$IT_TMP/memcached.log" 2>&1 &
memcached_pid=$!
up=0
for ((i = 0; i < 50; i++)); do
  if "${in_kernel[@]}" bash -c "exec 3<>/dev/tcp/$ip/11211 && printf 'version\r\n' >&3 && timeout 2 head -c 7 <&3" 2>/dev/null | grep -q VERSION; then
    up=1
    break
  fi
  kill -0 "$memcached_pid" 2>/dev/null || break
  sleep 0.2
done
if ((!up)); then
  it_fail "memcached under shunt answers on $ip:11211"
  show_logs
  exit 1
fi
it_pass "memcached under shunt answers on $ip:11211"
out=$("${in_kernel[@]}" timeout 60 memccapable -h "$ip" -p 11211 -t 10 2>&1)
rc=$?
tail -n 5 <<<"$out"
it_check "memccapable passes (exit $rc)" test "$rc" = 0
it_check "memccapable: no failed test" test -z "$(grep -iE '\b(fail|failed)\b' <<<"$out")"
it_check "memcached still runs" kill -0 "$memcached_pid"
sleep 2
it_log "kernel side 2 s after memccapable: $(kernel_states | tr '\n' ' ')"
it_log "TIME-WAIT $(count_state time-wait), FIN-WAIT-1 $(count_state fin-wait-1), FIN-WAIT-2 $(count_state fin-wait-2), CLOSE-WAIT $(count_state close-wait)"
last_ack=$(count_state last-ack)
it_check "no LAST-ACK socket on the kernel side after memccapable ($last_ack)" test "$last_ack" = 0
if ((last_ack > 0)); then "${in_kernel[@]}" ss -tanoi state last-ack | head -n 10; fi
grep -E '^(tcp\.|drop\.tcp)' <<<"$(stat_flat)" | awk '$2 != 0' | tr '\n' ' '
echo
((it_failures == 0)) || show_logs
