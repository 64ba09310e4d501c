"""EventRecorder.emit: a reconcile hands an Event over and goes on; at most max_pending wait."""

import asyncio
from typing import Any, cast

from structlog.testing import capture_logs

from kubeserial_common.core.errors import Conflict
from kubeserial_common.runtime.events import BACKGROUND_SENDERS, NORMAL, WARNING, EventRecorder
from kubeserial_common.runtime.lean import LeanClient

DEVICE = {
    "apiVersion": "app.kubeserial.com/v1alpha1",
    "kind": "SerialDevice",
    "metadata": {"name": "printer"},
}


class GatedApi:
    """Records posted Events; each create waits until the gate opens."""

    def __init__(self, *, fail: bool = False) -> None:
        self.gate = asyncio.Event()
        self.posted: list[dict[str, Any]] = []
        self.fail = fail

    async def create(self, resource: Any, body: dict[str, Any], *, namespace: str | None = None) -> None:
        await self.gate.wait()
        if self.fail:
            raise Conflict(409, "the apiserver said no")
        self.posted.append({**body, "namespace": namespace})


def recorder(api: GatedApi, *, max_pending: int = 1000) -> EventRecorder:
    return EventRecorder(cast(LeanClient, api), component="test", max_pending=max_pending)


async def test_emit_returns_before_the_event_is_posted_and_flush_posts_it() -> None:
    api = GatedApi()
    events = recorder(api)
    events.emit(DEVICE, type_=NORMAL, reason="DeviceAvailable", message="bound")
    await asyncio.sleep(0)
    assert api.posted == []  # the caller did not wait on the apiserver
    api.gate.set()
    await events.flush()
    [event] = api.posted
    assert (event["reason"], event["message"], event["namespace"]) == ("DeviceAvailable", "bound", "default")
    assert event["involvedObject"]["name"] == "printer"


async def test_beyond_max_pending_events_are_dropped_and_counted() -> None:
    api = GatedApi()
    events = recorder(api, max_pending=2)
    for n in range(5):
        events.emit(DEVICE, type_=NORMAL, reason=f"R{n}", message="m")
    assert events.dropped == 3
    api.gate.set()
    await events.flush()
    assert [e["reason"] for e in api.posted] == ["R0", "R1"]


async def test_a_burst_of_normal_events_does_not_crowd_out_a_warning() -> None:
    api = GatedApi()
    events = recorder(api, max_pending=2)
    for n in range(5):
        events.emit(DEVICE, type_=NORMAL, reason=f"R{n}", message="m")
    events.emit(DEVICE, type_=WARNING, reason="InvalidSpec", message="spec.x is wrong")
    assert events.dropped == 3
    api.gate.set()
    await events.flush()
    assert [(e["type"], e["reason"]) for e in api.posted] == [
        (NORMAL, "R0"),
        (NORMAL, "R1"),
        (WARNING, "InvalidSpec"),
    ]


async def test_a_burst_of_drops_is_one_log_line_and_a_summary_not_one_per_event() -> None:
    api = GatedApi()
    events = recorder(api, max_pending=2)
    with capture_logs() as logged:
        for n in range(500):
            events.emit(DEVICE, type_=NORMAL, reason=f"R{n}", message="m")
        api.gate.set()
        await events.flush()
        events.emit(DEVICE, type_=NORMAL, reason="after", message="m")  # the queue has room
        await events.flush()
    assert [(e["event"], e.get("dropped")) for e in logged if e["log_level"] == "warning"] == [
        ("events dropped: too many unsent; dropping until they are posted", None),
        ("events posted again", 498),
    ]
    assert events.dropped == 498 and [e["reason"] for e in api.posted] == ["R0", "R1", "after"]


async def test_a_failed_post_is_logged_not_raised() -> None:
    api = GatedApi(fail=True)
    api.gate.set()
    events = recorder(api)
    events.emit(DEVICE, type_=NORMAL, reason="R", message="m")
    await events.flush()
    assert api.posted == [] and events.dropped == 0


async def test_background_posts_use_at_most_a_few_connections_at_once() -> None:
    api = GatedApi()
    in_flight = peak = 0
    original = api.create

    async def counting(resource: Any, body: dict[str, Any], *, namespace: str | None = None) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await original(resource, body, namespace=namespace)
        finally:
            in_flight -= 1

    api.create = counting  # type: ignore[method-assign]
    events = recorder(api)
    for n in range(10):
        events.emit(DEVICE, type_=NORMAL, reason=f"R{n}", message="m")
    for _ in range(5):
        await asyncio.sleep(0)
    assert peak == BACKGROUND_SENDERS  # the rest wait for a sender, not for the client's connections
    api.gate.set()
    await events.flush()
    assert len(api.posted) == 10
