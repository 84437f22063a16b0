#!/usr/bin/env bash
# shellcheck disable=SC2154  # it_failures: defined in lib.sh
# Applications die, the daemon and the others carry on. nginx (master + worker),
# memcached (4 threads) and redis-server under shunt share one shuntd on a veth end;
# kernel clients in the other namespace load all three at once (wrk, memcslap,
# redis-benchmark) for about 15 s, and about 4 s in memcached is killed with SIGKILL.
#
#   integration/crash_test.sh BUILD_DIR
#
# Asserts:
#  1. an idle connection to memcached held from the kernel side ends (EOF or reset)
#     within 1 s of the kill;
#  2. within 2 s of the kill, shunt stat shows the dead process gone: apps.active and
#     apps.regions one less, and daemon.sockets / daemon.slots equal to the baseline
#     minus memcached's footprint, plus what the live applications hold right now;
#  3. a new memcached on the same port binds at once: it answers `version` within
#     2 s of its start; shunt stat then counts it (apps.active back to nginx master +
#     worker, redis and memcached);
#  4. wrk (nginx) and redis-benchmark finish without errors;
#  5. once the loads are over, daemon.sockets, daemon.slots, apps.regions and
#     apps.active are back to the baseline taken with the three servers up and idle
#     (the new memcached's footprint equal to the old one's, measured at its start);
#     nginx and redis still answer.
set -uo pipefail
# shellcheck source=integration/lib.sh
source "$(dirname "$0")/lib.sh"

it_setup "${1:-}"
net=${SHUNT_TEST_NET:-71}
name=shunt-it-crash-$$
site=$IT_TMP/site
export SHUNT_RUNDIR=$IT_TMP/run
# memcached -u nobody drops to nobody before it opens its sockets.
export SHUNT_ALLOW=user:nobody
redis_pid='' mc_pid='' mc2_pid='' probe_pid=''
load_pids=()

stop_all() {
  local p
  for p in "${load_pids[@]}" $probe_pid $mc_pid $mc2_pid $redis_pid; do
    kill -KILL "$p" 2>/dev/null
  done
  nginx_stop "$site"
  it_stop_shuntd
  netns_down "$name"
}
show_logs() {
  local f
  for f in "$IT_TMP"/*.log "$IT_TMP"/*.out "$site/error.log" "$SHUNT_RUNDIR/shuntd.log"; do
    [[ -f $f ]] || continue
    echo "---- $f" >&2
    tr '\r' '\n' <"$f" | grep -v 'rps=' | tail -n 30 >&2
  done
}
it_cleanup_hooks+=(stop_all)

for c in nginx wrk curl memcached memcslap redis-server redis-benchmark redis-cli python3; do
  command -v "$c" >/dev/null || { it_fail "$c needed (scripts/install-deps.sh)"; exit 1; }
done
it_need "$IT_SHUNT" "$IT_SHUNTD" "$IT_PRELOAD"
# The interpreter itself, not a wrapper script (pyenv shim): its start-up is in the times.
py=$(python3 -c 'import sys; print(sys.executable)')

netns_up "$name" "$net"
ip=$NETNS_SHUNT_IP
in_kernel=(ip netns exec "$NETNS_KERNEL")
shunt_run=(ip netns exec "$NETNS_SHUNT" "$IT_SHUNT" run --nic "$NETNS_SHUNT_IF" --ip "$ip/$NETNS_PREFIX" --)

now() { echo "$EPOCHREALTIME"; }
# secs_since T0 [T1]: T1 (default now) - T0, in seconds with 3 decimals.
secs_since() { awk -v a="$1" -v b="${2:-$EPOCHREALTIME}" 'BEGIN { printf "%.3f", b - a }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }
stat_now() { timeout 10 "$IT_SHUNT" stat --flat 2>&1; }
val() { awk -v k="$1" '$1 == k { print $2; found = 1; exit } END { if (!found) print "missing" }' <<<"$2"; }
# What the attached applications hold (open sockets + closing slots), from their blocks.
apps_held() { awk '$1 ~ /^app\.[0-9]+\.(sockets|closing)$/ { s += $2 } END { print s + 0 }' <<<"$1"; }
# "comm(pid):sockets+closing" for each attached application.
apps_list() {
  awk '$1 ~ /^app\.[0-9]+\.(comm|sockets|closing)$/ { split($1, f, "."); v[f[2], f[3]] = $2; if (f[3] == "comm") pids[++n] = f[2] }
    END { for (i = 1; i <= n; i++) { p = pids[i]; printf "%s%s(%s):%s+%s", sep, v[p, "comm"], p, v[p, "sockets"], v[p, "closing"]; sep = " " } }' <<<"$1"
}
alive() { [[ -e /proc/$1 ]] && [[ $(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) != Z ]]; }

# The kernel side's memcached clients. probe: connects, checks `version`, says
# "ready", then holds the connection idle and writes how and when it ended.
cat >"$IT_TMP/mc_probe.py" <<'PY'
import socket, sys, time
ip, port, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def say(line):
    with open(out, "a") as f:
        f.write(line + "\n")
s = socket.create_connection((ip, port), timeout=5)
s.sendall(b"version\r\n")
buf = b""
while not buf.endswith(b"\r\n"):
    chunk = s.recv(100)
    if not chunk:
        say("eof-before-ready"); sys.exit(1)
    buf += chunk
say("ready " + buf.decode().strip())
s.settimeout(60)
try:
    data = s.recv(100)
    t = time.time()
    say(("eof %.6f" % t) if not data else ("data %.6f %r" % (t, data)))
except socket.timeout:
    say("timeout")
except OSError as e:
    say("error %.6f %s" % (time.time(), type(e).__name__))
PY
# mc_version IP PORT T0 DEADLINE_S: retries `version` until one answers; prints the
# seconds since T0 (epoch) when it did; exit 1 at the deadline.
cat >"$IT_TMP/mc_version.py" <<'PY'
import socket, sys, time
ip, port, t0, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
while time.time() - t0 < limit:
    try:
        s = socket.create_connection((ip, port), timeout=0.5)
        s.sendall(b"version\r\n")
        buf = b""
        while not buf.endswith(b"\r\n"):
            chunk = s.recv(100)
            if not chunk:
                break
            buf += chunk
        s.close()
        if buf.startswith(b"VERSION"):
            print("%.3f %s" % (time.time() - t0, buf.decode().strip()))
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.02)
sys.exit(1)
PY

start_memcached() {  # sets the pid in $1
  "${shunt_run[@]}" memcached -u nobody -l "$ip" -p 11211 -t 4 >>"$IT_TMP/memcached.log" 2>&1 &
  printf -v "$1" %s $!
}

# ---- the three servers on one daemon
nginx_site "$site" "$ip" 80
head -c 1024 /dev/urandom >"$site/www/1k.bin"
chmod 644 "$site/www/1k.bin"
it_log "shunt run -- nginx (starts the daemon)"
"${shunt_run[@]}" nginx -p "$site" -c "$site/nginx.conf" -e "$site/error.log" &
nginx_pid=$!
it_nginx_up "http://$ip/" "$NETNS_KERNEL" "$nginx_pid"
nginx_master=$(<"$site/nginx.pid")
nginx_worker=$(pgrep -P "$nginx_master" | head -n 1)
it_log "nginx master $nginx_master worker ${nginx_worker:-none}"

mkdir -p "$IT_TMP/redis"
"${shunt_run[@]}" redis-server --bind "$ip" --port 6379 --save '' --appendonly no \
  --protected-mode no --daemonize no --dir "$IT_TMP/redis" >"$IT_TMP/redis.log" 2>&1 &
redis_pid=$!
for ((i = 0; i < 100; i++)); do
  [[ $("${in_kernel[@]}" timeout 2 redis-cli -h "$ip" -p 6379 ping 2>/dev/null) == PONG ]] && break
  alive "$redis_pid" || break
  sleep 0.2
done
if [[ $("${in_kernel[@]}" timeout 2 redis-cli -h "$ip" -p 6379 ping 2>/dev/null) != PONG ]]; then
  it_fail "redis-server answers PING on $ip:6379"
  show_logs
  exit 1
fi
it_pass "redis-server answers PING on $ip:6379"

# The rate of redis through shunt here, so that the load lasts about 15 s.
cal=$("${in_kernel[@]}" timeout 60 redis-benchmark -h "$ip" -p 6379 -t set -c 10 -n 20000 -q 2>&1 | tr '\r' '\n')
rps=$(sed -n 's/^SET: \([0-9.]*\) requests per second.*/\1/p' <<<"$cal" | tail -n 1)
rps=${rps%.*}
[[ $rps =~ ^[0-9]+$ ]] || rps=5000
((rps > 50000)) && rps=50000   # the idle rate overstates what the shared cores give under three loads
redis_n=$((rps * 4))   # SET then GET, each about 4 s at the idle rate: ~15 s under the three loads
((redis_n < 20000)) && redis_n=20000
it_log "redis calibration: ${rps} SET/s ($(grep -v 'rps=' <<<"$cal" | grep -v '^ *$' | head -n 2 | tr '\n' ' ')); the load runs -n $redis_n per test"

sleep 0.5
pre=$(stat_now)   # nginx and redis, no memcached yet

t_mc1=$(now)
start_memcached mc_pid
if ! up=$("${in_kernel[@]}" "$py" "$IT_TMP/mc_version.py" "$ip" 11211 "$t_mc1" 20); then
  it_fail "memcached answers version on $ip:11211"
  show_logs
  exit 1
fi
it_log "memcached (pid $mc_pid) answered after ${up%% *} s: ${up#* }"

# Baseline: the three servers up and idle (the version connection gone).
base=
for ((i = 0; i < 20; i++)); do
  sleep 0.25
  s=$(stat_now)
  if [[ $(val daemon.sockets "$s") == "$(val daemon.sockets "$base")" && $(val daemon.slots "$s") == "$(val daemon.slots "$base")" ]]; then
    break
  fi
  base=$s
done
base=$s
for k in apps.active apps.regions daemon.sockets daemon.slots; do
  declare "base_${k//./_}=$(val "$k" "$base")"
  declare "fp_${k//./_}=$(($(val "$k" "$base") - $(val "$k" "$pre")))"
done
base_held=$(apps_held "$base")
mc_fp_held=$(($(val "app.$mc_pid.sockets" "$base") + $(val "app.$mc_pid.closing" "$base")))
it_log "baseline: apps.active $base_apps_active apps.regions $base_apps_regions daemon.sockets $base_daemon_sockets daemon.slots $base_daemon_slots (apps: $(apps_list "$base"))"
it_log "memcached's footprint: apps.active +$fp_apps_active apps.regions +$fp_apps_regions daemon.sockets +$fp_daemon_sockets daemon.slots +$fp_daemon_slots"
it_check "baseline counts nginx master + worker, redis, memcached (apps.active $base_apps_active)" test "$base_apps_active" = 4
it_check "memcached's footprint: one application, one region, >= 1 socket" \
  test "$fp_apps_active" = 1 -a "$fp_apps_regions" = 1 -a "$fp_daemon_sockets" -ge 1 -a "$fp_daemon_slots" = "$fp_daemon_sockets"

# ---- the loads
# (no timeout(1) around what the test kills: the kill must reach the program itself;
# the probe times itself out, and netns_down ends whatever is left)
"${in_kernel[@]}" "$py" "$IT_TMP/mc_probe.py" "$ip" 11211 "$IT_TMP/probe.out" &
probe_pid=$!
for ((i = 0; i < 50; i++)); do
  grep -q '^ready' "$IT_TMP/probe.out" 2>/dev/null && break
  sleep 0.1
done
it_check "idle memcached client connected ($(head -n 1 "$IT_TMP/probe.out" 2>/dev/null))" grep -q '^ready VERSION' "$IT_TMP/probe.out"

t_load=$(now)
"${in_kernel[@]}" timeout 60 wrk -t1 -c8 -d15s --timeout 5s "http://$ip/1k.bin" >"$IT_TMP/wrk.out" 2>&1 &
wrk_pid=$!
"${in_kernel[@]}" memcslap --servers="$ip:11211" --concurrency=4 --execute-number=150000 >"$IT_TMP/memcslap.out" 2>&1 &
slap_pid=$!
"${in_kernel[@]}" timeout 90 redis-benchmark -h "$ip" -p 6379 -t set,get -c 10 -n "$redis_n" -q >"$IT_TMP/redis-bench.out" 2>&1 &
bench_pid=$!
load_pids=("$wrk_pid" "$slap_pid" "$bench_pid")

# About 4 s in; up to 2 s more until memcslap's 4 connections are there.
sleep 4
for ((i = 0; i < 10; i++)); do
  loaded=$(stat_now)
  mc_loaded=$(val "app.$mc_pid.sockets" "$loaded")
  ((mc_loaded >= fp_daemon_sockets + 4)) && break
  sleep 0.2
done
it_log "4 s into the loads: memcached holds $mc_loaded sockets; apps: $(apps_list "$loaded")"
it_check "memcslap is connected when memcached dies (memcached holds $mc_loaded > $fp_daemon_sockets sockets)" \
  test "$mc_loaded" -gt "$fp_daemon_sockets"
it_check "memcslap still runs when memcached dies" alive "$slap_pid"

# ---- kill -9 memcached
t_kill=$(now)
kill -KILL "$mc_pid"
wait "$mc_pid" 2>/dev/null
old_mc=$mc_pid
mc_pid=
it_log "memcached (pid $old_mc) killed $(secs_since "$t_load" "$t_kill") s into the loads"

end_line=
for ((i = 0; i < 300; i++)); do
  end_line=$(sed -n '2p' "$IT_TMP/probe.out" 2>/dev/null)
  [[ -n $end_line ]] && break
  le "$(secs_since "$t_kill")" 3 || break
  sleep 0.01
done
case $end_line in
  eof* | error*)
    t_end=$(awk '{ print $2 }' <<<"$end_line")
    dt=$(secs_since "$t_kill" "$t_end")
    it_log "idle memcached client: '$end_line', ${dt} s after the kill"
    it_check "idle memcached client's connection ends within 1 s of the kill (${dt} s)" le "$dt" 1
    ;;
  *) it_fail "idle memcached client's connection ends within 1 s of the kill (got '${end_line:-nothing}' within 3 s)" ;;
esac

# memcslap's connections too: none still established on the kernel side.
for ((i = 0; i < 100; i++)); do
  mc_est=$("${in_kernel[@]}" ss -Htn state established "( dport = :11211 )" | wc -l)
  ((mc_est == 0)) && break
  le "$(secs_since "$t_kill")" 1 || break
  sleep 0.01
done
dt=$(secs_since "$t_kill")
it_log "kernel side: $mc_est connections to memcached still established ${dt} s after the kill"
it_check "memcslap's connections end within 1 s of the kill ($mc_est left after ${dt} s)" test "$mc_est" = 0

# Within 2 s of the kill: memcached's region, slots and sockets are gone. Polled
# (a connection with unsent bytes may keep its slot a moment), each check on the
# last reading.
live_pids() {
  local p
  for p in "$@"; do alive "$p" && echo "$p"; done
}
# counts STAT SOCKETS0 SLOTS0 HELD0 REGIONS [check] PIDS...: the attached applications are
# exactly PIDS, apps.active their number, apps.regions REGIONS, and daemon.sockets /
# daemon.slots SOCKETS0 / SLOTS0 plus what the applications hold above HELD0 (their
# loads' connections). With "check", records each as a check; else only the status.
counts() {
  local s=$1 sockets0=$2 slots0=$3 held0=$4 regions=$5 mode=quiet want_pids got_pids extra fails=0
  shift 5
  [[ ${1:-} == check ]] && { mode=check; shift; }
  want_pids=$(printf '%s\n' "$@" | sort -n | tr '\n' ' ')
  got_pids=$(awk '$1 ~ /^app\.[0-9]+\.comm$/ { split($1, f, "."); print f[2] }' <<<"$s" | sort -n | tr '\n' ' ')
  extra=$(($(apps_held "$s") - held0))
  one() {
    local what=$1
    shift
    if "$@"; then [[ $mode == check ]] && it_pass "$what"; else
      fails=$((fails + 1))
      [[ $mode == check ]] && it_fail "$what"
    fi
    return 0
  }
  one "attached applications are the live processes: ${got_pids% } = ${want_pids% }" test "$got_pids" = "$want_pids"
  one "apps.active $(val apps.active "$s") = $#" test "$(val apps.active "$s")" = $#
  one "apps.regions $(val apps.regions "$s") = $regions" test "$(val apps.regions "$s")" = "$regions"
  one "daemon.sockets $(val daemon.sockets "$s") = $sockets0 + live load $extra" test "$(val daemon.sockets "$s")" = $((sockets0 + extra))
  one "daemon.slots $(val daemon.slots "$s") = $slots0 + live load $extra" test "$(val daemon.slots "$s")" = $((slots0 + extra))
  ((fails == 0))
}
# What nginx and redis hold above their idle share is their loads' connections.
for (( ; ; )); do
  mapfile -t live < <(live_pids "$nginx_master" "$nginx_worker" "$redis_pid")
  s1=$(stat_now)
  dt_s1=$(secs_since "$t_kill")
  counts "$s1" $((base_daemon_sockets - fp_daemon_sockets)) $((base_daemon_slots - fp_daemon_slots)) \
    $((base_held - mc_fp_held)) $((base_apps_regions - fp_apps_regions)) "${live[@]}" && break
  le "$dt_s1" 2 || break
  sleep 0.05
done
it_log "after the kill (${dt_s1} s): apps.active $(val apps.active "$s1") apps.regions $(val apps.regions "$s1") daemon.sockets $(val daemon.sockets "$s1") daemon.slots $(val daemon.slots "$s1") (apps: $(apps_list "$s1"))"
it_check "shunt stat within 2 s of the kill shows memcached gone (${dt_s1} s)" le "$dt_s1" 2
it_check "killed memcached no longer attached" test "$(val "app.$old_mc.comm" "$s1")" = missing
counts "$s1" $((base_daemon_sockets - fp_daemon_sockets)) $((base_daemon_slots - fp_daemon_slots)) \
  $((base_held - mc_fp_held)) $((base_apps_regions - fp_apps_regions)) check "${live[@]}"

# memcslap has lost its server; it must not reconnect to the new one.
kill -KILL "$slap_pid" 2>/dev/null
wait "$slap_pid" 2>/dev/null

# ---- a new memcached on the same port
t_mc2=$(now)
start_memcached mc2_pid
if up=$("${in_kernel[@]}" "$py" "$IT_TMP/mc_version.py" "$ip" 11211 "$t_mc2" 5); then
  it_log "new memcached (pid $mc2_pid) answered version ${up%% *} s after its start, $(secs_since "$t_kill") s after the kill"
  it_check "new memcached answers version within 2 s of its start (${up%% *} s)" le "${up%% *}" 2
else
  it_fail "new memcached answers version within 2 s of its start (nothing in 5 s)"
fi
it_check "new memcached still runs (bound its port)" alive "$mc2_pid"
if ! alive "$mc2_pid"; then
  echo "---- memcached.log" >&2
  cat "$IT_TMP/memcached.log" >&2
  tail -n 20 "$SHUNT_RUNDIR/shuntd.log" >&2
fi
for (( ; ; )); do
  mapfile -t live < <(live_pids "$nginx_master" "$nginx_worker" "$redis_pid" "$mc2_pid")
  s2=$(stat_now)
  dt_s2=$(secs_since "$t_mc2")
  counts "$s2" "$base_daemon_sockets" "$base_daemon_slots" "$base_held" "$base_apps_regions" \
    "${live[@]}" && break
  le "$dt_s2" 2 || break
  sleep 0.05
done
it_log "after the restart ($(secs_since "$t_kill") s after the kill, ${dt_s2} s after the start): apps.active $(val apps.active "$s2") apps.regions $(val apps.regions "$s2") daemon.sockets $(val daemon.sockets "$s2") daemon.slots $(val daemon.slots "$s2") (apps: $(apps_list "$s2"))"
mc2_held=$(($(val "app.$mc2_pid.sockets" "$s2") + $(val "app.$mc2_pid.closing" "$s2")))
it_check "new memcached's footprint $mc2_held = the old one's $mc_fp_held" test "$mc2_held" = "$mc_fp_held"
counts "$s2" "$base_daemon_sockets" "$base_daemon_slots" "$base_held" "$base_apps_regions" check "${live[@]}"

# ---- the other loads finish cleanly
wait "$wrk_pid"
wrk_rc=$?
wait "$bench_pid"
bench_rc=$?
t_done=$(now)
load_pids=()
it_log "loads done $(secs_since "$t_load" "$t_done") s after they started"
echo "---- wrk"
cat "$IT_TMP/wrk.out"
out=$(<"$IT_TMP/wrk.out")
it_check_wrk "$out" "$wrk_rc" 1000
echo "---- redis-benchmark"
bench=$(tr '\r' '\n' <"$IT_TMP/redis-bench.out" | grep -v '^ *$' | grep -v 'rps=' || true)
echo "$bench"
it_check "redis-benchmark exits 0 (rc $bench_rc)" test "$bench_rc" = 0
it_check "redis-benchmark finished SET and GET" grep -q '^GET: [0-9.]* requests per second' <<<"$bench"
grep -q '^SET: [0-9.]* requests per second' <<<"$bench" || it_fail "redis-benchmark: no SET result"
if grep -qiE 'error|reset|refused|timeout' <<<"$bench"; then
  it_fail "redis-benchmark: errors: $(grep -iE 'error|reset|refused|timeout' <<<"$bench" | head -n 3)"
else
  it_pass "redis-benchmark: no errors"
fi
echo "---- memcslap (killed with its server)"
tail -n 5 "$IT_TMP/memcslap.out"

# ---- idle again: everything back to the baseline
for ((i = 0; i < 40; i++)); do
  s3=$(stat_now)
  [[ $(val daemon.sockets "$s3") == "$base_daemon_sockets" && $(val daemon.slots "$s3") == "$base_daemon_slots" &&
    $(val apps.regions "$s3") == "$base_apps_regions" ]] && break
  sleep 0.25
done
it_log "idle after the loads ($(secs_since "$t_done") s after them): apps.active $(val apps.active "$s3") apps.regions $(val apps.regions "$s3") daemon.sockets $(val daemon.sockets "$s3") daemon.slots $(val daemon.slots "$s3") daemon.zombie_slots $(val daemon.zombie_slots "$s3") (apps: $(apps_list "$s3"))"
for k in apps.active apps.regions daemon.sockets daemon.slots; do
  b=base_${k//./_}
  it_check "idle: $k $(val "$k" "$s3") = baseline ${!b}" test "$(val "$k" "$s3")" = "${!b}"
done
it_check "idle: daemon.zombie_slots 0" test "$(val daemon.zombie_slots "$s3")" = 0
if [[ $(val daemon.sockets "$s3") != "$base_daemon_sockets" ]]; then
  echo "---- baseline apps: $(apps_list "$base")"
  echo "---- shunt ss -a -u -t"
  timeout 10 "$IT_SHUNT" ss -a -t -u 2>&1 | head -n 40
  echo "---- kernel side: ss -tan"
  "${in_kernel[@]}" ss -tan | head -n 40
fi
it_check "nginx still answers" "${in_kernel[@]}" curl -sS -o /dev/null --fail --max-time 5 "http://$ip/1k.bin"
it_check "redis still answers PING" test "$("${in_kernel[@]}" timeout 5 redis-cli -h "$ip" -p 6379 ping 2>&1)" = PONG
it_check "new memcached answers version" "${in_kernel[@]}" "$py" "$IT_TMP/mc_version.py" "$ip" 11211 "$(now)" 3 >/dev/null
it_check "shuntd logged memcached's end" grep -q "detached pid $old_mc (memcached" "$SHUNT_RUNDIR/shuntd.log"
((it_failures == 0)) || show_logs
