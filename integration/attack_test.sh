#!/usr/bin/env bash
# shellcheck disable=SC2154  # it_failures, in_kernel, ...: defined in lib.sh
# Crafted-packet attacks from the kernel host, on shunt and on Linux in the same run.
#
#   integration/attack_test.sh BUILD_DIR
#
# Two namespace pairs: in one, integration/echo_server.py (TCP and UDP echo) runs
# under shunt on the veth end shuntd drives; in the other, the same server runs on
# the kernel stack. integration/attack.py, run in each kernel host, sends the same
# crafted frames to both (RFC 5961 blind RST/SYN/data injection, PAWS, malformed
# headers, LAND, IPv4 fragments, forged ICMP errors, a spoofed SYN flood while
# real clients connect) and `attack.py compare` holds shunt to Linux's results,
# except for the differences listed with their reasons in attack_allow.txt.
# Asserts besides: every scenario's own requirement holds for shunt, at least 99 %
# of the real connections made during the flood succeed, shuntd still runs and
# answers, its resident memory grew by less than 16 MiB, and the drop counters
# name what was dropped.
set -uo pipefail
# shellcheck source=integration/lib.sh
source "$(dirname "$0")/lib.sh"

it_setup "${1:-}"
net=${SHUNT_TEST_NET:-81}
linux_net=$((net + 1))
name=shunt-it-atk-$$
linux_name=shunt-it-atkl-$$
port=7777
flood_syns=${ATTACK_FLOOD_SYNS:-60000}
export SHUNT_RUNDIR=$IT_TMP/run
here=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3
server_pid=
linux_server_pid=

stop_all() {
  if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null; fi
  if [[ -n $linux_server_pid ]]; then kill "$linux_server_pid" 2>/dev/null; fi
  it_stop_shuntd
  netns_down "$name"
  netns_down "$linux_name"
}
show_logs() { it_show_logs 30 "$IT_TMP"/*.log; }
it_cleanup_hooks+=(stop_all)

it_need "$IT_SHUNT" "$IT_SHUNTD" "$IT_PRELOAD"
if ! "$py" -c 'import scapy.all' 2>/dev/null; then
  it_fail "$py cannot import scapy (python3-scapy: scripts/install-deps.sh)"
  exit 1
fi

# Linux: a server namespace with the kernel address, routing 198.19/16 (the
# flood's spoofed sources) back through the kernel host, as shunt's gateway does.
netns_up "$linux_name" "$linux_net"
netns_kernel_baseline
linux_ip=$NETNS_SHUNT_IP
ip -n "$NETNS_SHUNT" route add default via "$NETNS_KERNEL_IP"
ip netns exec "$NETNS_SHUNT" ethtool -K "$NETNS_SHUNT_IF" tx off tso off gso off >/dev/null
ip netns exec "$NETNS_SHUNT" "$py" "$here/echo_server.py" "$linux_ip" "$port" \
  >"$IT_TMP/linux-server.log" 2>&1 &
linux_server_pid=$!

# shunt: the same server under shunt run, with the kernel host as gateway.
it_netns_up "$name" "$net"
"${in_shunt[@]}" "$IT_SHUNT" run --nic "$NETNS_SHUNT_IF" --ip "$ip/$NETNS_PREFIX" \
  --gateway "$kip" -- "$py" "$here/echo_server.py" "$ip" "$port" \
  >"$IT_TMP/shunt-server.log" 2>&1 &
server_pid=$!

if ! netns_wait_tcp "$NETNS_KERNEL" "$ip" "$port" 30 ||
  ! netns_wait_tcp "$linux_name-k" "$linux_ip" "$port" 30; then
  it_fail "echo servers answer on $ip:$port and $linux_ip:$port"
  show_logs
  exit 1
fi
shuntd_pid=$(pgrep -f "^$IT_SHUNTD" | head -n1)
rss_before=$(rss_kib "$shuntd_pid")
before=$(stat_flat)

attack() {  # attack NS IP OUT
  timeout 240 ip netns exec "$1" "$py" "$here/attack.py" run --iface vB --target "$2" \
    --port "$port" --out "$3" --flood "$flood_syns" --flood-secs 6
}
it_log "Linux at $linux_ip"
attack "$linux_name-k" "$linux_ip" "$IT_TMP/linux.json" | tee "$IT_TMP/linux-attack.log"
it_check "attack.py ran against Linux" test -s "$IT_TMP/linux.json"
it_log "shunt at $ip"
attack "$NETNS_KERNEL" "$ip" "$IT_TMP/shunt.json" | tee "$IT_TMP/shunt-attack.log"
it_check "attack.py ran against shunt" test -s "$IT_TMP/shunt.json"
[[ -s $IT_TMP/linux.json && -s $IT_TMP/shunt.json ]] || { show_logs; exit 1; }

if "$py" "$here/attack.py" compare "$IT_TMP/linux.json" "$IT_TMP/shunt.json" \
  "$here/attack_allow.txt" >"$IT_TMP/compare.log"; then
  it_pass "every scenario as Linux or allowed, and as required ($(grep -c '^same' "$IT_TMP/compare.log") same, $(grep -c '^allowed' "$IT_TMP/compare.log") allowed)"
else
  it_fail "scenarios: $(grep -c '^FAIL' "$IT_TMP/compare.log") failed"
fi
cat "$IT_TMP/compare.log"

# The flood: at least 99 % of the real connections made during it succeed.
flood_ok() {  # flood_ok FILE WHO
  "$py" - "$1" "$2" <<'PY'
import json, sys
f = json.load(open(sys.argv[1]))["flood"]
rate = f["legit_ok"] / max(f["legit_tried"], 1)
print("%s: %d spoofed SYNs in %.1f s, %d of %d real connections succeeded (%.1f %%)"
      % (sys.argv[2], f["spoofed_syns"], f["secs"], f["legit_ok"], f["legit_tried"], 100 * rate))
sys.exit(0 if f["legit_tried"] >= 20 and rate >= 0.99 else 1)
PY
}
flood_ok "$IT_TMP/linux.json" Linux || it_log "(Linux fell short of 99 %: reported, not required)"
it_check "SYN flood: real connections through shunt succeed" flood_ok "$IT_TMP/shunt.json" shunt

# shuntd survived it all, answers, and its memory stayed bounded.
it_check "shuntd still runs" kill -0 "$shuntd_pid"
after=$(stat_flat)
it_check "shuntd answers shunt stat" test -n "$after"
rss_after=$(rss_kib "$shuntd_pid")
it_log "shuntd VmRSS $rss_before KiB before, $rss_after KiB after"
it_check "shuntd's memory grew by less than 16 MiB" test $((rss_after - rss_before)) -lt 16384
delta() { echo $(($(counter "$1" "$after") - $(counter "$1" "$before"))); }
for c in tcp.syn_cookies_sent tcp.syn_cookies_accepted drop.tcp_bad_checksum drop.ip_bad_checksum \
  drop.ip_bad_length drop.ip_bad_header_length drop.tcp_bad_options drop.ip_fragment_unsupported \
  drop.tcp_bad_header_length drop.tcp_bad_flags drop.ip_frag_overlap drop.tcp_unacceptable \
  drop.tcp_paws drop.tcp_bad_ack drop.icmp_error_invalid; do
  d=$(delta "$c")
  it_check "$c counted ($d)" test "$d" -gt 0
done
((it_failures == 0)) || show_logs
