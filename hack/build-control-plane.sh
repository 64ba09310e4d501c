#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kube-proxy from the
# Go module proxy,
# once per version, into a cache outside the repository. Idempotent: exits at once when cached.
set -euo pipefail
K8S_VERSION="${K8S_VERSION:-v1.33.13}"
CACHE_ROOT="${KUBESERIAL_CACHE:-$HOME/.cache/kubeserial}"
OUT="$CACHE_ROOT/k8s/$K8S_VERSION"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

mkdir -p "$CACHE_ROOT"
# Serialise concurrent callers (CI steps, make targets): the second waits, then finds the cache full.
exec 9>"$CACHE_ROOT/.build-$K8S_VERSION.lock"
flock 9
missing=()
for bin in "${BINARIES[@]}"; do [[ -x "$OUT/$bin" ]] || missing+=("$bin"); done
if [[ ${#missing[@]} -eq 0 ]]; then echo "$OUT"; exit 0; fi

command -v go >/dev/null || { echo "go is required to build the control plane" >&2; exit 1; }
staging_minor="v0.${K8S_VERSION#v1.}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
cat > go.mod <<MOD
module kubeserial.local/controlplane

go 1.24

require k8s.io/kubernetes $K8S_VERSION
MOD
# k8s.io/kubernetes requires its staging modules at v0.0.0; pin each one to the matching release.
gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
grep -E '^\s+k8s.io/[a-z0-9-]+ => \./staging/' "$gomod" | awk '{print $1}' | sort -u | while read -r mod; do
  echo "replace $mod => $mod $staging_minor" >> go.mod
done
cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
GO
GOFLAGS=-mod=mod go mod tidy -e >/dev/null 2>&1 || true
GOFLAGS=-mod=mod go get "k8s.io/kubernetes@$K8S_VERSION" >/dev/null
mkdir -p "$OUT"
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2)"
for bin in "${missing[@]}"; do
  echo "building $bin $K8S_VERSION (first time only)" >&2
  GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$OUT/$bin.tmp" "k8s.io/kubernetes/cmd/$bin"
  mv "$OUT/$bin.tmp" "$OUT/$bin"
done
echo "$OUT"
