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
"$KUSTOMIZE" build config/default | hack/cluster.sh kubectl apply --server-side -f - >/dev/null
hack/cluster.sh exec bin/e2e.test -test.v -test.timeout 30m -ginkgo.v "$@" 2>&1 | tee .e2e.log | grep -vE '^\s+(INFO|DEBUG)'
exit "${PIPESTATUS[0]}"
