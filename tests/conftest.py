"""Shared fixtures. The control plane is real (etcd + kube-apiserver + controller-manager +
scheduler) and shared by the whole session; tests that need it take `control_plane`."""

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client

from kubeserial_common.kube import api_client
from kubeserial_testing.controlplane import REPO_ROOT, ControlPlane

CRD_DIR = REPO_ROOT / "deploy" / "kustomize" / "base" / "crd"
SIMULATED_NODES = ("node-a", "node-b")


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane(tmp_path_factory.mktemp("controlplane")).start()
    try:
        plane.kubectl("apply", "-k", str(CRD_DIR))
        plane.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        for node in SIMULATED_NODES:
            plane.register_node(node)
        yield plane
    finally:
        plane.stop()


@pytest.fixture
async def kube(control_plane: ControlPlane) -> AsyncIterator[client.ApiClient]:
    """An admin API client on the real control plane."""
    async with api_client(str(control_plane.kubeconfig)) as api:
        yield api


@pytest.fixture
def kubectl_json(control_plane: ControlPlane):  # type: ignore[no-untyped-def]
    def get(*args: str) -> dict:  # type: ignore[type-arg]
        return json.loads(control_plane.kubectl("get", *args, "-o", "json").stdout)  # type: ignore[no-any-return]

    return get


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
