#!/usr/bin/env bash
# shellcheck disable=SC2154  # it_failures, IT_*: defined in lib.sh
# What shunt's TCP puts on the wire, read from a capture on the kernel host's veth
# end (tcpdump -i vB) during one transfer each way, with 2 % of the frames shunt
# receives dropped (SHUNT_FAULT=drop=0.02,dir=rx), so its receiver sees holes.
#
#   integration/capture_test.sh BUILD_DIR
#
# 1. kernel curl downloads 8 MiB from nginx under shunt (Linux SYN, shunt SYN-ACK);
# 2. curl under shunt downloads 8 MiB from the kernel's nginx (shunt SYN, Linux
#    SYN-ACK; shunt receives through the loss).
# Asserts: both transfers complete with matching sha256 (within
# SHUNT_TRANSFER_MAX_TIME s, default 45); the SYN and the SYN-ACK of each
# connection carry window scale, timestamps and SACK-permitted (RFC 7323, RFC 2018;
# Linux answers with them only when the SYN offered them); in transfer 2, shunt's
# ACKs carry SACK blocks (shunt received data beyond holes and said so).
set -uo pipefail
# shellcheck source=integration/lib.sh
source "$(dirname "$0")/lib.sh"
# shellcheck source=integration/lib-transfer.sh
source "$(dirname "$0")/lib-transfer.sh"

it_setup "${1:-}"
max=${SHUNT_TRANSFER_MAX_TIME:-45}
net=${SHUNT_TEST_NET:-43}
name=shunt-it-cap-$$
shunt_site=$IT_TMP/shunt-site
kernel_site=$IT_TMP/kernel-site
pcap=$IT_TMP/vB.pcap
export SHUNT_RUNDIR=$IT_TMP/run
unset SHUNT_FAULT
size=$((8 * 1024 * 1024))
tcpdump_pid=

stop_capture() {
  if [[ -n $tcpdump_pid ]]; then
    kill -INT "$tcpdump_pid" 2>/dev/null
    wait "$tcpdump_pid" 2>/dev/null
    tcpdump_pid=
  fi
}
stop_all() {
  stop_capture
  nginx_stop "$shunt_site"
  nginx_stop "$kernel_site"
  it_stop_shuntd
  netns_down "$name"
}
it_cleanup_hooks+=(stop_all)

command -v nginx curl sha256sum tcpdump >/dev/null || { it_fail "nginx, curl, sha256sum, tcpdump needed (scripts/install-deps.sh)"; exit 1; }
it_need "$IT_SHUNT" "$IT_SHUNTD" "$IT_PRELOAD"

netns_up "$name" "$net"
shunt_ip=$NETNS_SHUNT_IP
kernel_ip=$NETNS_KERNEL_IP
in_kernel=(ip netns exec "$NETNS_KERNEL")
under_shunt=(ip netns exec "$NETNS_SHUNT" env "SHUNT_FAULT=drop=0.02,dir=rx,seed=3"
  "$IT_SHUNT" run --nic "$NETNS_SHUNT_IF" --ip "$shunt_ip/$NETNS_PREFIX" --)

tr_site "$shunt_site" "$shunt_ip"
tr_site "$kernel_site" "$kernel_ip"
head -c "$size" /dev/urandom >"$shunt_site/www/big.bin"
cp "$shunt_site/www/big.bin" "$kernel_site/www/big.bin"
chmod 644 "$shunt_site/www/big.bin" "$kernel_site/www/big.bin"
want=$(tr_sha "$shunt_site/www/big.bin")

"${under_shunt[@]}" nginx -p "$shunt_site" -c "$shunt_site/nginx.conf" -e "$shunt_site/error.log" &
shunt_nginx=$!
"${in_kernel[@]}" nginx -p "$kernel_site" -c "$kernel_site/nginx.conf" -e "$kernel_site/error.log" &
kernel_nginx=$!
if ! nginx_wait_up "http://$shunt_ip/" "$NETNS_KERNEL" "$shunt_nginx" ||
  ! nginx_wait_up "http://$kernel_ip/" "$NETNS_KERNEL" "$kernel_nginx"; then
  it_fail "both nginx answer"
  tail -n 20 "$SHUNT_RUNDIR/shuntd.log" >&2 2>/dev/null
  exit 1
fi
it_pass "nginx under shunt at $shunt_ip and on the kernel at $kernel_ip answer"

# Headers only (-s 128); -U writes each packet at once.
"${in_kernel[@]}" tcpdump -i "$NETNS_KERNEL_IF" -nn -s 128 -U -w "$pcap" tcp port 80 2>"$IT_TMP/tcpdump.err" &
tcpdump_pid=$!
for ((i = 0; i < 50; i++)); do
  grep -q 'listening on' "$IT_TMP/tcpdump.err" 2>/dev/null && break
  sleep 0.1
done

out=$IT_TMP/got.bin
tr_get "1: kernel curl <- nginx under shunt, 8 MiB" "$max" "http://$shunt_ip/big.bin" "$out" "${in_kernel[@]}"
it_check "1: download finished within $max s (curl exit $TR_RC, $TR_BYTES bytes, $TR_RATE MB/s)" test "$TR_RC" = 0
it_check "1: sha256 matches" test "$(tr_sha "$out")" = "$want"
tr_get "2: curl under shunt <- kernel nginx, 8 MiB" "$max" "http://$kernel_ip/big.bin" "$out" "${under_shunt[@]}"
it_check "2: download finished within $max s (curl exit $TR_RC, $TR_BYTES bytes, $TR_RATE MB/s)" test "$TR_RC" = 0
it_check "2: sha256 matches" test "$(tr_sha "$out")" = "$want"
sleep 0.5
stop_capture

stat=$(timeout 15 "$IT_SHUNT" stat --flat 2>&1)
grep -E '^(fault\.rx_dropped|tcp\.(active_opens|passive_opens|retransmits)|drop\.tcp_out_of_order)' <<<"$stat"

dump() { tcpdump -r "$pcap" -nn "$@" 2>/dev/null; }
it_log "capture: $(dump | wc -l) packets"
# has_options WHAT FILTER: the first packet matching FILTER carries all three options.
has_options() {
  local what=$1 filter=$2 line opt missing=()
  line=$(dump "$filter" | head -n 1)
  if [[ -z $line ]]; then
    it_fail "$what: no such packet in the capture ($filter)"
    return
  fi
  for opt in wscale 'TS val' sackOK; do
    grep -qF "$opt" <<<"$line" || missing+=("$opt")
  done
  if ((${#missing[@]} == 0)); then
    it_pass "$what carries wscale, TS, sackOK"
  else
    it_fail "$what lacks ${missing[*]}: $line"
  fi
}
syn='tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn'
synack='tcp[tcpflags] & (tcp-syn|tcp-ack) == (tcp-syn|tcp-ack)'
has_options "1: Linux client's SYN" "$syn and src host $kernel_ip and dst host $shunt_ip and dst port 80"
has_options "1: shunt server's SYN-ACK" "$synack and src host $shunt_ip and src port 80"
has_options "2: shunt client's SYN" "$syn and src host $shunt_ip and dst host $kernel_ip and dst port 80"
has_options "2: Linux server's SYN-ACK" "$synack and src host $kernel_ip and src port 80"

acks=$(dump "src host $shunt_ip and dst port 80 and tcp[tcpflags] & tcp-ack != 0" | wc -l)
sacks=$(dump "src host $shunt_ip and dst port 80" | grep -c 'sack [0-9]')
dropped=$(tr_counter fault.rx_dropped "$stat")
it_log "2: shunt sent $acks ACKs, $sacks with SACK blocks; its injector dropped ${dropped:-?} received frames"
it_check "2: frames were dropped before shunt's receiver (fault.rx_dropped ${dropped:-missing})" test "${dropped:-0}" -gt 0
it_check "2: shunt's ACKs carry SACK blocks under loss ($sacks of $acks)" test "$sacks" -gt 0
if ((it_failures > 0)); then
  echo "---- SYNs and SYN-ACKs in the capture" >&2
  dump 'tcp[tcpflags] & tcp-syn != 0' | head -n 8 >&2
fi
