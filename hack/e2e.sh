#!/usr/bin/env bash
# make test-e2e: a fresh local cluster, the operator from config/default, the e2e suite inside
# the cluster's network namespace, then the cluster stopped whatever happened.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
KUSTOMIZE=${KUSTOMIZE:-$(ls bin/kustomize-* | head -1)}
go test -tags e2e -c -o bin/e2e.test ./test/e2e   # compile outside: the namespace has no network
hack/cluster.sh down >/dev/null 2>&1 || true
trap 'hack/cluster.sh down' EXIT
hack/cluster.sh up
export E2E_STATE_DIR=$root/.local
run() { hack/cluster.sh exec env E2E_STATE_DIR="$E2E_STATE_DIR" E2E_PHASE="${E2E_PHASE:-}" bin/e2e.test -test.v -test.timeout 30m -ginkgo.v "$@" 2>&1 | tee -a .e2e.log | grep -vE '^\s+(INFO|DEBUG)'; return "${PIPESTATUS[0]}"; }
: >.e2e.log
echo "== e2e phase 1: the operator from config/default"
"$KUSTOMIZE" build config/default | hack/cluster.sh kubectl apply --server-side -f - >/dev/null
run -ginkgo.label-filter='!bundle' "$@"
echo "== e2e phase 2: the operator installed from the OLM bundle (as OLM does)"
"$KUSTOMIZE" build config/default | hack/cluster.sh kubectl delete --ignore-not-found --wait=true -f - >/dev/null
E2E_PHASE=bundle run -ginkgo.label-filter='bundle' "$@"
