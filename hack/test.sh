#!/usr/bin/env bash
# The README's test command runs this: lint, CRD drift, then every test on real components.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
"$VENV/bin/mypy" libs/*/src services/*/src tests
"$VENV/bin/lint-imports"  # layer contracts: .importlinter
"$VENV/bin/python" -m kubeserial_common.crdgen --out deploy/kustomize/base/crd --check
VENV="$VENV" ./hack/lint-manifests.sh  # kube-score on the rendered overlays (README: Manifest lint)
# -p no:cacheprovider keeps a clean clone clean; --junitxml gives CI a record of what ran.
"$VENV/bin/python" -m pytest tests -p no:cacheprovider --junitxml="${JUNIT_XML:-/tmp/kubeserial-junit.xml}" "$@"
# A run where everything was skipped, or nothing collected, is no test at all.
"$VENV/bin/python" - "${JUNIT_XML:-/tmp/kubeserial-junit.xml}" <<'PY'
import sys
import xml.etree.ElementTree as ET
suite = ET.parse(sys.argv[1]).getroot()
suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
total, skipped = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
print(f"ran {total - skipped} tests ({skipped} skipped)")
sys.exit(0 if total - skipped > 0 and skipped == 0 else 1)
PY
