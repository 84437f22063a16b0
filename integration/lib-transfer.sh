# shellcheck shell=bash
# shellcheck disable=SC2154,SC2034  # it_*, IT_* come from lib.sh; TR_* are for the caller
# Helpers for the bulk-transfer and capture tests (source after lib.sh).
#
#   tr_site DIR ADDR             nginx site (lib-nginx.sh) that also takes PUT into DIR/www/up/
#   tr_nft_loss NETNS PERCENT    drops PERCENT % of TCP input in NETNS (nftables)
#   tr_get  WHAT MAXTIME URL OUT CMD...   curl -o OUT URL, run as CMD... curl ...
#   tr_put  WHAT MAXTIME URL FILE CMD...  curl -T FILE URL
#   tr_counter NAME STAT_TEXT    a counter's value from `shunt stat` output
#
# tr_get/tr_put print one line "WHAT: N bytes in T s (R MB/s)" and set TR_BYTES,
# TR_SECONDS, TR_RATE and TR_RC (curl's exit status; 28 = it hit MAXTIME).

tr_site() {
  local dir=${1:?} addr=${2:?}
  nginx_site "$dir" "$addr" 80
  mkdir -p "$dir/www/up"
  local user=www-data
  id -u "$user" >/dev/null 2>&1 || user=nobody
  chown "$user" "$dir/www/up"
  # PUT (WebDAV) writes the body to www/up/NAME; the answer is 201 Created.
  sed -i "s|location / { }|location / { }\n    location /up/ { dav_methods PUT; client_max_body_size 256m; client_body_buffer_size 1m; }|" \
    "$dir/nginx.conf"
  grep -q dav_methods "$dir/nginx.conf"
}

tr_nft_loss() {
  local ns=${1:?} pct=${2:?}
  ip netns exec "$ns" nft add table inet f &&
    ip netns exec "$ns" nft add chain inet f in '{ type filter hook input priority 0; }' &&
    ip netns exec "$ns" nft add rule inet f in meta l4proto tcp numgen random mod 100 '<' "$pct" counter drop
}

# The number of packets the loss rule dropped so far.
tr_nft_dropped() {
  ip netns exec "${1:?}" nft list chain inet f in 2>/dev/null |
    sed -n 's/.*counter packets \([0-9]*\) bytes.*drop.*/\1/p' | head -n 1
}

_tr_report() {
  local what=$1 bytes=$2 start=$3 end=$4
  TR_BYTES=$bytes
  TR_SECONDS=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", (e - s) / 1e9 }')
  TR_RATE=$(awk -v b="$bytes" -v s="$start" -v e="$end" 'BEGIN { d = (e - s) / 1e9; printf "%.1f", (d > 0 ? b / d / 1e6 : 0) }')
  it_log "$what: $bytes bytes in $TR_SECONDS s ($TR_RATE MB/s), curl exit $TR_RC"
}

# A transfer still running 5 s before its limit has stalled (they take seconds):
# print both stacks' view of its connection while it is still there.
_tr_watch() {
  local after=$(($1 > 10 ? $1 - 5 : $1)) nap
  # wait, unlike a foreground sleep, returns at once when the caller's TERM comes.
  sleep "$after" &
  nap=$!
  trap 'kill "$nap" 2>/dev/null; exit 0' TERM
  wait "$nap"
  echo "---- transfer still running after $after s: shunt ss -a -i"
  timeout 10 "$IT_SHUNT" ss -a -i 2>&1 | head -n 40
  echo "---- kernel side: ss -tani"
  [[ -n ${NETNS_KERNEL:-} ]] && ip netns exec "$NETNS_KERNEL" ss -tani 2>&1 | head -n 40
}

_tr_curl() {
  _tr_watch "$1" >&2 &
  local watcher=$! out rc
  shift
  out=$("$@")
  rc=$?
  kill "$watcher" 2>/dev/null
  wait "$watcher" 2>/dev/null
  printf '%s' "$out"
  return $rc
}

# Bytes moved come from curl itself (-w), so a transfer cut short reports what it did.
tr_get() {
  local what=$1 max=$2 url=$3 out=$4 start end bytes
  shift 4
  start=$(date +%s%N)
  bytes=$(_tr_curl "$max" "$@" curl -sS --fail --max-time "$max" -o "$out" -w '%{size_download}' "$url")
  TR_RC=$?
  end=$(date +%s%N)
  _tr_report "$what" "${bytes:-0}" "$start" "$end"
}

tr_put() {
  local what=$1 max=$2 url=$3 file=$4 start end bytes
  shift 4
  start=$(date +%s%N)
  bytes=$(_tr_curl "$max" "$@" curl -sS --fail --max-time "$max" -o /dev/null -w '%{size_upload}' -T "$file" "$url")
  TR_RC=$?
  end=$(date +%s%N)
  _tr_report "$what" "${bytes:-0}" "$start" "$end"
}

tr_counter() { awk -v k="$1" '$1 == k { print $2; exit }' <<<"$2"; }

tr_sha() { sha256sum <"$1" | cut -d' ' -f1; }
