#!/usr/bin/env bash
# One command from a fresh clone to a working development environment (idempotent):
# Debian packages, a virtualenv with every package editable (hack/venv.sh), and the cached Go-built tools
# (control plane, kube-score, kube-network-policies).
set -euo pipefail
cd "$(dirname "$0")/.."
./hack/install-system-deps.sh
./hack/venv.sh
./hack/build-control-plane.sh >/dev/null
./hack/build-kube-score.sh >/dev/null  # `make lint-manifests` (hack/test.sh runs it)
./hack/build-kube-network-policies.sh >/dev/null  # NetworkPolicy enforcement on the real nodes (tests/e2e/test_real_network_policy.py)
