#!/usr/bin/env bash
# The Python half of `make dev`, runnable alone: a virtualenv with every package installed editable.
# Needs only Python 3.11+ (and a package index): no apt, no Go, no container engine. `make lint` and
# `make test-unit` depend on this alone.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
stamp="$VENV/.installed-$(cat constraints.txt requirements-dev.txt libs/*/pyproject.toml services/*/pyproject.toml tools/*/pyproject.toml | sha256sum | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -c constraints.txt -r requirements-dev.txt \
    -e libs/kubeserial_common -e libs/kubeserial_testing \
    -e services/controller -e services/monitor -e services/gateway -e services/injector \
    -e tools/kubectl-serial
  rm -f "$VENV"/.installed-*; touch "$stamp"
fi
