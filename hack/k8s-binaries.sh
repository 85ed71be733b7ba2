#!/usr/bin/env bash
# Builds the real Kubernetes control plane from the Go module proxy and caches it.
#
#   hack/k8s-binaries.sh            build what is missing, print the binaries' directory
#
# kube-apiserver, kube-controller-manager, kube-scheduler and kubectl come from
# k8s.io/kubernetes at KUBE_VERSION (every k8s.io/* staging module replaced by the matching
# v0.x release); etcd from go.etcd.io/etcd/server/v3 at ETCD_VERSION. The binaries land in
# bin/k8s/<KUBE_VERSION>/ next to a stamp naming both versions; when the stamp matches and every
# binary is there, nothing is rebuilt. Progress goes to stderr, the directory alone to stdout,
# so `KUBEBUILDER_ASSETS=$(hack/k8s-binaries.sh)` works.
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.8}
STAGING_VERSION=v0.${KUBE_VERSION#v1.}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out="$root/bin/k8s/$KUBE_VERSION"
stamp="$out/.stamp"
want="kubernetes=$KUBE_VERSION etcd=$ETCD_VERSION"
bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd)

complete() {
  [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] || return 1
  for b in "${bins[@]}"; do [[ -x "$out/$b" ]] || return 1; done
}

if complete; then
  echo "$out"
  exit 0
fi

log() { echo "k8s-binaries: $*" >&2; }
mkdir -p "$out"
# A stamp that names other versions means every binary here is stale.
if [[ -f "$stamp" ]]; then
  for b in "${bins[@]}"; do rm -f "$out/$b"; done
fi
rm -f "$stamp"
work="$root/bin/k8s/.build-$KUBE_VERSION"
mkdir -p "$work/kube" "$work/etcd"

staging=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider
  cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api
  cri-client cri-streaming csi-translation-lib dynamic-resource-allocation endpointslice externaljwt
  kms kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics
  mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller streaming)

{
  echo "module portico.dev/k8s-binaries"
  echo
  echo "go 1.26"
  echo
  echo "require k8s.io/kubernetes $KUBE_VERSION"
  echo
  echo "replace ("
  for m in "${staging[@]}"; do echo "	k8s.io/$m => k8s.io/$m $STAGING_VERSION"; done
  echo ")"
} >"$work/kube/go.mod"
cat >"$work/kube/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO

cat >"$work/etcd/go.mod" <<GOMOD
module portico.dev/etcd-binary

go 1.26

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
GOMOD
cat >"$work/etcd/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO

export CGO_ENABLED=0 GOFLAGS=-mod=mod
ldflags="-s -w"
kv="k8s.io/component-base/version"
kldflags="$ldflags -X $kv.gitVersion=$KUBE_VERSION -X $kv.gitMajor=1 -X $kv.gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2) -X $kv.gitTreeState=clean"

log "resolving k8s.io/kubernetes $KUBE_VERSION (first time: ~10 minutes in all)"
(cd "$work/kube" && go mod tidy -e >/dev/null 2>&1 || true)
for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  [[ -x "$out/$b" ]] && continue
  log "building $b $KUBE_VERSION"
  (cd "$work/kube" && go build -trimpath -ldflags "$kldflags" -o "$out/$b" "k8s.io/kubernetes/cmd/$b")
done
if [[ ! -x "$out/etcd" ]]; then
  log "building etcd $ETCD_VERSION"
  (cd "$work/etcd" && go mod tidy >/dev/null && go build -trimpath -ldflags "$ldflags" -o "$out/etcd" .)
fi

echo "$want" >"$stamp"
log "ready in $out"
echo "$out"
