#!/usr/bin/env bash
# End-to-end on a kind cluster, for machines with Docker and kind (and a kindest/node image):
# builds the images, loads them into the nodes, installs the e2e overlay and checks that every
# component rolls out, the CRDs serve, and the webhook admits an annotated pod.
# It does not plug a device into a kind node: for the device story see tests/e2e (local harness).
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "e2e-kind needs $tool on PATH" >&2; exit 1; }
done
CLUSTER=kubeserial-e2e
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --config tests/e2e/kind/kind-config.yaml
export KUBECONFIG="$(mktemp)"; kind get kubeconfig --name "$CLUSTER" > "$KUBECONFIG"
KUBESERIAL_DOCKER_HOST="${DOCKER_HOST:-unix:///var/run/docker.sock}" ./hack/images/build.sh  # into the engine kind uses
for svc in controller monitor gateway injector; do
  docker tag "kubeserial/$svc:latest" "kubeserial/$svc:e2e"
  kind load docker-image --name "$CLUSTER" "kubeserial/$svc:e2e"
done
kubectl apply --server-side -k deploy/kustomize/overlays/e2e
kubectl -n kubeserial-system rollout status deploy/kubeserial-controller deploy/kubeserial-injector --timeout=180s
kubectl -n kubeserial rollout status ds/kubeserial-monitor --timeout=180s
kubectl apply -k deploy/kustomize/base/samples
kubectl wait --for=condition=Ready serialdevice/ender3 --timeout=60s
kubectl get serialdevice
kubectl create namespace kind-e2e --dry-run=client -o yaml | kubectl apply -f -
kubectl -n kind-e2e run consumer --image=kubeserial/gateway:e2e --image-pull-policy=Never \
  --annotations=app.kubeserial.com/inject-device=ender3 --dry-run=server -o yaml | grep -q kubeserial-bridge-ender3
echo "kind e2e: components rolled out, devices Ready, webhook injected the bridge"
