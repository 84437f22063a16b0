#!/usr/bin/env bash
# shellcheck disable=SC2154  # it_failures: defined in lib.sh
# Observability: shunt ss, shunt capture, shunt stat, DPDK telemetry, and an idle
# daemon's CPU time.
#
#   integration/observe_test.sh BUILD_DIR
#
# nginx (master + 1 worker) under shunt, wrk -t1 -c8 -d6s from the kernel namespace.
# Asserts, while wrk runs:
#  - `shunt ss` lists at least 8 ESTAB connections 198.18.NET.1:80 <-> 198.18.NET.2:PORT
#    held by the nginx worker (its pid in the Process column);
#  - `shunt ss -l` lists the listener on 198.18.NET.1:80 (and no connection);
#  - `shunt ss -i` prints an info line with rto:, rtt:, cwnd: under each connection;
# then, with curl fetches as the traffic:
#  - `shunt capture -w FILE -c 200` writes a pcapng file that tshark reads: 200
#    packets, SYNs among them (tcp.flags.syn==1), to and from 198.18.NET.1;
#  - `shunt stat` (grouped) hides counters at zero and says so; `shunt stat -a` shows
#    more lines;
#  - the DPDK telemetry socket named in shuntd.log answers /shunt/stats with
#    port.rx_packets > 0 (and the same daemon.pid);
#  - with nginx and wrk stopped (no application attached), shuntd uses under 2 % of a
#    core over 10 s (utime + stime from /proc/PID/stat).
set -uo pipefail
# shellcheck source=integration/lib.sh
source "$(dirname "$0")/lib.sh"

it_setup "${1:-}"
net=${SHUNT_TEST_NET:-64}
name=shunt-it-observe-$$
site=$IT_TMP/site
export SHUNT_RUNDIR=$IT_TMP/run
py=/usr/bin/python3
wrk_pid=
capture_pid=

stop_all() {
  if [[ -n $wrk_pid ]]; then kill "$wrk_pid" 2>/dev/null; fi
  if [[ -n $capture_pid ]]; then kill "$capture_pid" 2>/dev/null; fi
  nginx_stop "$site"
  it_stop_shuntd
  netns_down "$name"
}
show_logs() { it_show_logs 30 "$site/error.log"; }
it_cleanup_hooks+=(stop_all)

if ! command -v nginx curl wrk tshark getconf >/dev/null || [[ ! -x $py ]]; then
  it_fail "nginx, curl, wrk, tshark, getconf and $py needed (scripts/install-deps.sh)"
  exit 1
fi
it_need "$IT_SHUNT" "$IT_SHUNTD" "$IT_PRELOAD"

it_netns_up "$name" "$net"
nginx_site "$site" "$ip" 80


"${in_shunt[@]}" "$IT_SHUNT" run --nic "$NETNS_SHUNT_IF" --ip "$ip/$NETNS_PREFIX" \
  -- nginx -p "$site" -c "$site/nginx.conf" -e "$site/error.log" &
nginx_pid=$!
it_nginx_up "http://$ip/" "$NETNS_KERNEL" "$nginx_pid"
master=$(<"$site/nginx.pid")
worker=$(pgrep -P "$master" | head -n 1)
daemon_pid=$(counter daemon.pid "$(stat_flat)")
it_log "nginx master $master, worker ${worker:-?}; shuntd ${daemon_pid:-?}"
if [[ -z $worker || -z $daemon_pid ]]; then
  it_fail "an nginx worker and a shuntd pid"
  show_logs
  exit 1
fi

# ---- shunt ss while wrk runs ----
"${in_kernel[@]}" timeout 30 wrk -t1 -c8 -d6s --timeout 5s "http://$ip/" >"$IT_TMP/wrk.out" 2>&1 &
wrk_pid=$!
sleep 2
ss_out=$(timeout 10 "$IT_SHUNT" ss 2>&1)
ss_l=$(timeout 10 "$IT_SHUNT" ss -l 2>&1)
ss_i=$(timeout 10 "$IT_SHUNT" ss -i 2>&1)
echo "---- shunt ss (first lines)"
head -n 5 <<<"$ss_out"
echo "---- shunt ss -l"
echo "$ss_l"
echo "---- shunt ss -i (first lines)"
head -n 5 <<<"$ss_i"
addr_re="${ip//./\\.} *:80 +${kip//./\\.} *:[0-9]+"
estab=$(grep -cE "^ESTAB .*$addr_re .*pid=${worker}[,)]" <<<"$ss_out")
it_check "shunt ss: >= 8 ESTAB $ip:80 <-> $kip:PORT held by the worker (pid $worker): $estab" test "$estab" -ge 8
it_check "shunt ss: no LISTEN line by default" test -z "$(grep '^LISTEN' <<<"$ss_out")"
it_check "shunt ss: a header line" grep -q '^State .*Local Address.*Peer Address.*Process' <<<"$ss_out"
it_check "shunt ss -l: the listener on $ip:80" grep -Eq "^LISTEN .*${ip//./\\.} *:80 " <<<"$ss_l"
it_check "shunt ss -l: no connection" test -z "$(grep '^ESTAB' <<<"$ss_l")"
# Each ESTAB line is followed by its info line.
read -r conns_i infos < <(awk '
  prev ~ /^ESTAB / { n++; if ($0 ~ /^\t/ && / rto:[0-9.]+ / && / rtt:[0-9.]+\/[0-9.]+ / && / cwnd:[0-9]+ /) ok++ }
  { prev = $0 }
  END { print n + 0, ok + 0 }' <<<"$ss_i")
it_check "shunt ss -i: an info line (rto:, rtt:, cwnd:) under each of the $conns_i ESTAB connections ($infos)" \
  test "$conns_i" -ge 8 -a "$infos" = "$conns_i"
wait "$wrk_pid"
wrk_rc=$?
wrk_pid=
requests=$(sed -n 's/^ *\([0-9][0-9]*\) requests in .*/\1/p' "$IT_TMP/wrk.out")
it_check "wrk ran (exit $wrk_rc, ${requests:-0} requests)" test "$wrk_rc" = 0 -a "${requests:-0}" -ge 100

# ---- shunt capture with curl fetches as the traffic ----
pcap=$IT_TMP/c.pcapng
timeout 60 "$IT_SHUNT" capture -w "$pcap" -c 200 2>"$IT_TMP/capture.err" &
capture_pid=$!
sleep 0.3
fetched=0
t_capture=$SECONDS
for ((i = 0; i < 100 && SECONDS - t_capture < 30; i++)); do
  kill -0 "$capture_pid" 2>/dev/null || break
  "${in_kernel[@]}" curl -s -o /dev/null --max-time 5 "http://$ip/" && fetched=$((fetched + 1))
done
for ((i = 0; i < 50; i++)); do
  kill -0 "$capture_pid" 2>/dev/null || break
  sleep 0.1
done
wait "$capture_pid"
capture_rc=$?
capture_pid=
cat "$IT_TMP/capture.err"
it_log "$fetched curl fetches during the capture"
it_check "shunt capture -c 200 exits 0 (exit $capture_rc)" test "$capture_rc" = 0
it_check "shunt capture wrote $pcap" test -s "$pcap"
packets=$(tshark -r "$pcap" 2>/dev/null | wc -l)
it_check "tshark reads 200 packets from the capture ($packets)" test "$packets" = 200
syns=$(tshark -r "$pcap" -Y 'tcp.flags.syn==1' 2>/dev/null | wc -l)
it_check "tshark finds SYNs in the capture (tcp.flags.syn==1: $syns)" test "$syns" -ge 2
synacks=$(tshark -r "$pcap" -Y "tcp.flags.syn==1 && tcp.flags.ack==1 && ip.src==$ip" 2>/dev/null | wc -l)
it_check "tshark finds shunt's SYN-ACKs from $ip ($synacks)" test "$synacks" -ge 1
http=$(tshark -r "$pcap" -Y "http.request && ip.dst==$ip" 2>/dev/null | wc -l)
it_check "tshark decodes HTTP requests to $ip ($http)" test "$http" -ge 1
fmt=$(head -c 4 "$pcap" | od -An -tx1 | tr -d ' ')
it_check "the capture is pcapng (section header block 0a0d0d0a: $fmt)" test "$fmt" = 0a0d0d0a

# ---- shunt stat: grouped, zeros hidden; -a shows them ----
grouped=$(timeout 10 "$IT_SHUNT" stat 2>&1)
all=$(timeout 10 "$IT_SHUNT" stat -a 2>&1)
n_grouped=$(wc -l <<<"$grouped")
n_all=$(wc -l <<<"$all")
echo "---- shunt stat"
echo "$grouped"
it_check "shunt stat -a shows more lines ($n_all) than shunt stat ($n_grouped)" test "$n_all" -gt "$n_grouped"
it_check "shunt stat says counters at zero are not shown" grep -q 'at zero not shown' <<<"$grouped"
it_check "shunt stat shows rx_packets" grep -Eq '^ +rx_packets +[1-9]' <<<"$grouped"
# A counter at zero in the flat list (there are always some: drop reasons) is
# missing from the grouped one and present in -a.
zero=$(stat_flat | awk '$2 == "0" && $1 ~ /^drop\./ { sub(/^drop\./, "", $1); print $1; exit }')
if [[ -n $zero ]]; then
  it_check "shunt stat hides drop.$zero (0)" test -z "$(grep -E "^ +$zero +0\$" <<<"$grouped")"
  it_check "shunt stat -a shows drop.$zero (0)" grep -Eq "^ +$zero +0\$" <<<"$all"
else
  it_fail "a drop counter at zero in shunt stat --flat"
fi

# ---- DPDK telemetry ----
tel=$(sed -n 's/.*telemetry \(\/[^ ,]*dpdk_telemetry\.v2\).*/\1/p' "$SHUNT_RUNDIR/shuntd.log" | tail -n 1)
it_log "telemetry socket: ${tel:-none named in shuntd.log}"
it_check "shuntd.log names the telemetry socket of pid $daemon_pid" \
  test "$tel" = "/var/run/dpdk/shuntd$daemon_pid/dpdk_telemetry.v2"
tel_out=$(timeout 15 "$py" - "$tel" <<'PY' 2>&1
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.settimeout(5)
s.connect(sys.argv[1])
greeting = json.loads(s.recv(65536).decode())
print("greeting:", json.dumps(greeting)[:200])
s.send(b"/shunt/stats")
buf = s.recv(1 << 20)
reply = json.loads(buf.decode())
stats = reply["/shunt/stats"]
print("groups:", " ".join(sorted(stats)))
print("port.rx_packets", stats["port"]["rx_packets"])
print("daemon.pid", stats["daemon"]["pid"])
PY
)
rc=$?
echo "$tel_out"
it_check "telemetry: /shunt/stats answers JSON (exit $rc)" test "$rc" = 0
rx=$(awk '$1 == "port.rx_packets" { print $2 }' <<<"$tel_out")
it_check "telemetry: port.rx_packets ${rx:-missing} > 0" test "${rx:-0}" -gt 0
tpid=$(awk '$1 == "daemon.pid" { print $2 }' <<<"$tel_out")
it_check "telemetry: daemon.pid ${tpid:-missing} is shuntd's" test "${tpid:-}" = "$daemon_pid"

# ---- an idle daemon's CPU time ----
nginx_stop "$site"
wait "$nginx_pid" 2>/dev/null
active=
for ((i = 0; i < 30; i++)); do
  active=$(counter apps.active "$(stat_flat)")
  [[ $active == 0 ]] && break
  sleep 0.1
done
it_check "no application attached once nginx is gone (apps.active ${active:-?})" test "${active:-}" = 0
sleep 2
hz=$(getconf CLK_TCK)
ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$daemon_pid/stat"; }
idle0=$(stat_flat)
t0=$(ticks)
per_s=
for ((i = 0; i < 10; i++)); do
  a=$(ticks)
  sleep 1
  per_s+="$(($(ticks) - a)) "
done
t1=$(ticks)
idle1=$(stat_flat)
used=$((t1 - t0))
limit=$((hz * 10 * 2 / 100))
it_log "idle shuntd: $used ticks of CPU in 10 s (CLK_TCK $hz; limit $limit, 2 % of a core); per second: $per_s"
it_log "idle shuntd: daemon.sleeps +$(($(counter daemon.sleeps "$idle1") - $(counter daemon.sleeps "$idle0"))), port.rx_packets +$(($(counter port.rx_packets "$idle1") - $(counter port.rx_packets "$idle0"))), tcp.live_connections $(counter tcp.live_connections "$idle1")"
it_check "idle shuntd uses <= 2 % of a core ($used <= $limit ticks in 10 s)" test "$used" -le "$limit"
# net_af_xdp's socket turns readable on frames: an idle daemon sleeps on it
# rather than napping and polling.
it_check "shuntd found the AF_XDP socket to sleep on" \
  bash -c "! grep -q 'raises no wake-up' '$SHUNT_RUNDIR/shuntd.log'"
it_check "shuntd (pid $daemon_pid) still runs" kill -0 "$daemon_pid"
((it_failures == 0)) || show_logs
