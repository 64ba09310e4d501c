# KubeSerial — `make help` lists every target.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
CLUSTER_DIR ?= .cluster
export KUBECONFIG_LOCAL := $(CURDIR)/$(CLUSTER_DIR)/admin.kubeconfig

.DEFAULT_GOAL := help

##@ General
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z0-9_-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development
dev: ## Set up everything from a fresh clone: Debian packages, .venv, control-plane binaries.
	./hack/dev-setup.sh

venv: ## Only the Python virtualenv (.venv): all that lint and unit tests need (no apt, Go or docker).
	VENV=$(VENV) ./hack/venv.sh

manifests: venv ## Regenerate the CRD YAML from the Pydantic models.
	$(PY) -m kubeserial_common.crdgen --out deploy/kustomize/base/crd

lint: venv ## ruff, mypy (sources, tests and benchmarks) and the import-layer contracts.
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy libs/*/src services/*/src tools/*/src tests bench
	$(VENV)/bin/lint-imports

lint-manifests: venv ## kube-score on every rendered overlay and the objects the controller creates (needs kubectl and Go once).
	VENV=$(VENV) ./hack/lint-manifests.sh

fmt: venv ## Format the code.
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

##@ Tests
test: dev ## Everything CI runs: lint, manifest lint and drift, unit, integration and e2e tests.
	./hack/test.sh

test-unit: venv ## Unit tests only (fast, no control plane).
	$(PY) -m pytest tests/unit -q

test-e2e: dev ## The end-to-end story only (tests/e2e).
	$(PY) -m pytest tests/e2e -q -p no:cacheprovider

test-real: dev ## Only the stories on real kubelets (real_story marker: the story, the manager, kubectl serial console).
	$(PY) -m pytest tests/e2e -m real_story -p no:cacheprovider -s

bench: dev ## Run every benchmark; prints one table, writes bench/results/summary.json.
	$(PY) bench/run.py

soak: dev ## Chaos soak on real nodes, about 10 min (bench/soak_real.py); not part of test or bench.
	$(PY) bench/soak_real.py

##@ Demo and local cluster
demo: dev ## The main job: KubeSerial end to end as real pods on two real kubelets (local story where it cannot, saying why).
	$(PY) -m kubeserial_testing.demo

demo-local: dev ## The demo's local story: services as processes, pods on a stand-in kubelet.
	$(PY) -m kubeserial_testing.demo --local

demo-real: dev ## The demo on real nodes or nothing: fails, saying why, where they cannot run.
	$(PY) -m kubeserial_testing.demo --real-nodes

demo-hold: dev ## Like demo (real nodes where it can), but keeps everything running until Ctrl-C.
	$(PY) -m kubeserial_testing.demo --hold

cluster-up: dev ## Start a real local control plane (etcd, kube-apiserver, ...) with the CRDs installed.
	$(PY) -m kubeserial_testing.controlplane up --dir $(CLUSTER_DIR)
	kubectl --kubeconfig $(KUBECONFIG_LOCAL) apply -k deploy/kustomize/base/crd
	kubectl --kubeconfig $(KUBECONFIG_LOCAL) wait --for=condition=Established crd --all --timeout=60s
	@echo; echo "export KUBECONFIG=$(KUBECONFIG_LOCAL)"; echo "kubectl get serialdevice"

cluster-down: ## Stop the local control plane and delete its state.
	$(PY) -m kubeserial_testing.controlplane down --dir $(CLUSTER_DIR)

##@ Images and kind
images: dev ## Build the four service images for amd64 and arm64 in a local Docker engine (offline; arm64 under qemu).
	KUBESERIAL_ARCHS="amd64 arm64" ./hack/images/build.sh

e2e-kind: ## The e2e overlay on a kind cluster (needs Docker, kind and a kindest/node image).
	./hack/e2e-kind.sh

.PHONY: demo-real demo-local test-real help dev venv manifests lint lint-manifests fmt test test-unit test-e2e bench soak demo demo-hold cluster-up cluster-down images e2e-kind
