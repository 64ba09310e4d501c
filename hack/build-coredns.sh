#!/usr/bin/env bash
# Build CoreDNS from the Go module proxy, once per version, into the same cache as the control
# plane. The real-node harness packs it into a local image so Service names resolve in pods.
set -euo pipefail
COREDNS_VERSION="${COREDNS_VERSION:-v1.15.0}"
CACHE_ROOT="${KUBESERIAL_CACHE:-$HOME/.cache/kubeserial}"
OUT="$CACHE_ROOT/coredns/$COREDNS_VERSION"
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.build-coredns-$COREDNS_VERSION.lock"
flock 9
if [[ -x "$OUT/coredns" ]]; then echo "$OUT/coredns"; exit 0; fi
command -v go >/dev/null || { echo "go is required to build CoreDNS" >&2; exit 1; }
echo "building coredns $COREDNS_VERSION (first time only)" >&2
gobin="$(mktemp -d)"
trap 'rm -rf "$gobin"' EXIT
# A pinned version: `@latest` is refused by the proxy's module for CoreDNS.
GOBIN="$gobin" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$COREDNS_VERSION"
mkdir -p "$OUT"
mv "$gobin/coredns" "$OUT/coredns"
echo "$OUT/coredns"
