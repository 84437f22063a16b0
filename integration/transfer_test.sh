#!/usr/bin/env bash
# shellcheck disable=SC2154  # it_failures, IT_*: defined in lib.sh
# 64 MiB both ways between shunt and the Linux stack, under loss.
#
#   integration/transfer_test.sh BUILD_DIR server|client shunt|nft|none
#
# server  stock nginx under `shunt run` on the shunt end serves a 64 MiB random file;
#         curl on the kernel host downloads it, then uploads it back with PUT
#         (nginx's WebDAV module writes it to disk).
# client  stock nginx on the kernel host serves the same file; curl under
#         `shunt run` on the shunt end downloads it (the socket is shunted: the
#         destination is in the NIC's subnet; tcp.active_opens must count it), then
#         uploads it with PUT.
# Loss:
# shunt   shuntd starts with SHUNT_FAULT=drop=0.05,reorder=0.1 (both directions at
#         shunt's device boundary); its fault counters must show drops and reorders.
# nft     no shunt faults; an nftables rule on the kernel host drops 5 % of its TCP
#         input (shunt's data or shunt's ACKs, by direction).
# none    no loss: the baseline.
#
# Asserts: every transfer finishes within SHUNT_TRANSFER_MAX_TIME seconds (default
# 45, i.e. at least ~1.5 MB/s; Linux to Linux under the same loss takes well under
# a second here) and its sha256 matches; the fault counters show the loss happened.
# Prints each transfer's time and rate.
set -uo pipefail
# shellcheck source=integration/lib.sh
source "$(dirname "$0")/lib.sh"
# shellcheck source=integration/lib-transfer.sh
source "$(dirname "$0")/lib-transfer.sh"

it_setup "${1:-}"
role=${2:-}
loss=${3:-}
if [[ $role != server && $role != client ]] || [[ $loss != shunt && $loss != nft && $loss != none ]]; then
  echo "usage: $0 BUILD_DIR server|client shunt|nft|none" >&2
  exit 2
fi
it_name="transfer_${role}_$loss"
max=${SHUNT_TRANSFER_MAX_TIME:-45}
fault_spec=${SHUNT_TEST_FAULT:-drop=0.05,reorder=0.1}  # override for experiments only
net=${SHUNT_TEST_NET:-41}
name=shunt-it-xfer-$$
site=$IT_TMP/site
export SHUNT_RUNDIR=$IT_TMP/run
unset SHUNT_FAULT
size=$((64 * 1024 * 1024))

stop_all() {
  nginx_stop "$site"
  it_stop_shuntd
  netns_down "$name"
}
show_logs() { it_show_logs 30 "$site/error.log"; }
it_cleanup_hooks+=(stop_all)

command -v nginx curl sha256sum nft >/dev/null || { it_fail "nginx, curl, sha256sum, nft needed (scripts/install-deps.sh)"; exit 1; }
it_need "$IT_SHUNT" "$IT_SHUNTD" "$IT_PRELOAD"

netns_up "$name" "$net"
shunt_ip=$NETNS_SHUNT_IP
kernel_ip=$NETNS_KERNEL_IP
in_kernel=(ip netns exec "$NETNS_KERNEL")
shunt_env=(env)
fault_text=none
if [[ $loss == shunt ]]; then
  shunt_env=(env "SHUNT_FAULT=$fault_spec")
  fault_text=$fault_spec
fi
under_shunt=(ip netns exec "$NETNS_SHUNT" "${shunt_env[@]}" "$IT_SHUNT" run --nic "$NETNS_SHUNT_IF" --ip "$shunt_ip/$NETNS_PREFIX" --)

if [[ $role == server ]]; then
  server_ip=$shunt_ip
  tr_site "$site" "$server_ip"
else
  server_ip=$kernel_ip
  tr_site "$site" "$server_ip"
fi
head -c "$size" /dev/urandom >"$site/www/big.bin"
chmod 644 "$site/www/big.bin"
want=$(tr_sha "$site/www/big.bin")
nginx_cmd=(nginx -p "$site" -c "$site/nginx.conf" -e "$site/error.log")

if [[ $role == server ]]; then
  it_log "nginx under shunt run (SHUNT_FAULT=$fault_text) at $server_ip; curl on the kernel host"
  "${under_shunt[@]}" "${nginx_cmd[@]}" &
  client=("${in_kernel[@]}")
  up_ns=$NETNS_KERNEL
else
  it_log "nginx on the kernel host at $server_ip; curl under shunt run (SHUNT_FAULT=$fault_text)"
  "${in_kernel[@]}" "${nginx_cmd[@]}" &
  client=("${under_shunt[@]}")
  up_ns=$NETNS_KERNEL
fi
nginx_pid=$!
it_nginx_up "http://$server_ip/" "$up_ns" "$nginx_pid"

if [[ $loss == nft ]]; then
  it_check "nftables drops 5% of TCP input on the kernel host" tr_nft_loss "$NETNS_KERNEL" 5
fi

# Download.
out=$IT_TMP/download.bin
tr_get "download 64 MiB ($role role, loss $loss)" "$max" "http://$server_ip/big.bin" "$out" "${client[@]}"
it_check "download finished within $max s (curl exit $TR_RC, $TR_BYTES bytes in $TR_SECONDS s, $TR_RATE MB/s)" test "$TR_RC" = 0
it_check "download sha256 matches" test "$(tr_sha "$out")" = "$want"
rm -f "$out"

# Upload: PUT, written by nginx to www/up/.
tr_put "upload 64 MiB ($role role, loss $loss)" "$max" "http://$server_ip/up/big.bin" "$site/www/big.bin" "${client[@]}"
it_check "upload finished within $max s (curl exit $TR_RC, $TR_BYTES bytes in $TR_SECONDS s, $TR_RATE MB/s)" test "$TR_RC" = 0
it_check "upload sha256 matches" test "$(tr_sha "$site/www/up/big.bin" 2>/dev/null)" = "$want"

stat=$(timeout 15 "$IT_SHUNT" stat --flat 2>&1)
grep -E '^(port\.(rx|tx)_packets|tcp\.|fault\.|drop\.tcp_(out_of_order|unacceptable|bad_checksum))' <<<"$stat" | grep -v ' 0$'
if [[ $role == client ]]; then
  opens=$(tr_counter tcp.active_opens "$stat")
  it_check "the client's sockets were shunted: tcp.active_opens ${opens:-missing} >= 2" test "${opens:-0}" -ge 2
else
  accepted=$(tr_counter tcp.connections_accepted "$stat")
  it_check "tcp.connections_accepted ${accepted:-missing} >= 2" test "${accepted:-0}" -ge 2
fi
case $loss in
  shunt)
    for c in fault.rx_dropped fault.tx_dropped fault.rx_reordered fault.tx_reordered; do
      v=$(tr_counter "$c" "$stat")
      it_check "$c ${v:-missing} > 0" test "${v:-0}" -gt 0
    done
    ;;
  nft)
    v=$(tr_nft_dropped "$NETNS_KERNEL")
    it_log "nftables dropped ${v:-?} packets"
    it_check "nftables dropped packets (${v:-missing})" test "${v:-0}" -gt 0
    v=$(tr_counter fault.rx_frames "$stat")
    it_check "no shunt faults (fault.rx_frames ${v:-missing})" test "${v:-1}" = 0
    ;;
esac
if [[ $role == server ]] && ! kill -0 "$nginx_pid" 2>/dev/null; then it_fail "nginx under shunt still runs"; fi
((it_failures == 0)) || show_logs
