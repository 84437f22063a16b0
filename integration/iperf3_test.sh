#!/usr/bin/env bash
# shellcheck disable=SC2154  # it_failures: defined in lib.sh
# iperf3 (stock Debian binary) through shunt, both as server and as client, with
# kernel peers in the other namespace.
#
#   integration/iperf3_test.sh BUILD_DIR
#
# Asserts:
#  1. iperf3 -s under shunt; a kernel client, 1 and 4 streams, both directions
#     (-R: shunt sends): every run completes and moves data; the shunt server's own
#     report (--get-server-output) has sane sender statistics, read through
#     getsockopt(TCP_INFO): a congestion window between one segment and 64 MiB and
#     a mean RTT between 1 us and 1 s;
#  2. iperf3 -c under shunt with -S 0x10 against a kernel server: sane sender
#     statistics, and the segments on the wire carry TOS 0x10 (IP_TOS applied by
#     shuntd), seen by tcpdump in the kernel namespace; then -u -S 0x21: the
#     datagrams carry 0x21;
#  3. no iperf3 complains of a socket option ("Protocol not available").
set -uo pipefail
# shellcheck source=integration/lib.sh
source "$(dirname "$0")/lib.sh"

it_setup "${1:-}"
net=${SHUNT_TEST_NET:-49}
name=shunt-it-iperf3-$$
export SHUNT_RUNDIR=$IT_TMP/run
server_pid=  # the one-off iperf3 server of the current run
dump_pid=

stop_all() {
  local p
  for p in $server_pid $dump_pid; do kill "$p" 2>/dev/null; done
  it_stop_shuntd
  netns_down "$name"
}
show_logs() { it_show_logs 30 "$IT_TMP"/*.log; }
it_cleanup_hooks+=(stop_all)

command -v iperf3 tcpdump python3 >/dev/null || { it_fail "iperf3, tcpdump and python3 needed (scripts/install-deps.sh)"; exit 1; }
it_need "$IT_SHUNT" "$IT_SHUNTD" "$IT_PRELOAD"
it_netns_up "$name" "$net"

# check_run WHAT JSON_FILE SIDE: the run completed and, for SIDE (client: the
# client's report; server: the server's report inside it), the sender's statistics
# are sane. SIDE none: only that the run completed.
check_run() {
  local what=$1 file=$2 side=$3 verdict
  verdict=$(python3 - "$file" "$side" <<'PY'
import json, sys
path, side = sys.argv[1], sys.argv[2]
try:
    doc = json.load(open(path))
except Exception as e:
    print(f"no JSON report ({e})"); sys.exit()
if "error" in doc:
    print("iperf3: " + doc["error"]); sys.exit()
got = doc["end"]["sum_received"]["bytes"]
if got < 1 << 20:
    print(f"only {got} bytes received"); sys.exit()
if side != "none":
    rep = doc if side == "client" else doc.get("server_output_json")
    if rep is None:
        print("no server report"); sys.exit()
    if "error" in rep:
        print("iperf3 server: " + rep["error"]); sys.exit()
    senders = [s["sender"] for s in rep["end"]["streams"] if s["sender"].get("sender", True)]
    if not senders:
        print("no sender statistics"); sys.exit()
    for s in senders:
        cwnd, rtt = s.get("max_snd_cwnd", -1), s.get("mean_rtt", -1)
        if not 1000 <= cwnd <= 64 << 20:
            print(f"max_snd_cwnd {cwnd}"); sys.exit()
        if not 1 <= rtt <= 1000000:
            print(f"mean_rtt {rtt} us"); sys.exit()
    print(f"ok {got} bytes, max_snd_cwnd {senders[0]['max_snd_cwnd']}, mean_rtt {senders[0]['mean_rtt']} us, retransmits {senders[0].get('retransmits')}")
    sys.exit()
print(f"ok {got} bytes")
PY
)
  if [[ $verdict == ok* ]]; then it_pass "$what: ${verdict#ok }"; else it_fail "$what: $verdict"; fi
}

# A persistent iperf3 server closes and reopens its listener after every test, and
# refuses a client that arrives in between (esnet/iperf#2066); a probe connection
# counts as a test. So every run gets its own one-off server (-1), and the wait for
# its listener asks the stack instead of connecting.

# reap_server: waits up to 10 s for the one-off server to exit after its test, so
# that the next one can listen on the port.
reap_server() {
  timeout 10 tail --pid="$server_pid" -f /dev/null
  kill "$server_pid" 2>/dev/null
  wait "$server_pid" 2>/dev/null
  server_pid=
}

# ---- 1. iperf3 -s under shunt -----------------------------------------------------
for streams in 1 4; do
  for dir in upload download; do
    rev=()
    side=none
    if [[ $dir == download ]]; then rev=(-R) side=server; fi
    what="kernel client, $streams stream(s), $dir (shunt $([[ $dir == download ]] && echo sends || echo receives))"
    # -J: the server's report comes back inside the client's, as JSON
    "${shunt_run[@]}" iperf3 -s -1 -J -B "$ip" -p 5201 >"$IT_TMP/server-$dir-$streams.log" 2>&1 &
    server_pid=$!
    if ! wait_listen "$ip" 5201 15 "$IT_SHUNT" ss -tl; then
      it_fail "$what: iperf3 -s under shunt listens on $ip:5201"
      reap_server
      continue
    fi
    out=$IT_TMP/$dir-$streams.json
    "${in_kernel[@]}" timeout 40 iperf3 -c "$ip" -p 5201 -t 2 -P "$streams" "${rev[@]}" -J \
      --get-server-output >"$out" 2>"$IT_TMP/client-$dir-$streams.log"
    check_run "$what" "$out" "$side"
    reap_server
  done
done

# ---- 2. iperf3 -c under shunt, TOS on the wire ------------------------------------
# tos_run NAME PROTO TOS SIDE IPERF3_ARGS...: iperf3 -c under shunt with -S TOS while
# tcpdump in the kernel namespace counts PROTO packets from shunt marked TOS; the
# run is checked (check_run SIDE) and at least 20 packets must carry the mark.
tos_run() {
  local name=$1 proto=$2 tos=$3 side=$4 i seen
  shift 4
  "${in_kernel[@]}" timeout 30 tcpdump -i "$NETNS_KERNEL_IF" -n -c 20 -w "$IT_TMP/$name.pcap" \
    "$proto and src host $ip and ip[1] = $tos" >"$IT_TMP/tcpdump-$name.log" 2>&1 &
  dump_pid=$!
  for ((i = 0; i < 50; i++)); do grep -q listening "$IT_TMP/tcpdump-$name.log" && break; sleep 0.1; done
  "${in_kernel[@]}" iperf3 -s -1 -B "$kip" -p 5202 >"$IT_TMP/kserver-$name.log" 2>&1 &
  server_pid=$!
  if ! wait_listen "$kip" 5202 15 ip netns exec "$NETNS_KERNEL" ss -tln; then
    it_fail "kernel iperf3 -s listens on $kip:5202"
    reap_server
    return
  fi
  "${shunt_run[@]}" timeout 40 iperf3 -c "$kip" -p 5202 -S "$tos" -J "$@" >"$IT_TMP/$name.json" \
    2>"$IT_TMP/$name.log"
  check_run "iperf3 -c $* under shunt (TOS $tos)" "$IT_TMP/$name.json" "$side"
  reap_server
  timeout 10 tail --pid="$dump_pid" -f /dev/null
  dump_pid=
  seen=$(tcpdump -n -r "$IT_TMP/$name.pcap" 2>/dev/null | wc -l)
  it_check "$proto packets from shunt carry TOS $tos ($seen of 20 seen)" test "$seen" -ge 20
}
tos_run shunt-client tcp 0x10 client -t 2
# UDP datagrams keep the ECN bits a TCP socket's TOS loses.
tos_run shunt-udp udp 0x21 none -u -b 20M -t 1

# ---- 3. no option refused -----------------------------------------------------------
if grep -l "Protocol not available" "$IT_TMP"/*.log "$IT_TMP"/*.json >/dev/null 2>&1; then
  it_fail "an iperf3 reports 'Protocol not available': $(grep -h "Protocol not available" "$IT_TMP"/*.log "$IT_TMP"/*.json | head -n 1)"
else
  it_pass "no iperf3 reports 'Protocol not available'"
fi

((it_failures == 0)) || show_logs
exit 0
