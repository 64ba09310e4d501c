# KubeSerial — `make help` lists every target.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
CLUSTER_DIR ?= .cluster
export KUBECONFIG_LOCAL := $(CURDIR)/$(CLUSTER_DIR)/admin.kubeconfig

.DEFAULT_GOAL := help

##@ General
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} /^[a-zA-Z_-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development
dev: ## Set up everything from a fresh clone: Debian packages, .venv, control-plane binaries.
	./hack/dev-setup.sh

manifests: dev ## Regenerate the CRD YAML from the Pydantic models.
	$(PY) -m kubeserial_common.crdgen --out deploy/kustomize/base/crd

lint: dev ## ruff and mypy.
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy libs/*/src services/*/src

fmt: dev ## Format the code.
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

##@ Tests
test: dev ## Everything CI runs: lint, manifest drift, unit, integration and e2e tests.
	./hack/test.sh

test-unit: dev ## Unit tests only (fast, no control plane).
	$(PY) -m pytest tests/unit -q

##@ Local cluster
cluster-up: dev ## Start a real local control plane (etcd, kube-apiserver, ...) with the CRDs installed.
	$(PY) -m kubeserial_testing.controlplane up --dir $(CLUSTER_DIR)
	kubectl --kubeconfig $(KUBECONFIG_LOCAL) apply -k deploy/kustomize/base/crd
	kubectl --kubeconfig $(KUBECONFIG_LOCAL) wait --for=condition=Established crd --all --timeout=60s
	@echo; echo "export KUBECONFIG=$(KUBECONFIG_LOCAL)"; echo "kubectl get serialdevice"

cluster-down: ## Stop the local control plane and delete its state.
	$(PY) -m kubeserial_testing.controlplane down --dir $(CLUSTER_DIR)

.PHONY: help dev manifests lint fmt test test-unit cluster-up cluster-down
