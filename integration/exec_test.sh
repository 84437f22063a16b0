#!/usr/bin/env bash
# shellcheck disable=SC2154  # it_failures, ip, kip, in_kernel, shunt_run: from lib.sh
# Shunted sockets across execve, with real programs (docs/architecture.md, "exec").
#
#   integration/exec_test.sh BUILD_DIR
#
# Asserts:
# - a connected socket made by bash (/dev/tcp) under shunt stays usable in programs
#   bash runs: cat, forked and exec'd, writes an HTTP request to it and another cat
#   reads the 1 MiB answer from a kernel-side nginx, byte for byte (sha256); the
#   same with bash exec'ing cat itself (no fork). stdio does not go through
#   libshunt.so (bash's own printf would reach the placeholder), so cat does the I/O.
# - a close-on-exec shunted socket is closed by the exec, another one is carried.
# - nginx's binary upgrade under load: USR2 (the old master forks and execs a new
#   nginx, which takes the listening socket over through NGINX=fd), WINCH and QUIT
#   to the old master, while wrk runs (one request a connection: the old workers'
#   graceful exit closes idle keep-alive connections, which a keep-alive client
#   sees as read errors on the kernel too): no socket error, no non-2xx answer, and
#   the new master's worker serves afterwards.
set -uo pipefail
# shellcheck source=integration/lib.sh
source "$(dirname "$0")/lib.sh"

it_setup "${1:-}"
net=${SHUNT_TEST_NET:-53}
name=shunt-it-exec-$$
site=$IT_TMP/site    # nginx under shunt
ksite=$IT_TMP/ksite  # nginx on the kernel host: the peer of the bash client
export SHUNT_RUNDIR=$IT_TMP/run

stop_all() {
  nginx_stop "$site"
  nginx_stop "$ksite"
  it_stop_shuntd
  netns_down "$name"
}
show_logs() { it_show_logs 40 "$site/error.log" "$ksite/error.log"; }
it_cleanup_hooks+=(stop_all)

command -v nginx curl wrk sha256sum >/dev/null || { it_fail "nginx, curl, wrk, sha256sum needed (scripts/install-deps.sh)"; exit 1; }
it_need "$IT_SHUNT" "$IT_SHUNTD" "$IT_PRELOAD"
it_netns_up "$name" "$net" || exit 1

nginx_site "$ksite" "$kip" 8000
head -c $((1024 * 1024)) /dev/urandom >"$ksite/www/1m.bin"
chmod 644 "$ksite/www/1m.bin"
"${in_kernel[@]}" nginx -p "$ksite" -c "$ksite/nginx.conf" -e "$ksite/error.log" &
it_nginx_up "http://$kip:8000/" "$NETNS_KERNEL" $! "kernel-side nginx"
want=$(sha256sum <"$ksite/www/1m.bin" | cut -d' ' -f1)

# ---- a connected socket across fork + exec, and across exec alone ----
request="printf 'GET /1m.bin HTTP/1.0\r\n\r\n' | cat >&3"
for how in "cat <&3" "exec cat <&3"; do
  got=$(timeout 60 "${shunt_run[@]}" bash -c "exec 3<>/dev/tcp/$kip/8000 && $request && $how" \
    2>"$IT_TMP/bash.err" | sed '1,/^\r$/d' | sha256sum | cut -d' ' -f1)
  it_check "bash /dev/tcp + '$how': 1 MiB through the exec'd cat, sha256 matches" test "$got" = "$want"
  grep -q . "$IT_TMP/bash.err" && cat "$IT_TMP/bash.err" >&2
done

# ---- close-on-exec: that socket ends with the exec, the other one is carried ----
# perl marks its sockets close-on-exec ($^F); one of the two is cleared. While the
# exec'd sleep runs, shuntd holds exactly one slot (the carried socket's); the
# other was closed by the exec, as the kernel closes a close-on-exec socket.
if command -v perl >/dev/null; then
  timeout 30 "${shunt_run[@]}" perl -e '
    use IO::Socket::INET; use Fcntl;
    my @s = map { IO::Socket::INET->new(PeerAddr => $ARGV[0], PeerPort => 8000) or die "connect: $!" } 1..2;
    fcntl($s[0], F_SETFD, 0) or die "fcntl: $!";
    exec "/bin/sleep", "4";' "$kip" 2>"$IT_TMP/perl.err" &
  perl_pid=$!
  slots=
  for ((i = 0; i < 30; i++)); do  # until the exec'd sleep runs
    [[ $(cat "/proc/$perl_pid/comm" 2>/dev/null) == sleep ]] && break
    [[ -n $(pgrep -P "$perl_pid" -x sleep) ]] && break
    sleep 0.1
  done
  sleep 0.5
  slots=$(counter daemon.slots "$(stat_flat)")
  it_check "during the exec'd program: shuntd holds 1 slot (the carried socket), not 2 ($slots)" test "$slots" = 1
  wait "$perl_pid"
  rc=$?
  it_check "perl + exec'd sleep exit 0 (rc $rc: $(tr '\n' ' ' <"$IT_TMP/perl.err"))" test "$rc" = 0
  slots=$(counter daemon.slots "$(stat_flat)")
  it_check "after it exits: no slot left ($slots)" test "$slots" = 0
fi

# ---- nginx binary upgrade under load ----
nginx_site "$site" "$ip" 80
head -c 1024 /dev/urandom >"$site/www/1k.bin"
chmod 644 "$site/www/1k.bin"
# As nginx runs in production: started by its absolute path (the new binary is
# argv[0]) and as a daemon (a master whose parent still runs ignores USR2).
sed -i 's/^daemon off;/daemon on;/' "$site/nginx.conf"
timeout 30 "${shunt_run[@]}" "$(command -v nginx)" -p "$site" -c "$site/nginx.conf" -e "$site/error.log"
it_check "nginx daemonised (pid file $(cat "$site/nginx.pid" 2>/dev/null))" test -s "$site/nginx.pid"
old_master=$(cat "$site/nginx.pid" 2>/dev/null)
it_nginx_up "http://$ip/" "$NETNS_KERNEL" "$old_master"

# upgrade_under_load: one USR2, WINCH, QUIT cycle of the master in nginx.pid while
# wrk runs; sets old_master, new_master, wrk_out, wrk_rc and wrk_secs (uptime_s).
upgrade_under_load() {
  local t0 i
  old_master=$(cat "$site/nginx.pid" 2>/dev/null)
  t0=$(uptime_s)
  "${in_kernel[@]}" timeout 60 wrk -t1 -c8 -d8s --timeout 5s -H "Connection: close" "http://$ip/1k.bin" >"$IT_TMP/wrk.out" 2>&1 &
  local wrk_pid=$!
  sleep 2
  kill -USR2 "$old_master"
  new_master=
  for ((i = 0; i < 100; i++)); do
    if [[ -s $site/nginx.pid.oldbin && -s $site/nginx.pid ]]; then
      new_master=$(<"$site/nginx.pid")
      [[ $new_master != "$old_master" ]] && pgrep -P "$new_master" >/dev/null && break
    fi
    new_master=
    sleep 0.1
  done
  sleep 1
  kill -WINCH "$old_master"  # the old workers finish their requests and go
  sleep 1
  kill -QUIT "$old_master"
  wait "$wrk_pid"
  wrk_rc=$?
  wrk_secs=$(uptime_since "$t0")
  wrk_out=$(<"$IT_TMP/wrk.out")
  for ((i = 0; i < 50; i++)); do kill -0 "$old_master" 2>/dev/null || break; sleep 0.1; done
}
upgrade_under_load
# A step of the wall clock during the run (seen on CI's virtual machines) makes
# wrk count the requests in flight as timeouts; the cycle is run again then.
if wrk_clock_stepped "$wrk_out" "$wrk_secs"; then
  echo "$wrk_out"
  it_log "the wall clock stepped during wrk's run (wrk: $(grep -o 'in [0-9.]*[a-z]*' <<<"$wrk_out"), ${wrk_secs} s by /proc/uptime): once more"
  upgrade_under_load
fi
echo "$wrk_out"
it_check "USR2: a new master ($new_master) with a worker ran next to the old one ($old_master)" test -n "$new_master"
if wrk_clock_stepped "$wrk_out" "$wrk_secs"; then
  it_fail "the wall clock stepped during both of wrk's runs: its timeouts cannot be judged"
fi
it_check_wrk "$wrk_out" "$wrk_rc" 100
it_check "the old master is gone" bash -c "! kill -0 $old_master 2>/dev/null"
got=$("${in_kernel[@]}" curl -sS --fail --max-time 10 "http://$ip/1k.bin" | sha256sum | cut -d' ' -f1)
it_check "the new nginx serves 1k.bin (sha256)" test "$got" = "$(sha256sum <"$site/www/1k.bin" | cut -d' ' -f1)"
if [[ -n $new_master ]]; then
  it_check "the new master's worker runs under libshunt.so" \
    grep -q libshunt.so "/proc/$(pgrep -P "$new_master" | head -n1)/maps"
fi
grep -E "emerg|alert|crit" "$site/error.log" >&2 && it_fail "nginx logged errors (above)"

((it_failures == 0)) || show_logs
