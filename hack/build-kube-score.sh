#!/usr/bin/env bash
# Build kube-score (the manifest linter `make lint-manifests` runs on the rendered overlays) from the
# Go module proxy, once per version, into the same cache as the control plane. Idempotent: prints
# the binary's path at once when it is cached.
set -euo pipefail
KUBE_SCORE_VERSION="${KUBE_SCORE_VERSION:-v1.20.0}"
CACHE_ROOT="${KUBESERIAL_CACHE:-$HOME/.cache/kubeserial}"
OUT="$CACHE_ROOT/kube-score/$KUBE_SCORE_VERSION"
mkdir -p "$CACHE_ROOT"
# Serialise concurrent callers: the second waits, then finds the cache full.
exec 9>"$CACHE_ROOT/.build-kube-score-$KUBE_SCORE_VERSION.lock"
flock 9
if [[ -x "$OUT/kube-score" ]]; then echo "$OUT/kube-score"; exit 0; fi
command -v go >/dev/null || { echo "go is required to build kube-score (hack/dev-setup.sh)" >&2; exit 1; }
echo "building kube-score $KUBE_SCORE_VERSION (first time only)" >&2
gobin="$(mktemp -d)"
trap 'rm -rf "$gobin"' EXIT
GOBIN="$gobin" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" \
  "github.com/zegl/kube-score/cmd/kube-score@$KUBE_SCORE_VERSION"
mkdir -p "$OUT"
mv "$gobin/kube-score" "$OUT/kube-score"
echo "$OUT/kube-score"
