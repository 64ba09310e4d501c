#!/usr/bin/env bash
# One command from a fresh clone to a working development environment (idempotent):
# Debian packages, a virtualenv with every package editable (hack/venv.sh), and the cached control plane.
set -euo pipefail
cd "$(dirname "$0")/.."
./hack/install-system-deps.sh
./hack/venv.sh
./hack/build-control-plane.sh >/dev/null
./hack/build-kube-score.sh >/dev/null  # `make lint-manifests` (hack/test.sh runs it)
