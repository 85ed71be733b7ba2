#!/usr/bin/env bash
# make demo: from nothing to HTTPS traffic served by a Portico fleet on the local cluster.
# Builds what is missing (the control plane takes ~10 minutes the first time), starts the
# cluster, deploys the operator from config/default, applies config/samples (the cafe example),
# waits for the Ingress's status address, sends HTTP and HTTPS requests to it, prints what
# answered, then keeps the cluster running until Ctrl-C, which tears it all down.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
k() { hack/cluster.sh kubectl "$@"; }
KUSTOMIZE=${KUSTOMIZE:-$(ls bin/kustomize-* 2>/dev/null | head -1)}

cleanup() { step "Tearing down"; hack/cluster.sh down; }
trap cleanup EXIT
trap 'exit 130' INT TERM

step "Building the control plane from source (first time only, ~10 minutes; progress below)"
hack/k8s-binaries.sh >/dev/null
step "Starting the local cluster (3 nodes; node-1 and node-2 labelled portico.dev/edge=true)"
hack/cluster.sh up
k get nodes -o wide

step "Deploying the operator from config/default"
"$KUSTOMIZE" build config/default | k apply --server-side -f - >/dev/null
k -n portico-system rollout status deployment/portico-operator --timeout=180s

step "Applying config/samples: the cafe example"
"$KUSTOMIZE" build config/samples | k apply --server-side -f -
k -n cafe rollout status deployment/coffee --timeout=180s
k -n cafe rollout status deployment/tea --timeout=180s

step "Waiting for the Ingress's status address"
addr=""
for _ in $(seq 180); do
  addr=$(k -n cafe get ingress cafe -o jsonpath='{.status.loadBalancer.ingress[0].ip}' 2>/dev/null || true)
  [[ -n "$addr" ]] && break
  sleep 1
done
[[ -n "$addr" ]] || { echo "no address after 3 minutes"; k get ingd -A; exit 1; }
k get ingd -A
k -n cafe get ingress cafe

ca=$(mktemp); awk '/tls.crt:/ {print $2}' config/samples/tls-secret.yaml | base64 -d >"$ca"
step "HTTP  http://cafe.example.com/coffee via $addr: redirected to HTTPS (the host has TLS; ssl-redirect, as ingress-nginx)"
hack/cluster.sh exec curl -sS -o /dev/null -H 'Host: cafe.example.com' "http://$addr/coffee" -w '-> HTTP %{http_code} to %{redirect_url}\n'
step "HTTPS https://cafe.example.com/tea via $addr (SNI cafe.example.com, certificate verified)"
hack/cluster.sh exec curl -sS --cacert "$ca" --resolve "cafe.example.com:443:$addr" https://cafe.example.com/tea \
  -w '\n-> HTTP %{http_code} over HTTP/%{http_version}, certificate verified: %{ssl_verify_result} (0 = yes)\n'
step "Traffic policy (config/samples/policy.yaml, docs/annotations.md)"
k -n cafe rollout status deployment/coffee-v2 --timeout=180s >/dev/null
echo "canary: X-Canary: always goes to coffee-v2; without it, one request in ten does"
hack/cluster.sh exec curl -sS -k --resolve "cafe.example.com:443:$addr" -H 'X-Canary: always' https://cafe.example.com/coffee \
  | grep -o '"service":"[^"]*"'
hack/cluster.sh exec sh -c "for i in \$(seq 50); do curl -s -k --resolve cafe.example.com:443:$addr https://cafe.example.com/coffee; echo; done" \
  | grep -o '"service":"[^"]*"' | sort | uniq -c
echo "rewrite: http://menu.cafe.example.com/v1/green reaches tea as /green"
hack/cluster.sh exec curl -sS -H 'Host: menu.cafe.example.com' "http://$addr/v1/green" | grep -o '"uri":"[^"]*"'
echo "redirect: legacy.cafe.example.com moved"
hack/cluster.sh exec curl -sS -o /dev/null -H 'Host: legacy.cafe.example.com' "http://$addr/anything" -w '-> HTTP %{http_code} to %{redirect_url}\n'
step "No rule matches: the fleet's default backend"
hack/cluster.sh exec curl -sS -H 'Host: unknown.example.com' "http://$addr/" -w '-> HTTP %{http_code}\n'

cat <<TRY

== The cluster is yours until Ctrl-C. Try:
  hack/cluster.sh kubectl get ingd,ingressclass,pods -A
  hack/cluster.sh exec curl -s -k --resolve cafe.example.com:443:$addr https://cafe.example.com/tea
  # switch the fleet to a LoadBalancer Service (address from 10.88.250.0/24):
  hack/cluster.sh kubectl -n ingress patch ingd edge --type=merge -p '{"spec":{"topology":{"type":"LoadBalancer"},"nodePlacement":null}}'
  hack/cluster.sh kubectl -n cafe get ingress cafe -w
  # or to NodePort:
  hack/cluster.sh kubectl -n ingress patch ingd edge --type=merge -p '{"spec":{"topology":{"type":"NodePort"}}}'
Logs: .local/cluster.log (cluster), .local/logs/ (control plane), .local/nodes/*/pods/*/ (pods)
TRY
while true; do sleep 3600; done
