#!/usr/bin/env bash
# The local cluster: up, down, or a command inside its network namespace.
#
#   hack/cluster.sh up        build what is missing, start the cluster, return when the API is ready
#   hack/cluster.sh down      stop every process it started and remove its network namespace
#   hack/cluster.sh exec CMD  run CMD inside the cluster's network (KUBECONFIG set)
#   hack/cluster.sh kubectl ARGS
#
# Everything runs in the network namespace "portico-local", where 10.88.0.0/16 is a local range:
# the API server is 10.88.0.1:6443 (and 127.0.0.1:6443), node N is 10.88.0.(N+1), pods are
# 10.88.N.x, LoadBalancer addresses 10.88.250.x. Nothing in it can reach, or be reached from,
# any other network. State, logs and the kubeconfig are under .local/.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
NETNS=${PORTICO_NETNS_NAME:-portico-local}
STATE=$root/.local
NODES=${NODES:-3}
# Node labels: N:key=value, space separated. The cafe sample's HostNetwork fleet runs on nodes
# labelled portico.dev/edge=true.
NODE_LABELS=${NODE_LABELS:-"0:portico.dev/edge=true 1:portico.dev/edge=true"}
log() { echo "cluster: $*" >&2; }

in_ns() { ip netns exec "$NETNS" env KUBECONFIG="$STATE/kubeconfig" PATH="$(k8s_bin):$PATH" "$@"; }
k8s_bin() { hack/k8s-binaries.sh; }

build() {
  local kb; kb=$(k8s_bin)
  log "building bin/portico, bin/echo-server, bin/localcluster"
  CGO_ENABLED=0 go build -o bin/portico .
  CGO_ENABLED=0 go build -o bin/echo-server ./test/echo/echo-server
  CGO_ENABLED=0 go build -o bin/localcluster ./test/cluster/localcluster
  echo "$kb"
}

up() {
  if [[ -f "$STATE/cluster.pid" ]] && kill -0 "$(cat "$STATE/cluster.pid")" 2>/dev/null; then
    log "already running (pid $(cat "$STATE/cluster.pid"))"; return 0
  fi
  local kb; kb=$(build)
  mkdir -p "$STATE"
  rm -rf "$STATE/etcd" "$STATE/nodes" "$STATE/ready" "$STATE/pki"
  if ! ip netns list | grep -qw "$NETNS"; then
    ip netns add "$NETNS"
  fi
  ip netns exec "$NETNS" ip link set lo up
  ip netns exec "$NETNS" ip route replace local 10.88.0.0/16 dev lo
  local labels=()
  for l in $NODE_LABELS; do labels+=(--label "$l"); done
  log "starting the control plane and $NODES nodes (logs: .local/cluster.log, .local/logs/)"
  ip netns exec "$NETNS" setsid bin/localcluster --dir "$STATE" --k8s-bin "$kb" --nodes "$NODES" \
    --portico bin/portico --echo bin/echo-server "${labels[@]}" >"$STATE/cluster.log" 2>&1 &
  echo $! >"$STATE/cluster.pid"
  for _ in $(seq 240); do
    [[ -f "$STATE/ready" ]] && { log "ready: hack/cluster.sh kubectl get nodes"; return 0; }
    kill -0 "$(cat "$STATE/cluster.pid")" 2>/dev/null || { tail -20 "$STATE/cluster.log" >&2; log "failed to start"; return 1; }
    sleep 0.5
  done
  log "not ready after 2 minutes"; tail -20 "$STATE/cluster.log" >&2; return 1
}

down() {
  if [[ -f "$STATE/cluster.pid" ]]; then
    local pid; pid=$(cat "$STATE/cluster.pid")
    if kill -0 "$pid" 2>/dev/null; then
      log "stopping (pid $pid)"
      kill -TERM "$pid"
      for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -0 "$pid" 2>/dev/null && { log "still running: killing its process group"; kill -KILL -- "-$pid" 2>/dev/null || true; }
    fi
    rm -f "$STATE/cluster.pid"
  fi
  if ip netns list 2>/dev/null | grep -qw "$NETNS"; then
    local left; left=$(ip netns pids "$NETNS" 2>/dev/null | tr '\n' ' ')
    if [[ -n "$left" ]]; then log "killing leftover processes: $left"; kill -KILL $left 2>/dev/null || true; sleep 0.5; fi
    ip netns del "$NETNS"
  fi
  log "stopped; nothing of the cluster is listening"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  exec) shift; in_ns "$@" ;;
  kubectl) shift; in_ns kubectl "$@" ;;
  *) echo "usage: hack/cluster.sh up|down|exec CMD...|kubectl ARGS..." >&2; exit 2 ;;
esac
