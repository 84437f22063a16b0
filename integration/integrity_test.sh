#!/usr/bin/env bash
# shellcheck disable=SC2154  # it_failures, in_kernel, ...: defined in lib.sh
# Integrity under faults: many connections of seeded, position-checked bytes through
# nginx and through an echo server, shunt against Linux on the same faults.
#
#   integration/integrity_test.sh BUILD_DIR clean|loss1|loss5|loss20|reorder10|dup1|corrupt [NET]
#
# NET (default 101) and NET + 1: the namespace pairs' 198.18.NET.0/24 subnets.
#
# Two namespace pairs. In one, stock nginx and integration/echo_server.py run under
# shunt on the veth end shuntd drives; in the other, the same servers on the
# kernel stack. From each kernel host: CONNS curls in parallel each download a
# file of the pattern (integration/pattern.cc: every 8-byte word a hash of stream
# and position), checked byte by byte as it arrives; then CONNS connections each
# send their own stream to the echo server and check what comes back. Faults:
#   lossN      N % of the frames in each direction: for shunt, its fault injector
#              drops what reaches it (SHUNT_FAULT=drop=,dir=rx) and an nftables rule
#              on the kernel host drops what it sends; for Linux, the same nftables
#              rule in both namespaces.
#   reorder10  shunt's injector holds back 10 % of the frames (both directions);
#   dup1       duplicates 1 %; corrupt flips a bit in 0.1 % (its checksum catches
#              it). Linux runs without faults (no netem here): the bound is then
#              against the clean kernel.
# Asserts: every stream byte-exact on both stacks (a failure names the connection
# and the offset); shunt finished each run within 3x the kernel's time + 5 s (15 s
# at 20 % loss; wider in a sanitized build; a run past it is repeated once); the
# faults happened (counters); afterwards every connection is gone from shuntd
# (tcp.live_connections 0, daemon.sockets and daemon.slots back to the listeners',
# no zombie slot), its resident memory grew by less than 48 MiB, and it still runs.
# Sizes: INTEGRITY_CONNS (16) connections of INTEGRITY_MIB MiB each (default 64,
# 1 at 20 % loss, where Linux itself needs seconds for that); the long label runs
# 64 MiB for every fault. Prints what each stack retransmitted and dropped.
set -uo pipefail
# shellcheck source=integration/lib.sh
source "$(dirname "$0")/lib.sh"
# shellcheck source=integration/lib-transfer.sh
source "$(dirname "$0")/lib-transfer.sh"

it_setup "${1:-}"
fault=${2:-}
seed=${INTEGRITY_SEED:-7}
case $fault in
  clean) spec='' nft=0 mib=64 slack=5 ;;
  loss1) spec=drop=0.01,dir=rx nft=1 mib=64 slack=5 ;;
  loss5) spec=drop=0.05,dir=rx nft=5 mib=64 slack=5 ;;
  loss20) spec=drop=0.2,dir=rx nft=20 mib=1 slack=15 ;;
  reorder10) spec=reorder=0.1 nft=0 mib=64 slack=5 ;;
  dup1) spec=dup=0.01 nft=0 mib=64 slack=5 ;;
  corrupt) spec=corrupt=0.001 nft=0 mib=64 slack=5 ;;
  *)
    echo "usage: $0 BUILD_DIR clean|loss1|loss5|loss20|reorder10|dup1|corrupt" >&2
    exit 2
    ;;
esac
[[ -n $spec ]] && spec+=",seed=$seed"
# The time bound: shunt within FACTOR x Linux's time + slack. At 20 % loss the
# last of 16 connections to finish is the one with the longest chain of backed-off
# retransmission timeouts (0.2 + 0.4 + 0.8 + 1.6 s ...), on either stack: more
# slack there. A sanitized shuntd (the ASan/UBSan pass) runs several times slower:
# there the bound is three times as wide, as speed is not what that pass checks.
factor=3
if grep -q '^SHUNT_SANITIZE:BOOL=ON' "$IT_BUILD/CMakeCache.txt" 2>/dev/null; then
  factor=9 slack=$((slack * 3))
fi
it_name="integrity_$fault"
conns=${INTEGRITY_CONNS:-16}
mib=${INTEGRITY_MIB:-$mib}
bytes=$((mib * 1024 * 1024))
max=${INTEGRITY_MAX_SECS:-240}  # any one run, either stack: the test's own bound
net=${3:-${SHUNT_TEST_NET:-101}}
linux_net=$((net + 1))
name=shunt-it-int-$$
linux_name=shunt-it-intl-$$
port=7777
site=$IT_TMP/site    # nginx under shunt
ksite=$IT_TMP/ksite  # nginx on Linux
export SHUNT_RUNDIR=$IT_TMP/run
unset SHUNT_FAULT
here=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3
pattern=$IT_BUILD/bin/shunt_pattern
pids=()

stop_all() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  nginx_stop "$site"
  nginx_stop "$ksite"
  it_stop_shuntd
  netns_down "$name"
  netns_down "$linux_name"
}
show_logs() { it_show_logs 20 "$site/error.log" "$ksite/error.log" "$IT_TMP"/*.log; }
it_cleanup_hooks+=(stop_all)

command -v nginx curl nft >/dev/null || { it_fail "nginx, curl, nft needed (scripts/install-deps.sh)"; exit 1; }
it_need "$IT_SHUNT" "$IT_SHUNTD" "$IT_PRELOAD" "$pattern"

# The files: one stream each, so a byte from another connection's file shows too.
nginx_site "$site" 0.0.0.0 80  # the address is set per stack below
for ((i = 0; i < conns; i++)); do
  "$pattern" file $((1000 + i)) "$bytes" >"$site/www/p$i.bin" || { it_fail "writing p$i.bin"; exit 1; }
done
chmod 644 "$site/www"/p*.bin

# Linux: the server namespace has a kernel address and the same MTU-sized frames.
netns_up "$linux_name" "$linux_net" || exit 1
netns_kernel_baseline
linux_ip=$NETNS_SHUNT_IP
linux_server_ns=$NETNS_SHUNT
linux_client_ns=$NETNS_KERNEL
ip netns exec "$NETNS_SHUNT" ethtool -K "$NETNS_SHUNT_IF" tx off tso off gso off >/dev/null
mkdir -p "$ksite"
sed "s|listen 0.0.0.0:80;|listen $linux_ip:80;|; s|$site|$ksite|g; s|root $ksite/www;|root $site/www;|" \
  "$site/nginx.conf" >"$ksite/nginx.conf"
ip netns exec "$linux_server_ns" nginx -p "$ksite" -c "$ksite/nginx.conf" -e "$ksite/error.log" &
pids+=($!)
ip netns exec "$linux_server_ns" "$py" "$here/echo_server.py" "$linux_ip" "$port" >"$IT_TMP/linux-echo.log" 2>&1 &
pids+=($!)

# shunt: the same servers under shunt run, shuntd with the fault injector.
it_netns_up "$name" "$net" || exit 1
sed -i "s|listen 0.0.0.0:80;|listen $ip:80;|" "$site/nginx.conf"
shunt_env=(env)
[[ -n $spec ]] && shunt_env=(env "SHUNT_FAULT=$spec")
under_shunt=("${in_shunt[@]}" "${shunt_env[@]}" "$IT_SHUNT" run --nic "$NETNS_SHUNT_IF" --ip "$ip/$NETNS_PREFIX" --)
"${under_shunt[@]}" nginx -p "$site" -c "$site/nginx.conf" -e "$site/error.log" &
nginx_pid=$!
pids+=("$nginx_pid")
it_nginx_up "http://$ip/" "$NETNS_KERNEL" "$nginx_pid"
"${under_shunt[@]}" "$py" "$here/echo_server.py" "$ip" "$port" >"$IT_TMP/shunt-echo.log" 2>&1 &
pids+=($!)
if ! netns_wait_tcp "$NETNS_KERNEL" "$ip" "$port" 30 || ! netns_wait_tcp "$linux_client_ns" "$linux_ip" "$port" 30 ||
  ! nginx_wait_up "http://$linux_ip/" "$linux_client_ns"; then
  it_fail "the servers answer ($ip and $linux_ip)"
  show_logs
  exit 1
fi
shuntd_pid=$(pgrep -f "^$IT_SHUNTD" | head -n1)
base=$(stat_flat)
rss_before=$(rss_kib "$shuntd_pid")

if ((nft > 0)); then
  it_check "nftables drops $nft % of TCP input on shunt's kernel host" tr_nft_loss "$NETNS_KERNEL" "$nft"
  it_check "nftables drops $nft % of TCP input in Linux's server namespace" tr_nft_loss "$linux_server_ns" "$nft"
  it_check "nftables drops $nft % of TCP input in Linux's client namespace" tr_nft_loss "$linux_client_ns" "$nft"
fi

# download NS ADDR: every file at once, each checked as it arrives; sets RUN_SECS
# and RUN_FAILED.
download() {
  local ns=$1 addr=$2 t0 i p failed=0
  local -a running=()
  t0=$(uptime_s)
  for ((i = 0; i < conns; i++)); do
    ip netns exec "$ns" curl -sS --max-time "$max" "http://$addr/p$i.bin" 2>>"$IT_TMP/curl.log" |
      "$pattern" check $((1000 + i)) "$bytes" 2>>"$IT_TMP/check.log" &
    running+=($!)
  done
  for p in "${running[@]}"; do wait "$p" || failed=$((failed + 1)); done
  RUN_SECS=$(uptime_since "$t0")
  RUN_FAILED=$failed
}

# echo_run NS ADDR: CONNS streams through the echo server; sets RUN_SECS, RUN_FAILED.
echo_run() {
  local ns=$1 addr=$2 t0
  t0=$(uptime_s)
  timeout $((max + 10)) ip netns exec "$ns" "$pattern" echo "$addr" "$port" "$conns" "$bytes" 2000 "$max" \
    >>"$IT_TMP/echo.log" 2>&1
  RUN_FAILED=$?
  RUN_SECS=$(uptime_since "$t0")
}

total=$((conns * bytes))
for what in download echo_run; do
  label=${what%_run}
  $what "$linux_client_ns" "$linux_ip"
  it_check "Linux, $label: $conns x $mib MiB byte-exact ($RUN_FAILED failed) in $RUN_SECS s" test "$RUN_FAILED" = 0
  kernel_secs=$RUN_SECS
  before=$(stat_flat)
  bound=$(awk -v k="$kernel_secs" -v f="$factor" -v c="$slack" 'BEGIN { printf "%.2f", f * k + c }')
  # A shared machine can stall one run (CI saw a clean echo take 4.8x Linux's time
  # once): a run past the bound is repeated once, and the bound holds if either
  # run meets it. Every run must be byte-exact.
  for attempt in 1 2; do
    before=$(stat_flat)
    $what "$NETNS_KERNEL" "$ip"
    after=$(stat_flat)
    it_log "shunt, $label: $(for c in tcp.retransmits tcp.rto_expired tcp.dsacks_received drop.tcp_unacceptable; do
      printf '%s +%s ' "$c" $(($(counter $c "$after") - $(counter $c "$before")))
    done)"
    it_check "shunt, $label: $conns x $mib MiB byte-exact ($RUN_FAILED failed) in $RUN_SECS s" test "$RUN_FAILED" = 0
    in_bound=$(awk -v s="$RUN_SECS" -v b="$bound" 'BEGIN { print (s <= b) ? "yes" : "no" }')
    [[ $in_bound == yes ]] && break
    ((attempt == 1)) && it_log "shunt, $label: $RUN_SECS s is past the bound ($bound s): once more"
  done
  it_check "shunt, $label: $RUN_SECS s within $factor x Linux's $kernel_secs s + $slack s ($bound s; ratio $(awk -v s="$RUN_SECS" -v k="$kernel_secs" 'BEGIN { printf "%.2f", s / k }'), $(awk -v b="$total" -v s="$RUN_SECS" 'BEGIN { printf "%.0f", b / s / 1e6 }') MB/s, run $attempt)" \
    test "$in_bound" = yes
done
# What the kernel hosts themselves dropped or pruned (their own counters).
for ns in "$linux_client_ns" "$NETNS_KERNEL"; do
  it_log "$ns: $(ip netns exec "$ns" nstat -az 2>/dev/null | awk '$1 ~ /Prune|RcvQDrop|ZeroWindowDrop|BacklogDrop|OFODrop|TCPTimeouts|TCPSpuriousRTOs|TCPLostRetransmit|TCPDSACKRecv|RetransSegs/ && $2 > 0 { printf "%s %s ", $1, $2 }')"
done
# Frames the veth could not hand to shuntd's AF_XDP socket (its receive ring full).
it_log "$NETNS_SHUNT_IF: $(ip netns exec "$NETNS_SHUNT" ethtool -S "$NETNS_SHUNT_IF" 2>/dev/null | grep -E 'rx_queue_0_(xdp_packets|drops)' | tr -s ' \n' ' ')"
grep -h . "$IT_TMP/check.log" "$IT_TMP/echo.log" 2>/dev/null | head -n 40

now=$(stat_flat)
grep -E '^(fault\.|port\.(rx_missed|rx_errors|tx_errors|rx_nombuf|tx_dropped)|tcp\.(retransmits|fast_retransmits|rto|tlp|dsack|spurious|zero_window|persist)|drop\.(tcp_bad_checksum|ip_bad_checksum|tcp_out_of_order|tcp_unacceptable))' <<<"$now" | grep -v ' 0$'
case $fault in
  loss*)
    it_check "shunt's injector dropped frames ($(counter fault.rx_dropped "$now"))" test "$(counter fault.rx_dropped "$now")" -gt 0
    dropped=$(tr_nft_dropped "$NETNS_KERNEL")
    it_check "nftables dropped shunt's frames (${dropped:-0})" test "${dropped:-0}" -gt 0
    ;;
  reorder10) it_check "frames reordered ($(counter fault.tx_reordered "$now") tx)" test "$(counter fault.tx_reordered "$now")" -gt 0 ;;
  dup1) it_check "frames duplicated ($(counter fault.tx_duplicated "$now") tx)" test "$(counter fault.tx_duplicated "$now")" -gt 0 ;;
  corrupt)
    it_check "frames corrupted ($(counter fault.rx_corrupted "$now") rx)" test "$(counter fault.rx_corrupted "$now")" -gt 0
    ;;
  clean) it_check "no faults injected (fault.rx_frames $(counter fault.rx_frames "$now"))" test "$(counter fault.rx_frames "$now")" = 0 ;;
esac

# Every connection gone once the clients are done (shunt closes second: no TIME-WAIT).
# Its last FIN may need retransmissions: at 20 % loss each way a FIN and its ACK
# both get through only 64 % of the time, and the sixth backed-off try comes 12 s
# or more after the first, so the wait there is a minute.
settle=10
[[ $fault == loss20 ]] && settle=60
t0=$(uptime_s)
while :; do
  now=$(stat_flat)
  [[ $(counter tcp.live_connections "$now") == 0 && $(counter daemon.sockets "$now") == "$(counter daemon.sockets "$base")" &&
    $(counter daemon.slots "$now") == "$(counter daemon.slots "$base")" && $(counter daemon.zombie_slots "$now") == 0 ]] && break
  awk -v e="$(uptime_since "$t0")" -v s="$settle" 'BEGIN { exit !(e < s) }' || break
  sleep 0.1
done
it_log "teardown: $(uptime_since "$t0") s after the last client"
for c in daemon.sockets daemon.slots; do
  it_check "$c back to $(counter $c "$base") ($(counter $c "$now"))" test "$(counter $c "$now")" = "$(counter $c "$base")"
done
it_check "tcp.live_connections 0 ($(counter tcp.live_connections "$now"))" test "$(counter tcp.live_connections "$now")" = 0
it_check "daemon.zombie_slots 0 ($(counter daemon.zombie_slots "$now"))" test "$(counter daemon.zombie_slots "$now")" = 0
rss_after=$(rss_kib "$shuntd_pid")
it_check "shuntd's VmRSS grew by less than 48 MiB ($rss_before -> $rss_after KiB)" test $((rss_after - rss_before)) -lt 49152
it_check "shuntd still runs" kill -0 "$shuntd_pid"
((it_failures == 0)) || show_logs
