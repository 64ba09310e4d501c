"""Claim/release decisions: who may write what into a SerialDevice's status."""

from typing import Any

from kubeserial_common.core.conditions import condition_status, find_condition
from kubeserial_monitor.claims import Change, decide, may_claim, owned_by

T0, T1 = "2024-01-01T00:00:00Z", "2024-01-01T00:01:00Z"
PATH = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0"


def device(status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "ender3", "resourceVersion": "7"}, "spec": {}, "status": status or {}}


def apply(obj: dict[str, Any], patch: dict[str, Any] | None) -> dict[str, Any]:
    """A JSON merge patch of status, as the apiserver applies it."""
    assert patch is not None
    status = dict(obj.get("status") or {})
    for key, value in patch.items():
        if value is None:
            status.pop(key, None)
        else:
            status[key] = value
    return {**obj, "status": status}


def cond(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    found = find_condition(obj["status"]["conditions"], kind)
    assert found is not None
    return dict(found)


def claimed(node: str = "node-a") -> dict[str, Any]:
    return apply(device(), decide(device(), node=node, device_path=PATH, now=T0).patch)


def test_first_sighting_claims_with_free_true() -> None:
    decision = decide(device(), node="node-a", device_path=PATH, now=T0)
    assert decision.change is Change.CLAIM
    obj = apply(device(), decision.patch)
    assert obj["status"]["nodeName"] == "node-a" and obj["status"]["devicePath"] == PATH
    assert cond(obj, "Available")["reason"] == "DeviceAvailable"
    assert cond(obj, "Free") | {"lastTransitionTime": None} == {
        "type": "Free",
        "status": "True",
        "reason": "NoSession",
        "message": "no client session",
        "lastTransitionTime": None,
        "lastHeartbeatTime": T0,
    }


def test_owned_and_unchanged_writes_nothing() -> None:
    assert decide(claimed(), node="node-a", device_path=PATH, now=T1).change is Change.NONE


def test_reconfirming_never_touches_free_owned_by_the_gateway() -> None:
    obj = claimed()
    in_use = {"type": "Free", "status": "False", "reason": "InUse", "message": "10.0.0.9:5555"}
    obj["status"]["conditions"] = [c for c in obj["status"]["conditions"] if c["type"] != "Free"] + [in_use]
    decision = decide(obj, node="node-a", device_path="/dev/ttyUSB4", now=T1)
    assert decision.change is Change.UPDATE
    after = apply(obj, decision.patch)
    assert after["status"]["devicePath"] == "/dev/ttyUSB4"
    assert cond(after, "Free") == in_use
    assert cond(after, "Available")["lastTransitionTime"] == T0  # still True: no transition


def test_device_held_by_another_node_is_left_alone() -> None:
    obj = claimed("node-b")
    assert not may_claim(obj, "node-a")
    assert decide(obj, node="node-a", device_path=PATH, now=T1).change is Change.NONE
    assert decide(obj, node="node-a", device_path=None, now=T1).change is Change.NONE


def test_lost_node_device_may_be_claimed_by_another_node() -> None:
    obj = claimed("node-b")
    obj["status"]["conditions"] = [
        {**c, "status": "Unknown", "reason": "NodeLost"} if c["type"] == "Available" else c
        for c in obj["status"]["conditions"]
    ]
    decision = decide(obj, node="node-a", device_path=PATH, now=T1)
    assert decision.change is Change.CLAIM
    after = apply(obj, decision.patch)
    assert owned_by(after, "node-a") and condition_status(after, "Free") == "True"


def test_unplug_on_the_owning_node_releases() -> None:
    decision = decide(claimed(), node="node-a", device_path=None, now=T1)
    assert decision.change is Change.RELEASE
    after = apply(claimed(), decision.patch)
    assert "nodeName" not in after["status"] and "devicePath" not in after["status"]
    assert cond(after, "Available")["status"] == "False"
    assert cond(after, "Available")["reason"] == "DeviceUnavailable"
    assert cond(after, "Free")["status"] == "False"
    assert decide(after, node="node-a", device_path=None, now=T1).change is Change.NONE


def test_absent_and_never_ours_writes_nothing() -> None:
    assert decide(device(), node="node-a", device_path=None, now=T0).change is Change.NONE


def test_stale_owner_after_restart_is_released() -> None:
    """Status says node-a holds it (NodeLost meanwhile), but node-a no longer sees it."""
    obj = claimed()
    obj["status"]["conditions"][0]["status"] = "Unknown"
    assert decide(obj, node="node-a", device_path=None, now=T1).change is Change.RELEASE
