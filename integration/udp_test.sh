#!/usr/bin/env bash
# shellcheck disable=SC2154  # it_failures: defined in lib.sh
# UDP through shunt with real programs: stock socat under shunt on a veth end, and
# kernel peers in the other namespace.
#
#   integration/udp_test.sh BUILD_DIR
#
# Asserts, byte for byte:
#  1. socat UDP echo server (UDP4-LISTEN bound to the NIC address, PIPE) under
#     shunt answers a kernel client's datagrams of 10 .. 65507 bytes; those above
#     1472 bytes arrive as IPv4 fragments (shuntd reassembles them) and the answers
#     leave as fragments (the kernel reassembles them);
#  2. the same with the server bound to the wildcard address (shunt + kernel);
#  3. socat as a UDP client under shunt (connect, send, recv) against a kernel
#     socat echo server, 100 .. 30000 bytes;
#  4. ICMP port unreachable both ways: a kernel client connected to a closed shunt
#     port gets ECONNREFUSED, and socat under shunt connected to a closed kernel
#     port reports "Connection refused";
#  5. shunt stat: no datagram dropped for checksum, length, ring or fragment
#     reasons; the closed-port datagram counted as drop.udp_no_socket.
set -uo pipefail
# shellcheck source=integration/lib.sh
source "$(dirname "$0")/lib.sh"

it_setup "${1:-}"
net=${SHUNT_TEST_NET:-47}
name=shunt-it-udp-$$
export SHUNT_RUNDIR=$IT_TMP/run
server_pid=

stop_all() {
  if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null; fi
  it_stop_shuntd
  netns_down "$name"
}
show_logs() {
  local f
  for f in "$IT_TMP"/*.log "$SHUNT_RUNDIR/shuntd.log"; do
    [[ -f $f ]] || continue
    echo "---- $f" >&2
    tail -n 30 "$f" >&2
  done
}
it_cleanup_hooks+=(stop_all)

command -v socat python3 cmp >/dev/null || { it_fail "socat, python3 and cmp needed (scripts/install-deps.sh)"; exit 1; }
it_need "$IT_SHUNT" "$IT_SHUNTD" "$IT_PRELOAD"

it_netns_up "$name" "$net"

# A kernel-side client: sends each size once from one socket, checks the echo
# byte for byte and its source. Prints one line per datagram; exits non-zero on
# the first mismatch or timeout.
echo_client() {
  local port=$1
  shift
  "${in_kernel[@]}" timeout 60 python3 - "$ip" "$port" "$@" <<'PY'
import os, socket, sys
ip, port, sizes = sys.argv[1], int(sys.argv[2]), [int(x) for x in sys.argv[3:]]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
for size in sizes:
    data = os.urandom(size)
    s.sendto(data, (ip, port))
    reply, src = s.recvfrom(65535)
    ok = reply == data and src == (ip, port)
    print(f"{size} bytes: {'echoed' if ok else 'MISMATCH'} from {src[0]}:{src[1]}")
    if not ok:
        sys.exit(1)
PY
}

# Waits until socat (run with -d -d) says it has bound its socket.
wait_bound() {
  local log=$1 i
  for ((i = 0; i < 150; i++)); do
    grep -q "listening on UDP" "$log" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

sizes=(10 1000 1472 1473 3000 4000 9000 20000 65507)

# ---- 1. echo server bound to the NIC address ----
"${shunt_run[@]}" socat -d -d -b 65536 UDP4-LISTEN:7777,bind="$ip" PIPE >"$IT_TMP/echo1.log" 2>&1 &
server_pid=$!
if wait_bound "$IT_TMP/echo1.log"; then it_pass "socat UDP4-LISTEN:7777,bind=$ip runs under shunt"; else
  it_fail "socat under shunt did not attach"
  show_logs
  exit 1
fi
it_check "kernel client: datagrams of ${sizes[*]} bytes echoed byte for byte" echo_client 7777 "${sizes[@]}"
kill "$server_pid" 2>/dev/null
wait "$server_pid" 2>/dev/null
server_pid=

# ---- 2. echo server on the wildcard address (NIC + kernel halves) ----
"${shunt_run[@]}" socat -d -d -b 65536 UDP4-LISTEN:7779 PIPE >"$IT_TMP/echo2.log" 2>&1 &
server_pid=$!
wait_bound "$IT_TMP/echo2.log" || it_fail "wildcard socat did not start"
it_check "wildcard server: datagrams echoed through the NIC half" echo_client 7779 10 1473 20000 65507
kill "$server_pid" 2>/dev/null
wait "$server_pid" 2>/dev/null
server_pid=

# ---- 3. socat as a client under shunt, kernel echo server ----
"${in_kernel[@]}" timeout 120 socat -d -d -b 65536 UDP4-LISTEN:7778,bind="$kip",fork PIPE \
  >"$IT_TMP/kernel-echo.log" 2>&1 &
kernel_echo=$!
wait_bound "$IT_TMP/kernel-echo.log" || it_fail "kernel socat echo server did not start"
for size in 100 4000 30000; do
  head -c "$size" /dev/urandom >"$IT_TMP/req.$size"
  "${shunt_run[@]}" timeout 20 socat -b 65536 -t 1 - UDP4:"$kip":7778 \
    <"$IT_TMP/req.$size" >"$IT_TMP/resp.$size" 2>>"$IT_TMP/client.log"
  it_check "socat client under shunt: $size-byte datagram echoed byte for byte" \
    cmp -s "$IT_TMP/req.$size" "$IT_TMP/resp.$size"
done
kill "$kernel_echo" 2>/dev/null
wait "$kernel_echo" 2>/dev/null

# ---- 4. ICMP port unreachable, both ways ----
refused=$("${in_kernel[@]}" timeout 20 python3 - "$ip" <<'PY'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect((sys.argv[1], 9))
s.send(b"anyone?")
try:
    s.recv(100)
    print("answered")
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
PY
)
it_check "kernel client to a closed shunt port: ECONNREFUSED (got: $refused)" test "$refused" = refused
out=$(echo x | "${shunt_run[@]}" timeout 20 socat -t 3 - UDP4:"$kip":9 2>&1)
rc=$?
it_check "socat under shunt to a closed kernel port: Connection refused (rc $rc)" \
  grep -q "Connection refused" <<<"$out"

# ---- 5. counters ----
stat=$(stat_flat)
for d in udp_truncated udp_bad_length udp_bad_checksum udp_rx_ring_full ip_frag_malformed \
  ip_frag_too_big ip_frag_overlap ip_frag_too_many ip_frag_timeout ip_frag_evicted tx_no_buffer; do
  v=$(counter "drop.$d" "$stat")
  it_check "drop.$d is ${v:-missing}, expected 0" test "${v:-x}" = 0
done
v=$(counter drop.udp_no_socket "$stat")
it_check "drop.udp_no_socket ${v:-missing} >= 1 (the closed-port datagram)" test "${v:-0}" -ge 1
((it_failures == 0)) || { echo "$stat"; show_logs; }
