#!/usr/bin/env bash
# kube-score on what KubeSerial puts in a cluster: every overlay as rendered by kustomize, and the
# objects the controller creates at run time (a gateway, a manager: hack/render_controller_objects.py).
# Any finding fails, warnings included, except the checks accepted below; README "Manifest lint"
# says why each is acceptable. kube-score is built once from the Go module proxy (hack/build-kube-score.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
KUBE_SCORE="$(./hack/build-kube-score.sh)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Accepted for every workload (README: Manifest lint).
common=(
  --ignore-container-cpu-limit                          # CPU requests, no CPU limits (no throttling)
  --ignore-test container-image-pull-policy             # pinned tags; Never in the offline overlays
  --ignore-test container-ephemeral-storage-request-and-limit  # nothing written but rotated logs
)
# Accepted for the installed components (controller, injector, monitor).
installed=(
  --ignore-test pod-networkpolicy                       # monitor: host network; injector: called by the apiserver
  --ignore-test deployment-has-poddisruptionbudget      # controller: leader-elected, a standby only
)
# Accepted for the per-device objects the controller makes.
per_device=(
  --ignore-test deployment-replicas                     # one session per device: one replica
  --ignore-test deployment-strategy                     # Recreate: never two openers of one tty
)
gateway=(
  --ignore-test container-security-context-privileged   # device cgroup for a hot-plugged tty
  --ignore-test container-security-context-user-group-id  # root: the tty is root:dialout
  --ignore-test container-seccomp-profile               # privileged containers run unconfined
  --ignore-test pod-networkpolicy                       # its policy restricts ingress; egress: the apiserver
)
manager=(
  --ignore-test container-security-context-user-group-id  # the manager image's own uid
  --ignore-test container-security-context-readonlyrootfilesystem  # the user's app writes
  --ignore-test pod-networkpolicy                       # the user's app
  --ignore-test pod-probes                              # the user's app: no probe known
)
score() {
  "$KUBE_SCORE" score --exit-one-on-warning --enable-optional-test container-seccomp-profile \
    --output-format ci "$@" | grep -v '^\[\(OK\|SKIPPED\)\]' || true
  "$KUBE_SCORE" score --exit-one-on-warning --enable-optional-test container-seccomp-profile \
    --output-format ci "$@" >/dev/null
}
status=0
for overlay in deploy/kustomize/overlays/*/; do
  name="$(basename "$overlay")"
  kubectl kustomize "$overlay" > "$work/$name.yaml"
  echo "kube-score: overlay $name"
  extra=()
  case "$name" in
    dev) extra=(--ignore-test container-image-tag) ;;  # images built here, tag latest, never pulled
    small) extra=(--ignore-test deployment-replicas) ;;  # one injector on a home cluster, on purpose
  esac
  score "${common[@]}" "${installed[@]}" ${extra[@]+"${extra[@]}"} "$work/$name.yaml" || status=1
done
for kind in gateway manager; do
  "$VENV/bin/python" hack/render_controller_objects.py "$kind" tests/fixtures/seed/manager.yaml > "$work/$kind.yaml"
  echo "kube-score: the $kind objects the controller creates"
  if [[ $kind == gateway ]]; then accepted=("${gateway[@]}"); else accepted=("${manager[@]}"); fi
  score "${common[@]}" "${per_device[@]}" "${accepted[@]}" "$work/$kind.yaml" || status=1
done
[[ $status -eq 0 ]] && echo "kube-score: no findings beyond the accepted ones (README: Manifest lint)"
exit $status
