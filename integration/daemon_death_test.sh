#!/usr/bin/env bash
# shellcheck disable=SC2154  # it_failures: defined in lib.sh
# The daemon dies (or stops) under its applications; kernel peers in the other
# namespace of a veth pair.
#
#   integration/daemon_death_test.sh BUILD_DIR
#
# Asserts:
#  a. shuntd killed with SIGKILL during a shunted download (curl --limit-rate 5M of
#     a 200 MiB file from a kernel nginx): curl exits non-zero within 3 s;
#  b. a shunted server (python, blocking calls only, each call's outcome logged)
#     blocked in recv on a connection from an idle kernel client: within 1 s of
#     shuntd's SIGKILL the recv fails; accept on its old listener fails too;
#  c. the same process, binding a new listener (port 7001) until that works, is
#     shunted on a new daemon (started by shunt run when none answers): a kernel
#     client's request is answered, and the new daemon counts the accept
#     (tcp.connections_accepted >= 1, the process attached);
#  d. shunt stop with that connection established: the kernel client reads an
#     orderly EOF, the control socket file is removed and shuntd exits within 3 s;
#  e. a second shuntd on the same NIC (another run directory) exits non-zero within
#     5 s naming the running one's pid; so does one on the same run directory with
#     another NIC; the first one keeps serving.
set -uo pipefail
# shellcheck source=integration/lib.sh
source "$(dirname "$0")/lib.sh"

it_setup "${1:-}"
net=${SHUNT_TEST_NET:-72}
name=shunt-it-ddeath-$$
ksite=$IT_TMP/ksite
export SHUNT_RUNDIR=$IT_TMP/run
curl_pid='' server_pid='' idle_pid='' client_pid=''

stop_all() {
  local p
  for p in $curl_pid $server_pid $idle_pid $client_pid; do kill -KILL "$p" 2>/dev/null; done
  it_stop_shuntd
  nginx_stop "$ksite"
  netns_down "$name"
}
show_logs() {
  local f
  for f in "$IT_TMP"/*.log "$IT_TMP"/*.err "$SHUNT_RUNDIR"/shuntd.log*; do
    [[ -f $f ]] || continue
    echo "---- $f" >&2
    tail -n 30 "$f" >&2
  done
}
it_cleanup_hooks+=(stop_all)

for c in nginx curl python3 truncate; do
  command -v "$c" >/dev/null || { it_fail "$c needed (scripts/install-deps.sh)"; exit 1; }
done
it_need "$IT_SHUNT" "$IT_SHUNTD" "$IT_PRELOAD"
# The interpreter itself (not a wrapper script such as a pyenv shim) under shunt run.
py=$(python3 -c 'import sys; print(sys.executable)')

it_netns_up "$name" "$net"

now() { echo "$EPOCHREALTIME"; }
secs_since() { awk -v a="$1" -v b="${2:-$EPOCHREALTIME}" 'BEGIN { printf "%.3f", b - a }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }
stat_now() { timeout 10 "$IT_SHUNT" stat --flat 2>&1; }
val() { awk -v k="$1" '$1 == k { print $2; found = 1; exit } END { if (!found) print "missing" }' <<<"$2"; }
# Not a zombie either: a killed daemon is nobody's child here.
alive() { [[ -e /proc/$1 ]] && [[ $(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) != Z ]]; }
# wait_gone PID SECONDS: polls until PID is gone; false at the deadline.
wait_gone() {
  local t0=$EPOCHREALTIME
  while alive "$1"; do
    le "$(secs_since "$t0")" "$2" || return 1
    sleep 0.01
  done
}
# wait_line FILE REGEX SECONDS: the first line of FILE matching REGEX, once there.
wait_line() {
  local t0=$EPOCHREALTIME line
  for (( ; ; )); do
    line=$(grep -m 1 -E "$2" "$1" 2>/dev/null)
    [[ -n $line ]] && { echo "$line"; return 0; }
    le "$(secs_since "$t0")" "$3" || return 1
    sleep 0.01
  done
}
wait_quiet() { wait_line "$@" >/dev/null; }
# wait_daemon SECONDS: until a daemon answers on SHUNT_RUNDIR; prints its stat.
wait_daemon() {
  local t0=$EPOCHREALTIME s
  for (( ; ; )); do
    if [[ -S $SHUNT_RUNDIR/shuntd.sock ]] && s=$(stat_now) && [[ $(val daemon.pid "$s") =~ ^[0-9]+$ ]]; then
      echo "$s"
      return 0
    fi
    le "$(secs_since "$t0")" "$1" || return 1
    sleep 0.1
  done
}

# The shunted server: blocking socket calls only; every outcome goes to the log
# as "TIME what outcome". Port 7000: accept one connection and recv on it. Once
# that fails (the daemon is gone): accept on the old listener, then a new
# listener on port 7001, retried every 0.2 s until bind+listen work (a new
# daemon is up), accept, answer one request, recv again until the end.
cat >"$IT_TMP/server.py" <<'PY'
import signal, socket, sys, time
log_path, ip = sys.argv[1], sys.argv[2]
log = open(log_path, "a", buffering=1)
def say(*a):
    log.write("%.6f %s\n" % (time.time(), " ".join(str(x) for x in a)))
def outcome(e):
    return "%s errno=%s" % (type(e).__name__, getattr(e, "errno", None))
class Alarm(Exception):
    pass
def on_alarm(sig, frame):
    raise Alarm()
signal.signal(signal.SIGALRM, on_alarm)

s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((ip, 7000))
s.listen(8)
say("listen7000 ok")
c, peer = s.accept()
say("accept7000 ok", "%s:%d" % peer)
try:
    d = c.recv(100)
    say("recv7000", "eof" if not d else "data %d" % len(d))
except OSError as e:
    say("recv7000 error", outcome(e))
# The old listener: an error, not a hang (bounded by an alarm).
signal.alarm(3)
try:
    x, p = s.accept()
    say("accept7000-again ok", "%s:%d" % p)
except Alarm:
    say("accept7000-again hang 3s")
except OSError as e:
    say("accept7000-again error", outcome(e))
signal.alarm(0)
for sock in (c, s):
    try:
        sock.close()
    except OSError as e:
        say("close error", outcome(e))

deadline = time.time() + 60
n = None
while time.time() < deadline:
    n = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        n.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        n.bind((ip, 7001))
        n.listen(8)
        say("listen7001 ok")
        break
    except OSError as e:
        say("listen7001 attempt", outcome(e))
        n.close()
        n = None
        time.sleep(0.2)
if n is None:
    say("listen7001 gave up")
    sys.exit(1)
c2, peer = n.accept()
say("accept7001 ok", "%s:%d" % peer)
req = c2.recv(100)
c2.sendall(b"pong:" + req)
say("answered7001", req.decode(errors="replace"))
while True:
    try:
        d = c2.recv(100)
        say("recv7001", "eof" if not d else "data %d" % len(d))
        if not d:
            break
    except OSError as e:
        say("recv7001 error", outcome(e))
        break
say("exit")
PY
# A kernel client: connects, sends MSG (unless empty) and reads the answer, says
# "ready"; then holds the connection idle: with a trigger file given, sends one
# byte once it appears; logs how and when the connection ended.
cat >"$IT_TMP/client.py" <<'PY'
import os, socket, sys, time
ip, port, msg, log_path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
trigger = sys.argv[5] if len(sys.argv) > 5 else ""
log = open(log_path, "a", buffering=1)
def say(*a):
    log.write("%.6f %s\n" % (time.time(), " ".join(str(x) for x in a)))
s = socket.create_connection((ip, port), timeout=10)
if msg:
    s.sendall(msg.encode())
    say("reply", s.recv(100).decode(errors="replace"))
say("ready")
end = time.time() + 60
try:
    while time.time() < end:
        if trigger and os.path.exists(trigger):
            trigger = ""
            s.sendall(b"x")
            say("sent a byte")
        s.settimeout(0.05)
        try:
            d = s.recv(100)
        except socket.timeout:
            continue
        say("eof" if not d else "data %d" % len(d))
        break
    else:
        say("timeout 60s")
except OSError as e:
    say("error %s errno=%s" % (type(e).__name__, e.errno))
s.close()
PY

# ---- a. SIGKILL during a shunted download
nginx_site "$ksite" "$kip" 80
truncate -s 200M "$ksite/www/big"
chmod 644 "$ksite/www/big"
"${in_kernel[@]}" nginx -p "$ksite" -c "$ksite/nginx.conf" -e "$ksite/error.log" &
it_nginx_up "http://$kip/" "$NETNS_KERNEL" $! "kernel nginx"
it_log "a. shunt run -- curl --limit-rate 5M http://$kip/big (starts the daemon)"
"${shunt_run[@]}" curl -sS -o /dev/null --limit-rate 5M "http://$kip/big" 2>"$IT_TMP/curl.err" &
curl_pid=$!
if ! st=$(wait_daemon 20); then
  it_fail "a. the daemon started by shunt run answers"
  show_logs
  exit 1
fi
dpid=$(val daemon.pid "$st")
# Until the download has moved 1 MiB (at most 10 s), then 1.5 s more.
for ((i = 0; i < 100; i++)); do
  st=$(stat_now)
  (($(val port.rx_bytes "$st") > 1048576)) && break
  alive "$curl_pid" || break
  sleep 0.1
done
sleep 1.5
st=$(stat_now)
rx_before=$(val port.rx_bytes "$st")
it_log "a. shuntd pid $dpid; curl has received about $((rx_before / 1048576)) MiB"
it_check "a. curl downloading through shunt before the kill (port.rx_bytes $rx_before > 4 MiB)" \
  test "$rx_before" -gt $((4 * 1048576))
it_check "a. curl still runs before the kill" alive "$curl_pid"
t_kill=$(now)
kill -KILL "$dpid"
if wait_gone "$curl_pid" 5; then
  dt=$(secs_since "$t_kill")
  wait "$curl_pid"
  curl_rc=$?
else
  dt=">5"
  curl_rc=running
fi
curl_pid=
it_log "a. curl ended ${dt} s after the kill, exit $curl_rc: $(tr '\n' ' ' <"$IT_TMP/curl.err")"
it_check "a. curl exits with an error (exit $curl_rc)" test "$curl_rc" != running -a "$curl_rc" != 0
it_check "a. curl ends within 3 s of the kill (${dt} s)" le "${dt#>}" 3
it_check "a. shuntd (pid $dpid) is gone" wait_gone "$dpid" 2
cp "$SHUNT_RUNDIR/shuntd.log" "$SHUNT_RUNDIR/shuntd.log.a"

# ---- b. a shunted server blocked in recv when the daemon dies
it_log "b. shunt run -- python3 server.py (starts a fresh daemon)"
"${shunt_run[@]}" "$py" "$IT_TMP/server.py" "$IT_TMP/server.log" "$ip" 2>"$IT_TMP/server.err" &
server_pid=$!
if ! wait_line "$IT_TMP/server.log" 'listen7000 ok' 20 >/dev/null; then
  it_fail "b. the shunted server listens on $ip:7000"
  show_logs
  exit 1
fi
st=$(stat_now)
dpid=$(val daemon.pid "$st")
it_check "b. a fresh daemon (pid $dpid) serves the server (pid $server_pid)" test "$(val "app.$server_pid.comm" "$st")" != missing
"${in_kernel[@]}" "$py" "$IT_TMP/client.py" "$ip" 7000 "" "$IT_TMP/idle-client.log" "$IT_TMP/idle-trigger" &
idle_pid=$!
it_check "b. kernel client connected to the shunted server" wait_quiet "$IT_TMP/server.log" 'accept7000 ok' 10
wait_line "$IT_TMP/idle-client.log" '^[0-9.]+ ready' 10 >/dev/null
sleep 0.5   # the server is blocked in recv by now
t_kill=$(now)
kill -KILL "$dpid"
if line=$(wait_line "$IT_TMP/server.log" 'recv7000' 3); then
  dt=$(secs_since "$t_kill" "${line%% *}")
  it_log "b. server: '${line#* }' ${dt} s after the kill"
  it_check "b. the server's blocked recv fails (not eof, not data)" grep -q 'recv7000 error' <<<"$line"
  it_check "b. the server notices within 1 s of the kill (${dt} s)" le "$dt" 1
else
  it_fail "b. the server's blocked recv returns within 3 s of the kill (it still blocks)"
fi
if line=$(wait_line "$IT_TMP/server.log" 'accept7000-again' 5); then
  dt=$(secs_since "$t_kill" "${line%% *}")
  it_log "b. server: '${line#* }' ${dt} s after the kill"
  it_check "b. accept on the old listener fails rather than hangs" grep -q 'accept7000-again error' <<<"$line"
else
  it_fail "b. accept on the old listener returns (nothing logged in 5 s)"
fi
it_check "b. shuntd (pid $dpid) is gone" wait_gone "$dpid" 2
sleep 0.5
it_log "b. kernel client (idle; no RST expected from a dead stack): $(tail -n 1 "$IT_TMP/idle-client.log")"
cp "$SHUNT_RUNDIR/shuntd.log" "$SHUNT_RUNDIR/shuntd.log.b"

# ---- c. the same process re-attaches to a new daemon
line=$(wait_line "$IT_TMP/server.log" 'listen7001' 5)
it_log "c. server, no daemon: '${line#* }'"
it_check "c. without a daemon the server's new listener fails (kernel stack: no address)" grep -q 'listen7001 attempt' <<<"$line"
t_new=$(now)
it_log "c. shunt run -- true (starts a new daemon)"
"${shunt_run[@]}" true
rc=$?
it_check "c. shunt run starts a new daemon (exit $rc)" test "$rc" = 0
st=$(wait_daemon 10)
dpid=$(val daemon.pid "$st")
if line=$(wait_line "$IT_TMP/server.log" 'listen7001 ok' 5); then
  it_log "c. server listens on 7001 $(secs_since "$t_new" "${line%% *}") s after the new daemon was asked for (pid $dpid)"
  it_pass "c. the server's new listener works"
else
  it_fail "c. the server's new listener works (nothing in 5 s)"
  show_logs
fi
: >"$IT_TMP/idle-trigger"   # the idle client of b. speaks up (informative)
"${in_kernel[@]}" "$py" "$IT_TMP/client.py" "$ip" 7001 ping "$IT_TMP/client.log" &
client_pid=$!
if line=$(wait_line "$IT_TMP/client.log" ' reply ' 10); then
  it_check "c. kernel client gets the answer ('${line#* reply }')" test "${line#* reply }" = pong:ping
else
  it_fail "c. kernel client gets an answer from 7001 (nothing in 10 s)"
fi
st=$(stat_now)
accepted=$(val tcp.connections_accepted "$st")
it_check "c. new daemon (pid $dpid) counts the accept (tcp.connections_accepted $accepted >= 1)" test "${accepted/missing/0}" -ge 1
it_check "c. new daemon has the server (pid $server_pid) attached" test "$(val "app.$server_pid.comm" "$st")" != missing
it_check "c. shuntd logged the server's re-attach" grep -q "attached pid $server_pid" "$SHUNT_RUNDIR/shuntd.log"
it_log "c. server's stderr (libshunt.so): $(tr '\n' '|' <"$IT_TMP/server.err")"
sleep 0.3
it_log "b/c. idle kernel client of 7000 after the new daemon came up: $(tail -n 1 "$IT_TMP/idle-client.log")"

# ---- d. shunt stop: FIN to the peers, socket file removed, exit
wait_line "$IT_TMP/client.log" '^[0-9.]+ ready' 5 >/dev/null
t_stop=$(now)
stop_out=$(timeout 15 "$IT_SHUNT" stop 2>&1)
stop_rc=$?
dt_stop=$(secs_since "$t_stop")
if wait_gone "$dpid" 5; then dt_gone=$(secs_since "$t_stop"); else dt_gone=">5"; fi
it_log "d. shunt stop: exit $stop_rc after ${dt_stop} s ${stop_out:+($stop_out)}; shuntd gone ${dt_gone} s after the stop"
it_check "d. shunt stop exits 0 (exit $stop_rc)" test "$stop_rc" = 0
it_check "d. shuntd exits within 3 s (${dt_gone} s)" le "${dt_gone#>}" 3
it_check "d. the control socket file is removed" test ! -e "$SHUNT_RUNDIR/shuntd.sock"
if line=$(wait_line "$IT_TMP/client.log" '^[0-9.]+ (eof|error|data|timeout)' 3); then
  it_log "d. kernel client: '${line#* }' $(secs_since "$t_stop" "${line%% *}") s after the stop"
  it_check "d. the kernel client reads an orderly EOF" grep -q ' eof$' <<<"$line"
else
  it_fail "d. the kernel client reads an orderly EOF (nothing within 3 s of shuntd's exit)"
fi
it_check "d. shuntd logged its stop" grep -q 'stopping: FIN on every connection' "$SHUNT_RUNDIR/shuntd.log"
wait_line "$IT_TMP/server.log" 'recv7001|exit' 3 >/dev/null
it_log "d. server after the stop: $(awk -v t0="$t_stop" '/recv7001|exit/ { printf "%s%+.3f s:", sep, $1 - t0; for (i = 2; i <= NF; i++) printf " %s", $i; sep = "; " }' "$IT_TMP/server.log")"
kill -KILL "$server_pid" "$idle_pid" "$client_pid" 2>/dev/null
wait "$server_pid" "$idle_pid" "$client_pid" 2>/dev/null
server_pid='' idle_pid='' client_pid=''
cp "$SHUNT_RUNDIR/shuntd.log" "$SHUNT_RUNDIR/shuntd.log.d"

# ---- e. one daemon per NIC, one per run directory
"${shunt_run[@]}" true
st=$(wait_daemon 10)
dpid=$(val daemon.pid "$st")
it_log "e. running shuntd pid ${dpid}"
second() {  # second NAME NIC RUNDIR: a second shuntd, directly
  local t0=$EPOCHREALTIME rc dt out
  out=$("${in_shunt[@]}" env SHUNT_NIC="$2" SHUNT_IP="$ip/$NETNS_PREFIX" SHUNT_RUNDIR="$3" \
    timeout 20 "$IT_SHUNTD" 2>&1)
  rc=$?
  dt=$(secs_since "$t0")
  it_log "e. $1: exit $rc after ${dt} s: $(grep -v -E '^(EAL|TELEMETRY|libbpf|libxdp)' <<<"$out" | tail -n 2 | tr '\n' ' ')"
  it_check "e. $1 exits non-zero (exit $rc), not by the timeout" test "$rc" != 0 -a "$rc" != 124
  it_check "e. $1 exits within 5 s (${dt} s)" le "$dt" 5
  it_check "e. $1 names the running one (pid $dpid)" grep -q "pid $dpid\b" <<<"$out"
}
second "same NIC, another run directory" "$NETNS_SHUNT_IF" "$IT_TMP/run2"
ip -n "$NETNS_SHUNT" link add vC type veth peer name vD
ip netns exec "$NETNS_SHUNT" sysctl -qw net.ipv6.conf.vC.disable_ipv6=1 net.ipv6.conf.vD.disable_ipv6=1
ip -n "$NETNS_SHUNT" link set vC up
ip -n "$NETNS_SHUNT" link set vD up
second "another NIC (vC), the same run directory" vC "$SHUNT_RUNDIR"
st=$(stat_now)
it_check "e. the first shuntd still answers (daemon.pid $(val daemon.pid "$st"))" test "$(val daemon.pid "$st")" = "$dpid"
it_check "e. its control socket is still there" test -S "$SHUNT_RUNDIR/shuntd.sock"
it_check "e. and it still serves: shunt run -- curl http://$kip/" \
  "${shunt_run[@]}" curl -sS -o /dev/null --fail --max-time 10 "http://$kip/"
((it_failures == 0)) || show_logs
