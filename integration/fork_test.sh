#!/usr/bin/env bash
# shellcheck disable=SC2154  # it_failures, ip, kip, in_kernel, shunt_run: from lib.sh
# A connection served by a fork child after its parent let it go, with real
# programs (docs/architecture.md, "Applications and sockets").
#
#   integration/fork_test.sh BUILD_DIR
#
# Asserts:
# - socat TCP-LISTEN,fork under shunt (the classic forking server: accept, fork,
#   the parent closes its copy and accepts again) echoes 1 MiB on each of three
#   connections from kernel-side socat clients, byte for byte (sha256): through a
#   64 KiB pipe, the child cannot take it all before its parent closed the socket.
# - a shell that opens /dev/tcp and exits at once, leaving a background subshell
#   with the socket: the subshell (and the cat it runs) fetch 1 MiB from a kernel
#   nginx through the exited shell's rings, byte for byte.
set -uo pipefail
# shellcheck source=integration/lib.sh
source "$(dirname "$0")/lib.sh"

it_setup "${1:-}"
net=${SHUNT_TEST_NET:-54}
name=shunt-it-fork-$$
ksite=$IT_TMP/ksite
export SHUNT_RUNDIR=$IT_TMP/run
server_pid=

stop_all() {
  if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null; fi
  nginx_stop "$ksite"
  it_stop_shuntd
  netns_down "$name"
}
show_logs() { it_show_logs 30 "$IT_TMP/socat.log" "$ksite/error.log"; }
it_cleanup_hooks+=(stop_all)

command -v socat nginx sha256sum >/dev/null || { it_fail "socat, nginx, sha256sum needed (scripts/install-deps.sh)"; exit 1; }
it_need "$IT_SHUNT" "$IT_SHUNTD" "$IT_PRELOAD"
it_netns_up "$name" "$net" || exit 1

head -c $((1024 * 1024)) /dev/urandom >"$IT_TMP/1m.bin"
want=$(sha256sum <"$IT_TMP/1m.bin" | cut -d' ' -f1)

# ---- a forking server whose parent closes each accepted connection ----
"${shunt_run[@]}" socat -d -d TCP4-LISTEN:9000,bind="$ip",fork,reuseaddr PIPE 2>"$IT_TMP/socat.log" &
server_pid=$!
for ((i = 0; i < 100; i++)); do
  grep -q "listening on" "$IT_TMP/socat.log" 2>/dev/null && break
  sleep 0.1
done
it_check "socat listens under shunt" grep -q "listening on" "$IT_TMP/socat.log"
for n in 1 2 3; do
  # -t: after sending it all, wait up to 10 s for the rest of the echo.
  got=$("${in_kernel[@]}" timeout 60 socat -t 10 -b 65536 - "TCP4:$ip:9000" <"$IT_TMP/1m.bin" | sha256sum | cut -d' ' -f1)
  it_check "connection $n: 1 MiB echoed by the fork child, sha256 matches" test "$got" = "$want"
done
kill "$server_pid" 2>/dev/null
wait "$server_pid" 2>/dev/null
server_pid=
it_check "socat forked a child per connection (3)" \
  test "$(grep -c "forked off child process" "$IT_TMP/socat.log")" = 3

# ---- the socket's first holder exits, a background subshell goes on with it ----
nginx_site "$ksite" "$kip" 8000
cp "$IT_TMP/1m.bin" "$ksite/www/1m.bin"
chmod 644 "$ksite/www/1m.bin"
"${in_kernel[@]}" nginx -p "$ksite" -c "$ksite/nginx.conf" -e "$ksite/error.log" &
it_nginx_up "http://$kip:8000/" "$NETNS_KERNEL" $! "kernel-side nginx"
request="printf 'GET /1m.bin HTTP/1.0\r\n\r\n' | cat >&3"
# The subshell waits until the shell ($$ in it) is gone before it sends the request.
got=$(timeout 60 "${shunt_run[@]}" bash -c "exec 3<>/dev/tcp/$kip/8000 || exit 1; (while kill -0 \$\$ 2>/dev/null; do sleep 0.05; done; $request && timeout 30 cat <&3) & exit 0" \
  2>"$IT_TMP/bash.err" | sed '1,/^\r$/d' | sha256sum | cut -d' ' -f1)
it_check "after the shell that opened it exited: 1 MiB through its subshell, sha256 matches" test "$got" = "$want"
grep -q . "$IT_TMP/bash.err" && cat "$IT_TMP/bash.err" >&2

((it_failures == 0)) || show_logs
