"""The rule that divides the `Free` condition between the monitor and the gateway
(kubeserial_common.core.free), played through the sequences both writers go through."""

from typing import Any

from kubeserial_common.core import vocabulary as v
from kubeserial_common.core.conditions import (
    ConditionUpdate,
    apply_conditions,
    condition_status,
    get_condition,
)
from kubeserial_common.core.free import free_at_claim, free_at_release, free_for_session

NOW = "2026-01-01T00:00:00Z"


def device(*conditions: tuple[str, str, str]) -> dict[str, Any]:
    updates = [ConditionUpdate(t, s, r) for t, s, r in conditions]
    return {"metadata": {"generation": 2}, "status": {"conditions": apply_conditions([], updates, now=NOW)}}


def write(obj: dict[str, Any], *updates: ConditionUpdate | None) -> dict[str, Any]:
    conditions = obj["status"]["conditions"]
    new = apply_conditions(conditions, [u for u in updates if u is not None], now=NOW)
    return {**obj, "status": {"conditions": new}}


def free(obj: dict[str, Any]) -> tuple[str | None, str | None]:
    cond = get_condition(obj, v.FREE)
    return (None, None) if cond is None else (cond["status"], cond["reason"])


def claimed() -> dict[str, Any]:
    obj = device((v.AVAILABLE, "True", v.DEVICE_AVAILABLE))
    return write(obj, free_at_claim())


def test_claim_then_session_then_end() -> None:
    obj = claimed()
    assert free(obj) == ("True", v.NO_SESSION)
    obj = write(obj, free_for_session(obj, peer="10.0.0.1:4000 (raw)"))
    assert free(obj) == ("False", v.IN_USE)
    obj = write(obj, free_for_session(obj, peer=None))
    assert free(obj) == ("True", v.NO_SESSION)


def test_a_released_device_never_reads_free_even_when_the_gateway_ends_its_session_later() -> None:
    obj = claimed()
    obj = write(obj, free_for_session(obj, peer="10.0.0.1:4000 (raw)"))
    # Unplugged: the monitor releases while the session is still open.
    obj = write(obj, ConditionUpdate(v.AVAILABLE, "False", v.DEVICE_UNAVAILABLE), free_at_release())
    assert free(obj) == ("False", v.DEVICE_UNAVAILABLE)
    # The gateway's session ends afterwards: it must not turn Free back to True.
    assert free_for_session(obj, peer=None) is None
    assert free(write(obj, free_for_session(obj, peer=None))) == ("False", v.DEVICE_UNAVAILABLE)


def test_an_in_use_is_never_left_behind_on_an_unavailable_device() -> None:
    # The gateway wrote InUse, then the device became unavailable without the monitor touching Free
    # (the controller's NodeLost): the session's end still clears InUse.
    obj = claimed()
    obj = write(obj, free_for_session(obj, peer="10.0.0.1:4000 (raw)"))
    obj = write(obj, ConditionUpdate(v.AVAILABLE, "Unknown", v.NODE_LOST))
    update = free_for_session(obj, peer=None)
    assert update is not None
    assert (update.status, update.reason) == ("False", v.DEVICE_UNAVAILABLE)


def test_the_gateway_sets_free_before_any_monitor_wrote_available() -> None:
    obj: dict[str, Any] = {"metadata": {"generation": 1}, "status": {}}
    update = free_for_session(obj, peer=None)
    assert update is not None and (update.status, update.reason) == ("True", v.NO_SESSION)
    assert update.observed_generation == 1
    assert condition_status(write({"status": {"conditions": []}}, update), v.FREE) == "True"


def test_a_session_always_wins_over_availability() -> None:
    unavailable = device(
        (v.AVAILABLE, "False", v.DEVICE_UNAVAILABLE), (v.FREE, "False", v.DEVICE_UNAVAILABLE)
    )
    update = free_for_session(unavailable, peer="p")
    assert update is not None and (update.status, update.reason) == ("False", v.IN_USE)


def test_get_condition_reads_any_object_and_tolerates_malformed_status() -> None:
    deployment = {"status": {"conditions": [{"type": "Available", "status": "True"}]}}
    assert get_condition(deployment, "Available") == {"type": "Available", "status": "True"}
    for broken in (
        None,
        {},
        {"status": None},
        {"status": {"conditions": "x"}},
        {"status": {"conditions": [1]}},
    ):
        assert get_condition(broken, "Available") is None
        assert condition_status(broken, "Available") is None
