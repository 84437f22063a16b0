#!/usr/bin/env bash
# shellcheck disable=SC2154,SC2086  # ip, kip, shunt_run, it_failures, COUNTER_NOW: from lib.sh; DIFFER_SEQUENCES splits
# The differential suite: integration/differ.cc's socket call sequences (error
# paths, readiness after every settled step, options, epoll, UDP, dup), once on
# the kernel and once under shunt, each against a kernel peer over a veth of its
# own (198.18.246.0/24 kernel to kernel, 198.18.247.0/24 shunt to kernel).
#
#   integration/differ_test.sh BUILD_DIR
#   DIFFER_SEQUENCES="echo udp" ...   only those sequences (while debugging one)
#
# Asserts: both traces run to their end; every line where they differ is named in
# integration/differ_allow.txt with its reason, and every line named there still
# differs (a stale entry hides nothing); shuntd holds no slot afterwards.
set -uo pipefail
# shellcheck source=integration/lib.sh
source "$(dirname "$0")/lib.sh"

it_setup "${1:-}"
export SHUNT_RUNDIR=$IT_TMP/run
differ=$IT_BUILD/bin/shunt_differ
allow=$(dirname "$0")/differ_allow.txt
name=shunt-it-diff-$$
linux_name=shunt-it-difk-$$
peers=()

stop_all() {
  local p
  for p in "${peers[@]}"; do kill "$p" 2>/dev/null; done
  it_stop_shuntd
  netns_down "$name"
  netns_down "$linux_name"
}
it_cleanup_hooks+=(stop_all)
it_need "$IT_SHUNT" "$IT_SHUNTD" "$IT_PRELOAD" "$differ" "$allow"

# The kernel's pair first: it_netns_up below leaves ip/kip/shunt_run for shunt's.
netns_up "$linux_name" 246 || exit 1
netns_kernel_baseline
linux_client=$NETNS_SHUNT linux_peer_ns=$NETNS_KERNEL
linux_ip=$NETNS_SHUNT_IP linux_kip=$NETNS_KERNEL_IP
it_netns_up "$name" 247 || exit 1

for ns in "$linux_peer_ns" "$NETNS_KERNEL"; do
  ip netns exec "$ns" "$differ" peer >/dev/null 2>"$IT_TMP/peer-$ns.err" &
  peers+=($!)
done
netns_wait_tcp "$linux_client" "$linux_kip" 7203 || it_fail "the kernel's peer did not start"
netns_wait_tcp "$linux_client" "$linux_kip" 7204 || it_fail "the kernel's peer did not start"

ip netns exec "$linux_client" timeout 120 "$differ" run "$linux_ip" "$linux_kip" \
  ${DIFFER_SEQUENCES:-} >"$IT_TMP/kernel.txt" 2>"$IT_TMP/kernel.err"
it_check "the kernel's trace ran to its end" test "$(tail -n 1 "$IT_TMP/kernel.txt")" = end
timeout 120 "${shunt_run[@]}" env SHUNT_LOG=warn "$differ" run "$ip" "$kip" \
  ${DIFFER_SEQUENCES:-} >"$IT_TMP/shunt.txt" 2>"$IT_TMP/shunt.err"
it_check "shunt's trace ran to its end" test "$(tail -n 1 "$IT_TMP/shunt.txt")" = end

# Line by line: both run the same program, so step N is the same call in both.
# An allow-list line is "SEQ: STEP -- reason" (blank lines and # comments skipped).
report=$(awk -v allow="$allow" -v subset="${DIFFER_SEQUENCES:-}" '
  BEGIN {
    while ((getline l < allow) > 0) {
      if (l ~ /^[ \t]*(#|$)/) continue
      i = index(l, " -- ")
      if (i == 0) { print "BAD allow-list line (no \" -- reason\"): " l; bad = 1; continue }
      allowed[substr(l, 1, i - 1)] = 1
    }
  }
  FNR == NR { k[FNR] = $0; nk = FNR; next }
  { s[FNR] = $0; ns = FNR }
  END {
    n = nk > ns ? nk : ns
    for (i = 1; i <= n; i++) {
      kl = k[i]; sl = s[i]
      kkey = kl; sub(/ -> .*/, "", kkey)
      skey = sl; sub(/ -> .*/, "", skey)
      if (kkey != skey) { print "STEPS DIVERGE at line " i ": kernel \"" kl "\", shunt \"" sl "\""; bad = 1; break }
      if (kl == sl) { same[kkey] = 1; continue }
      if (kkey in allowed) { print "allowed: " kkey ": kernel \"" substr(kl, length(kkey) + 5) "\", shunt \"" substr(sl, length(skey) + 5) "\""; differs[kkey] = 1; continue }
      print "DIFFERS: " kkey ": kernel \"" substr(kl, length(kkey) + 5) "\", shunt \"" substr(sl, length(skey) + 5) "\""
      bad = 1
    }
    for (a in allowed) if (subset == "" && !(a in differs)) { print "STALE allow-list entry (the traces agree, or it names no step): " a; bad = 1 }
    exit bad
  }' "$IT_TMP/kernel.txt" "$IT_TMP/shunt.txt")
rc=$?
[[ -n $report ]] && echo "$report"
steps=$(wc -l <"$IT_TMP/kernel.txt")
it_check "$steps steps: shunt gives the kernel's result or an allowed difference" test "$rc" = 0

counter_settles daemon.slots 0
it_check "no slot left in shuntd ($COUNTER_NOW)" test "$COUNTER_NOW" = 0

if ((it_failures > 0)); then
  for f in kernel.err shunt.err; do
    [[ -s $IT_TMP/$f ]] && { echo "---- $f" >&2; tail -n 20 "$IT_TMP/$f" >&2; }
  done
  it_show_logs 30
fi
