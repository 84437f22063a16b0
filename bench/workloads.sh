# shellcheck shell=bash
# shellcheck disable=SC2154,SC2034  # B_* come from and go to run.sh and lib-bench.sh
# The workloads of bench/run.sh (docs/benchmarks.md, Workloads). Each workload W
# (functions named with W's dashes as underscores) has:
#   wl_W_need            prints why W cannot run here (nothing: it can)
#   wl_W_cases           its cases, one a line
#   wl_W_head CASE       "METRIC UNIT" shown in the progress line
#   wl_W_setup           starts its servers, shunt and kernel both (B_ERR on failure)
#   wl_W_trial CASE STACK TRIAL   one measurement: sets metrics with b_m; returns
#                        non-zero with B_ERR when it produced no number
#   wl_W_teardown
# A trial writes what the tools printed to "$B_RAWF" (its raw file).

# In this order: conn-scale is the last of nginx's users (its 10,000 connections).
B_WORKLOADS=(nginx-keepalive nginx-close bulk-curl loss conn-scale memcached redis sockperf
  bulk-iperf3 nginx-restart shunt-to-shunt engine passthrough)
B_NGINX_USERS=" nginx-keepalive nginx-close bulk-curl loss conn-scale "

b_need_cmds() {
  local c missing=()
  for c in "$@"; do command -v "$c" >/dev/null 2>&1 || missing+=("$c"); done
  ((${#missing[@]} == 0)) || echo "missing tool: ${missing[*]} (scripts/install-deps.sh installs it)"
}

# ---- nginx, shared by the nginx workloads -------------------------------------------
# b_nginx_site DIR LISTEN STATUS_PORT: stock nginx with Debian's defaults that matter
# for these workloads (sendfile on, tcp_nopush on, tcp_nodelay on, keepalive_timeout
# 65, gzip on for text/html), one worker (pinned with shuntd on the server CPU),
# worker_connections for 10,000 clients, WebDAV PUT into www/up/ (uploads), and
# stub_status on 127.0.0.1:STATUS_PORT (kernel loopback, never shunted: it answers
# however the measured listener fares; conn-scale reads it).
b_nginx_site() {
  local dir=$1 listen=$2 status=$3 user=www-data nofile
  id -u "$user" >/dev/null 2>&1 || user=nobody
  nofile=$(ulimit -Hn)
  [[ $nofile == unlimited ]] && nofile=65536
  ((nofile > 65536)) && nofile=65536
  mkdir -p "$dir/www/up"
  chmod 755 "$dir" "$dir/www"
  chown "$user" "$dir/www/up"
  cat >"$dir/nginx.conf" <<CONF
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile $nofile;
user $user;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout 65;
  types_hash_max_size 2048;
  gzip on;
  default_type application/octet-stream;
  client_body_temp_path $dir/tmp-body;
  proxy_temp_path $dir/tmp-proxy;
  fastcgi_temp_path $dir/tmp-fastcgi;
  uwsgi_temp_path $dir/tmp-uwsgi;
  scgi_temp_path $dir/tmp-scgi;
  server {
    listen $listen backlog=4096;
    root $dir/www;
    location / { }
    location /up/ { dav_methods PUT; client_max_body_size 2g; client_body_buffer_size 1m; }
  }
  server {
    listen 127.0.0.1:$status;
    location = /status { stub_status; }
  }
}
CONF
  local f
  for f in "$B_TMP"/files/*.bin; do ln -f "$f" "$dir/www/"; done
}

# The files served and uploaded (one copy on tmpfs, hard-linked into each site).
b_files() {
  [[ -d $B_TMP/files ]] && return 0
  mkdir -p "$B_TMP/files"
  head -c 1024 /dev/urandom >"$B_TMP/files/1k.bin"
  head -c $((B_BULK_MB << 20)) /dev/urandom >"$B_TMP/files/bulk.bin"
  head -c $((B_BULK_MB << 18)) /dev/urandom >"$B_TMP/files/quarter.bin"
  head -c $((B_LOSS_MB << 20)) /dev/urandom >"$B_TMP/files/loss.bin"
  chmod 755 "$B_TMP/files"
  chmod 644 "$B_TMP"/files/*.bin
}

B_NGINX_UP=0
b_nginx_up() {
  ((B_NGINX_UP)) && return 0
  local stack port=8080 dir ip
  b_files
  for stack in shunt kernel; do
    dir=$B_TMP/nginx-$stack
    ip=$(b_ip "$stack")
    b_nginx_site "$dir" "$ip:80" "$port"
    port=$((port + 1))
    b_server_start "$stack" nginx nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"
  done
  for stack in shunt kernel; do
    if ! nginx_wait_up "http://$(b_ip "$stack")/1k.bin" "$B_NS_K" "${B_SRV[$stack/nginx]}" >/dev/null 2>&1; then
      B_ERR="nginx ($stack) does not answer: $(tail -n 3 "$B_TMP/nginx-$stack/error.log" 2>/dev/null | tr '\n' ' ')"
      return 1
    fi
  done
  B_NGINX_UP=1
}

b_nginx_down() {
  local stack
  for stack in shunt kernel; do b_server_stop "$stack" nginx QUIT; done
  B_NGINX_UP=0
}

# Stops nginx once no workload still to run uses it.
b_nginx_release() {
  local w
  for w in "${B_PENDING[@]}"; do [[ $B_NGINX_USERS == *" $w "* ]] && return 0; done
  b_nginx_down
}

b_status_port() { if [[ $1 == shunt ]]; then echo 8080; else echo 8081; fi; }

# b_wrk STACK CONNS [ARGS...]: wrk -t1 against STACK's nginx for B_SECS; metrics
# from its output and the server side's CPU per request.
b_wrk() {
  local stack=$1 conns=$2
  shift 2
  b_cpu_begin_for "$stack" nginx
  b_wrk_measure b_client "http://$(b_ip "$stack")/1k.bin" "$conns" "$@"
}

# b_wrk_measure RUNNER URL CONNS [ARGS...]: one wrk run through RUNNER (a command
# prefix, split on spaces) after the caller's b_cpu_begin; metrics and CPU per request.
b_wrk_measure() {
  local runner=$1 url=$2 conns=$3 out rc
  shift 3
  # shellcheck disable=SC2086  # the runner is a word list
  out=$($runner timeout $((B_SECS + 60)) wrk -t1 -c"$conns" -d"${B_SECS}s" --timeout 5s --latency "$@" \
    "$url" 2>&1)
  rc=$?
  printf '%s\n' "$out" >>"$B_RAWF"
  b_wrk_metrics "$out" || return 1
  b_cpu_end "${M[requests]}"
  ((rc == 0)) || b_note "wrk exit $rc"
  return 0
}

# ---- nginx-keepalive: 1 KiB over keep-alive connections --------------------------------
wl_nginx_keepalive_need() { b_need_cmds nginx wrk curl; }
wl_nginx_keepalive_cases() {
  local c
  for c in $B_KA_CONNS; do echo "c=$c"; done
  echo "cpu@c=32"
}
wl_nginx_keepalive_head() { echo "rps req/s"; }
wl_nginx_keepalive_setup() {
  b_nginx_up || return 1
  # Fixed offered load for CPU per request: each connection waits B_CPU_DELAY_MS
  # after every answer, so both stacks get the same request rate (32 / (delay + RTT)).
  printf 'function delay()\n  return %d\nend\n' "$B_CPU_DELAY_MS" >"$B_TMP/delay.lua"
}
wl_nginx_keepalive_trial() {
  local case=$1 stack=$2
  case $case in
    c=*) b_wrk "$stack" "${case#c=}" ;;
    cpu@c=*) b_wrk "$stack" "${case#cpu@c=}" -s "$B_TMP/delay.lua" ;;
  esac
}
wl_nginx_keepalive_teardown() { b_nginx_release; }

# ---- nginx-close: a connection per request --------------------------------------------
wl_nginx_close_need() { b_need_cmds nginx wrk curl; }
wl_nginx_close_cases() { echo "c=32"; }
wl_nginx_close_head() { echo "rps conn/s"; }
wl_nginx_close_setup() { b_nginx_up; }
wl_nginx_close_trial() { b_wrk "$2" "${1#c=}" -H "Connection: close"; }
wl_nginx_close_teardown() { b_nginx_release; }

# ---- conn-scale: 100 .. 10,000 concurrent keep-alive connections -----------------------
# Each trial restarts STACK's nginx (a fresh worker, and under shunt a fresh region:
# the memory figures start from nothing), opens CONNS keep-alive connections with wrk
# and waits until nginx holds them all (stub_status; at most B_SCALE_WARMUP s) and one
# more second; then throughput is the HTTP responses reaching the client over B_SECS
# (nftables counter) while wrk keeps them busy, and memory per connection the growth
# of shuntd's VmRSS (RssAnon, RssShmem: the connections' rings, shared with nginx) and
# of nginx's, over the connections open.
wl_conn_scale_need() {
  b_need_cmds nginx wrk curl
  local max=0 c hard
  for c in $B_SCALE_CONNS; do ((c > max)) && max=$c; done
  hard=$(ulimit -Hn)
  [[ $hard != unlimited ]] && ((hard < max + 200)) &&
    echo "open-file limit $hard is below $((max + 200)) (wrk and nginx each hold a descriptor per connection)"
}
wl_conn_scale_cases() {
  local c
  for c in $B_SCALE_CONNS; do echo "c=$c"; done
}
wl_conn_scale_head() { echo "rps req/s"; }
wl_conn_scale_setup() {
  ulimit -Sn "$(ulimit -Hn)"
  b_nginx_up
}
b_nginx_status() { # STACK -> "active requests" (stub_status; the status connection included)
  taskset -c "$B_CLIENT_CPU" ip netns exec "$B_NS_S" curl -s -m 1 "http://127.0.0.1:$(b_status_port "$1")/status" |
    awk 'NR == 1 { a = $3 } NR == 3 { r = $3 } END { if (a != "" && r != "") print a, r }'
}
b_nginx_restart() { # STACK
  local stack=$1 dir=$B_TMP/nginx-$1
  b_server_stop "$stack" nginx QUIT
  b_server_start "$stack" nginx nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log"
  nginx_wait_up "http://$(b_ip "$stack")/1k.bin" "$B_NS_K" "${B_SRV[$stack/nginx]}"
}
# b_growth BEFORE AFTER N: (AFTER - BEFORE) / N with 3 decimals.
b_growth() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { if (n > 0 && a != "" && b != "") printf "%.3f", (b - a) / n }'; }
# b_open_conns STACK: connections nginx holds (accepted): stub_status's count when it
# answers; else, under shunt, the ESTAB connections `shunt ss` shows owned by nginx.
b_open_conns() {
  local st
  st=$(b_nginx_status "$1")
  if [[ -n $st ]]; then
    echo "$((${st% *} - 1)) stub_status"
  elif [[ $1 == shunt ]]; then
    echo "$(timeout 20 "$B_SHUNT" ss -t --rundir "$B_RUNDIR" 2>/dev/null | awk '$1 == "ESTAB" && /"nginx"/' | wc -l) shunt-ss"
  else
    echo "$(ip netns exec "$B_NS_S" ss -Htn state established '( sport = :80 )' 2>/dev/null | wc -l) ss"
  fi
}
wl_conn_scale_trial() {
  local case=$1 stack=$2 conns=${1#c=} wpid st active=0 open how n0 n1 t0 t1 deadline worker ng0 i
  local -a sd0=()
  b_nginx_restart "$stack" || { B_ERR="nginx ($stack) did not come back up"; return 1; }
  worker=$(b_tree "${B_SRV[$stack/nginx]}" | sed -n 2p)
  [[ -n $worker ]] || { B_ERR="no nginx worker"; return 1; }
  sleep 0.5
  ng0=$(b_status_kib "$worker" VmRSS)
  [[ $stack == shunt ]] && for i in VmRSS RssAnon RssShmem; do sd0+=("$(b_status_kib "$B_SHUNTD_PID" "$i")"); done
  # Not through the b_client function: $! must be the exec chain that ends in timeout
  # (which passes SIGINT on to wrk).
  taskset -c "$B_CLIENT_CPU" ip netns exec "$B_NS_K" timeout $((B_SCALE_WARMUP + B_SECS + 90)) \
    wrk -t1 -c"$conns" -d"$((B_SCALE_WARMUP + B_SECS + 60))s" --timeout 10s "http://$(b_ip "$stack")/1k.bin" \
    >>"$B_RAWF" 2>&1 &
  wpid=$!
  t0=$EPOCHREALTIME
  deadline=$(awk -v t="$t0" -v w="$B_SCALE_WARMUP" 'BEGIN { printf "%d", t + w }')
  while ((${EPOCHREALTIME%.*} < deadline)); do
    sleep 0.2
    st=$(b_nginx_status "$stack")
    active=${st% *}
    ((${active:-0} > conns)) && break
  done
  echo "ramp: ${active:-no answer from stub_status} (stub_status's own connection included) after $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s"
  sleep 1
  # Throughput: HTTP responses counted as they reach the client (nftables, netdev
  # ingress of the client's veth end) over B_SECS.
  b_cpu_begin_for "$stack" nginx
  n0=$(b_http_responses "$stack")
  t0=$EPOCHREALTIME
  sleep "$B_SECS"
  n1=$(b_http_responses "$stack")
  t1=$EPOCHREALTIME
  read -r open how <<<"$(b_open_conns "$stack")"
  echo "window: responses ${n0:-?} -> ${n1:-?} in $(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }') s; open connections $open ($how)"
  if [[ $stack == shunt ]]; then
    b_m shuntd_rss_kib "$(b_status_kib "$B_SHUNTD_PID" VmRSS)"
    b_m shuntd_rss_per_conn_kib "$(b_growth "${sd0[0]}" "$(b_status_kib "$B_SHUNTD_PID" VmRSS)" "$open")"
    b_m shuntd_anon_per_conn_kib "$(b_growth "${sd0[1]}" "$(b_status_kib "$B_SHUNTD_PID" RssAnon)" "$open")"
    b_m shuntd_shmem_per_conn_kib "$(b_growth "${sd0[2]}" "$(b_status_kib "$B_SHUNTD_PID" RssShmem)" "$open")"
    b_stat "$B_RUNDIR" | grep -E '^(tcp\.(established|live_connections)|drop\.tcp_(no_memory|backlog_full)) '
    timeout 10 "$B_SHUNT" ss -l --rundir "$B_RUNDIR" 2>&1
  fi
  b_m nginx_rss_per_conn_kib "$(b_growth "$ng0" "$(b_status_kib "$worker" VmRSS)" "$open")"
  kill -INT "$wpid" 2>/dev/null
  wait "$wpid" 2>/dev/null
  if [[ -z $n0 || -z $n1 ]]; then
    B_ERR="no response counter (nftables table netdev shunt_bench)"
    return 1
  fi
  b_m rps "$(awk -v a="$n0" -v b="$n1" -v s="$t0" -v e="$t1" 'BEGIN { printf "%.1f", (b - a) / (e - s) }')"
  b_m active_conns "$open"
  ((open < conns)) && b_note "only $open of $conns connections open (by $how)"
  [[ $how != stub_status ]] && b_note "stub_status did not answer"
  b_cpu_end "$((n1 - n0))"
  return 0
}
wl_conn_scale_teardown() { b_nginx_release; }

# ---- bulk-curl: a large file, one or four connections, both ways (nginx, curl) ----------
wl_bulk_curl_need() { b_need_cmds nginx curl; }
wl_bulk_curl_cases() { printf '%s\n' download-1 download-4 upload-1 upload-4; }
wl_bulk_curl_head() { echo "mbps MB/s"; }
wl_bulk_curl_setup() { b_nginx_up; }
# b_curl_xfer STACK DIR N FILE MAXTIME TAG: N parallel curls (download: GET FILE; upload:
# PUT FILE); sets seconds, mbps (MB/s, 10^6 bytes), bytes. Fails unless every byte moved.
b_curl_xfer() {
  local stack=$1 dir=$2 n=$3 file=$4 max=$5 tag=$6 i t0 t1 total=0 want rc=0 b
  local url
  url=http://$(b_ip "$stack")
  local -a pids=()
  want=$(($(stat -c %s "$B_TMP/files/$file") * n))
  local drops0
  drops0=$(b_rx_drops "$stack")
  t0=$EPOCHREALTIME
  for ((i = 0; i < n; i++)); do
    if [[ $dir == download ]]; then
      b_client curl -sS --fail --max-time "$max" -o /dev/null -w '%{size_download}\n' "$url/$file" >"$B_TMP/curl.$i" 2>&1 &
    else
      b_client curl -sS --fail --max-time "$max" -o /dev/null -w '%{size_upload}\n' -T "$B_TMP/files/$file" \
        "$url/up/$tag-$i.bin" >"$B_TMP/curl.$i" 2>&1 &
    fi
    pids+=($!)
  done
  for ((i = 0; i < n; i++)); do wait "${pids[$i]}" || rc=$?; done
  t1=$EPOCHREALTIME
  for ((i = 0; i < n; i++)); do
    cat "$B_TMP/curl.$i" >>"$B_RAWF"
    b=$(tail -n 1 "$B_TMP/curl.$i")
    [[ $b =~ ^[0-9]+$ ]] && total=$((total + b))
  done
  rm -f "$B_TMP"/curl.* "$B_TMP/nginx-$stack/www/up/$tag"-*.bin
  b_m bytes "$total"
  b_m rx_drops $(($(b_rx_drops "$stack") - drops0))
  b_m seconds "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }')"
  b_m mbps "$(awk -v a="$t0" -v b="$t1" -v n="$total" 'BEGIN { printf "%.2f", n / (b - a) / 1e6 }')"
  if ((rc != 0 || total != want)); then
    B_ERR="curl $dir: $total of $want bytes (exit $rc)"
    return 1
  fi
}
wl_bulk_curl_trial() {
  local dir=${1%-*} n=${1#*-} file=bulk.bin
  ((n > 1)) && file=quarter.bin
  b_cpu_begin_for "$2" nginx
  b_curl_xfer "$2" "$dir" "$n" "$file" "$B_MAXTIME" bulk || return 1
  b_cpu_end "$((M[bytes] >> 20))"  # per MiB
}
wl_bulk_curl_teardown() { b_nginx_release; }

# ---- loss: B_LOSS_MB under random loss both ways (nftables on the kernel host) -------
# The rule drops P % of TCP packets in the kernel host's input and output hooks: the
# data and the ACKs, whichever way the file goes.
wl_loss_need() { b_need_cmds nginx curl nft; }
wl_loss_cases() {
  local p
  for p in $B_LOSS_RATES; do echo "loss=$p% download"; echo "loss=$p% upload"; done
}
wl_loss_head() { echo "seconds s"; }
wl_loss_setup() { b_nginx_up; }
b_loss_rule() { # PERCENT
  ip netns exec "$B_NS_K" nft delete table inet shunt_bench_loss 2>/dev/null
  (($1 > 0)) || return 0
  ip netns exec "$B_NS_K" nft -f - <<NFT
table inet shunt_bench_loss {
  chain in { type filter hook input priority 0; meta l4proto tcp numgen random mod 100 < $1 counter drop; }
  chain out { type filter hook output priority 0; meta l4proto tcp numgen random mod 100 < $1 counter drop; }
}
NFT
}
wl_loss_trial() {
  local case=$1 stack=$2 p dir rc=0 dropped
  p=${case#loss=}
  p=${p%%%*}
  dir=${case##* }
  b_loss_rule "$p" || { B_ERR="nft loss rule failed"; return 1; }
  b_curl_xfer "$stack" "$dir" 1 loss.bin "$B_LOSS_MAXTIME" loss || rc=1
  dropped=$(ip netns exec "$B_NS_K" nft list table inet shunt_bench_loss 2>/dev/null |
    sed -n 's/.*counter packets \([0-9]*\) .*/\1/p' | awk '{ s += $1 } END { print s + 0 }')
  b_m dropped_packets "${dropped:-0}"
  b_loss_rule 0
  return "$rc"
}
wl_loss_teardown() {
  b_loss_rule 0
  b_nginx_release
}

# ---- memcached -t 4, memcaslap 90 % get ------------------------------------------------
wl_memcached_need() { b_need_cmds memcached memcaslap; }
wl_memcached_cases() { printf '%s\n' "value=64B" "value=1KiB"; }
wl_memcached_head() { echo "ops ops/s"; }
wl_memcached_setup() {
  local stack size
  for size in 64 1024; do
    printf 'key\n64 64 1\nvalue\n%d %d 1\ncmd\n0 0.1\n1 0.9\n' "$size" "$size" >"$B_TMP/memcaslap-$size.cfg"
  done
  for stack in shunt kernel; do
    # -u nobody: memcached drops privileges before its first socket (SHUNT_ALLOW=user:nobody).
    b_server_start "$stack" memcached memcached -u nobody -l "$(b_ip "$stack")" -p 11211 -t 4 -c 4096 -m 1024
  done
  for stack in shunt kernel; do
    netns_wait_tcp "$B_NS_K" "$(b_ip "$stack")" 11211 || { B_ERR="memcached ($stack) does not accept"; return 1; }
  done
}
wl_memcached_trial() {
  local case=$1 stack=$2 size=64 out rc ops tps
  [[ $case == value=1KiB ]] && size=1024
  b_cpu_begin_for "$stack" memcached
  out=$(b_client timeout $((B_SECS + 60)) memcaslap -s "$(b_ip "$stack"):11211" -F "$B_TMP/memcaslap-$size.cfg" \
    -t "${B_SECS}s" -T 1 -c 32 2>&1)
  rc=$?
  printf '%s\n' "$out" >>"$B_RAWF"
  ops=$(sed -n 's/^Run time: .* Ops: \([0-9]*\) TPS: \([0-9]*\).*/\1/p' <<<"$out" | tail -n 1)
  tps=$(sed -n 's/^Run time: .* Ops: \([0-9]*\) TPS: \([0-9]*\).*/\2/p' <<<"$out" | tail -n 1)
  if [[ -z $ops || $ops == 0 ]]; then
    B_ERR="memcaslap made no operation (exit $rc): $(tail -n 2 <<<"$out" | tr '\n' ' ')"
    return 1
  fi
  b_m ops "$tps"
  b_m operations "$ops"
  b_cpu_end "$ops"
}
wl_memcached_teardown() {
  b_server_stop shunt memcached
  b_server_stop kernel memcached
}

# ---- redis: redis-benchmark GET and SET, -P 1 and -P 16 --------------------------------
wl_redis_need() { b_need_cmds redis-server redis-benchmark; }
wl_redis_cases() { printf '%s\n' "SET -P1" "GET -P1" "SET -P16" "GET -P16"; }
wl_redis_head() { echo "ops ops/s"; }
wl_redis_setup() {
  local stack
  for stack in shunt kernel; do
    b_server_start "$stack" redis redis-server --bind "$(b_ip "$stack")" --port 6379 --save '' \
      --appendonly no --protected-mode no --daemonize no
  done
  for stack in shunt kernel; do
    netns_wait_tcp "$B_NS_K" "$(b_ip "$stack")" 6379 || { B_ERR="redis-server ($stack) does not accept"; return 1; }
  done
}
wl_redis_trial() {
  local case=$1 stack=$2 test pipe n out rc rps p50
  test=${case%% *}
  pipe=${case##*-P}
  n=$B_REDIS_N
  ((pipe > 1)) && n=$((B_REDIS_N * 5))
  b_cpu_begin_for "$stack" redis
  out=$(b_client timeout $((B_SECS * 10 + 60)) redis-benchmark -h "$(b_ip "$stack")" -p 6379 -c 50 \
    -t "${test,,}" -n "$n" -P "$pipe" --csv 2>&1)
  rc=$?
  printf '%s\n' "$out" >>"$B_RAWF"
  # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms",...
  rps=$(awk -F'","' -v t="\"$test" '$1 == t { print $2 }' <<<"$out" | head -n 1)
  p50=$(awk -F'","' -v t="\"$test" '$1 == t { print $5 }' <<<"$out" | head -n 1)
  if [[ -z $rps ]]; then
    B_ERR="redis-benchmark gave no rate (exit $rc): $(tail -n 2 <<<"$out" | tr '\n' ' ')"
    return 1
  fi
  b_m ops "$rps"
  [[ -n $p50 ]] && b_m p50_ms "$p50"
  b_cpu_end "$n"
}
wl_redis_teardown() {
  b_server_stop shunt redis
  b_server_stop kernel redis
}

# ---- sockperf: ping-pong and under-load, TCP and UDP -----------------------------------
wl_sockperf_need() { b_need_cmds sockperf; }
wl_sockperf_cases() { printf '%s\n' pp-tcp pp-udp ul-tcp ul-udp; }
wl_sockperf_head() { echo "p50_us us(p50)"; }
wl_sockperf_setup() {
  local stack
  for stack in shunt kernel; do
    b_server_start "$stack" sockperf-tcp sockperf sr --tcp -i "$(b_ip "$stack")" -p 11111
    b_server_start "$stack" sockperf-udp sockperf sr -i "$(b_ip "$stack")" -p 11112
  done
  for stack in shunt kernel; do
    netns_wait_tcp "$B_NS_K" "$(b_ip "$stack")" 11111 || { B_ERR="sockperf server ($stack) does not accept"; return 1; }
  done
}
# b_sockperf RAWTAG CMD...: runs the sockperf client command, metrics and the
# latency CDF (pp only) from its full log.
b_sockperf() {
  local mode=$1 log out rc
  shift
  log=$B_TMP/sockperf-full.csv
  rm -f "$log"
  local -a extra=()
  [[ $mode == pp ]] && extra=(--full-log "$log")
  out=$("$@" "${extra[@]}" 2>&1)
  rc=$?
  printf '%s\n' "$out" >>"$B_RAWF"
  b_sockperf_metrics "$out" || { B_ERR+=" (exit $rc)"; return 1; }
  if [[ -s $log ]]; then
    "$B_PY" "$B_REPORT" cdf "$log" "${B_RAWF%.txt}.cdf.json" >>"$B_RAWF" 2>&1 || b_note "no CDF from the full log"
  fi
  rm -f "$log"
}
wl_sockperf_trial() {
  local case=$1 stack=$2 mode proto port=11112
  local -a args=()
  mode=${case%-*}
  proto=${case#*-}
  [[ $proto == tcp ]] && args=(--tcp) && port=11111
  [[ $mode == ul ]] && args+=(--mps="$B_UL_MPS")
  b_sockperf "$mode" b_client timeout $((B_SECS + 30)) sockperf "$mode" "${args[@]}" -i "$(b_ip "$stack")" -p "$port" -t "$B_SECS"
}
wl_sockperf_teardown() {
  local stack
  for stack in shunt kernel; do
    b_server_stop "$stack" sockperf-tcp
    b_server_stop "$stack" sockperf-udp
  done
}

# ---- bulk-iperf3: one and four streams, both ways ------------------------------------
wl_bulk_iperf3_need() { b_need_cmds iperf3; }
wl_bulk_iperf3_cases() { printf '%s\n' download-1 download-4 upload-1 upload-4; }
wl_bulk_iperf3_head() { echo "gbps Gbit/s"; }
wl_bulk_iperf3_setup() {
  local stack
  for stack in shunt kernel; do
    b_server_start "$stack" iperf3 iperf3 -s -B "$(b_ip "$stack")" -p 5201
  done
  # Not netns_wait_tcp: iperf3 takes the probe for a client and reopens its listener.
  wait_listen "$(b_ip shunt)" 5201 15 "$B_SHUNT" ss -tl --rundir "$B_RUNDIR" &&
    wait_listen "$(b_ip kernel)" 5201 15 ip netns exec "$B_NS_S" ss -tln ||
    { B_ERR="an iperf3 server does not listen"; return 1; }
}
wl_bulk_iperf3_trial() {
  local case=$1 stack=$2 n out rc vals
  local -a rev=()
  n=${case#*-}
  [[ $case == download-* ]] && rev=(-R)  # the server (the stack under test) sends
  b_cpu_begin_for "$stack" iperf3
  out=$(b_client timeout $((B_SECS + 30)) iperf3 -c "$(b_ip "$stack")" -p 5201 -t "$B_SECS" -P "$n" "${rev[@]}" -J 2>&1)
  rc=$?
  printf '%s\n' "$out" >>"$B_RAWF"
  vals=$("$B_PY" "$B_REPORT" iperf3 <<<"$out" 2>&1)
  if [[ ! $vals =~ ^[0-9] ]]; then
    B_ERR="iperf3 (exit $rc): $vals"
    return 1
  fi
  b_m gbps "${vals% *}"
  b_m bytes "${vals#* }"
  b_cpu_end "$((${vals#* } >> 20))"  # per MiB
}
wl_bulk_iperf3_teardown() {
  b_server_stop shunt iperf3
  b_server_stop kernel iperf3
}

# ---- nginx-restart: the layout of bench/nginx_vs_kernel.sh -----------------------------
# One veth pair, rebuilt for every trial: shunt's trial runs nginx under `shunt run`
# on vA (a fresh daemon); the kernel's gives vA a kernel address and runs the same
# nginx on it (vA keeps its default offloads, as in that script). Same pinning.
wl_nginx_restart_need() { b_need_cmds nginx wrk curl; }
wl_nginx_restart_cases() { echo "c=32"; }
wl_nginx_restart_head() { echo "rps req/s"; }
wl_nginx_restart_setup() {
  b_files
  b_nginx_site "$B_TMP/nginx-restart" "198.18.$B_NET_RESTART.1:80" 8084
}
wl_nginx_restart_trial() {
  local stack=$2 dir=$B_TMP/nginx-restart rundir=$B_TMP/run-restart pid out rc
  netns_up "$B_NAME_R" "$B_NET_RESTART" || { B_ERR="netns_up failed"; return 1; }
  local -a cmd=(nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log")
  if [[ $stack == shunt ]]; then
    taskset -c "$B_SERVER_CPU" ip netns exec "$NETNS_SHUNT" env SHUNT_RUNDIR="$rundir" "$B_SHUNT" run \
      --nic "$NETNS_SHUNT_IF" --ip "$NETNS_SHUNT_IP/$NETNS_PREFIX" -- "${cmd[@]}" >>"$B_RAWF" 2>&1 &
  else
    netns_kernel_baseline
    taskset -c "$B_SERVER_CPU" ip netns exec "$NETNS_SHUNT" "${cmd[@]}" >>"$B_RAWF" 2>&1 &
  fi
  pid=$!
  B_PIDS+=("$pid")
  if nginx_wait_up "http://$NETNS_SHUNT_IP/" "$NETNS_KERNEL" "$pid" >>"$B_RAWF" 2>&1; then
    out=$(taskset -c "$B_CLIENT_CPU" ip netns exec "$NETNS_KERNEL" timeout $((B_SECS + 60)) \
      wrk -t1 -c32 -d"${B_SECS}s" --timeout 5s "http://$NETNS_SHUNT_IP/1k.bin" 2>&1)
    rc=$?
    printf '%s\n' "$out" >>"$B_RAWF"
    b_wrk_metrics "$out"
    rc=$?
  else
    B_ERR="nginx ($stack, restart layout) did not answer"
    rc=1
  fi
  b_stop_pid "$pid" QUIT
  [[ $stack == shunt ]] && b_shuntd_stop "$rundir"
  netns_down "$B_NAME_R"
  return "$rc"
}
wl_nginx_restart_teardown() { netns_down "$B_NAME_R"; }

# ---- shunt-to-shunt: two daemons over net_memif, against kernel loopback ---------------
# Namespace B_NS_M: daemon A (198.18.102.1, memif server role, server CPU) and
# daemon B (198.18.102.2, memif client role, client CPU) joined by one memif socket;
# servers under A, clients under B. The kernel's run: the same server and client
# programs over 127.0.0.1 in that namespace, same pinning.
B_M_RUN1=''
B_M_RUN2=
wl_shunt_to_shunt_need() {
  b_need_cmds sockperf nginx wrk
  if ! compgen -G "/usr/lib/*/dpdk/pmds-*/librte_net_memif.so*" >/dev/null; then
    echo "DPDK's net_memif driver (librte_net_memif.so) is not installed"
  fi
}
wl_shunt_to_shunt_cases() { printf '%s\n' sockperf-pp-tcp "wrk c=32"; }
wl_shunt_to_shunt_head() {
  if [[ $1 == sockperf* ]]; then echo "p50_us us(p50)"; else echo "rps req/s"; fi
}
b_m_start() { # STACK TAG CMD...: a server in B_NS_M (under daemon A for shunt)
  local stack=$1 tag=$2 rundir=
  shift 2
  [[ $stack == shunt ]] && rundir=$B_M_RUN1
  b_start_in "$B_NS_M" "$B_SERVER_CPU" "$rundir" "$B_OUT/raw/server-s2s-$tag-$stack.log" "$@"
  B_SRV["$stack/s2s-$tag"]=$B_LAST_PID
}
b_m_client() { # STACK CMD...: a client in B_NS_M (under daemon B for shunt)
  local stack=$1
  shift
  if [[ $stack == shunt ]]; then
    taskset -c "$B_CLIENT_CPU" ip netns exec "$B_NS_M" env SHUNT_RUNDIR="$B_M_RUN2" "$B_SHUNT" run -- "$@"
  else
    taskset -c "$B_CLIENT_CPU" ip netns exec "$B_NS_M" "$@"
  fi
}
b_m_ip() { if [[ $1 == shunt ]]; then echo "$B_IP_M1"; else echo 127.0.0.1; fi; }
wl_shunt_to_shunt_setup() {
  local sock=$B_TMP/memif.sock i stack
  B_M_RUN1=$B_TMP/run-m1
  B_M_RUN2=$B_TMP/run-m2
  b_ns_del "$B_NS_M"
  ip netns add "$B_NS_M" || return 1
  ip -n "$B_NS_M" link set lo up
  b_shuntd_start "$B_NS_M" "$B_M_RUN1" "net_memif0,role=server,socket=$sock,id=0" "$B_IP_M1/24" "$B_SERVER_CPU" || return 1
  B_M_PID1=$B_LAST_PID
  b_shuntd_start "$B_NS_M" "$B_M_RUN2" "net_memif1,role=client,socket=$sock,id=0" "$B_IP_M2/24" "$B_CLIENT_CPU" || return 1
  B_M_PID2=$B_LAST_PID
  b_files
  b_nginx_site "$B_TMP/nginx-s2s-shunt" "$B_IP_M1:80" 8082
  b_nginx_site "$B_TMP/nginx-s2s-kernel" "127.0.0.1:8090" 8083
  for stack in shunt kernel; do
    b_m_start "$stack" sockperf sockperf sr --tcp -i "$(b_m_ip "$stack")" -p 11111
    b_m_start "$stack" nginx nginx -p "$B_TMP/nginx-s2s-$stack" -c "$B_TMP/nginx-s2s-$stack/nginx.conf" \
      -e "$B_TMP/nginx-s2s-$stack/error.log"
  done
  # The memif link and ARP: until a client under B fetches the file from A.
  for ((i = 0; i < 30; i++)); do
    b_m_client shunt curl -s -o /dev/null -m 2 "http://$B_IP_M1/1k.bin" 2>/dev/null && break
    sleep 0.5
  done
  ((i < 30)) || { B_ERR="no answer from nginx under daemon A through daemon B (memif): $(tail -n 2 "$B_M_RUN2/shuntd.log" | tr '\n' ' ')"; return 1; }
  netns_wait_tcp "$B_NS_M" 127.0.0.1 8090 || { B_ERR="loopback nginx does not accept"; return 1; }
}
wl_shunt_to_shunt_trial() {
  local case=$1 stack=$2 ip port=80 srv other
  ip=$(b_m_ip "$stack")
  [[ $stack == kernel ]] && port=8090
  # Server side: the application and daemon A; the client side's daemon B is in
  # the machine's /proc/stat figures.
  local tag=s2s-nginx
  [[ $case == sockperf* ]] && tag=s2s-sockperf
  srv=$(b_tree "${B_SRV[$stack/$tag]}" | paste -sd' ')
  [[ $stack == shunt ]] && srv+=" $B_M_PID1"
  other=$(b_tree "${B_SRV[$(b_other "$stack")/$tag]}" | paste -sd' ')
  b_cpu_begin "$srv" "$other"
  if [[ $case == sockperf* ]]; then
    b_sockperf pp b_m_client "$stack" timeout $((B_SECS + 30)) sockperf pp --tcp -i "$ip" -p 11111 -t "$B_SECS" || return 1
    b_cpu_end "${M[observations]}"
  else
    b_wrk_measure "b_m_client $stack" "http://$ip:$port/1k.bin" 32 || return 1
  fi
  return 0
}
wl_shunt_to_shunt_teardown() {
  local stack
  for stack in shunt kernel; do
    b_server_stop "$stack" s2s-sockperf
    b_server_stop "$stack" s2s-nginx QUIT
  done
  b_shuntd_stop "$B_M_RUN2"
  b_shuntd_stop "$B_M_RUN1"
  b_ns_del "$B_NS_M"
}

# ---- engine: the protocol engine alone (engine_bench) against kernel loopback ---------
# shunt = the two engines over an in-memory wire (one thread); kernel = loopback TCP
# (two threads). Unpinned: the kernel side uses both CPUs.
wl_engine_need() { [[ -x $B_BUILD/bin/engine_bench ]] || echo "$B_BUILD/bin/engine_bench not built (SHUNT_BUILD_BENCH=ON)"; }
wl_engine_cases() { printf '%s\n' rr64 bulk; }
wl_engine_head() {
  if [[ $1 == rr64 ]]; then echo "txn_per_s txn/s"; else echo "gbps Gbit/s"; fi
}
wl_engine_setup() { :; }
wl_engine_trial() {
  local case=$1 stack=$2 name out rc vals k v
  case $stack/$case in
    shunt/rr64) name=BM_EngineRequestResponse64 ;;
    shunt/bulk) name=BM_EngineBulk ;;
    kernel/rr64) name=BM_KernelLoopbackRequestResponse64 ;;
    kernel/bulk) name=BM_KernelLoopbackBulk ;;
  esac
  out=$(timeout $((B_SECS * 4 + 60)) "$B_BUILD/bin/engine_bench" --benchmark_filter="^$name(/|\$)" \
    --benchmark_min_time="$B_SECS" --benchmark_format=json 2>&1)
  rc=$?
  printf '%s\n' "$out" >>"$B_RAWF"
  vals=$("$B_PY" "$B_REPORT" gbench engine <<<"$out" 2>&1)
  if ((rc != 0)) || [[ -z $vals || $vals == *rror* ]]; then
    B_ERR="engine_bench (exit $rc): $(tail -n 2 <<<"$vals" | tr '\n' ' ')"
    return 1
  fi
  while read -r k v; do b_m "$k" "$v"; done <<<"$vals"
}
wl_engine_teardown() { :; }

# ---- passthrough: calls libshunt.so passes to libc, with and without it ---------------
# shunt = under `shunt run` on the main daemon, a shunted listener held (attached);
# kernel = the same binary without libshunt.so. Each run times every call through the
# linked symbol and through libc's own function, interleaved (passthrough_bench.cc).
# Pinned to the server CPU.
wl_passthrough_need() { [[ -x $B_BUILD/bin/passthrough_bench ]] || echo "$B_BUILD/bin/passthrough_bench not built (SHUNT_BUILD_BENCH=ON)"; }
wl_passthrough_cases() { echo calls; }
wl_passthrough_head() { echo "extra_ns_read_devzero ns(read: wrapper-libc)"; }
wl_passthrough_setup() { :; }
wl_passthrough_trial() {
  local stack=$2 out rc vals k v min
  # 9 calls x 2 ways x 15 repetitions in about B_SECS.
  min=$(awk -v s="$B_SECS" 'BEGIN { printf "%.4f", s / 270 }')
  local -a pre=(taskset -c "$B_SERVER_CPU" ip netns exec "$B_NS_S")
  if [[ $stack == shunt ]]; then
    pre+=(env SHUNT_RUNDIR="$B_RUNDIR" BENCH_ATTACH_IP="$B_IP_SHUNT" "$B_SHUNT" run --)
  fi
  out=$(timeout $((B_SECS * 4 + 60)) "${pre[@]}" "$B_BUILD/bin/passthrough_bench" --benchmark_min_time="$min" \
    --benchmark_repetitions=15 --benchmark_enable_random_interleaving=true --benchmark_format=json 2>&1)
  rc=$?
  printf '%s\n' "$out" >>"$B_RAWF"
  vals=$("$B_PY" "$B_REPORT" gbench passthrough <<<"$out" 2>&1)
  if ((rc != 0)) || [[ -z $vals || $vals == *rror* ]]; then
    B_ERR="passthrough_bench (exit $rc): $(tail -n 2 <<<"$vals" | tr '\n' ' ')"
    return 1
  fi
  if [[ $stack == shunt ]] && ! grep -q '"attach": "bound"' <<<"$out"; then
    B_ERR="passthrough_bench under shunt was not attached: $(grep '"attach"' <<<"$out")"
    return 1
  fi
  while read -r k v; do b_m "$k" "$v"; done <<<"$vals"
}
wl_passthrough_teardown() { :; }
