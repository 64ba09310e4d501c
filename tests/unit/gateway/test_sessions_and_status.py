"""Session admission and the Free condition: pure decisions."""

from typing import Any

import pytest

from kubeserial_gateway.freestatus import free_status_patch, free_update
from kubeserial_gateway.sessions import Verdict, admission, describe_peer

NOW = "2026-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("device_open", "idle_for", "takeover", "expected"),
    [
        (False, None, False, Verdict.REFUSE_NO_DEVICE),
        (False, 100.0, True, Verdict.REFUSE_NO_DEVICE),
        (True, None, False, Verdict.ADMIT),
        (True, 0.0, False, Verdict.REFUSE_BUSY),
        (True, 1000.0, False, Verdict.REFUSE_BUSY),  # without --allow-takeover, never
        (True, 29.9, True, Verdict.REFUSE_BUSY),  # not idle long enough
        (True, 30.0, True, Verdict.TAKE_OVER),
    ],
)
def test_admission(device_open: bool, idle_for: float | None, takeover: bool, expected: Verdict) -> None:
    assert (
        admission(
            device_open=device_open,
            session_idle_for=idle_for,
            allow_takeover=takeover,
            takeover_idle_seconds=30.0,
        )
        is expected
    )


def test_describe_peer() -> None:
    assert describe_peer(("10.0.0.7", 51234), protocol="raw") == "10.0.0.7:51234 (raw)"
    assert describe_peer(("fd00::1", 2217, 0, 0), protocol="rfc2217") == "[fd00::1]:2217 (rfc2217)"
    assert describe_peer(None, protocol="raw") == "unknown (raw)"


def device(*conditions: tuple[str, str, str], generation: int = 3) -> dict[str, Any]:
    return {
        "metadata": {"name": "ender3", "generation": generation, "resourceVersion": "7"},
        "status": {
            "conditions": [
                {
                    "type": t,
                    "status": s,
                    "reason": r,
                    "message": "",
                    "lastTransitionTime": "2025-01-01T00:00:00Z",
                }
                for t, s, r in conditions
            ]
        },
    }


def free_of(patch: dict[str, Any] | None) -> dict[str, Any]:
    assert patch is not None
    return next(cond for cond in patch["conditions"] if cond["type"] == "Free")


def test_session_open_means_in_use_with_the_peer() -> None:
    patch = free_status_patch(
        device(("Available", "True", "DeviceAvailable")), peer="1.2.3.4:5 (raw)", now=NOW
    )
    free = free_of(patch)
    assert (free["status"], free["reason"]) == ("False", "InUse")
    assert "1.2.3.4:5 (raw)" in free["message"]
    assert free["observedGeneration"] == 3 and free["lastTransitionTime"] == NOW
    # Available is kept as it was: one patch, whole conditions list, nothing half-written.
    assert patch is not None
    assert [c["type"] for c in patch["conditions"]] == ["Available", "Free"]


def test_no_session_means_free_when_available_or_unknown_to_us() -> None:
    for obj in (device(("Available", "True", "DeviceAvailable")), device()):
        free = free_of(free_status_patch(obj, peer=None, now=NOW))
        assert (free["status"], free["reason"]) == ("True", "NoSession")


def test_nothing_written_when_already_so() -> None:
    obj = device(("Available", "True", "DeviceAvailable"), ("Free", "True", "NoSession"))
    obj["status"]["conditions"][1]["message"] = "no client session is open"
    obj["status"]["conditions"][1]["observedGeneration"] = 3
    assert free_status_patch(obj, peer=None, now=NOW) is None


def test_monitor_owns_free_once_the_device_is_gone() -> None:
    released = device(("Available", "False", "DeviceUnavailable"), ("Free", "False", "DeviceUnavailable"))
    assert free_update(released, peer=None) is None
    lost = device(("Available", "Unknown", "NodeLost"), ("Free", "True", "NoSession"))
    assert free_update(lost, peer=None) is None
    # Our own InUse is never left behind.
    stale = device(("Available", "False", "DeviceUnavailable"), ("Free", "False", "InUse"))
    update = free_update(stale, peer=None)
    assert update is not None and (update.status, update.reason) == ("False", "DeviceUnavailable")
