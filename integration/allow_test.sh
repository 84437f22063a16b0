#!/usr/bin/env bash
# shellcheck disable=SC2154  # it_failures: defined in lib.sh
# Who may attach to shuntd (SHUNT_ALLOW, stack/daemon/access.hh).
#
#   integration/allow_test.sh BUILD_DIR
#
# A kernel HTTP server (python3 http.server) on 198.18.NET.2 in the kernel
# namespace; curl runs as `nobody` in the shunt namespace under libshunt.so. Besides
# the veth pair shunt drives, a second pair gives the shunt namespace's kernel a
# route to 198.18.NET.2, so a fetch on the kernel stack works too; the server's log
# tells the two paths apart by the client's address (198.18.NET.1: shunted,
# 198.18.NET.101: the kernel).
# Asserts:
#  1. default SHUNT_ALLOW (empty): the control socket is 0600; nobody's curl works
#     on the kernel stack (fail-open) and says so on stderr, naming SHUNT_ALLOW;
#     tcp.active_opens does not move;
#  2. SHUNT_ALLOW=user:nobody: the socket is 0666; nobody's curl is shunted
#     (tcp.active_opens + 1, the server sees 198.18.NET.1), works, and prints no
#     SHUNT_ALLOW message; another user (uid 54321) is refused by the daemon's
#     credential check (apps.refused + 1), runs on the kernel stack and is told so;
#  3. SHUNT_ALLOW=group:nogroup: the socket is 0660 with group nogroup; nobody
#     (gid nogroup) is shunted the same way;
#  4. SHUNT_ALLOW=user:no-such-user-xyz and SHUNT_ALLOW=bogus: shuntd exits non-zero
#     at start with a message naming SHUNT_ALLOW and the value.
set -uo pipefail
# shellcheck source=integration/lib.sh
source "$(dirname "$0")/lib.sh"

it_setup "${1:-}"
net=${SHUNT_TEST_NET:-62}
name=shunt-it-allow-$$
export SHUNT_RUNDIR=$IT_TMP/run
unset SHUNT_ALLOW
server_pid=
py=/usr/bin/python3

stop_daemon() {
  it_stop_shuntd
}
stop_all() {
  if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null; fi
  stop_daemon
  netns_down "$name"
}
show_logs() {
  local f
  for f in "$IT_TMP"/*.log "$IT_TMP"/*.err "$SHUNT_RUNDIR/shuntd.log"; do
    [[ -f $f ]] || continue
    echo "---- $f" >&2
    tail -n 20 "$f" >&2
  done
}
it_cleanup_hooks+=(stop_all)

if ! command -v curl setpriv cmp >/dev/null || [[ ! -x $py ]]; then
  it_fail "curl, setpriv, cmp and $py needed"
  exit 1
fi
if ! id -u nobody >/dev/null 2>&1 || ! getent group nogroup >/dev/null; then
  it_fail "user nobody and group nogroup needed"
  exit 1
fi
it_need "$IT_SHUNT" "$IT_SHUNTD" "$IT_PRELOAD"
# nobody must be able to load the library.
if ! setpriv --reuid=nobody --regid=nogroup --clear-groups test -r "$IT_PRELOAD"; then
  it_fail "$IT_PRELOAD is not readable by nobody"
  exit 1
fi

it_netns_up "$name" "$net"
kalt=198.18.$net.101   # the shunt namespace's kernel address, on the second pair
# The kernel path: vK (shunt namespace, 198.18.NET.101) <-> vL (kernel namespace),
# host routes only, so the /24 on vA/vB stays shunt's.
ip link add vK netns "$NETNS_SHUNT" type veth peer name vL netns "$NETNS_KERNEL"
for ns in "$NETNS_SHUNT:vK" "$NETNS_KERNEL:vL"; do
  ip netns exec "${ns%%:*}" sysctl -qw "net.ipv6.conf.${ns##*:}.disable_ipv6=1"
  ip -n "${ns%%:*}" link set "${ns##*:}" up
done
ip -n "$NETNS_SHUNT" addr add "$kalt/32" dev vK
ip -n "$NETNS_SHUNT" route add "$kip/32" dev vK
ip -n "$NETNS_KERNEL" route add "$kalt/32" dev vL

www=$IT_TMP/www
mkdir -p "$www"
chmod 755 "$www"
head -c 4096 /dev/urandom >"$www/f.bin"
chmod 644 "$www/f.bin"
"${in_kernel[@]}" "$py" -m http.server --bind "$kip" --directory "$www" 8080 >"$IT_TMP/http.log" 2>&1 &
server_pid=$!
up=0
for ((i = 0; i < 50; i++)); do
  if "${in_kernel[@]}" curl -s -o /dev/null --max-time 2 "http://$kip:8080/f.bin"; then up=1; break; fi
  sleep 0.1
done
if ((!up)); then
  it_fail "the kernel HTTP server answers on $kip:8080"
  show_logs
  exit 1
fi
it_check "the shunt namespace's kernel reaches $kip:8080 over the second pair (no shunt)" \
  "${in_shunt[@]}" curl -s -o /dev/null --fail --max-time 5 "http://$kip:8080/f.bin"


# start_daemon [ALLOW]: shuntd in the shunt namespace, through shunt run.
start_daemon() {
  local -a allow=()
  [[ -n ${1:-} ]] && allow=(--allow "$1")
  if ! "${in_shunt[@]}" timeout 30 "$IT_SHUNT" run --nic "$NETNS_SHUNT_IF" --ip "$ip/$NETNS_PREFIX" \
    "${allow[@]}" -- true; then
    it_fail "shunt run starts shuntd (SHUNT_ALLOW=${1:-})"
    show_logs
    exit 1
  fi
  chmod 755 "$SHUNT_RUNDIR"
}

# fetch TAG [USER GROUP]: curl as USER (default nobody, group nogroup only) under
# libshunt.so; stderr in $IT_TMP/TAG.err, the body compared with the file. Sets
# fetch_ok, fetch_from (the client address the server logged), opens_delta,
# refused_delta (apps.refused).
fetch() {
  local tag=$1 user=${2:-nobody} group=${3:-nogroup} before after lines stat0 stat1
  stat0=$(stat_flat)
  before=$(counter tcp.active_opens "$stat0")
  lines=$(wc -l <"$IT_TMP/http.log")
  "${in_shunt[@]}" setpriv --reuid="$user" --regid="$group" --clear-groups \
    env LD_PRELOAD="$IT_PRELOAD" SHUNT_RUNDIR="$SHUNT_RUNDIR" \
    timeout 20 curl -sS --max-time 10 "http://$kip:8080/f.bin" >"$IT_TMP/$tag.body" \
    2>"$IT_TMP/$tag.err"
  local rc=$?
  fetch_ok=0
  if ((rc == 0)) && cmp -s "$IT_TMP/$tag.body" "$www/f.bin"; then fetch_ok=1; fi
  sleep 0.2
  fetch_from=$(tail -n +"$((lines + 1))" "$IT_TMP/http.log" | awk '/GET \/f.bin/ { print $1; exit }')
  stat1=$(stat_flat)
  after=$(counter tcp.active_opens "$stat1")
  opens_delta=$((${after:-0} - ${before:-0}))
  refused_delta=$(($(counter apps.refused "$stat1") - $(counter apps.refused "$stat0")))
  it_log "$tag (uid $user): curl exit $rc, body ok $fetch_ok, server saw ${fetch_from:-nothing}, tcp.active_opens +$opens_delta, apps.refused +$refused_delta"
  sed 's/^/    stderr: /' "$IT_TMP/$tag.err"
}

sock_mode() { stat -c %a "$SHUNT_RUNDIR/shuntd.sock"; }
sock_group() { stat -c %G "$SHUNT_RUNDIR/shuntd.sock"; }

# ---- 1. default: root and the daemon's user only ----
start_daemon
it_check "default SHUNT_ALLOW: control socket mode $(sock_mode) is 600" test "$(sock_mode)" = 600
fetch default
it_check "default: nobody's curl works on the kernel stack (fail-open)" test "$fetch_ok" = 1
it_check "default: the server saw the kernel address $kalt (${fetch_from:-nothing})" test "${fetch_from:-}" = "$kalt"
it_check "default: stderr names SHUNT_ALLOW" grep -q SHUNT_ALLOW "$IT_TMP/default.err"
it_check "default: stderr says the kernel stack is used" grep -q 'kernel stack' "$IT_TMP/default.err"
it_check "default: tcp.active_opens unchanged (+$opens_delta)" test "$opens_delta" = 0
stop_daemon

# ---- 2. SHUNT_ALLOW=user:nobody ----
start_daemon user:nobody
it_check "SHUNT_ALLOW=user:nobody: control socket mode $(sock_mode) is 666" test "$(sock_mode)" = 666
fetch user
it_check "user:nobody: nobody's curl works" test "$fetch_ok" = 1
it_check "user:nobody: shunted, tcp.active_opens +1 (+$opens_delta)" test "$opens_delta" = 1
it_check "user:nobody: the server saw shunt's address $ip (${fetch_from:-nothing})" test "${fetch_from:-}" = "$ip"
it_check "user:nobody: no SHUNT_ALLOW message" test -z "$(grep SHUNT_ALLOW "$IT_TMP/user.err")"
# The socket is open to all now: the daemon's credential check refuses anyone else.
fetch other 54321 54321
it_check "user:nobody: uid 54321's curl works on the kernel stack" test "$fetch_ok" = 1
it_check "user:nobody: uid 54321 not shunted (server saw ${fetch_from:-nothing}, tcp.active_opens +$opens_delta)" \
  test "${fetch_from:-}" = "$kalt" -a "$opens_delta" = 0
it_check "user:nobody: uid 54321 refused by the daemon (apps.refused +$refused_delta)" test "$refused_delta" = 1
it_check "user:nobody: uid 54321's stderr names SHUNT_ALLOW" grep -q SHUNT_ALLOW "$IT_TMP/other.err"
stop_daemon

# ---- 3. SHUNT_ALLOW=group:nogroup ----
start_daemon group:nogroup
it_check "SHUNT_ALLOW=group:nogroup: control socket mode $(sock_mode) is 660" test "$(sock_mode)" = 660
it_check "SHUNT_ALLOW=group:nogroup: control socket group $(sock_group) is nogroup" test "$(sock_group)" = nogroup
fetch group
it_check "group:nogroup: nobody's curl works" test "$fetch_ok" = 1
it_check "group:nogroup: shunted, tcp.active_opens +1 (+$opens_delta)" test "$opens_delta" = 1
it_check "group:nogroup: the server saw shunt's address $ip (${fetch_from:-nothing})" test "${fetch_from:-}" = "$ip"
it_check "group:nogroup: no SHUNT_ALLOW message" test -z "$(grep SHUNT_ALLOW "$IT_TMP/group.err")"
stop_daemon

# ---- 4. a wrong SHUNT_ALLOW stops shuntd at start ----
for bad in user:no-such-user-xyz bogus; do
  rundir=$IT_TMP/bad-$bad
  out=$("${in_shunt[@]}" env SHUNT_NIC="$NETNS_SHUNT_IF" SHUNT_IP="$ip/$NETNS_PREFIX" \
    SHUNT_RUNDIR="$rundir" SHUNT_ALLOW="$bad" timeout 20 "$IT_SHUNTD" 2>&1 </dev/null)
  rc=$?
  echo "    shuntd with SHUNT_ALLOW=$bad: exit $rc: $out"
  it_check "SHUNT_ALLOW=$bad: shuntd exits non-zero, not by timeout (exit $rc)" \
    test "$rc" -ne 0 -a "$rc" -ne 124
  it_check "SHUNT_ALLOW=$bad: the message names SHUNT_ALLOW=$bad" grep -qF "SHUNT_ALLOW=$bad" <<<"$out"
  it_check "SHUNT_ALLOW=$bad: no control socket was made" test ! -e "$rundir/shuntd.sock"
done

((it_failures == 0)) || show_logs
