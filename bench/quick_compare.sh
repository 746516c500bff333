#!/usr/bin/env bash
# Quick single-core comparison: Switchyard node vs nginx as a keep-alive reverse proxy,
# both in front of the same nginx backend serving a 128-byte file.
#   wrk pinned to CPU 0, the proxy under test pinned to CPU 1, backend on CPU 0.
# Usage: bench/quick_compare.sh [duration=10s] [connections=64]
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-10s}
CONNS=${2:-64}
PY=${PY:-.venv/bin/python}
BACKEND_PORT=${BACKEND_PORT:-18481}
NGINX_PROXY_PORT=${NGINX_PROXY_PORT:-18482}
NODE_PORT=${NODE_PORT:-18483}
ADMIN_PORT=${ADMIN_PORT:-18484}
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT

head -c 128 /dev/zero | tr '\0' 'x' > "$TMP/index.html"
mkdir -p "$TMP/logs"

nginx_conf() {  # $1 = server block body
  cat <<CONF
worker_processes 1;
master_process off;
daemon off;
error_log $TMP/logs/error.log warn;
pid $TMP/nginx-\$RANDOM.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $TMP/body; proxy_temp_path $TMP/proxy;
  fastcgi_temp_path $TMP/fcgi; uwsgi_temp_path $TMP/uwsgi; scgi_temp_path $TMP/scgi;
  keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 128; }
  $1
}
CONF
}

nginx_conf "server { listen 127.0.0.1:$BACKEND_PORT; root $TMP; location / { try_files /index.html =404; } }" \
  | sed "s/\$RANDOM/backend/" > "$TMP/backend.conf"
nginx_conf "server { listen 127.0.0.1:$NGINX_PROXY_PORT; location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }" \
  | sed "s/\$RANDOM/proxy/" > "$TMP/proxy.conf"

cat > "$TMP/snapshot.json" <<JSON
{"schema": 1,
 "pools": [{"id": 1, "name": "bench", "tenant": null,
            "targets": [{"id": 1, "host": "127.0.0.1", "port": $BACKEND_PORT}]}],
 "routes": [{"id": 1, "name": "bench", "tenant": null, "hosts": ["bench.localhost", "127.0.0.1"],
             "pool": 1}]}
JSON

wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

taskset -c 0 /usr/sbin/nginx -c "$TMP/backend.conf" -p "$TMP" & PIDS+=($!)
taskset -c 1 /usr/sbin/nginx -c "$TMP/proxy.conf" -p "$TMP" & PIDS+=($!); NGINX_PID=$!
taskset -c 1 "$PY" -m dataplane --snapshot "$TMP/snapshot.json" --http 127.0.0.1:$NODE_PORT \
  --admin 127.0.0.1:$ADMIN_PORT --access-log "${ACCESS_LOG:-$TMP/access.log}" --name bench \
  2> "$TMP/node.err" & PIDS+=($!); NODE_PID=$!
wait_port $BACKEND_PORT; wait_port $NGINX_PROXY_PORT; wait_port $NODE_PORT

cpu_ticks() { [ -n "${1:-}" ] && awk '{print $14 + $15}' "/proc/$1/stat" || echo 0; }
run() {  # $1 label, $2 port, $3 pid of the process under test (CPU per request)
  taskset -c 0 wrk -t1 -c"$CONNS" -d2s -H 'Host: bench.localhost' "http://127.0.0.1:$2/" >/dev/null  # warm-up
  local t0; t0=$(cpu_ticks "${3:-}")
  local out; out=$(taskset -c 0 wrk -t1 -c"$CONNS" -d"$DUR" --latency -H 'Host: bench.localhost' "http://127.0.0.1:$2/")
  local t1; t1=$(cpu_ticks "${3:-}")
  local n; n=$(awk '/requests in/ {print $1}' <<<"$out")
  local us; us=$(awk -v d=$((t1 - t0)) -v n="$n" -v hz="$(getconf CLK_TCK)" 'BEGIN { if (d > 0) printf "%.1f us CPU/req", d / hz / n * 1e6 }')
  local rps; rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  local p50 p99; p50=$(awk '$1=="50%" {print $2}' <<<"$out"); p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  local errs; errs=$(grep -E 'Non-2xx|Socket errors' <<<"$out" || true)
  printf '%-12s %10s req/s   p50 %-8s p99 %-8s %s %s\n' "$1" "$rps" "$p50" "$p99" "$us" "$errs" >&2
  echo "$rps"
}
echo "wrk -t1 -c$CONNS -d$DUR, 128-byte response, keep-alive" >&2
BACKEND=$(run backend $BACKEND_PORT)
NGINX=$(run nginx $NGINX_PROXY_PORT $NGINX_PID)
NODE=$(run switchyard $NODE_PORT $NODE_PID)
awk -v n="$NODE" -v g="$NGINX" 'BEGIN { printf "switchyard/nginx = %.2f\n", n / g }' >&2
