#!/usr/bin/env bash
# Build kube-network-policies (sigs.k8s.io, the nfqueue-based NetworkPolicy enforcer SIG Network
# tests with) from the Go module proxy, once per version, into the same cache as the control plane.
# The real-node harness packs it into a local image so NetworkPolicies are enforced on the nodes.
set -euo pipefail
KNP_VERSION="${KNP_VERSION:-v0.8.0}"
CACHE_ROOT="${KUBESERIAL_CACHE:-$HOME/.cache/kubeserial}"
OUT="$CACHE_ROOT/kube-network-policies/$KNP_VERSION"
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/.build-kube-network-policies-$KNP_VERSION.lock"
flock 9
if [[ -x "$OUT/netpol" ]]; then echo "$OUT/netpol"; exit 0; fi
command -v go >/dev/null || { echo "go is required to build kube-network-policies" >&2; exit 1; }
echo "building kube-network-policies $KNP_VERSION (first time only)" >&2
gobin="$(mktemp -d)"
trap 'rm -rf "$gobin"' EXIT
# The module's main package is ./cmd (the upstream image names the binary /bin/netpol).
GOBIN="$gobin" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kube-network-policies/cmd@$KNP_VERSION"
mkdir -p "$OUT"
mv "$gobin/cmd" "$OUT/netpol"
echo "$OUT/netpol"
