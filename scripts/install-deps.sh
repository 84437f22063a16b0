#!/usr/bin/env bash
# Installs what shunt needs to build, test and demo on Debian 12. Idempotent: when
# everything is there it only asks dpkg and returns.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libdpdk-dev libnuma-dev            # libdpdk-dev pulls libxdp-dev and libbpf-dev (net_af_xdp)
  libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-14-dev           # libFuzzer targets (scripts/fuzz.sh)
  iproute2 ethtool nftables tcpdump  # namespaces, veth offloads, loss, captures
  nginx curl wrk socat               # integration tests and the demo
  memcached libmemcached-tools       # memcached, memcslap, memcaslap, memccapable (integration, bench)
  redis-server redis-tools           # redis-server, redis-benchmark, redis-cli (integration)
  sockperf iperf3 python3-matplotlib # bench/run.sh: latency, bulk, the report's plots
  tshark python3                     # reading shunt capture files; telemetry client
  python3-scapy                      # integration.attack: crafted packets
  procps coreutils util-linux        # ps, timeout, sha256sum, flock
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [[ $status == installed ]] || missing+=("$p")
done

if ((${#missing[@]})); then
  if ((EUID != 0)); then
    echo "install-deps: missing packages: ${missing[*]}; run this script as root" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}"
fi

# DPDK's pkg-config file must give flags that link (its private requirements include
# libxdp and libbpf, which libdpdk-dev depends on).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf '#include <rte_eal.h>\nint main(int c, char **v) { return rte_eal_init(c, v) < 0; }\n' >"$tmp/t.c"
# shellcheck disable=SC2046  # pkg-config output is a word list
if ! cc "$tmp/t.c" -o "$tmp/t" $(pkg-config --cflags --libs libdpdk) 2>"$tmp/err"; then
  echo "install-deps: a program using libdpdk does not link:" >&2
  cat "$tmp/err" >&2
  exit 1
fi
