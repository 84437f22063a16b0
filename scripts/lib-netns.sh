# shellcheck shell=bash
# Two network namespaces joined by a veth pair: the reference "dedicated NIC" for
# shunt on a machine without a spare one (README, Quick start).
#
#   source scripts/lib-netns.sh
#   netns_up NAME [NET]     # NET: third octet of 198.18.NET.0/24, default 7
#   ...
#   netns_down NAME
#
# netns_up creates namespace NAME-s (the shunt side) holding veth end vA with no kernel
# address, and namespace NAME-k (the kernel host) holding vB = 198.18.NET.2/24. Names
# are per namespace, so parallel users only need distinct NAMEs (and NETs, for clarity).
# It sets, for the caller:
#   NETNS_SHUNT NETNS_KERNEL     namespace names
#   NETNS_SHUNT_IF NETNS_KERNEL_IF
#   NETNS_SHUNT_IP               198.18.NET.1 (give it to shunt: --ip $NETNS_SHUNT_IP/24)
#   NETNS_KERNEL_IP              198.18.NET.2
#   NETNS_PREFIX                 24

netns_up() {
  local name=${1:?netns_up NAME [NET]} net=${2:-7}
  if ! [[ $net =~ ^[0-9]+$ ]] || ((net > 255)); then
    echo "netns_up: NET '$net' must be 0..255 (198.18.NET.0/24)" >&2
    return 1
  fi
  NETNS_SHUNT=$name-s
  NETNS_KERNEL=$name-k
  NETNS_SHUNT_IF=vA
  NETNS_KERNEL_IF=vB
  NETNS_SHUNT_IP=198.18.$net.1
  NETNS_KERNEL_IP=198.18.$net.2
  NETNS_PREFIX=24
  netns_down "$name"
  ip netns add "$NETNS_SHUNT"
  ip netns add "$NETNS_KERNEL"
  ip link add "$NETNS_SHUNT_IF" netns "$NETNS_SHUNT" type veth \
    peer name "$NETNS_KERNEL_IF" netns "$NETNS_KERNEL"
  # IPv6 off on both ends: no router solicitations or DAD frames for shunt to drop.
  ip netns exec "$NETNS_SHUNT" sysctl -qw "net.ipv6.conf.$NETNS_SHUNT_IF.disable_ipv6=1"
  ip netns exec "$NETNS_KERNEL" sysctl -qw "net.ipv6.conf.$NETNS_KERNEL_IF.disable_ipv6=1"
  ip -n "$NETNS_SHUNT" link set lo up
  ip -n "$NETNS_SHUNT" link set "$NETNS_SHUNT_IF" up   # no address: shunt owns it
  ip -n "$NETNS_KERNEL" link set lo up
  ip -n "$NETNS_KERNEL" link set "$NETNS_KERNEL_IF" up
  ip -n "$NETNS_KERNEL" addr add "$NETNS_KERNEL_IP/$NETNS_PREFIX" dev "$NETNS_KERNEL_IF"
  # Else frames from the kernel host reach DPDK with unfinished TCP checksums.
  ip netns exec "$NETNS_KERNEL" ethtool -K "$NETNS_KERNEL_IF" tx off tso off gso off >/dev/null
}

# Gives the shunt side a kernel address too: for baselines with the kernel stack only.
netns_kernel_baseline() {
  ip -n "$NETNS_SHUNT" addr add "$NETNS_SHUNT_IP/$NETNS_PREFIX" dev "$NETNS_SHUNT_IF"
}

# netns_wait_tcp NS IP PORT [SECONDS]: until something accepts on IP:PORT from
# namespace NS (default 15 s); non-zero when nothing did.
netns_wait_tcp() {
  local ns=$1 ip=$2 port=$3 secs=${4:-15} i
  for ((i = 0; i < secs * 5; i++)); do
    timeout 1 ip netns exec "$ns" bash -c "exec 3<>/dev/tcp/$ip/$port" 2>/dev/null && return 0
    sleep 0.2
  done
  return 1
}

# wait_listen IP PORT SECONDS LIST_CMD...: until LIST_CMD, a list of TCP listeners as
# ss prints it (ip netns exec NS ss -tln; shunt ss -tl for sockets under shunt),
# shows one on IP:PORT; non-zero after SECONDS. Unlike netns_wait_tcp it does not
# connect: some servers (iperf3) take any connection for a client and close and
# reopen their listener after it, refusing whoever comes in between.
wait_listen() {
  local ip=$1 port=$2 secs=$3 i
  shift 3
  for ((i = 0; i < secs * 5; i++)); do
    timeout 5 "$@" 2>/dev/null | grep -qF " $ip:$port " && return 0
    sleep 0.2
  done
  return 1
}

# Kills what still runs in the namespaces (TERM, then KILL after up to 5 s), then
# deletes them; the veth pair goes with them. Safe to call when they do not exist.
netns_down() {
  local name=${1:?netns_down NAME} ns pids i
  for ns in "$name-s" "$name-k"; do
    [[ -e /run/netns/$ns ]] || continue
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    if [[ -n $pids ]]; then
      # shellcheck disable=SC2086  # a list of pids
      kill -TERM $pids 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do
        [[ -z $(ip netns pids "$ns" 2>/dev/null) ]] && break
        sleep 0.1
      done
      pids=$(ip netns pids "$ns" 2>/dev/null || true)
      if [[ -n $pids ]]; then
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
      fi
    fi
    ip netns del "$ns" 2>/dev/null || true
  done
}
