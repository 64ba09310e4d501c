"""Shared fixtures. The control plane is real (etcd + kube-apiserver + controller-manager +
scheduler) and shared by the whole session; tests that need it take `control_plane`."""

import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client

from kubeserial_common.runtime.kube import api_client
from kubeserial_testing.controlplane import REPO_ROOT, ControlPlane
from kubeserial_testing.services import wait_for

CRD_DIR = REPO_ROOT / "deploy" / "kustomize" / "base" / "crd"
SIMULATED_NODES = ("node-a", "node-b")
KUBESERIAL_KINDS = "kubeserials,serialdevices,managers,managerschedulerequests"
_planes: list[ControlPlane] = []


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane(tmp_path_factory.mktemp("controlplane"), preinstall=(CRD_DIR,)).start()
    try:
        for node in SIMULATED_NODES:
            plane.register_node(node)
        wait_until_garbage_collector_tracks_serialdevices(plane)
        _planes.append(plane)
        yield plane
    finally:
        plane.stop()


def wait_until_garbage_collector_tracks_serialdevices(plane: ControlPlane) -> None:
    """kube-controller-manager's garbage collector picks up new CRDs on its next discovery pass
    (every 30 s); until then, deleting a SerialDevice leaves what it owns behind. Tests rely on the
    cascade, so prove it works once: an owned ConfigMap must go when its SerialDevice goes."""
    probe = {
        "apiVersion": "app.kubeserial.com/v1alpha1",
        "kind": "SerialDevice",
        "metadata": {"name": "gc-probe"},
        "spec": {"idVendor": "0000", "idProduct": "0000"},
    }
    owner = json.loads(plane.kubectl("create", "-o", "json", "-f", "-", input=json.dumps(probe)).stdout)
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "gc-probe",
            "namespace": "default",
            "ownerReferences": [
                {
                    "apiVersion": owner["apiVersion"],
                    "kind": "SerialDevice",
                    "name": "gc-probe",
                    "uid": owner["metadata"]["uid"],
                }
            ],
        },
    }
    plane.kubectl("create", "-f", "-", input=json.dumps(dependent))
    plane.kubectl("delete", "serialdevice", "gc-probe")
    wait_for(
        lambda: plane.kubectl("get", "configmap", "gc-probe", "-n", "default", check=False).returncode != 0,
        timeout=120,
        interval=0.5,
        message="the garbage collector to track SerialDevices",
    )


@pytest.fixture
async def kube(control_plane: ControlPlane) -> AsyncIterator[client.ApiClient]:
    """An admin API client on the real control plane."""
    async with api_client(str(control_plane.kubeconfig)) as api:
        yield api


@pytest.fixture
def kubectl_json(control_plane: ControlPlane) -> Callable[..., dict[str, Any]]:
    def get(*args: str) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(control_plane.kubectl("get", *args, "-o", "json").stdout)
        return obj

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
