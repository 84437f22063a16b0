#!/usr/bin/env bash
# shellcheck disable=SC2154  # it_failures: defined in lib.sh
# TCP between shunted programs on one host: the stack's own address, looped back
# inside shuntd (the kernel's loopback, without the kernel).
#
#   integration/local_test.sh BUILD_DIR
#
# Asserts:
#  1. nginx under shunt; curl under shunt (another process, same daemon) fetches
#     1 KiB and 16 MiB files from the NIC's address, sha256-checked; wrk under shunt
#     (8 connections, 2 s) gets no socket error and no non-2xx answer;
#  2. one process under shunt (python3) connects to its own listener on the NIC's
#     address: 4 MiB each way byte-exact, the server's peer address is the client's
#     local one, close gives EOF; a port nobody listens on refuses (ECONNREFUSED);
#  3. shunt stat: the traffic looped (ip.looped_frames), none dropped at the loop,
#     no retransmission for a loss (fast or SACK), and the NIC sent next to nothing.
set -uo pipefail
# shellcheck source=integration/lib.sh
source "$(dirname "$0")/lib.sh"

it_setup "${1:-}"
net=${SHUNT_TEST_NET:-51}
name=shunt-it-local-$$
site=$IT_TMP/site
export SHUNT_RUNDIR=$IT_TMP/run

stop_all() {
  nginx_stop "$site"
  it_stop_shuntd
  netns_down "$name"
}
show_logs() { it_show_logs 30 "$site/error.log" "$IT_TMP"/*.log; }
it_cleanup_hooks+=(stop_all)

command -v nginx curl wrk sha256sum python3 >/dev/null ||
  { it_fail "nginx, curl, wrk, sha256sum and python3 needed (scripts/install-deps.sh)"; exit 1; }
it_need "$IT_SHUNT" "$IT_SHUNTD" "$IT_PRELOAD"
it_netns_up "$name" "$net"

nginx_site "$site" "$ip" 80
head -c 1024 /dev/urandom >"$site/www/1k.bin"
head -c $((16 << 20)) /dev/urandom >"$site/www/16m.bin"
chmod 644 "$site/www/"*.bin
"${shunt_run[@]}" nginx -p "$site" -c "$site/nginx.conf" -e "$site/error.log" &
nginx_pid=$!
it_nginx_up "http://$ip/" "$NETNS_KERNEL" "$nginx_pid"

before=$(stat_flat)

# ---- 1. curl and wrk under shunt against nginx under shunt ------------------------
for f in 1k.bin 16m.bin; do
  want=$(sha256sum <"$site/www/$f" | cut -d' ' -f1)
  got=$("${shunt_run[@]}" curl -sS --fail --max-time 30 "http://$ip/$f" 2>"$IT_TMP/curl.log" | sha256sum | cut -d' ' -f1)
  it_check "curl under shunt: $f from nginx under shunt, sha256 matches" test "$got" = "$want"
done
it_wrk "${shunt_run[@]}" timeout 30 wrk -t1 -c8 -d2s "http://$ip/1k.bin"
out=$WRK_OUT rc=$WRK_RC
echo "$out"
it_check_wrk "$out" "$rc" 100

# ---- 2. one process, both ends ----------------------------------------------------
out=$("${shunt_run[@]}" timeout 60 python3 - "$ip" <<'PY' 2>&1
import errno, os, socket, sys, threading
ip = sys.argv[1]
n = 4 << 20
data = os.urandom(n)
ls = socket.socket()
ls.bind((ip, 7100))
ls.listen(4)
c = socket.socket()
c.connect((ip, 7100))
s, peer = ls.accept()
if peer != c.getsockname():
    sys.exit(f"accept's peer {peer} is not the client's address {c.getsockname()}")
def recv_all(sock, want):
    got = bytearray()
    while len(got) < want:
        b = sock.recv(1 << 20)
        if not b:
            break
        got += b
    return bytes(got)
for a, b, what in ((c, s, "client to server"), (s, c, "server to client")):
    t = threading.Thread(target=a.sendall, args=(data,))
    t.start()
    got = recv_all(b, n)
    t.join()
    if got != data:
        sys.exit(f"{what}: {len(got)} of {n} bytes, or different bytes")
    print(f"{what}: {n} bytes exact")
c.close()
if s.recv(1) != b"":
    sys.exit("no EOF after the client closed")
s.close()
r = socket.socket()
e = r.connect_ex((ip, 7101))
if e != errno.ECONNREFUSED:
    sys.exit(f"connect to a closed port: {errno.errorcode.get(e, e)}, not ECONNREFUSED")
print("one process: exact both ways, EOF, ECONNREFUSED")
PY
)
rc=$?
echo "$out" | sed 's/^/    /'
it_check "one process under shunt talks to itself over the NIC's address" test "$rc" = 0

# ---- 3. it looped -------------------------------------------------------------------
after=$(stat_flat)
delta() { echo $(($(counter "$1" "$after") - $(counter "$1" "$before"))); }
looped=$(delta ip.looped_frames)
tx=$(delta port.tx_packets)
it_check "shunt stat: ip.looped_frames +$looped (>= 12000: 16 MiB and 4 MiB twice)" test "$looped" -ge 12000
it_check "shunt stat: drop.loopback_full +$(delta drop.loopback_full)" test "$(delta drop.loopback_full)" = 0
# Nothing is lost in the loop, so nothing is retransmitted for a loss (fast or SACK
# retransmits). A timer may still fire (a tail loss probe, an RTO) when shuntd is
# descheduled for longer than a probe's timeout, as on a busy two-core machine.
for_loss=$(($(delta tcp.fast_retransmits) + $(delta tcp.sack_retransmits)))
it_check "shunt stat: no retransmission for a loss ($for_loss; timer-driven: $(delta tcp.tail_loss_probes) probes, $(delta tcp.rto_expired) RTOs)" \
  test "$for_loss" = 0
it_check "shunt stat: the NIC sent $tx packets meanwhile (< 100)" test "$tx" -lt 100

((it_failures == 0)) || show_logs
exit 0
