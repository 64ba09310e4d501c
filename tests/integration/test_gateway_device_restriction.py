"""Device-bound gateways (issue 17, item 2 for the other ServiceAccount that writes SerialDevices),
on a real kube-apiserver: the shipped ValidatingAdmissionPolicy lets a gateway's token (bound to its
Pod, as the kubelet projects it) change only the Free condition of its own SerialDevice, and only
while that device is bound to the gateway's node. RBAC alone let it patch any SerialDevice's status."""

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubeserial_common.core.errors import message_of
from kubeserial_gateway.kubeapi import ApiError, SlimCustomObjects, load_endpoint
from kubeserial_testing.controlplane import REPO_ROOT, ControlPlane
from kubeserial_testing.objects import apply_object, serial_device, write_monitor_status
from kubeserial_testing.services import (
    NAMESPACE,
    apply_rbac,
    placeholder_pod,
    pod_bound_kubeconfig,
    wait_for,
)

pytestmark = pytest.mark.controlplane
POLICIES = REPO_ROOT / "deploy" / "kustomize" / "base" / "policies"
MINE, OTHER, ELSEWHERE = "gwr-mine", "gwr-other", "gwr-elsewhere"
# As a Deployment names its pods: <deployment>-<pod-template-hash>-<5 random>.
POD = f"{MINE}-gateway-5d8f7c9b6d-x7k2p"
FREE = {"type": "Free", "status": "False", "reason": "InUse", "message": "held by 10.0.0.9:40000"}


class As:
    """Writes a SerialDevice's status the way the gateway does: its own lean client, a merge PATCH of
    the status subresource (kubectl patch would GET the subresource first, which the gateway's RBAC
    does not allow)."""

    def __init__(self, plane: ControlPlane, kubeconfig: Path) -> None:
        self.plane, self.kubeconfig = plane, kubeconfig

    def patch_status(self, device: str, status: dict[str, Any]) -> tuple[int, str]:
        async def patch() -> tuple[int, str]:
            objects = SlimCustomObjects(load_endpoint(str(self.kubeconfig)))
            try:
                await objects.patch_status("serialdevices", device, {"status": status})
            except ApiError as exc:
                return exc.status, message_of(exc)
            finally:
                await objects.client.close()
            return 0, ""

        return asyncio.run(patch())


def conditions(plane: ControlPlane, device: str, *, free: dict[str, str]) -> list[dict[str, Any]]:
    """The device's conditions with Free replaced, as the gateway writes them (the whole list)."""
    current = json.loads(plane.kubectl("get", "serialdevice", device, "-o", "json").stdout)
    kept = [c for c in current["status"].get("conditions", []) if c["type"] != "Free"]
    return [*kept, {**free, "lastTransitionTime": "2026-12-02T10:00:00Z"}]


@pytest.fixture(scope="module")
def gateway(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[As]:
    workdir = tmp_path_factory.mktemp("gateway-restriction")
    apply_rbac(control_plane, "gateway")
    for name, node in ((MINE, "node-a"), (OTHER, "node-a"), (ELSEWHERE, "node-b")):
        apply_object(control_plane, serial_device(name))
        write_monitor_status(control_plane, name, node=node, available=True)
    pod = placeholder_pod(POD, namespace=NAMESPACE, service_account="kubeserial-gateway", node="node-a")
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(pod))
    identity = As(
        control_plane,
        pod_bound_kubeconfig(
            control_plane,
            namespace=NAMESPACE,
            service_account="kubeserial-gateway",
            pod=POD,
            path=workdir / "gw",
        ),
    )
    control_plane.kubectl("apply", "-k", str(POLICIES))
    wait_for(
        lambda: (
            "may write only its own SerialDevice"
            in identity.patch_status(OTHER, {"conditions": conditions(control_plane, OTHER, free=FREE)})[1]
        ),
        timeout=30,
        message="the ValidatingAdmissionPolicy to be in force",
    )
    try:
        yield identity
    finally:
        control_plane.kubectl("delete", "-k", str(POLICIES), "--ignore-not-found", check=False)
        control_plane.kubectl(
            "delete",
            "pod",
            POD,
            "-n",
            NAMESPACE,
            "--grace-period=0",
            "--force",
            "--ignore-not-found",
            check=False,
        )
        unbound = control_plane.service_account_kubeconfig(
            NAMESPACE, "kubeserial-gateway", path=workdir / "u"
        )
        wait_for(
            lambda: (
                As(control_plane, unbound).patch_status(
                    OTHER, {"conditions": conditions(control_plane, OTHER, free=FREE)}
                )[0]
                == 0
            ),
            timeout=30,
            message="the ValidatingAdmissionPolicy to be gone",
        )


def test_a_gateway_writes_the_free_condition_of_its_own_device(
    control_plane: ControlPlane, gateway: As
) -> None:
    code, out = gateway.patch_status(MINE, {"conditions": conditions(control_plane, MINE, free=FREE)})
    assert code == 0, out


def test_a_gateway_cannot_write_another_device(control_plane: ControlPlane, gateway: As) -> None:
    code, out = gateway.patch_status(OTHER, {"conditions": conditions(control_plane, OTHER, free=FREE)})
    assert code != 0
    assert f"the gateway pod {POD} may write only its own SerialDevice, not {OTHER}" in out, out


def test_a_gateway_cannot_move_or_mark_its_device(control_plane: ControlPlane, gateway: As) -> None:
    code, out = gateway.patch_status(MINE, {"nodeName": "node-b", "devicePath": "/dev/ttyUSB0"})
    assert code != 0 and "may not change status.nodeName, status.devicePath or status.port" in out, out
    marked = [
        {**c, "status": "False", "reason": "Gone"} if c["type"] == "Available" else c
        for c in conditions(control_plane, MINE, free=FREE)
    ]
    code, out = gateway.patch_status(MINE, {"conditions": marked})
    assert code != 0 and "may change only the Free condition" in out, out


def test_a_gateway_cannot_write_a_device_bound_to_another_node(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    """A gateway pod named for ELSEWHERE but running on node-a (ELSEWHERE is bound to node-b)."""
    pod_name = f"{ELSEWHERE}-gateway-5d8f7c9b6d-q9w8e"
    pod = placeholder_pod(pod_name, namespace=NAMESPACE, service_account="kubeserial-gateway", node="node-a")
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(pod))
    try:
        stray = As(
            control_plane,
            pod_bound_kubeconfig(
                control_plane,
                namespace=NAMESPACE,
                service_account="kubeserial-gateway",
                pod=pod_name,
                path=tmp_path / "s",
            ),
        )
        code, out = stray.patch_status(
            ELSEWHERE, {"conditions": conditions(control_plane, ELSEWHERE, free=FREE)}
        )
        assert code != 0
        assert f"may write SerialDevice {ELSEWHERE} only while it is bound to that node" in out, out
        assert "(status.nodeName is node-b)" in out
    finally:
        control_plane.kubectl(
            "delete",
            "pod",
            pod_name,
            "-n",
            NAMESPACE,
            "--grace-period=0",
            "--force",
            "--ignore-not-found",
            check=False,
        )


def test_a_token_without_its_pod_writes_nothing(
    control_plane: ControlPlane, gateway: As, tmp_path: Path
) -> None:
    unbound = As(
        control_plane,
        control_plane.service_account_kubeconfig(NAMESPACE, "kubeserial-gateway", path=tmp_path / "u"),
    )
    code, out = unbound.patch_status(MINE, {"conditions": conditions(control_plane, MINE, free=FREE)})
    assert code != 0 and "this token names no pod or node" in out, out
