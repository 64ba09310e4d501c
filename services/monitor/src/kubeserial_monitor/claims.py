"""Claim and release decisions for a SerialDevice's status, as pure functions over the wire form.

The monitor owns status.nodeName, status.devicePath and the Available condition. It sets Free only
when it claims or releases; the gateway owns Free otherwise (the rule: kubeserial_common.core.free).
"""

from dataclasses import dataclass
from enum import Enum
from typing import Any

from kubeserial_common.core import constants as c
from kubeserial_common.core.conditions import ConditionUpdate, condition_status
from kubeserial_common.core.free import free_at_claim, free_at_release
from kubeserial_common.core.status import conditions_patch
from kubeserial_common.core.vocabulary import DEVICE_AVAILABLE, DEVICE_UNAVAILABLE


class Change(Enum):
    NONE = "none"  # nothing to write
    CLAIM = "claim"  # this node takes the device (Available was not True here)
    UPDATE = "update"  # still ours; the path or message moved
    RELEASE = "release"  # the device left this node


@dataclass(frozen=True)
class Decision:
    change: Change
    patch: dict[str, Any] | None = None


def owner(obj: dict[str, Any]) -> str:
    return str((obj.get("status") or {}).get("nodeName") or "")


def owned_by(obj: dict[str, Any], node: str) -> bool:
    """The object says this node holds the device right now."""
    return owner(obj) == node and condition_status(obj, c.AVAILABLE) == "True"


def may_claim(obj: dict[str, Any], node: str) -> bool:
    """A node may claim a device that is not available elsewhere, or is already its own."""
    return condition_status(obj, c.AVAILABLE) != "True" or owner(obj) in ("", node)


def decide(obj: dict[str, Any], *, node: str, device_path: str | None, now: str) -> Decision:
    """What this node should write, given whether it sees the device (`device_path`) or not."""
    status = obj.get("status") or {}
    if device_path is not None:
        if not may_claim(obj, node):
            return Decision(Change.NONE)
        claiming = not owned_by(obj, node)
        updates = [
            ConditionUpdate(c.AVAILABLE, "True", DEVICE_AVAILABLE, f"{device_path} on node {node}"),
        ]
        if claiming:
            updates.append(free_at_claim())
        conditions = conditions_patch(obj, updates, now=now)
        fields_current = status.get("nodeName") == node and status.get("devicePath") == device_path
        if conditions is None and fields_current:
            return Decision(Change.NONE)
        patch: dict[str, Any] = {"nodeName": node, "devicePath": device_path, **(conditions or {})}
        return Decision(Change.CLAIM if claiming else Change.UPDATE, patch)
    if owner(obj) != node:
        return Decision(Change.NONE)  # only the owning node releases
    conditions = conditions_patch(
        obj,
        [
            ConditionUpdate(c.AVAILABLE, "False", DEVICE_UNAVAILABLE, f"unplugged from node {node}"),
            free_at_release(),
        ],
        now=now,
    )
    # null deletes the field in a merge patch: no node, no path.
    return Decision(Change.RELEASE, {"nodeName": None, "devicePath": None, **(conditions or {})})
