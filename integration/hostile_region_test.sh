#!/usr/bin/env bash
# shellcheck disable=SC2154  # it_failures: defined in lib.sh
# shuntd survives applications that attack their own shared-memory region.
#
#   integration/hostile_region_test.sh BUILD_DIR
#
# nginx (master + 1 worker) runs under shunt while wrk (16 connections, 40 s) loads
# it from the kernel namespace. Meanwhile 30 runs of shunt_hostile_app
# (integration/hostile_app.cc) under `shunt run`, sharing the daemon, each scribble
# over their region (header, all, queues, truncate: sealed memfd + punched hole,
# in turn), then keep making socket calls. Asserts: shuntd (same pid) is alive after
# every attack and at the end; nginx answers curl after every round of four; every
# attack was made (the program found its region); ftruncate of the sealed memfd
# fails with EPERM; wrk ends with no socket errors and no non-2xx answers;
# apps.cut_off grew by at least the number of attacks (each one wrote into its
# region); apps.active and apps.regions are back to nginx's 2 within 3 s of the last.
set -uo pipefail
# shellcheck source=integration/lib.sh
source "$(dirname "$0")/lib.sh"

it_setup "${1:-}"
net=${SHUNT_TEST_NET:-61}
name=shunt-it-hostile-$$
site=$IT_TMP/site
export SHUNT_RUNDIR=$IT_TMP/run
attacks=${HOSTILE_ATTACKS:-30}
# Seconds each attacker keeps making socket calls after its attack. A truncate
# attacker leaves daemon_sleeping at 0 (it rings no doorbell), so an idle daemon
# sees the zeroed header only when it next wakes (within 1 s): it pokes longer.
poke=${HOSTILE_POKE_S:-0.5}
poke_truncate=${HOSTILE_POKE_TRUNCATE_S:-1.5}
hostile=$IT_BUILD/bin/shunt_hostile_app
wrk_pid=

stop_all() {
  if [[ -n $wrk_pid ]]; then kill "$wrk_pid" 2>/dev/null; fi
  nginx_stop "$site"
  it_stop_shuntd
  netns_down "$name"
}
show_logs() { it_show_logs 40 "$site/error.log"; }
it_cleanup_hooks+=(stop_all)

command -v nginx curl wrk >/dev/null || { it_fail "nginx, curl, wrk needed (scripts/install-deps.sh)"; exit 1; }
it_need "$IT_SHUNT" "$IT_SHUNTD" "$IT_PRELOAD" "$hostile"

netns_up "$name" "$net"
addr=$NETNS_SHUNT_IP
kaddr=$NETNS_KERNEL_IP
in_shunt=(ip netns exec "$NETNS_SHUNT")
in_kernel=(ip netns exec "$NETNS_KERNEL")
nginx_site "$site" "$addr" 80


it_log "shunt run --nic $NETNS_SHUNT_IF --ip $addr/$NETNS_PREFIX -- nginx"
"${in_shunt[@]}" "$IT_SHUNT" run --nic "$NETNS_SHUNT_IF" --ip "$addr/$NETNS_PREFIX" \
  -- nginx -p "$site" -c "$site/nginx.conf" -e "$site/error.log" &
nginx_pid=$!
it_nginx_up "http://$addr/" "$NETNS_KERNEL" "$nginx_pid"

before=$(stat_flat)
daemon_pid=$(counter daemon.pid "$before")
cut0=$(counter apps.cut_off "$before")
active0=$(counter apps.active "$before")
regions0=$(counter apps.regions "$before")
it_log "shuntd pid ${daemon_pid:-?}; before the attacks: apps.active $active0, apps.regions $regions0, apps.cut_off $cut0"
if [[ -z $daemon_pid ]] || ! kill -0 "$daemon_pid" 2>/dev/null; then
  it_fail "shunt stat names a live shuntd pid"
  show_logs
  exit 1
fi
it_check "apps.active is nginx's 2 processes before the attacks ($active0)" test "$active0" = 2

"${in_kernel[@]}" timeout 70 wrk -t1 -c16 -d40s --timeout 5s "http://$addr/" >"$IT_TMP/wrk.out" 2>&1 &
wrk_pid=$!
sleep 1

kinds=(header all queues truncate)
made=0 daemon_dead=0 curl_fail=0 seal_fail=0 times=
declare -A outcome=()
pids=()
start=$SECONDS
for ((i = 0; i < attacks && SECONDS - start < 120; i++)); do
  kind=${kinds[i % 4]}
  p=$poke
  [[ $kind == truncate ]] && p=$poke_truncate
  t0=$(date +%s.%N)
  timeout 10 "${in_shunt[@]}" "$IT_SHUNT" run -- "$hostile" "$kind" "$addr" "$kaddr" "$p" "$i" \
    >"$IT_TMP/attack-$i.out" 2>&1
  rc=$?
  out=$(<"$IT_TMP/attack-$i.out")
  took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  times+="$kind:$took "
  outcome[$kind.$rc]=$((${outcome[$kind.$rc]:-0} + 1))
  # Made: the program found its region and started writing (a timeout later on
  # leaves the attack made); truncate writes with its punched hole.
  if grep -q "^hostile_app: attack $kind starts" <<<"$out" &&
    { [[ $kind != truncate ]] || grep -q '^hostile_app: fallocate(PUNCH_HOLE.*succeeded' <<<"$out"; }; then
    made=$((made + 1))
    pids[i]=$(sed -n 's/^hostile_app: pid \([0-9]*\) attached.*/\1/p' <<<"$out")
  else
    it_fail "attack $i ($kind) was not made (exit $rc)"
    echo "$out" >&2
  fi
  if [[ $kind == truncate ]]; then
    if ! grep -q '^hostile_app: ftruncate(0): Operation not permitted' <<<"$out" ||
      ! grep -Eq '^hostile_app: ftruncate\([0-9]+\): Operation not permitted' <<<"$out" ||
      grep -q 'size changed' <<<"$out"; then
      seal_fail=$((seal_fail + 1))
      it_fail "attack $i: ftruncate of the sealed region memfd did not fail with EPERM"
      echo "$out" >&2
    fi
  fi
  if ((i < 4)); then sed 's/^/    /' "$IT_TMP/attack-$i.out"; fi
  if ! kill -0 "$daemon_pid" 2>/dev/null; then
    it_fail "shuntd (pid $daemon_pid) died during attack $i ($kind)"
    daemon_dead=1
    break
  fi
  if ((i % 4 == 3 || i == attacks - 1)); then
    if ! "${in_kernel[@]}" curl -s -o /dev/null --fail --max-time 5 "http://$addr/"; then
      curl_fail=$((curl_fail + 1))
      it_fail "nginx does not answer curl after attack $i"
    fi
  fi
done
it_log "seconds per attack: $times"
it_log "$made attacks made in $((SECONDS - start)) s; attacker exit statuses (kind.status count): $(for k in "${!outcome[@]}"; do printf '%s:%s ' "$k" "${outcome[$k]}"; done)"
((daemon_dead)) || it_pass "shuntd (pid $daemon_pid) alive after each of the $attacks attacks"
((curl_fail || daemon_dead)) || it_pass "nginx answered curl after every round of attacks"
it_check "every attack was made ($made of $attacks)" test "$made" = "$attacks"
((seal_fail)) || it_pass "ftruncate of the sealed memfd failed with EPERM (both ways) in every truncate attack"

# Each attacker was cut off, by its pid in the daemon's log.
missed=0
for i in "${!pids[@]}"; do
  if ! grep -q "cut off pid ${pids[i]} " "$SHUNT_RUNDIR/shuntd.log"; then
    missed=$((missed + 1))
    it_fail "attack $i (${kinds[i % 4]}, pid ${pids[i]}) was not cut off"
    sed 's/^/    /' "$IT_TMP/attack-$i.out" >&2
    grep "pid ${pids[i]} " "$SHUNT_RUNDIR/shuntd.log" | sed 's/^/    shuntd.log: /' >&2
  fi
done
((missed)) || it_pass "shuntd.log: every attacker was cut off (${#pids[@]} pids)"

# Back to nginx's two processes within 3 s of the last attacker's exit.
back=0
for ((t = 0; t < 30; t++)); do
  now=$(stat_flat)
  if [[ $(counter apps.active "$now") == "$active0" && $(counter apps.regions "$now") == "$regions0" ]]; then
    back=1
    break
  fi
  sleep 0.1
done
it_check "apps.active $(counter apps.active "$now") and apps.regions $(counter apps.regions "$now") back to $active0 and $regions0 within 3 s" test "$back" = 1

wait "$wrk_pid"
wrk_rc=$?
wrk_pid=
out=$(<"$IT_TMP/wrk.out")
echo "$out"
it_check_wrk "$out" "$wrk_rc" 1000

after=$(stat_flat)
grep -E '^(violation\.|apps\.)' <<<"$after"
cut1=$(counter apps.cut_off "$after")
it_check "apps.cut_off grew by $((${cut1:-0} - ${cut0:-0})) >= $made attacks that wrote into their region" \
  test $((${cut1:-0} - ${cut0:-0})) -ge "$made"
it_check "shuntd (pid $daemon_pid) alive at the end" kill -0 "$daemon_pid"
it_check "shunt stat still names pid $daemon_pid" test "$(counter daemon.pid "$after")" = "$daemon_pid"
it_check "nginx still runs" kill -0 "$nginx_pid"
it_check "nginx answers curl at the end" "${in_kernel[@]}" curl -s -o /dev/null --fail --max-time 5 "http://$addr/"
((it_failures == 0)) || show_logs
