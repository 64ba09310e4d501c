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
KUBESERIAL_KINDS = "kubeserials,serialdevices,managers,managerschedulerequests"
_planes: list[ControlPlane] = []


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane(tmp_path_factory.mktemp("controlplane")).start()
    try:
        plane.kubectl("apply", "-k", str(CRD_DIR))
        plane.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        for node in SIMULATED_NODES:
            plane.register_node(node)
        _planes.append(plane)
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


@pytest.fixture(autouse=True, scope="module")
def _clean_kubeserial_objects() -> Iterator[None]:
    """Each test module starts from a cluster without KubeSerial objects from earlier modules."""
    yield
    for plane in _planes:
        listed = plane.kubectl("get", KUBESERIAL_KINDS, "-A", "-o", "json", check=False)
        for item in json.loads(listed.stdout or '{"items": []}').get("items", []):
            meta = item["metadata"]
            target = [f"{item['kind'].lower()}/{meta['name']}"] + (
                ["-n", meta["namespace"]] if meta.get("namespace") else []
            )
            if meta.get("finalizers"):
                plane.kubectl(
                    "patch", *target, "--type=merge", "-p", '{"metadata":{"finalizers":null}}', check=False
                )
            plane.kubectl("delete", *target, "--wait=false", check=False)
