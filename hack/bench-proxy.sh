#!/usr/bin/env bash
# Throughput and latency of Portico's proxy against nginx and HAProxy on this machine, in one
# run: the same route (Host bench.example.com, Prefix /) to the same backend (a static nginx on
# 127.0.0.1:18000, its own process, so that no proxy shares a process with it), wrk with the
# same threads and connections, the proxies on the same cores (GOMAXPROCS, worker_processes and
# nbthread all set to the core count; portico, as `portico proxy` does, runs one event loop per
# core and gives the Go runtime one P more, --spare-procs in docs/data-plane.md). Everything on
# loopback, every load run bounded by DURATION. Sections (SECTIONS, default all, in this order):
#
#   h2idle      memory per idle HTTP/2 connection: IDLE_CONNS (1000) TLS h2 connections, one request
#               each, then idle; the growth of each proxy's resident memory (all its processes);
#               run first, before any load
#   keepalive   cleartext keep-alive, CONNECTIONS connections
#   policy      as keepalive, on a route with a rewrite (/policy/(.*) to /$1) and request and
#               response header modifiers, on each proxy (nginx rewrite, proxy_set_header,
#               add_header; HAProxy set-path, set-header); also printed against portico's plain
#               keepalive row of the same run (target: within 5%)
#   access      as keepalive, on a route under basic auth (user bench, {SHA}; HAProxy: an
#               insecure-password userlist) and a per-client rate limit the load does not reach
#               (1,000,000 r/s; nginx limit_req, HAProxy a stick table); also printed against
#               portico's plain keepalive row of the same run (target: within 10%)
#   https       HTTPS keep-alive (TLS 1.3, HTTP/1.1 by ALPN)
#   upload      POST with a POST_BYTES-byte body, keep-alive
#   tls         TLS handshakes per second: a new connection and full handshake per request
#   close       cleartext, a new connection per request (Connection: close)
#   upload128k  POST with a 131072-byte body, keep-alive
#   c1000       cleartext keep-alive with C1000 (1000) connections
#   h2          HTTP/2 over TLS (h2load): 16 connections x 10 streams
#   h2x100      HTTP/2 over TLS (h2load): 64 connections x 100 streams
#   grpc        gRPC unary calls over TLS (test/bench/grpcbench: 16 connections, 160 calls in flight)
#               to a Go gRPC backend (h2c); nginx by grpc_pass, HAProxy by an h2 server line
#   grpcstream  gRPC server-streaming calls (10 messages each), as grpc
#   tcpbulk     a TCP service (spec.tcp; nginx stream, HAProxy mode tcp): one connection reading
#               from the backend for DURATION, MB/s (test/bench/tcpbench)
#   tcpconn     a TCP service: new connections per second (connect, 2 bytes, close), 16 at once
#
# Each section runs the three proxies back to back, ROUNDS times (the order rotated each round),
# and prints medians and the ratios portico/nginx and portico/haproxy; a summary of all sections
# comes last.
#
#   hack/bench-proxy.sh            DURATION=10 ROUNDS=3 CONNECTIONS=64 POST_BYTES=1024 by default
#   SECTIONS="close c1000" DURATION=5 ROUNDS=1 hack/bench-proxy.sh     rerun two rows quickly
#   RAW=/tmp/wrk-out hack/bench-proxy.sh                               keep wrk's own outputs
#   PORTICO_ARGS=-spare-procs=0 hack/bench-proxy.sh                     staticproxy with a flag set
#
# This machine's neighbours make single runs vary by +-20%, hence the rounds and medians.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
POST_BYTES=${POST_BYTES:-1024}
C1000=${C1000:-1000}
IDLE_CONNS=${IDLE_CONNS:-1000}
ALL_SECTIONS="h2idle keepalive policy access https upload tls close upload128k c1000 h2 h2x100 grpc grpcstream tcpbulk tcpconn"
SECTIONS=${SECTIONS:-$ALL_SECTIONS}
RAW=${RAW:-}
CORES=$(nproc)
for s in $SECTIONS; do
  case " $ALL_SECTIONS " in *" $s "*) ;; *) echo "bench-proxy: unknown section $s (sections: $ALL_SECTIONS)" >&2; exit 2 ;; esac
done
want() { case " $SECTIONS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
stream_module=/usr/lib/nginx/modules/ngx_stream_module.so
for tool in wrk nginx haproxy openssl h2load $stream_module; do
  if ! command -v "$tool" >/dev/null && [ ! -e "$tool" ]; then
    echo "bench-proxy: installing wrk nginx-light libnginx-mod-stream haproxy openssl nghttp2-client (Debian packages)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light libnginx-mod-stream haproxy openssl nghttp2-client >/dev/null
    break
  fi
done
# 1,000 connections through a proxy are 2,000+ descriptors in one process (client and upstream
# sides), and wrk holds 1,000 more: 65536 if the hard limit allows, else the hard limit (a
# container may not let root raise it). nginx's workers get the same (worker_rlimit_nofile).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "$RAW" ]; then mkdir -p "$RAW" && cp "$work"/*.txt "$work"/*.conf "$work"/*.cfg "$work"/*.log "$RAW"/ 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=bench.example.com \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cat "$work/cert.pem" "$work/key.pem" >"$work/haproxy.pem"
echo 'bench:{SHA}5cicUp3MubQnFvTZEY1hB5yIPZ4=' >"$work/htpasswd" # the access row's user: bench, password bench
chmod 0755 "$work" && chmod 0644 "$work/htpasswd" # nginx's workers read it per request, not as root

cat >"$work/backend.conf" <<NGINX
worker_processes $CORES;
worker_rlimit_nofile $NOFILE;
pid $work/backend.pid;
error_log $work/backend-error.log;
events { worker_connections 8192; }
http {
  access_log off;
  server_tokens off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:18000 backlog=4096; location / { return 200 "ok\n"; } }
}
NGINX
# keepalive_requests: nginx closes a client connection after 1,000 requests by default (and an
# upstream one too, since 1.19.10); portico and HAProxy set no such limit, so neither does this.
# backlog=4096: as Go's listeners (somaxconn) and HAProxy's (its maxconn).
cat >"$work/nginx.conf" <<NGINX
load_module $stream_module;
worker_processes $CORES;
worker_rlimit_nofile $NOFILE;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 8192; }
http {
  access_log off;
  server_tokens off;
  keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:18000; keepalive 128; keepalive_requests 1000000; }
  client_body_buffer_size 128k; # upload bodies in memory, as portico's loops hold them (up to 64 KiB)
  server {
    listen 127.0.0.1:18081 backlog=4096;
    listen 127.0.0.1:18444 ssl http2 backlog=4096; # wrk offers no ALPN: HTTP/1.1; h2load: h2
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3; # 1.22's default stops at TLSv1.2; portico and HAProxy offer 1.3
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
  upstream grpcbackend { server 127.0.0.1:18010; keepalive 128; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:18444 ssl http2;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    server_name grpc.bench.example.com;
    location / { grpc_pass grpc://grpcbackend; }
  }
  server {
    listen 127.0.0.1:18081;
    server_name policy.bench.example.com;
    location /policy/ {
      rewrite ^/policy/(.*)\$ /\$1 break;
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Bench policy;
      add_header X-Served-By proxy;
    }
  }
  limit_req_zone \$binary_remote_addr zone=bench:10m rate=1000000r/s;
  server {
    listen 127.0.0.1:18081;
    server_name access.bench.example.com;
    location / {
      auth_basic bench;
      auth_basic_user_file $work/htpasswd;
      limit_req zone=bench burst=5000000 nodelay;
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header Authorization "";
    }
  }
}
stream {
  upstream tcpbackend { server 127.0.0.1:18020; }
  server { listen 127.0.0.1:18094 backlog=4096; proxy_pass tcpbackend; proxy_half_close on; }
}
NGINX
# HAProxy has no per-connection request limit (nothing like keepalive_requests) on either side;
# maxconn is set in defaults too, so that the frontend's own limit is the global one whatever
# this version's default for it. TLS as nginx's: no session cache, no tickets, h2 and HTTP/1.1 by
# ALPN.
cat >"$work/haproxy.cfg" <<HAPROXY
global
  nbthread $CORES
  maxconn 8192
  maxpipes 1024 # splice pipes (the TCP rows): the default, maxconn/4, needs more descriptors than this machine allows
  tune.ssl.cachesize 0
  ssl-default-bind-options no-tls-tickets
userlist benchusers
  user bench insecure-password bench
defaults
  mode http
  maxconn 8192
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option forwardfor
  http-reuse always
frontend fe
  bind 127.0.0.1:18082
  bind 127.0.0.1:18445 ssl crt $work/haproxy.pem alpn h2,http/1.1
  acl bench hdr(host) -i bench.example.com
  acl grpc hdr(host) -i grpc.bench.example.com
  acl policy hdr(host) -i policy.bench.example.com
  acl access hdr(host) -i access.bench.example.com
  use_backend be if bench
  use_backend be_grpc if grpc
  use_backend be_policy if policy
  use_backend be_access if access
backend be
  server s1 127.0.0.1:18000
frontend fe_tcp
  mode tcp
  bind 127.0.0.1:18095
  default_backend be_tcp
backend be_tcp
  mode tcp
  option splice-auto
  server t1 127.0.0.1:18020
backend be_access
  stick-table type ip size 100k expire 30s store http_req_rate(1s)
  http-request track-sc0 src
  http-request deny deny_status 429 if { sc_http_req_rate(0) gt 1000000 }
  http-request auth realm bench unless { http_auth(benchusers) }
  http-request del-header Authorization
  server s1 127.0.0.1:18000
backend be_policy
  http-request set-path %[path,regsub(^/policy/,/)]
  http-request set-header X-Bench policy
  http-response set-header X-Served-By proxy
  server s1 127.0.0.1:18000
backend be_grpc
  server g1 127.0.0.1:18010 proto h2
HAPROXY

nginx -c "$work/backend.conf" -g 'daemon off;' & pids+=($!)
nginx -c "$work/nginx.conf" -g 'daemon off;' & pids+=($!); nginx_pid=$!
haproxy -f "$work/haproxy.cfg" & pids+=($!); haproxy_pid=$!
(cd "$root" && go build -o "$work/staticproxy" ./test/bench/staticproxy && go build -o "$work/grpcbench" ./test/bench/grpcbench &&
  go build -o "$work/idleconns" ./test/bench/idleconns && go build -o "$work/tcpbench" ./test/bench/tcpbench)
"$work/grpcbench" -serve 127.0.0.1:18010 & pids+=($!)
"$work/tcpbench" -serve 127.0.0.1:18020 & pids+=($!)
GOMAXPROCS=$CORES "$work/staticproxy" ${PORTICO_ARGS:-} & pids+=($!); portico_pid=$!
for port in 18000 18010 18020 18081 18082 18083 18093 18094 18095 18443 18444 18445; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done

cpu() { # clock ticks used so far by the given processes
  local t=0 p
  for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done
  echo "$t"
}
conns=$CONNECTIONS tag=run
run() { # name url pids... -- [extra wrk args]: prints name rps p50 p99 cpu-us-per-request errors
  local name=$1 url=$2; shift 2
  local pids=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do pids+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  local c0 c1 out="$work/$tag-$name.txt"
  c0=$(cpu "${pids[@]}")
  wrk -t"$CORES" -c"$conns" -d"${DURATION}s" --latency -H "Host: ${BENCH_HOST:-bench.example.com}" "$@" "$url" >"$out" 2>&1 || true
  c1=$(cpu "${pids[@]}")
  local rps p50 p99 errs
  rps=$(awk '/Requests\/sec/ {print $2}' "$out")
  p50=$(awk '$1=="50%" {print $2}' "$out")
  p99=$(awk '$1=="99%" {print $2}' "$out")
  errs=$(awk '/Non-2xx|Socket errors/ {print}' "$out" | tr '\n' ' ' | tr -s ' ' '_')
  local us
  us=$(awk -v c=$((c1 - c0)) -v r="${rps:-0}" -v d="$DURATION" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", (r > 0) ? c * 1e6 / hz / (r * d) : 0 }')
  echo "$name ${rps:-0} $(ms "${p50:-0}") $(ms "${p99:-0}") $us ${errs:-none}"
}
h2run() { # as run, with h2load: name url pids... -- [h2load args]; p50 and p99 from its per-request log
  local name=$1 url=$2; shift 2
  local pids=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do pids+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  local c0 c1 out="$work/$tag-$name.txt" log="$work/$tag-$name.log"
  c0=$(cpu "${pids[@]}")
  h2load -t"$CORES" -D "$DURATION" --log-file="$log" "$@" "$url" >"$out" 2>&1 || true
  c1=$(cpu "${pids[@]}")
  local rps p50 p99 errs us
  rps=$(awk '/^finished in/ {print $4}' "$out")
  read -r p50 p99 < <(awk '{print $3}' "$log" | sort -n | awk '{v[NR]=$1} END {if (NR) printf "%.3f %.3f\n", v[int(NR*0.5)+1]/1000, v[int(NR*0.99)+1]/1000; else print "0 0"}')
  errs=$(awk '/^requests:/ && ($10+0 > 0 || $12+0 > 0 || $14+0 > 0) {printf "failed_%d_errored_%d_timeout_%d ", $10, $12, $14} /^status codes:/ && ($5+0 + $7+0 + $9+0 > 0) {printf "non2xx_%d ", $5 + $7 + $9}' "$out" | tr -s ' ' '_')
  us=$(awk -v c=$((c1 - c0)) -v r="${rps:-0}" -v d="$DURATION" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", (r > 0) ? c * 1e6 / hz / (r * d) : 0 }')
  echo "$name ${rps:-0} $p50 $p99 $us ${errs:-none}"
}
grpcrun() { # as run, with grpcbench: name address pids... -- [grpcbench args]
  local name=$1 addr=${2#https://}; shift 2
  addr=${addr%/}
  local pids=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do pids+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  local c0 c1 out="$work/$tag-$name.txt"
  c0=$(cpu "${pids[@]}")
  "$work/grpcbench" -target "$addr" -tls -authority grpc.bench.example.com -duration "${DURATION}s" "$@" >"$out" 2>&1 || true
  c1=$(cpu "${pids[@]}")
  local rps p50 p99 fails us
  read -r fails rps p50 p99 < <(awk '/^calls/ {print $4, $6, $8, $10}' "$out")
  us=$(awk -v c=$((c1 - c0)) -v r="${rps:-0}" -v d="$DURATION" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", (r > 0) ? c * 1e6 / hz / (r * d) : 0 }')
  local errs=none
  [ "${fails:-0}" = 0 ] || errs="failed_$fails"
  echo "$name ${rps:-0} ${p50:-0} ${p99:-0} $us $errs"
}
tcprun() { # as run, with tcpbench: name address pids... -- (bulk|conns): MB/s or connections/s
  local name=$1 addr=$2; shift 2
  local pids=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do pids+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  local c0 c1 out="$work/$tag-$name.txt" rate p50=0 p99=0 errs
  c0=$(cpu "${pids[@]}")
  if [ "$1" = bulk ]; then
    "$work/tcpbench" -bulk "$addr" -duration "${DURATION}s" >"$out" 2>&1 || true
    read -r rate errs < <(awk '/^mbps/ {print $2, $4}' "$out")
  else
    "$work/tcpbench" -conns "$addr" -c 16 -duration "${DURATION}s" >"$out" 2>&1 || true
    read -r rate p50 p99 errs < <(awk '/^cps/ {print $2, $4, $6, $8}' "$out")
  fi
  c1=$(cpu "${pids[@]}")
  local us
  us=$(awk -v c=$((c1 - c0)) -v r="${rate:-0}" -v d="$DURATION" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", (r > 0) ? c * 1e6 / hz / (r * d) : 0 }')
  [ "${errs:-1}" = 0 ] && errs=none || errs="errors_${errs:-all}"
  echo "$name ${rate:-0} ${p50:-0} ${p99:-0} $us $errs"
}
ms() { # wrk latency (e.g. 512.00us, 1.20ms, 2.00s) -> milliseconds
  awk -v v="$1" 'BEGIN { n=v+0; if (v ~ /us$/) n/=1000; else if (v ~ /ms$/) n=n; else if (v ~ /s$/) n*=1000; printf "%.3f", n }'
}
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
warm() { wrk -t1 -c8 -d2s -H "Host: bench.example.com" "$1" >/dev/null 2>&1 || true; }

nginx_pids=("$nginx_pid" $(pgrep -P "$nginx_pid"))
names=(portico nginx haproxy)
declare -A PIDS=([portico]="$portico_pid" [nginx]="${nginx_pids[*]}" [haproxy]="$haproxy_pid")
: >"$work/summary"

# compare section label portico-url nginx-url haproxy-url [wrk args...]: ROUNDS rounds of the three
# proxies back to back (order rotated), then the medians, the ratios, and a line for the summary.
compare() {
  local section=$1 label=$2 urls=("$3" "$4" "$5"); shift 5
  local round i j name r rounds="$work/$section.rounds"
  : >"$rounds"
  for round in $(seq "$ROUNDS"); do
    for i in 0 1 2; do
      j=$(((i + round - 1) % 3)) name=${names[$j]}
      tag="$section-$round" r=$(${RUNNER:-run} "$name" "${urls[$j]}" ${PIDS[$name]} -- "$@")
      echo "$section round $round: $r" >&2
      echo "$r" >>"$rounds"
    done
  done
  printf '%-10s %12s %10s %10s %12s  %s\n' proxy "requests/s" "p50 ms" "p99 ms" "cpu us/req" errors
  local -A RPS P99
  local errs
  for name in "${names[@]}"; do
    col() { awk -v n="$name" -v c="$1" '$1 == n { print $c }' "$rounds" | median; }
    RPS[$name]=$(col 2) P99[$name]=$(col 4)
    errs=$(awk -v n="$name" '$1 == n && $6 != "none" { print $6 }' "$rounds" | tr '\n' ' ')
    printf '%-10s %12.0f %10.3f %10.3f %12.1f  %s\n' "$name" "${RPS[$name]}" "$(col 3)" "${P99[$name]}" "$(col 5)" "${errs:-none}"
  done
  for name in nginx haproxy; do
    awk -v n="$name" -v l="$label" -v pr="${RPS[portico]}" -v r="${RPS[$name]}" -v pp="${P99[portico]}" -v p="${P99[$name]}" \
      'BEGIN { printf "portico / %-8s %sthroughput %.2fx, p99 %.2fx (lower is better)\n", n, l, (r > 0) ? pr/r : 0, (p > 0) ? pp/p : 0 }'
  done
  awk -v s="$section" -v a="${RPS[portico]}" -v b="${RPS[nginx]}" -v c="${RPS[haproxy]}" \
    -v ap="${P99[portico]}" -v bp="${P99[nginx]}" -v cp="${P99[haproxy]}" \
    'BEGIN { printf "%-11s %10.0f %10.0f %10.0f %8.2fx %8.2fx %10.2fx %10.2fx\n", s, a, b, c, (b > 0) ? a/b : 0, (c > 0) ? a/c : 0, (bp > 0) ? ap/bp : 0, (cp > 0) ? ap/cp : 0 }' \
    >>"$work/summary"
  [ -z "${RPS_OUT:-}" ] || { eval "$RPS_OUT=(${RPS[portico]} ${RPS[nginx]} ${RPS[haproxy]})"; }
}

P=http://127.0.0.1:18083/ N=http://127.0.0.1:18081/ H=http://127.0.0.1:18082/
PS=https://127.0.0.1:18443/ NS=https://127.0.0.1:18444/ HS=https://127.0.0.1:18445/
# wrk does not count 3xx answers as errors: every proxy must answer 200 on each route measured
# (a redirect answered by the proxy itself would be measured instead of a proxied request).
for check in "bench.example.com $P" "bench.example.com $N" "bench.example.com $H" "bench.example.com $PS" "bench.example.com $NS" \
  "bench.example.com $HS" "policy.bench.example.com ${P}policy/x" "policy.bench.example.com ${N}policy/x" "policy.bench.example.com ${H}policy/x"; do
  code=$(curl -sk -o /dev/null -w '%{http_code}' -H "Host: ${check%% *}" "${check#* }" || true)
  [ "$code" = 200 ] || { echo "bench-proxy: ${check#* } (Host ${check%% *}) answers $code, not 200" >&2; exit 1; }
done
AUTH="Authorization: Basic YmVuY2g6YmVuY2g=" # bench:bench
for u in "$P" "$N" "$H"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: access.bench.example.com" -H "$AUTH" "$u" || true)
  [ "$code" = 200 ] || { echo "bench-proxy: $u (Host access.bench.example.com) answers $code with credentials, not 200" >&2; exit 1; }
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: access.bench.example.com" "$u" || true)
  [ "$code" = 401 ] || { echo "bench-proxy: $u (Host access.bench.example.com) answers $code without credentials, not 401" >&2; exit 1; }
done
echo "# bench-proxy: $(nproc) cores, $(awk '/model name/ {$1=$2=$3=""; print; exit}' /proc/cpuinfo | sed 's/^ *//'), ${DURATION}s per run, $ROUNDS rounds (order rotated each round), $CONNECTIONS keep-alive connections, wrk -t$CORES"
echo "# backend: nginx static 200 on 127.0.0.1:18000 (its own process); the proxies, the backend and wrk share the machine's cores"
echo "# figures are the median of the rounds; cpu us/req is the proxy's own CPU time (user+system) per request"
echo "# sections: $SECTIONS; open files limit $NOFILE"
# h2idle first: resident memory grown by earlier load sections would hide what idle
# connections cost.
if want h2idle; then
  echo
  echo "# memory per idle HTTP/2 connection: $IDLE_CONNS TLS h2 connections, one request each, then idle"
  mem() { # resident KiB of the given processes
    local t=0 p
    for p in "$@"; do t=$((t + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0))); done
    echo "$t"
  }
  declare -A KIB
  for name in "${names[@]}"; do
    case $name in portico) addr=127.0.0.1:18443 ;; nginx) addr=127.0.0.1:18444 ;; haproxy) addr=127.0.0.1:18445 ;; esac
    m0=$(mem ${PIDS[$name]})
    rm -f "$work/idle.in" && mkfifo "$work/idle.in"
    "$work/idleconns" -addr "$addr" -n "$IDLE_CONNS" <"$work/idle.in" >"$work/idle-$name.txt" 2>&1 &
    idle_pid=$!
    exec 7>"$work/idle.in"
    for _ in $(seq 600); do grep -q ready "$work/idle-$name.txt" && break; kill -0 "$idle_pid" 2>/dev/null || break; sleep 0.1; done
    sleep 1
    m1=$(mem ${PIDS[$name]})
    exec 7>&-
    wait "$idle_pid" || true
    if grep -q ready "$work/idle-$name.txt"; then
      KIB[$name]=$(awk -v a="$m0" -v b="$m1" -v n="$IDLE_CONNS" 'BEGIN { printf "%.1f", (b - a) / n }')
    else
      KIB[$name]=0
      echo "$name: $(cat "$work/idle-$name.txt")" >&2
    fi
    printf '%-10s %8s KiB per idle connection (resident %d -> %d KiB)\n' "$name" "${KIB[$name]}" "$m0" "$m1"
    sleep 1
  done
  awk -v a="${KIB[portico]}" -v b="${KIB[nginx]}" -v c="${KIB[haproxy]}" \
    'BEGIN { printf "h2idle: KiB per idle HTTP/2 connection: portico %s, nginx %s, haproxy %s (portico / nginx %.2fx, / haproxy %.2fx; lower is better)\n", a, b, c, (b > 0) ? a/b : 0, (c > 0) ? a/c : 0 }' \
    >"$work/idle-summary"
fi

for u in "$P" "$N" "$H"; do warm "$u"; done

if want keepalive; then
  echo
  echo "# keep-alive, $CONNECTIONS connections"
  RPS_OUT=keepalive_rps compare keepalive "" "$P" "$N" "$H"
fi

if want policy; then
  echo
  echo "# a route with policy (rewrite, request and response header modifiers), keep-alive, $CONNECTIONS connections"
  BENCH_HOST=policy.bench.example.com RPS_OUT=policy_rps compare policy "policy route " "${P}policy/x" "${N}policy/x" "${H}policy/x"
  if [ -n "${keepalive_rps:-}" ]; then
    awk -v a="${policy_rps[0]}" -v b="${keepalive_rps[0]}" 'BEGIN { printf "portico policy route / portico plain route (keepalive row): %.3fx\n", (b > 0) ? a/b : 0 }' |
      tee -a "$work/policy-vs-plain"
  fi
fi

if want access; then
  echo
  echo "# a route under basic auth and a rate limit not reached, keep-alive, $CONNECTIONS connections"
  BENCH_HOST=access.bench.example.com RPS_OUT=access_rps compare access "access route " "$P" "$N" "$H" -H "$AUTH"
  if [ -n "${keepalive_rps:-}" ]; then
    awk -v a="${access_rps[0]}" -v b="${keepalive_rps[0]}" 'BEGIN { printf "portico access route / portico plain route (keepalive row): %.3fx\n", (b > 0) ? a/b : 0 }' |
      tee -a "$work/policy-vs-plain"
  fi
fi

if want https; then
  echo
  echo "# HTTPS keep-alive (TLS 1.3, HTTP/1.1 by ALPN), $CONNECTIONS connections"
  for u in "$PS" "$NS" "$HS"; do warm "$u"; done
  compare https "HTTPS " "$PS" "$NS" "$HS"
fi

if want upload; then
  echo
  echo "# uploads: POST with a $POST_BYTES-byte body, keep-alive, $CONNECTIONS connections"
  printf 'wrk.method = "POST"\nwrk.body = string.rep("x", %d)\nwrk.headers["Content-Type"] = "application/octet-stream"\n' "$POST_BYTES" >"$work/post.lua"
  compare upload "POST " "$P" "$N" "$H" -s "$work/post.lua"
fi

if want tls; then
  echo
  echo "# TLS handshakes per second: a new connection and full handshake per request (no session reuse), $CONNECTIONS connections"
  RPS_OUT=tls_rps compare tls "TLS handshakes " "$PS" "$NS" "$HS" -H "Connection: close"
  printf '%-10s %12.0f handshakes/s\n' portico "${tls_rps[0]}" nginx "${tls_rps[1]}" haproxy "${tls_rps[2]}"
fi

if want close; then
  echo
  echo "# cleartext, a new connection per request (Connection: close), $CONNECTIONS connections"
  compare close "new-connection " "$P" "$N" "$H" -H "Connection: close"
fi

if want upload128k; then
  echo
  echo "# uploads: POST with a 131072-byte body, keep-alive, $CONNECTIONS connections"
  printf 'wrk.method = "POST"\nwrk.body = string.rep("x", %d)\nwrk.headers["Content-Type"] = "application/octet-stream"\n' 131072 >"$work/post128k.lua"
  compare upload128k "POST 128 KiB " "$P" "$N" "$H" -s "$work/post128k.lua"
fi

if want c1000; then
  echo
  echo "# keep-alive, $C1000 connections (wrk -t$CORES -c$C1000)"
  conns=$C1000 compare c1000 "$C1000-connection " "$P" "$N" "$H"
fi

if want h2; then
  echo
  echo "# HTTP/2 over TLS (h2load), 16 connections x 10 concurrent streams"
  RUNNER=h2run compare h2 "HTTP/2 16x10 " "$PS" "$NS" "$HS" -c16 -m10 -H ":authority: bench.example.com"
fi

if want h2x100; then
  echo
  echo "# HTTP/2 over TLS (h2load), 64 connections x 100 concurrent streams"
  RUNNER=h2run compare h2x100 "HTTP/2 64x100 " "$PS" "$NS" "$HS" -c64 -m100 -H ":authority: bench.example.com"
fi

if want grpc; then
  echo
  echo "# gRPC unary calls over TLS (grpcbench), 16 connections, 160 calls in flight, 64-byte messages"
  RUNNER=grpcrun compare grpc "gRPC unary " "$PS" "$NS" "$HS" -method unary -conns 16 -concurrency 160
fi

if want grpcstream; then
  echo
  echo "# gRPC server-streaming calls over TLS (grpcbench), 10 messages per call, 16 connections, 160 calls in flight"
  RUNNER=grpcrun compare grpcstream "gRPC streaming " "$PS" "$NS" "$HS" -method stream -conns 16 -concurrency 160
fi


if want tcpbulk; then
  echo
  echo "# a TCP service: one connection reading from the backend, MB/s (the requests/s column; cpu: us per MB)"
  RUNNER=tcprun compare tcpbulk "TCP bulk " 127.0.0.1:18093 127.0.0.1:18094 127.0.0.1:18095 bulk
fi

if want tcpconn; then
  echo
  echo "# a TCP service: new connections per second, 16 at once (connect, 2 bytes from the backend, close)"
  RUNNER=tcprun compare tcpconn "TCP connections " 127.0.0.1:18093 127.0.0.1:18094 127.0.0.1:18095 conns
fi

echo
echo "# summary: medians of $ROUNDS rounds, ${DURATION}s each; x = portico / peer (requests/s: higher is better for portico; p99: lower is better)"
printf '%-11s %10s %10s %10s %9s %9s %11s %11s\n' section portico nginx haproxy "x nginx" "x haproxy" "p99 x ngx" "p99 x hap"
cat "$work/summary"
[ ! -f "$work/idle-summary" ] || cat "$work/idle-summary"
[ ! -f "$work/policy-vs-plain" ] || cat "$work/policy-vs-plain"
