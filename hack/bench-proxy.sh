#!/usr/bin/env bash
# Throughput and latency of Portico's proxy against nginx and HAProxy on this machine, in one
# run: the same route (Host bench.example.com, Prefix /) to the same backend (a static nginx on
# 127.0.0.1:18000, its own process, so that no proxy shares a process with it),
# keep-alive, wrk with the same threads and connections, the proxies on the
# same cores (GOMAXPROCS, worker_processes and nbthread all set to the core count). Then HTTPS
# keep-alive and small uploads (POST, 1 KiB body) against the peers, and TLS handshakes per
# second (a new connection per request) against nginx. Everything on loopback.
#
#   hack/bench-proxy.sh            DURATION=10 ROUNDS=3 CONNECTIONS=64 POST_BYTES=1024 by default
#
# This machine's neighbours make single runs vary by +-20%: each round runs the three proxies
# back to back (in a rotated order), and the table shows medians.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
POST_BYTES=${POST_BYTES:-1024}
CORES=$(nproc)
for tool in wrk nginx haproxy openssl; do
  if ! command -v "$tool" >/dev/null; then
    echo "bench-proxy: installing wrk nginx-light haproxy openssl (Debian packages)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light haproxy openssl >/dev/null
    break
  fi
done

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=bench.example.com \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

cat >"$work/backend.conf" <<NGINX
worker_processes $CORES;
pid $work/backend.pid;
error_log $work/backend-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server_tokens off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:18000; location / { return 200 "ok\n"; } }
}
NGINX
cat >"$work/nginx.conf" <<NGINX
worker_processes $CORES;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  server_tokens off;
  upstream backend { server 127.0.0.1:18000; keepalive 128; }
  client_body_buffer_size 128k; # upload bodies in memory, as portico's loops hold them (up to 64 KiB)
  server {
    listen 127.0.0.1:18081;
    listen 127.0.0.1:18444 ssl;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    ssl_session_cache off;
    ssl_session_tickets off;
    server_name bench.example.com;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
    }
  }
}
NGINX
cat >"$work/haproxy.cfg" <<HAPROXY
global
  nbthread $CORES
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option forwardfor
  http-reuse always
frontend fe
  bind 127.0.0.1:18082
  acl bench hdr(host) -i bench.example.com
  use_backend be if bench
backend be
  server s1 127.0.0.1:18000
HAPROXY

nginx -c "$work/backend.conf" -g 'daemon off;' & pids+=($!)
nginx -c "$work/nginx.conf" -g 'daemon off;' & pids+=($!); nginx_pid=$!
haproxy -f "$work/haproxy.cfg" & pids+=($!); haproxy_pid=$!
(cd "$root" && go build -o "$work/staticproxy" ./test/bench/staticproxy)
GOMAXPROCS=$CORES "$work/staticproxy" & pids+=($!); portico_pid=$!
for port in 18000 18081 18082 18083 18443 18444; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done

cpu() { # clock ticks used so far by the given processes
  local t=0 p
  for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done
  echo "$t"
}
run() { # name url pids... -- [extra wrk args]: prints name rps p50 p99 cpu-us-per-request errors
  local name=$1 url=$2; shift 2
  local pids=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do pids+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  local c0 c1
  c0=$(cpu "${pids[@]}")
  wrk -t"$CORES" -c"$CONNECTIONS" -d"${DURATION}s" --latency -H "Host: bench.example.com" "$@" "$url" >"$work/$name.txt" 2>&1 || true
  c1=$(cpu "${pids[@]}")
  local rps p50 p99 errs
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/$name.txt")
  p50=$(awk '$1=="50%" {print $2}' "$work/$name.txt")
  p99=$(awk '$1=="99%" {print $2}' "$work/$name.txt")
  errs=$(awk '/Non-2xx|Socket errors/ {print}' "$work/$name.txt" | tr '\n' ' ' | tr -s ' ' '_')
  local us
  us=$(awk -v c=$((c1 - c0)) -v r="$rps" -v d="$DURATION" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", (r > 0) ? c * 1e6 / hz / (r * d) : 0 }')
  echo "$name $rps $(ms "$p50") $(ms "$p99") $us ${errs:-none}"
}
ms() { # wrk latency (e.g. 512.00us, 1.20ms, 2.00s) -> milliseconds
  awk -v v="$1" 'BEGIN { n=v+0; if (v ~ /us$/) n/=1000; else if (v ~ /ms$/) n=n; else if (v ~ /s$/) n*=1000; printf "%.3f", n }'
}
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "# bench-proxy: $(nproc) cores, $(awk '/model name/ {$1=$2=$3=""; print; exit}' /proc/cpuinfo | sed 's/^ *//'), ${DURATION}s per run, $ROUNDS rounds (order rotated each round), $CONNECTIONS keep-alive connections, wrk -t$CORES"
echo "# backend: nginx static 200 on 127.0.0.1:18000 (its own process); the proxies, the backend and wrk share the machine's cores"
echo "# figures are the median of the rounds; cpu us/req is the proxy's own CPU time (user+system) per request"
warm() { wrk -t1 -c8 -d2s -H "Host: bench.example.com" "$1" >/dev/null 2>&1 || true; }
nginx_pids=("$nginx_pid" $(pgrep -P "$nginx_pid"))
specs=("portico http://127.0.0.1:18083/ $portico_pid" "nginx http://127.0.0.1:18081/ ${nginx_pids[*]}" "haproxy http://127.0.0.1:18082/ $haproxy_pid")
for spec in "${specs[@]}"; do set -- $spec; warm "$2"; done
: >"$work/rounds"
for round in $(seq "$ROUNDS"); do
  for i in 0 1 2; do
    set -- ${specs[$(((i + round - 1) % 3))]}
    name=$1 url=$2; shift 2
    r=$(run "$name" "$url" "$@" --)
    echo "round $round: $r" >&2
    echo "$r" >>"$work/rounds"
  done
done
printf '\n%-10s %12s %10s %10s %12s  %s\n' proxy "requests/s" "p50 ms" "p99 ms" "cpu us/req" errors
declare -A RPS P99
for name in portico nginx haproxy; do
  col() { awk -v n="$name" -v c="$1" '$1 == n { print $c }' "$work/rounds" | median; }
  RPS[$name]=$(col 2) P99[$name]=$(col 4)
  errs=$(awk -v n="$name" '$1 == n && $6 != "none" { print $6 }' "$work/rounds" | tr '\n' ' ')
  printf '%-10s %12.0f %10.3f %10.3f %12.1f  %s\n' "$name" "${RPS[$name]}" "$(col 3)" "${P99[$name]}" "$(col 5)" "${errs:-none}"
done
for name in nginx haproxy; do
  awk -v n="$name" -v pr="${RPS[portico]}" -v r="${RPS[$name]}" -v pp="${P99[portico]}" -v p="${P99[$name]}" \
    'BEGIN { printf "portico / %-8s throughput %.2fx, p99 %.2fx (lower is better)\n", n, pr/r, pp/p }'
done

echo
echo "# HTTPS keep-alive (TLS 1.3, HTTP/1.1), one run each"
hp=$(run portico-https https://127.0.0.1:18443/ "$portico_pid" --)
hn=$(run nginx-https https://127.0.0.1:18444/ "${nginx_pids[@]}" --)
printf '%-10s %12s %10s %10s %12s  %s\n' proxy "requests/s" "p50 ms" "p99 ms" "cpu us/req" errors
for r in "$hp" "$hn"; do set -- $r; printf '%-10s %12.0f %10.3f %10.3f %12.1f  %s\n' "${1%-https}" "$2" "$3" "$4" "$5" "$6"; done
set -- $hp; a=$2; set -- $hn
awk -v a="$a" -v b="$2" 'BEGIN { printf "portico / nginx HTTPS throughput %.2fx\n", a/b }'

echo
echo "# uploads: POST with a $POST_BYTES-byte body, keep-alive, one run each"
printf 'wrk.method = "POST"\nwrk.body = string.rep("x", %d)\nwrk.headers["Content-Type"] = "application/octet-stream"\n' "$POST_BYTES" >"$work/post.lua"
pp=$(run portico-post http://127.0.0.1:18083/ "$portico_pid" -- -s "$work/post.lua")
pn=$(run nginx-post http://127.0.0.1:18081/ "${nginx_pids[@]}" -- -s "$work/post.lua")
ph=$(run haproxy-post http://127.0.0.1:18082/ "$haproxy_pid" -- -s "$work/post.lua")
printf '%-10s %12s %10s %10s %12s  %s\n' proxy "requests/s" "p50 ms" "p99 ms" "cpu us/req" errors
for r in "$pp" "$pn" "$ph"; do set -- $r; printf '%-10s %12.0f %10.3f %10.3f %12.1f  %s\n' "${1%-post}" "$2" "$3" "$4" "$5" "$6"; done
set -- $pp; a=$2 ap=$4
for r in "$pn" "$ph"; do
  set -- $r
  awk -v n="${1%-post}" -v a="$a" -v b="$2" -v ap="$ap" -v bp="$4" 'BEGIN { printf "portico / %-8s POST throughput %.2fx, p99 %.2fx\n", n, a/b, ap/bp }'
done

echo
echo "# TLS handshakes per second: a new connection and full handshake per request (no session reuse)"
tp=$(run portico-tls https://127.0.0.1:18443/ "$portico_pid" -- -H "Connection: close")
tn=$(run nginx-tls https://127.0.0.1:18444/ "${nginx_pids[@]}" -- -H "Connection: close")
set -- $tp; ptls=$2
set -- $tn; ntls=$2
printf '%-10s %12s handshakes/s\n%-10s %12s handshakes/s\n' portico "$ptls" nginx "$ntls"
awk -v a="$ptls" -v b="$ntls" 'BEGIN { printf "portico / nginx TLS handshakes %.2fx\n", a/b }'
