#!/usr/bin/env bash
# shellcheck disable=SC2154  # it_failures, shunt_run, COUNTER_NOW: from lib.sh
# The interposer's socket-semantics scenarios (tests/preload/probe.cc and
# udp_probe.cc) against the real shuntd and its engine, not the fake daemon the
# unit tests use: each probe is client and server at once on the stack's own
# address (198.18.250.1, which the probe expects), so its connections loop back
# inside shuntd as a shunted client reaches a shunted server.
#
#   integration/probe_test.sh BUILD_DIR
#
# Asserts, for each scenario: the probe prints "ok NAME" and exits 0 within 60 s,
# and afterwards shuntd holds no slot of it (every socket it opened is gone).
set -uo pipefail
# shellcheck source=integration/lib.sh
source "$(dirname "$0")/lib.sh"

it_setup "${1:-}"
net=250  # the probe's NIC address is 198.18.250.1
name=shunt-it-probe-$$
export SHUNT_RUNDIR=$IT_TMP/run
probe=$IT_BUILD/bin/preload_probe

stop_all() {
  it_stop_shuntd
  netns_down "$name"
}
show_logs() { it_show_logs 40; }
it_cleanup_hooks+=(stop_all)

it_need "$IT_SHUNT" "$IT_SHUNTD" "$IT_PRELOAD" "$probe"
it_netns_up "$name" "$net" || exit 1

tcp=(basic epoll errors dup sendfile wildcard poll fork threads other_entries linger restart nested_epoll
  wake_targets exclusive_accept exclusive_threads accept_wakes_one accept_handed shutdown_listener)
udp=(udp_basic udp_mmsg udp_epoll udp_wildcard udp_threads udp_big udp_fork)
# PROBE_SCENARIOS="a b": only those (while debugging one).
read -ra scenarios <<<"${PROBE_SCENARIOS:-kernel_routes passthrough ${tcp[*]} ${udp[*]}}"
for s in "${scenarios[@]}"; do
  out=$(cd "$IT_TMP" && timeout 60 "${shunt_run[@]}" env SHUNT_LOG=warn "$probe" "$s" 2>"$IT_TMP/$s.err")
  rc=$?
  if [[ $rc == 0 && $out == "ok $s" ]]; then
    it_pass "$s"
  else
    it_fail "$s (exit $rc): $(tail -n 5 "$IT_TMP/$s.err" | tr '\n' ' ')"
  fi
  counter_settles daemon.slots 0  # zombies drain once the peer (itself) is done
  it_check "$s: no slot left in shuntd ($COUNTER_NOW)" test "$COUNTER_NOW" = 0
  if [[ $s == accept_handed ]]; then
    # The scenario passes on the kernel too; here it must have gone through the
    # handed records and back into the queue.
    st=$(stat_flat)
    handed=$(counter tcp.accepts_handed "$st") requeued=$(counter tcp.accepts_requeued "$st")
    it_check "accept_handed: shuntd handed connections ahead ($handed)" test "${handed:-0}" -gt 0
    it_check "accept_handed: and took unclaimed ones back ($requeued)" test "${requeued:-0}" -gt 0
  fi
done

((it_failures == 0)) || show_logs
