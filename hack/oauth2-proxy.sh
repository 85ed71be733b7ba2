#!/usr/bin/env bash
# Builds oauth2-proxy from the Go module proxy and caches it, for the external-auth tests
# (dataplane/proxy/extauth_test.go runs it on 127.0.0.1 when the binary is there).
#
#   hack/oauth2-proxy.sh            build it if missing, print the binary's path
#
# github.com/oauth2-proxy/oauth2-proxy/v7 at OAUTH2_PROXY_VERSION is built in a module of its
# own (GOFLAGS=-mod=mod) into bin/oauth2-proxy-<version>, with bin/oauth2-proxy linking to it.
# When that binary is there, nothing is rebuilt. Progress goes to stderr, the path alone to
# stdout, so `PORTICO_OAUTH2_PROXY=$(hack/oauth2-proxy.sh)` works.
set -euo pipefail

OAUTH2_PROXY_VERSION=${OAUTH2_PROXY_VERSION:-v7.15.6}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin="$root/bin/oauth2-proxy-$OAUTH2_PROXY_VERSION"
link="$root/bin/oauth2-proxy"

if [[ -x "$bin" ]]; then
  ln -sfn "$(basename "$bin")" "$link"
  echo "$link"
  exit 0
fi

log() { echo "oauth2-proxy: $*" >&2; }
mkdir -p "$root/bin"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/go.mod" <<GOMOD
module portico.dev/oauth2-proxy-binary

go 1.26

require github.com/oauth2-proxy/oauth2-proxy/v7 $OAUTH2_PROXY_VERSION
GOMOD

export CGO_ENABLED=0 GOFLAGS=-mod=mod
log "building github.com/oauth2-proxy/oauth2-proxy/v7 $OAUTH2_PROXY_VERSION"
(cd "$work" && go mod tidy -e >/dev/null 2>&1 || true)
(cd "$work" && go build -trimpath -ldflags "-s -w -X github.com/oauth2-proxy/oauth2-proxy/v7/pkg/version.VERSION=$OAUTH2_PROXY_VERSION" \
  -o "$bin.tmp" github.com/oauth2-proxy/oauth2-proxy/v7)
mv "$bin.tmp" "$bin"
ln -sfn "$(basename "$bin")" "$link"
log "ready: $bin"
echo "$link"
