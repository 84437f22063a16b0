# shellcheck shell=bash
# A throwaway nginx site for the demo and the integration tests: stock nginx, its
# default process model (a master and one worker, workers as www-data), everything
# in one directory.
#
#   source scripts/lib-nginx.sh
#   nginx_site DIR ADDR [PORT]   # writes DIR/nginx.conf and DIR/www/index.html
#   nginx -p DIR -c DIR/nginx.conf -e DIR/error.log &   (daemon off: the pid is nginx's)
#   nginx_wait_up URL NETNS PID  # polls URL from NETNS until it answers (30 s at most)
#   nginx_stop DIR               # graceful QUIT, then KILL after 10 s

nginx_site() {
  local dir=${1:?nginx_site DIR ADDR [PORT]} addr=${2:?} port=${3:-80} user=www-data
  id -u "$user" >/dev/null 2>&1 || user=nobody
  mkdir -p "$dir/www"
  chmod 755 "$dir" "$dir/www"   # workers run as $user
  echo "<html><body><h1>shunt: nginx over a user-space TCP stack</h1></body></html>" >"$dir/www/index.html"
  chmod 644 "$dir/www/index.html"
  cat >"$dir/nginx.conf" <<CONF
daemon off;
master_process on;
worker_processes 1;
user $user;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 65;
  default_type application/octet-stream;
  client_body_temp_path $dir/tmp-body;
  proxy_temp_path $dir/tmp-proxy;
  fastcgi_temp_path $dir/tmp-fastcgi;
  uwsgi_temp_path $dir/tmp-uwsgi;
  scgi_temp_path $dir/tmp-scgi;
  server {
    listen $addr:$port;
    root $dir/www;
    location / { }
  }
}
CONF
}

# Waits until URL answers from namespace NETNS ("" = here) while PID lives.
nginx_wait_up() {
  local url=${1:?} ns=${2:-} pid=${3:-} i
  local -a exec_in=()
  [[ -n $ns ]] && exec_in=(ip netns exec "$ns")
  for ((i = 0; i < 60; i++)); do
    if "${exec_in[@]}" curl -s -o /dev/null --max-time 2 "$url"; then
      return 0
    fi
    if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
      echo "nginx (pid $pid) exited before answering on $url" >&2
      return 1
    fi
    sleep 0.5
  done
  echo "nothing answered on $url within 30 s" >&2
  return 1
}

nginx_stop() {
  local dir=${1:?} pid i
  [[ -s $dir/nginx.pid ]] || return 0
  pid=$(<"$dir/nginx.pid")
  kill -QUIT "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}
