"""Which keys a watch event queues, the device-state metric, and the command line."""

from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from kubeserial_common.core import constants as c
from kubeserial_common.runtime.lean import Endpoint, LeanClient
from kubeserial_common.runtime.workqueue import WorkQueue
from kubeserial_controller.__main__ import parse_args
from kubeserial_controller.controller import Controller
from kubeserial_controller.desired import Images
from kubeserial_controller.metrics import ControllerMetrics
from kubeserial_controller.reconcilers import Settings


@pytest.fixture
async def controller() -> AsyncIterator[Controller]:
    """A Controller that never talks to a server: only its caches and queues are used."""
    async with LeanClient(Endpoint(server="http://127.0.0.1:9")) as api:
        yield Controller(
            api,
            settings=Settings(namespace="kubeserial", images=Images(gateway="gw")),
            metrics=ControllerMetrics(CollectorRegistry()),
        )


def obj(name: str, **fields: Any) -> dict[str, Any]:
    metadata = {"name": name, **fields.pop("metadata", {})}
    return {"metadata": metadata, **fields}


def put(controller: Controller, informer_name: str, item: dict[str, Any]) -> None:
    informer = getattr(controller.world, informer_name)
    meta = item["metadata"]
    informer.cache[(meta.get("namespace") or "", meta["name"])] = item


async def drain(queue: WorkQueue[Any]) -> set[Any]:
    keys = set()
    while queue.depth():
        key = await queue.get()
        queue.done(key)
        keys.add(key)
    return keys


async def test_manager_change_wakes_the_devices_and_requests_naming_it(controller: Controller) -> None:
    put(controller, "devices", obj("ender3", spec={"manager": "octoprint"}))
    put(controller, "devices", obj("zigbee", spec={}))
    put(controller, "requests", obj("ender3-octoprint", spec={"device": "ender3", "manager": "octoprint"}))
    controller.on_event("Manager", "ADDED", obj("octoprint"))
    assert await drain(controller.devices) == {"ender3"}
    assert await drain(controller.requests) == {"ender3-octoprint"}


async def test_device_change_wakes_its_kubeserial_and_requests(controller: Controller) -> None:
    put(controller, "requests", obj("ender3-octoprint", spec={"device": "ender3", "manager": "octoprint"}))
    labels = {c.KUBESERIAL_LABEL: "home.printers"}
    controller.on_event("SerialDevice", "DELETED", obj("ender3", metadata={"labels": labels}))
    assert await drain(controller.devices) == {"ender3"}
    assert await drain(controller.kubeserials) == {("home", "printers")}
    assert await drain(controller.requests) == {"ender3-octoprint"}


async def test_owned_children_wake_their_controller_owner(controller: Controller) -> None:
    def owned_by(kind: str, name: str) -> dict[str, Any]:
        return obj("x", metadata={"ownerReferences": [{"kind": kind, "name": name, "controller": True}]})

    controller.on_event("Deployment", "DELETED", owned_by("SerialDevice", "ender3"))
    controller.on_event("Ingress", "MODIFIED", owned_by("ManagerScheduleRequest", "ender3-octoprint"))
    controller.on_event("Service", "MODIFIED", obj("unowned"))
    assert await drain(controller.devices) == {"ender3"}
    assert await drain(controller.requests) == {"ender3-octoprint"}


async def test_only_monitor_leases_wake_nodes(controller: Controller) -> None:
    controller.on_event(
        "Lease", "MODIFIED", obj("kubeserial-monitor-node-a", metadata={"namespace": "kubeserial"})
    )
    controller.on_event(
        "Lease", "MODIFIED", obj("kubeserial-controller", metadata={"namespace": "kubeserial"})
    )
    assert await drain(controller.nodes) == {"node-a"}


async def test_kubeserial_change_wakes_requests_of_its_devices(controller: Controller) -> None:
    labels = {c.KUBESERIAL_LABEL: "home.printers"}
    put(controller, "devices", obj("ender3", metadata={"labels": labels}, spec={"manager": "octoprint"}))
    put(controller, "requests", obj("ender3-octoprint", spec={"device": "ender3", "manager": "octoprint"}))
    controller.on_event("KubeSerial", "MODIFIED", obj("printers", metadata={"namespace": "home"}))
    assert await drain(controller.kubeserials) == {("home", "printers")}
    assert await drain(controller.requests) == {"ender3-octoprint"}


async def test_device_states_metric_counts_conditions(controller: Controller) -> None:
    put(controller, "devices", obj("a", status={"conditions": [{"type": "Available", "status": "True"}]}))
    put(controller, "devices", obj("b", status={"conditions": [{"type": "Available", "status": "Unknown"}]}))
    registry = controller.metrics.registry
    assert (
        registry.get_sample_value(
            "kubeserial_controller_serialdevices", {"condition": "Available", "status": "True"}
        )
        == 1
    )
    assert (
        registry.get_sample_value(
            "kubeserial_controller_serialdevices", {"condition": "Ready", "status": "None"}
        )
        == 2
    )
    assert registry.get_sample_value("kubeserial_controller_queue_depth", {"kind": "SerialDevice"}) == 0


def test_command_line_defaults_and_validation(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse_args([])
    assert args.leader_election and args.leader_election_id == "kubeserial-controller"
    assert args.gateway_image == "kubeserial/gateway:latest" and args.workers == 4
    assert not parse_args(["--no-leader-election"]).leader_election
    for flag in ("--workers", "--binding-workers", "--api-connections"):
        with pytest.raises(SystemExit):
            parse_args([flag, "0"])
        assert f"{flag} must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--lease-duration", "5", "--renew-interval", "5"])
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--help"])
    assert exit_info.value.code == 0 and "--gateway-image" in capsys.readouterr().out
