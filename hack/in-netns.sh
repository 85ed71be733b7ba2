#!/usr/bin/env bash
# Runs a command in a private network namespace where 10.88.0.0/16 is a local range (like
# 127.0.0.0/8): tests give pods and endpoints addresses there, since the API server refuses
# loopback addresses in EndpointSlices. Every packet stays inside the namespace this script
# creates; it has no route anywhere else. Needs root (or user namespaces) and iproute2.
#
#   hack/in-netns.sh go test ./...
set -euo pipefail
if [[ "${PORTICO_NETNS:-}" == "1" ]]; then
  exec "$@"
fi
exec unshare --net -- bash -c '
  set -euo pipefail
  ip link set lo up
  ip route add local 10.88.0.0/16 dev lo
  export PORTICO_NETNS=1
  exec "$@"' in-netns "$@"
