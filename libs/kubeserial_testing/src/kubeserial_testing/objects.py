"""Test helpers for objects on the local control plane: get/apply/wait through kubectl, and
stand-ins for what monitors and nodes write (device claims, monitor Leases, schedulable Nodes),
for tests of components that consume those writes."""

import json
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from kubeserial_common.core import constants as c
from kubeserial_common.core.conditions import ConditionUpdate, apply_conditions, now_rfc3339
from kubeserial_common.core.names import monitor_lease_name
from kubeserial_common.runtime.leases import micro_time
from kubeserial_testing.controlplane import ControlPlane
from kubeserial_testing.services import NAMESPACE, wait_for

DEVICE_PATH = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"


def unique(base: str) -> str:
    return f"{base}-{uuid.uuid4().hex[:6]}"


def get_object(
    plane: ControlPlane, kind: str, name: str, *, namespace: str | None = None
) -> dict[str, Any] | None:
    """The object, or None when it does not exist."""
    scope = ["-n", namespace] if namespace else []
    out = plane.kubectl("get", kind, name, *scope, "--ignore-not-found", "-o", "json").stdout
    return json.loads(out) if out.strip() else None


def apply_object(plane: ControlPlane, obj: Mapping[str, Any]) -> None:
    plane.kubectl("apply", "-f", "-", input=json.dumps(obj))


def wait_gone(plane: ControlPlane, kind: str, name: str, *, namespace: str | None = None) -> None:
    wait_for(
        lambda: get_object(plane, kind, name, namespace=namespace) is None,
        timeout=30,
        message=f"{kind}/{name} gone",
    )


def wait_exists(plane: ControlPlane, kind: str, name: str, *, namespace: str | None = None) -> dict[str, Any]:
    found = wait_for(
        lambda: get_object(plane, kind, name, namespace=namespace), timeout=30, message=f"{kind}/{name}"
    )
    assert isinstance(found, dict)
    return found


def condition(obj: Mapping[str, Any] | None, condition_type: str) -> dict[str, Any]:
    """The condition of that type on an object ({} when absent)."""
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return next((dict(cond) for cond in conditions if cond["type"] == condition_type), {})


def serial_device(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": c.API_VERSION,
        "kind": "SerialDevice",
        "metadata": {"name": name},
        "spec": {"idVendor": "0403", "idProduct": "6001", **spec},
    }


def kubeserial_for(
    name: str, adapter_devices: Mapping[str, str], *, namespace: str = NAMESPACE
) -> dict[str, Any]:
    """A KubeSerial listing FTDI FT232R devices (0403:6001), each {device name: USB serial}."""
    entries = [
        {"name": device, "idVendor": "0403", "idProduct": "6001", "serialNumber": serial}
        for device, serial in adapter_devices.items()
    ]
    return {
        "apiVersion": c.API_VERSION,
        "kind": "KubeSerial",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"ingress": {"enabled": False}, "serialDevices": entries},
    }


# -- stand-ins for the monitor -------------------------------------------------------------------


def monitor_status(
    current: Mapping[str, Any], *, node: str | None, available: bool, device_path: str = DEVICE_PATH
) -> dict[str, Any]:
    """The status a monitor writes when it claims a device on `node` (available) or releases it."""
    conditions = (current.get("status") or {}).get("conditions") or []
    if available:
        updates = [
            ConditionUpdate(c.AVAILABLE, "True", "DeviceAvailable", f"plugged into {node}"),
            ConditionUpdate(c.FREE, "True", "NoSession"),
        ]
        placement: dict[str, Any] = {"nodeName": node, "devicePath": device_path}
    else:
        updates = [
            ConditionUpdate(c.AVAILABLE, "False", "DeviceUnavailable", "unplugged"),
            ConditionUpdate(c.FREE, "False", "DeviceUnavailable"),
        ]
        placement = {"nodeName": None, "devicePath": None}
    return {**placement, "conditions": apply_conditions(conditions, updates, now=now_rfc3339())}


def write_monitor_status(plane: ControlPlane, name: str, *, node: str | None, available: bool) -> None:
    device = get_object(plane, "serialdevice", name)
    assert device is not None, f"SerialDevice {name} does not exist"
    status = monitor_status(device, node=node, available=available)
    patch = json.dumps({"status": status})
    plane.kubectl("patch", "serialdevice", name, "--subresource=status", "--type=merge", "-p", patch)


def monitor_lease(node: str, *, duration: int, namespace: str = NAMESPACE) -> dict[str, Any]:
    """The Lease a monitor on `node` holds, renewed now."""
    now = micro_time(datetime.now(UTC))
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": monitor_lease_name(node), "namespace": namespace},
        "spec": {
            "holderIdentity": f"monitor-{node}",
            "leaseDurationSeconds": duration,
            "acquireTime": now,
            "renewTime": now,
        },
    }


@contextmanager
def simulated_node(plane: ControlPlane, *, lease_seconds: int = 3600) -> Iterator[str]:
    """A schedulable Node of the caller's own, whose monitor Lease is valid for `lease_seconds`
    (and not renewed: a short one plays a node that dies)."""
    node = unique("node")
    plane.register_node(node)
    apply_object(plane, monitor_lease(node, duration=lease_seconds))
    try:
        yield node
    finally:
        plane.kubectl("delete", "lease", monitor_lease_name(node), "-n", NAMESPACE, check=False)
        plane.kubectl("delete", "node", node, "--wait=false", check=False)
