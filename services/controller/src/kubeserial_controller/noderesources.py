"""Node extended resources `kubeserial.com/<device>` as a JSON patch on nodes/status (pure).

The value is 1 on the node that holds the device and 0 once it is gone from there; a key whose
SerialDevice no longer exists is removed. Both capacity and allocatable are written: the kubelet
would copy capacity to allocatable, but nothing must depend on a kubelet being there.
"""

from collections.abc import Iterable, Mapping
from typing import Any

from kubeserial_common.core.constants import EXTENDED_RESOURCE_PREFIX
from kubeserial_common.core.names import extended_resource_name

FIELDS = ("capacity", "allocatable")


def pointer_token(key: str) -> str:
    """RFC 6901: '~' -> '~0', '/' -> '~1' ('kubeserial.com/x' -> 'kubeserial.com~1x')."""
    return key.replace("~", "~0").replace("/", "~1")


def resource_patch(
    node_status: Mapping[str, Any], *, owned: Iterable[str], known: Iterable[str]
) -> list[dict[str, Any]]:
    """JSON patch ops that bring the node's kubeserial.com/* resources in line.

    `owned`: devices this node holds (value 1). `known`: every SerialDevice that exists; a key
    for a known device that is not owned stays at 0, a key for an unknown device is removed.
    Empty `known` removes every kubeserial.com/* key (the shutdown clean-up).
    """
    owned_keys = {extended_resource_name(name) for name in owned}
    known_keys = {extended_resource_name(name) for name in known} | owned_keys
    ops: list[dict[str, Any]] = []
    for field in FIELDS:
        present = node_status.get(field)
        current: dict[str, Any] = {
            key: value
            for key, value in (present or {}).items()
            if isinstance(key, str) and key.startswith(EXTENDED_RESOURCE_PREFIX)
        }
        if present is None and owned_keys:
            ops.append({"op": "add", "path": f"/status/{field}", "value": {}})
        for key in sorted(owned_keys):
            if str(current.get(key)) != "1":
                ops.append({"op": "add", "path": f"/status/{field}/{pointer_token(key)}", "value": "1"})
        for key in sorted(current.keys() - owned_keys):
            path = f"/status/{field}/{pointer_token(key)}"
            if key not in known_keys:
                ops.append({"op": "remove", "path": path})
            elif str(current[key]) != "0":
                ops.append({"op": "add", "path": path, "value": "0"})
    return ops


def advertised(node_status: Mapping[str, Any]) -> dict[str, str]:
    """The kubeserial.com/* capacity a node shows (for logs and tests)."""
    capacity = node_status.get("capacity") or {}
    return {k: str(v) for k, v in capacity.items() if k.startswith(EXTENDED_RESOURCE_PREFIX)}
