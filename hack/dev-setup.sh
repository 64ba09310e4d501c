#!/usr/bin/env bash
# One command from a fresh clone to a working development environment (idempotent):
# Debian packages, a virtualenv with every package editable, and the cached control plane.
set -euo pipefail
cd "$(dirname "$0")/.."
./hack/install-system-deps.sh
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
stamp="$VENV/.installed-$(cat constraints.txt requirements-dev.txt libs/*/pyproject.toml services/*/pyproject.toml | sha256sum | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -c constraints.txt -r requirements-dev.txt \
    -e libs/kubeserial_common -e libs/kubeserial_testing \
    -e services/controller -e services/monitor -e services/gateway -e services/injector
  rm -f "$VENV"/.installed-*; touch "$stamp"
fi
./hack/build-control-plane.sh >/dev/null
