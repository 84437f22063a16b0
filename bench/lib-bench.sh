# shellcheck shell=bash
# shellcheck disable=SC2034  # B_* constants are for run.sh and workloads.sh
# Helpers for bench/run.sh (docs/benchmarks.md): the layout (namespaces, veth
# pairs, pinning), the one place that starts a server under shunt or on the kernel,
# CPU and memory accounting from /proc, results as JSON lines, progress.
#
# run.sh sets before sourcing: B_BUILD (build directory), B_OUT (report
# directory), B_TMP (scratch, on tmpfs), B_SMOKE (0/1), B_TRIALS, B_SECS.

B_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib-netns.sh
source "$B_ROOT/scripts/lib-netns.sh"
# shellcheck source=scripts/lib-nginx.sh
source "$B_ROOT/scripts/lib-nginx.sh"

B_SHUNT=$B_BUILD/bin/shunt
B_SHUNTD=$B_BUILD/bin/shuntd
B_PY=/usr/bin/python3
B_REPORT=$B_ROOT/bench/report.py

# ---- Layout -----------------------------------------------------------------
# Two namespaces, two veth pairs between them (docs/benchmarks.md, Layout):
#   shunt pair   vA (server ns, no kernel address, driven by shuntd over net_af_xdp,
#                198.18.100.1) <-> vB (client ns, 198.18.100.2)
#   kernel pair  vC (server ns, kernel, 198.18.101.1) <-> vD (client ns, 198.18.101.2)
# The same server binary and configuration listens on each pair at once; only the
# stack differs. Servers (and shuntd) on B_SERVER_CPU, clients on B_CLIENT_CPU.
B_SERVER_CPU=${BENCH_SERVER_CPU:-1}
B_CLIENT_CPU=${BENCH_CLIENT_CPU:-0}
B_NAME=shunt-bench-$$
B_NS_S=$B_NAME-s
B_NS_K=$B_NAME-k
B_NS_M=$B_NAME-m        # shunt to shunt (two daemons over net_memif) and kernel loopback
B_NAME_R=$B_NAME-r      # the restart layout (netns_up: $B_NAME_R-s, $B_NAME_R-k)
B_IP_SHUNT=198.18.100.1
B_IP_KERNEL=198.18.101.1
B_IP_M1=198.18.102.1
B_IP_M2=198.18.102.2
B_NET_RESTART=103
B_RUNDIR=            # the main daemon's SHUNT_RUNDIR (set in b_layout_up)
B_SHUNTD_PID=
B_PIDS=()            # every process started here, for the cleanup
declare -gA B_SRV    # "STACK/TAG" -> pid of a server started by b_server_start

b_ip() { if [[ $1 == shunt ]]; then echo "$B_IP_SHUNT"; else echo "$B_IP_KERNEL"; fi; }

b_log() { echo "bench: $*" >&2; }

# b_rx_drops STACK: frames the server end of STACK's veth has dropped so far (shunt:
# those the AF_XDP socket had no room for; kernel: the device's rx_dropped).
b_rx_drops() {
  local n
  if [[ $1 == shunt ]]; then
    n=$(ip netns exec "$B_NS_S" ethtool -S vA 2>/dev/null | awk '/rx_queue_0_drops/ { print $2 }')
  else
    n=$(ip netns exec "$B_NS_S" cat /sys/class/net/vC/statistics/rx_dropped 2>/dev/null)
  fi
  echo "${n:-0}"
}

# b_ns_del NS: kills what runs in NS (TERM, then KILL after 5 s) and deletes it.
b_ns_del() {
  local ns=$1 pids i
  [[ -e /run/netns/$ns ]] || return 0
  pids=$(ip netns pids "$ns" 2>/dev/null)
  if [[ -n $pids ]]; then
    # shellcheck disable=SC2086  # a list of pids
    kill -TERM $pids 2>/dev/null
    for ((i = 0; i < 50; i++)); do
      [[ -z $(ip netns pids "$ns" 2>/dev/null) ]] && break
      sleep 0.1
    done
    pids=$(ip netns pids "$ns" 2>/dev/null)
    # shellcheck disable=SC2086
    [[ -n $pids ]] && kill -KILL $pids 2>/dev/null
  fi
  ip netns del "$ns" 2>/dev/null
  return 0
}

# The veth ends' offloads, as both stacks must put MTU-sized frames on the wire:
# no TSO/GSO (and no GRO, so the receiving kernel sees the frames as sent) on the
# kernel pair; the kernel host's end of the shunt pair also computes its TCP
# checksums (tx off: else frames reach DPDK with unfinished checksums), and so does
# the kernel host's end of the kernel pair, so the clients do the same work on both.
b_layout_up() {
  local ns i
  b_layout_down
  ip netns add "$B_NS_S" || return 1
  ip netns add "$B_NS_K" || return 1
  ip link add vA netns "$B_NS_S" type veth peer name vB netns "$B_NS_K" || return 1
  ip link add vC netns "$B_NS_S" type veth peer name vD netns "$B_NS_K" || return 1
  for ns in "$B_NS_S:vA" "$B_NS_S:vC" "$B_NS_K:vB" "$B_NS_K:vD"; do
    i=${ns#*:}
    ns=${ns%%:*}
    ip netns exec "$ns" sysctl -qw "net.ipv6.conf.$i.disable_ipv6=1"
    ip -n "$ns" link set "$i" up
  done
  ip -n "$B_NS_S" link set lo up
  ip -n "$B_NS_K" link set lo up
  ip -n "$B_NS_K" addr add 198.18.100.2/24 dev vB
  ip -n "$B_NS_S" addr add "$B_IP_KERNEL/24" dev vC
  ip -n "$B_NS_K" addr add 198.18.101.2/24 dev vD
  ip netns exec "$B_NS_K" ethtool -K vB tx off tso off gso off gro off >/dev/null 2>&1
  ip netns exec "$B_NS_K" ethtool -K vD tx off tso off gso off gro off >/dev/null 2>&1
  ip netns exec "$B_NS_S" ethtool -K vC tso off gso off gro off >/dev/null 2>&1
  # Each side's kernel receives on its own CPU, as two machines would (receive
  # packet steering): the client's on the client CPU, the kernel server's on the
  # server CPU. Without it a veth runs the receiver's whole receive path inside
  # the sender's transmit, on the sender's CPU (docs/benchmarks.md, "Where each
  # side's kernel work runs"). vA needs none: its frames go to AF_XDP.
  if ((B_STEER)); then
    b_rps "$B_NS_K" vB "$B_CLIENT_CPU" && b_rps "$B_NS_K" vD "$B_CLIENT_CPU" &&
      b_rps "$B_NS_S" vC "$B_SERVER_CPU" || return 1
  fi
  # Listen backlogs as large as nginx asks for (conn-scale); client ports for
  # short connections.
  ip netns exec "$B_NS_S" sysctl -qw net.core.somaxconn=4096 net.ipv4.tcp_max_syn_backlog=8192
  ip netns exec "$B_NS_K" sysctl -qw net.ipv4.ip_local_port_range="1024 65535"
  # Frames longer than the MTU as received (netdev ingress: what came off the wire,
  # GRO off) by the client ends vB (from shuntd) and vD (from the kernel server), and
  # by the kernel server's end vC (from the client): must stay 0 (the report checks).
  # vA's frames go to AF_XDP before any hook; they come from the same client kernel
  # with the same offloads as vD's.
  # The same hooks count HTTP responses arriving at the clients (TCP segments from
  # port 80 whose payload starts "HTTP/1.1"): conn-scale's throughput, seen by the
  # client whatever the server can still report.
  ip netns exec "$B_NS_K" nft -f - <<'NFT' || return 1
table netdev shunt_bench {
  counter oversized_vB { }
  counter oversized_vD { }
  counter http_vB { }
  counter http_vD { }
  chain vB {
    type filter hook ingress device "vB" priority 0;
    ip length > 1500 counter name oversized_vB;
    tcp sport 80 @ih,0,64 0x485454502f312e31 counter name http_vB;
  }
  chain vD {
    type filter hook ingress device "vD" priority 0;
    ip length > 1500 counter name oversized_vD;
    tcp sport 80 @ih,0,64 0x485454502f312e31 counter name http_vD;
  }
}
NFT
  ip netns exec "$B_NS_S" nft -f - <<'NFT' || return 1
table netdev shunt_bench {
  counter oversized_vC { }
  chain vC { type filter hook ingress device "vC" priority 0; ip length > 1500 counter name oversized_vC; }
}
NFT
  B_RUNDIR=$B_TMP/run
  b_shuntd_start "$B_NS_S" "$B_RUNDIR" vA "$B_IP_SHUNT/24" "$B_SERVER_CPU" SHUNT_ALLOW=user:nobody || return 1
  B_SHUNTD_PID=$B_LAST_PID
  b_layout_record
}

# b_rps NS IFACE CPU: IFACE's received frames are processed on CPU.
b_rps() {
  ip netns exec "$1" sh -c "echo $(printf %x $((1 << $3))) >/sys/class/net/$2/queues/rx-0/rps_cpus" || {
    B_ERR="receive packet steering on $2 failed"
    return 1
  }
}

b_layout_down() {
  local ns
  for ns in "$B_NS_S" "$B_NS_K" "$B_NS_M"; do b_ns_del "$ns"; done
  netns_down "$B_NAME_R"
}

# What the layout looks like, for the report: offloads of every veth end.
b_layout_record() {
  local f=$B_OUT/raw/layout.txt ns i
  {
    for ns in "$B_NS_S:vA" "$B_NS_S:vC" "$B_NS_K:vB" "$B_NS_K:vD"; do
      i=${ns#*:}
      ns=${ns%%:*}
      echo "== $i ($ns)"
      ip -n "$ns" -br addr show "$i"
      ip netns exec "$ns" ethtool -k "$i" 2>/dev/null |
        grep -E '^(tx-checksumming|tcp-segmentation-offload|generic-segmentation-offload|generic-receive-offload):'
    done
  } >"$f" 2>&1
  local off
  for ns in "$B_NS_S:vA" "$B_NS_S:vC" "$B_NS_K:vB" "$B_NS_K:vD"; do
    i=${ns#*:}
    ns=${ns%%:*}
    off=$(ip netns exec "$ns" ethtool -k "$i" 2>/dev/null |
      awk -F': ' '/^(tx-checksumming|tcp-segmentation-offload|generic-segmentation-offload|generic-receive-offload):/ {
        split($1, n, "-"); k = ($1 == "tx-checksumming") ? "tx" : ($1 == "tcp-segmentation-offload") ? "tso" : ($1 == "generic-segmentation-offload") ? "gso" : "gro";
        printf "%s%s %s", sep, k, $2; sep = ", " }')
    b_meta "offloads.$i" "$off"
  done
}

# Oversized frames received: "vB N vD N vC N".
b_oversized_frames() {
  local ns i n
  for ns in "$B_NS_K:vB" "$B_NS_K:vD" "$B_NS_S:vC"; do
    i=${ns#*:}
    ns=${ns%%:*}
    n=$(b_nft_counter "$ns" "oversized_$i")
    printf '%s %s ' "$i" "${n:-?}"
  done
}

# b_nft_counter NS NAME: packets of a named counter of table netdev shunt_bench.
b_nft_counter() {
  ip netns exec "$1" nft list counter netdev shunt_bench "$2" 2>/dev/null |
    sed -n 's/.*packets \([0-9]*\) bytes.*/\1/p'
}

# HTTP responses that reached the client from STACK's server so far.
b_http_responses() {
  if [[ $1 == shunt ]]; then b_nft_counter "$B_NS_K" http_vB; else b_nft_counter "$B_NS_K" http_vD; fi
}

# ---- Processes ----------------------------------------------------------------
# b_start_in NS CPU RUNDIR LOG CMD...: the one place a program starts: pinned to
# CPU, in namespace NS; with RUNDIR under `shunt run` (libshunt.so, the daemon on
# RUNDIR), without it on the kernel stack. Sets B_LAST_PID (the program's own pid:
# taskset, ip netns exec and shunt run all exec).
b_start_in() {
  local ns=$1 cpu=$2 rundir=$3 log=$4
  shift 4
  if [[ -n $rundir ]]; then
    taskset -c "$cpu" ip netns exec "$ns" env SHUNT_RUNDIR="$rundir" "$B_SHUNT" run -- "$@" >"$log" 2>&1 &
  else
    taskset -c "$cpu" ip netns exec "$ns" "$@" >"$log" 2>&1 &
  fi
  B_LAST_PID=$!
  B_PIDS+=("$B_LAST_PID")
}

# b_server_start STACK TAG CMD...: a server on the main layout's server side.
b_server_start() {
  local stack=$1 tag=$2 rundir=
  shift 2
  [[ $stack == shunt ]] && rundir=$B_RUNDIR
  b_start_in "$B_NS_S" "$B_SERVER_CPU" "$rundir" "$B_OUT/raw/server-$tag-$stack.log" "$@"
  B_SRV["$stack/$tag"]=$B_LAST_PID
}

# b_client CMD...: a client on the kernel host, pinned to the client CPU.
b_client() { taskset -c "$B_CLIENT_CPU" ip netns exec "$B_NS_K" "$@"; }

# b_stop_pid PID [SIGNAL]: SIGNAL (TERM), waits up to 5 s, then KILL.
b_stop_pid() {
  local pid=$1 sig=${2:-TERM} i
  [[ -n $pid ]] || return 0
  kill -"$sig" "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  return 0
}

b_server_stop() {
  local key=$1/$2
  b_stop_pid "${B_SRV[$key]:-}" "${3:-TERM}"
  unset "B_SRV[$key]"
}

# b_shuntd_start NS RUNDIR NIC IP/PREFIX CPU [VAR=VALUE...]: a daemon, pinned,
# logging to RUNDIR/shuntd.log; waits up to 15 s for its control socket.
b_shuntd_start() {
  local ns=$1 rundir=$2 nic=$3 ip=$4 cpu=$5 i
  shift 5
  mkdir -p "$rundir"
  taskset -c "$cpu" ip netns exec "$ns" env SHUNT_RUNDIR="$rundir" SHUNT_NIC="$nic" SHUNT_IP="$ip" "$@" \
    "$B_SHUNTD" >"$rundir/shuntd.log" 2>&1 &
  B_LAST_PID=$!
  B_PIDS+=("$B_LAST_PID")
  for ((i = 0; i < 150; i++)); do
    [[ -S $rundir/shuntd.sock ]] && return 0
    if ! kill -0 "$B_LAST_PID" 2>/dev/null; then
      B_ERR="shuntd ($nic) exited at start: $(tail -n 3 "$rundir/shuntd.log" | tr '\n' ' ')"
      return 1
    fi
    sleep 0.1
  done
  B_ERR="shuntd ($nic) has no control socket after 15 s"
  return 1
}

b_shuntd_stop() {
  local rundir=$1
  [[ -S $rundir/shuntd.sock ]] && timeout 15 "$B_SHUNT" stop --rundir "$rundir" >/dev/null 2>&1
  return 0
}

b_stat() { timeout 10 "$B_SHUNT" stat --flat --rundir "${1:-$B_RUNDIR}" 2>/dev/null; }

# b_tree PID...: the pids and all their descendants.
b_tree() {
  local p c
  local -a kids
  for p in "$@"; do
    [[ -n $p && -d /proc/$p ]] || continue
    echo "$p"
    read -ra kids < <(cat /proc/"$p"/task/*/children 2>/dev/null)
    for c in "${kids[@]}"; do b_tree "$c"; done
  done
}

# ---- CPU accounting -----------------------------------------------------------
# Per process: utime and stime from /proc/PID/stat (every thread, in clock ticks).
# Per CPU: the /proc/stat lines (user nice system idle iowait irq softirq steal).
B_TCK=$(getconf CLK_TCK)

# b_ticks PID...: "utime stime" summed.
b_ticks() {
  local p u=0 s=0 rest
  local -a f
  for p in "$@"; do
    rest=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    rest=${rest##*) }
    read -ra f <<<"$rest"
    u=$((u + f[11]))
    s=$((s + f[12]))
  done
  echo "$u $s"
}

b_procstat() { grep -E '^cpu[0-9]* ' /proc/stat; }

# b_cpu_begin "SERVER PIDS" "OTHER PIDS": snapshots before a measurement. SERVER
# PIDS: the stack under test on the server side (the application's processes, and
# shuntd under shunt); OTHER PIDS: the other stack's idle servers.
b_cpu_begin() {
  B_CPU_PIDS=$1
  B_CPU_OTHER=$2
  echo "cpu accounting: server pids: $B_CPU_PIDS; other stack's pids: ${B_CPU_OTHER:-none}"
  # shellcheck disable=SC2086  # pid lists
  B_CPU_T0=$(b_ticks $B_CPU_PIDS)
  # shellcheck disable=SC2086
  B_CPU_O0=$(b_ticks $B_CPU_OTHER)
  B_CPU_S0=$(b_procstat)
  B_CPU_W0=$EPOCHREALTIME
}

# b_cpu_end OPS: sets, per operation (µs): srv_cpu_us (user+system of the server
# processes), srv_user_us, srv_sys_us; per CPU from /proc/stat: cpuS_busy_us and
# cpuS_softirq_us (server CPU), cpuC_busy_us and cpuC_softirq_us (client CPU),
# machine_busy_us (every CPU); and srv_cores (server processes' CPU / wall time),
# other_stack_cores (the idle other stack's servers).
b_cpu_end() {
  local ops=$1 t1 o1 s1 w1
  # shellcheck disable=SC2086
  t1=$(b_ticks $B_CPU_PIDS)
  # shellcheck disable=SC2086
  o1=$(b_ticks $B_CPU_OTHER)
  s1=$(b_procstat)
  w1=$EPOCHREALTIME
  local out
  out=$(awk -v t0="$B_CPU_T0" -v t1="$t1" -v o0="$B_CPU_O0" -v o1="$o1" -v w0="$B_CPU_W0" -v w1="$w1" \
    -v tck="$B_TCK" -v ops="$ops" -v scpu="cpu$B_SERVER_CPU" -v ccpu="cpu$B_CLIENT_CPU" \
    -v s0="$B_CPU_S0" -v s1="$s1" '
    function parse(text, arr,   n, i, l, f) {
      n = split(text, l, "\n")
      for (i = 1; i <= n; i++) {
        split(l[i], f, " ")
        arr[f[1], "busy"] = f[2] + f[3] + f[4] + f[7] + f[8] + f[9]
        arr[f[1], "softirq"] = f[8]
      }
    }
    BEGIN {
      us = 1e6 / tck; wall = w1 - w0
      split(t0, a, " "); split(t1, b, " "); split(o0, c, " "); split(o1, d, " ")
      du = (b[1] - a[1]) * us; ds = (b[2] - a[2]) * us; dother = (d[1] + d[2] - c[1] - c[2]) * us
      parse(s0, A); parse(s1, B)
      if (wall > 0) {
        printf "srv_cores %.4f\n", (du + ds) / 1e6 / wall
        printf "other_stack_cores %.4f\n", dother / 1e6 / wall
      }
      if (ops > 0) {
        printf "srv_cpu_us %.4f\n", (du + ds) / ops
        printf "srv_user_us %.4f\n", du / ops
        printf "srv_sys_us %.4f\n", ds / ops
        printf "cpuS_busy_us %.4f\n", (B[scpu, "busy"] - A[scpu, "busy"]) * us / ops
        printf "cpuS_softirq_us %.4f\n", (B[scpu, "softirq"] - A[scpu, "softirq"]) * us / ops
        printf "cpuC_busy_us %.4f\n", (B[ccpu, "busy"] - A[ccpu, "busy"]) * us / ops
        printf "cpuC_softirq_us %.4f\n", (B[ccpu, "softirq"] - A[ccpu, "softirq"]) * us / ops
        printf "machine_busy_us %.4f\n", (B["cpu", "busy"] - A["cpu", "busy"]) * us / ops
      }
    }')
  local k v
  while read -r k v; do [[ -n $k ]] && b_m "$k" "$v"; done <<<"$out"
}

# The server side of STACK for TAG (application tree, plus shuntd under shunt).
b_server_pids() {
  local stack=$1 tag=$2
  b_tree "${B_SRV[$stack/$tag]:-}" | paste -sd' '
  [[ $stack == shunt ]] && echo "$B_SHUNTD_PID"
}
b_other() { if [[ $1 == shunt ]]; then echo kernel; else echo shunt; fi; }
# b_cpu_begin_for STACK TAG: b_cpu_begin with the server side of STACK and the other.
b_cpu_begin_for() {
  b_cpu_begin "$(b_server_pids "$1" "$2" | paste -sd' ')" "$(b_server_pids "$(b_other "$1")" "$2" | paste -sd' ')"
}

# b_status_kib PID FIELD: a /proc/PID/status field in KiB (VmRSS, RssAnon, RssShmem).
b_status_kib() { awk -v k="$2:" '$1 == k { print $2; exit }' "/proc/$1/status" 2>/dev/null; }

# ---- Results ---------------------------------------------------------------------
# One JSON object per line in $B_OUT/raw/results.jsonl; report.py reads them.
declare -gA M
B_JSONL=
b_json() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/\\n}
  s=${s//$'\t'/ }
  s=${s//$'\r'/}
  printf '"%s"' "$(printf '%s' "$s" | tr -d '\000-\037')"
}
# b_m KEY VALUE: a numeric metric of the current step (ignored when not a number).
b_m() {
  if [[ $2 =~ ^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$ ]]; then
    M[$1]=$2
  else
    b_note "metric $1: not a number ('$2')"
  fi
}
b_note() { B_NOTE+="${B_NOTE:+; }$*"; }
b_meta() { printf '{"type":"meta","key":%s,"value":%s}\n' "$(b_json "$1")" "$(b_json "$2")" >>"$B_JSONL"; }
b_not_run() {
  printf '{"type":"not_run","workload":%s,"reason":%s}\n' "$(b_json "$1")" "$(b_json "$2")" >>"$B_JSONL"
}
b_emit_result() {
  local w=$1 c=$2 stack=$3 trial=$4 ok=$5 secs=$6 raw=$7 k metrics='' sep=''
  for k in "${!M[@]}"; do
    metrics+="$sep$(b_json "$k"):${M[$k]}"
    sep=,
  done
  printf '{"type":"result","workload":%s,"case":%s,"stack":%s,"trial":%s,"ok":%s,"error":%s,"note":%s,"seconds":%s,"raw":%s,"metrics":{%s}}\n' \
    "$(b_json "$w")" "$(b_json "$c")" "$(b_json "$stack")" "$trial" "$ok" "$(b_json "$B_ERR")" \
    "$(b_json "$B_NOTE")" "$secs" "$(b_json "$raw")" "$metrics" >>"$B_JSONL"
}

# ---- Progress ------------------------------------------------------------------------
B_STEP=0
B_TOTAL=0
b_progress() {
  local line
  line=$(printf '[%d/%d] %s' "$B_STEP" "$B_TOTAL" "$*")
  echo "$line" >&2
  echo "$(date -u +%H:%M:%S) $line" >>"$B_OUT/progress.log"
}

# ---- Parsing -----------------------------------------------------------------------
# b_to_us VALUE_WITH_UNIT (wrk: 812.00us, 1.23ms, 2.00s) -> microseconds.
b_to_us() {
  awk -v v="$1" 'BEGIN {
    n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
    m = (u == "us") ? 1 : (u == "ms") ? 1000 : (u == "s") ? 1e6 : (u == "m") ? 6e7 : -1
    if (m < 0) exit 1
    printf "%.3f", n * m }'
}

# b_wrk_metrics OUTPUT: rps, requests, socket_errors, non2xx, and with --latency
# lat_p50_us and lat_p99_us. Fails (B_ERR) without a request or with errors only.
b_wrk_metrics() {
  local out=$1 rps req err non2xx p
  rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
  req=$(sed -n 's/^ *\([0-9][0-9]*\) requests in .*/\1/p' <<<"$out")
  err=$(sed -n 's/^ *Socket errors: connect \([0-9]*\), read \([0-9]*\), write \([0-9]*\), timeout \([0-9]*\).*/\1 \2 \3 \4/p' <<<"$out" |
    awk '{ print $1 + $2 + $3 + $4 }')
  non2xx=$(sed -n 's/^ *Non-2xx or 3xx responses: *\([0-9]*\).*/\1/p' <<<"$out")
  if [[ -z $rps || -z $req || $req == 0 ]]; then
    B_ERR="wrk made no request: $(tail -n 3 <<<"$out" | tr '\n' ' ')"
    return 1
  fi
  b_m rps "$rps"
  b_m requests "$req"
  b_m socket_errors "${err:-0}"
  b_m non2xx "${non2xx:-0}"
  [[ ${err:-0} != 0 ]] && b_note "wrk socket errors: $(grep 'Socket errors' <<<"$out" | sed 's/^ *//')"
  [[ ${non2xx:-0} != 0 ]] && b_note "wrk non-2xx answers: $non2xx"
  p=$(awk '$1 == "50%" { print $2 }' <<<"$out")
  [[ -n $p ]] && b_m lat_p50_us "$(b_to_us "$p")"
  p=$(awk '$1 == "99%" { print $2 }' <<<"$out")
  [[ -n $p ]] && b_m lat_p99_us "$(b_to_us "$p")"
  return 0
}

# b_sockperf_metrics OUTPUT: p50_us p99_us p999_us avg_us observations.
b_sockperf_metrics() {
  local out=$1 v
  v=$(sed -n 's/.*Total \([0-9]*\) observations.*/\1/p' <<<"$out" | head -n 1)
  if [[ -z $v || $v == 0 ]]; then
    B_ERR="sockperf: no observation: $(grep -iE 'error|refused|timeout' <<<"$out" | head -n 2 | tr '\n' ' ')"
    return 1
  fi
  b_m observations "$v"
  b_m p50_us "$(awk '/percentile 50.000 =/ { print $NF }' <<<"$out")"
  b_m p99_us "$(awk '/percentile 99.000 =/ { print $NF }' <<<"$out")"
  b_m p999_us "$(awk '/percentile 99.900 =/ { print $NF }' <<<"$out")"
  b_m avg_us "$(sed -n 's/.*Summary: Latency is \([0-9.]*\) usec.*/\1/p' <<<"$out" | head -n 1)"
  v=$(sed -n 's/.*# dropped messages = \([0-9]*\).*/\1/p' <<<"$out" | head -n 1)
  [[ -n $v ]] && b_m dropped "$v"
  return 0
}
