"""The monitor as a real process on the real control plane, with its own ServiceAccount, watching a
umockdev testbed: simulated FTDI adapters are plugged and unplugged and the cluster state follows."""

import json
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kubeserial_testing.controlplane import ControlPlane, free_port
from kubeserial_testing.services import apply_rbac, service_process, wait_for
from kubeserial_testing.umockdev import SimulatedUsb, UsbAdapter

pytestmark = [pytest.mark.controlplane, pytest.mark.umockdev]
NAMESPACE = "kubeserial"
PREFIX = "kubeserial.com/"


@dataclass
class RunningMonitor:
    node: str
    health_port: int
    log_path: Path

    def _get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}{path}", timeout=2) as response:
                return int(response.status), response.read().decode()
        except OSError as exc:
            return getattr(exc, "code", 0) or 0, str(exc)

    def ready(self) -> bool:
        return self._get("/readyz")[0] == 200

    def metric(self, name: str, **labels: str) -> float:
        """One sample from /metrics (0 when absent)."""
        wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
        for line in self._get("/metrics")[1].splitlines():
            if line.startswith(wanted + " "):
                return float(line.split()[-1])
        return 0.0


@pytest.fixture(scope="module")
def monitor_kubeconfig(control_plane: ControlPlane) -> Path:
    return apply_rbac(control_plane, "monitor")


@pytest.fixture
def usb(tmp_path: Path) -> Iterator[SimulatedUsb]:
    with SimulatedUsb(tmp_path / "usb") as testbed:
        yield testbed


@contextmanager
def monitor(
    node: str,
    *,
    usb: SimulatedUsb,
    kubeconfig: Path,
    tmp_path: Path,
    exit_codes: list[int] | None = None,
    extra_args: tuple[str, ...] = (),
) -> Iterator[RunningMonitor]:
    running = RunningMonitor(node=node, health_port=free_port(), log_path=tmp_path / f"monitor-{node}.log")
    args = ["--node-name", node, "--health-host", "127.0.0.1", "--health-port", str(running.health_port)]
    args += extra_args
    with service_process(
        "kubeserial_monitor", args, kubeconfig=kubeconfig, log_path=running.log_path, env=usb.env
    ) as proc:
        wait_for(lambda: proc.poll() is not None or running.ready(), timeout=30, message=f"{node} ready")
        assert proc.poll() is None, running.log_path.read_text()
        yield running
    if exit_codes is not None:
        exit_codes.append(proc.returncode)


def get(plane: ControlPlane, *args: str) -> dict[str, Any]:
    return json.loads(plane.kubectl("get", *args, "-o", "json").stdout)  # type: ignore[no-any-return]


def create_device(plane: ControlPlane, name: str, **spec: str) -> None:
    body = {
        "apiVersion": "app.kubeserial.com/v1alpha1",
        "kind": "SerialDevice",
        "metadata": {"name": name},
        "spec": {"idVendor": "0403", "idProduct": "6001", **spec},
    }
    plane.kubectl("create", "-f", "-", input=json.dumps(body))


@pytest.fixture
def device_names(control_plane: ControlPlane) -> Iterator[list[str]]:
    """Unique SerialDevice names for one test, deleted afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        control_plane.kubectl("delete", "serialdevice", name, "--wait=false", check=False)


def new_name(names: list[str], base: str) -> str:
    names.append(f"{base}-{uuid.uuid4().hex[:6]}")
    return names[-1]


def status(plane: ControlPlane, name: str) -> dict[str, Any]:
    return get(plane, "serialdevice", name).get("status", {})  # type: ignore[no-any-return]


def condition(plane: ControlPlane, name: str, kind: str) -> dict[str, Any]:
    conditions = status(plane, name).get("conditions", [])
    return next((c for c in conditions if c["type"] == kind), {})


def wait_available(plane: ControlPlane, name: str, value: str) -> dict[str, Any]:
    wait_for(
        lambda: condition(plane, name, "Available").get("status") == value,
        timeout=20,
        message=f"{name} Available={value}",
    )
    return status(plane, name)


def resources(plane: ControlPlane, node: str) -> dict[str, dict[str, str]]:
    """kubeserial.com/* in the Node's capacity and allocatable."""
    node_status = get(plane, "node", node)["status"]
    return {
        field: {k: v for k, v in (node_status.get(field) or {}).items() if k.startswith(PREFIX)}
        for field in ("capacity", "allocatable")
    }


def wait_resource(plane: ControlPlane, node: str, name: str, value: str | None) -> None:
    key = PREFIX + name
    wait_for(
        lambda: all(fields.get(key) == value for fields in resources(plane, node).values()),
        timeout=20,
        message=f"{node} {key}={value}",
    )


def consumer_pod(name: str, resource: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "automountServiceAccountToken": False,
            # The harness's nodes keep the not-ready taint TaintNodesByCondition put on them at
            # registration (no node-lifecycle controller removes it); both nodes have it alike.
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists"}],
            "containers": [
                {"name": "app", "image": "octoprint:unused", "resources": {"limits": {resource: "1"}}}
            ],
        },
    }


def pod_placement(plane: ControlPlane, name: str) -> tuple[str, str]:
    """(spec.nodeName, reason of PodScheduled=False) of a pod."""
    pod = get(plane, "pod", name, "-n", "default")
    reasons = [
        c.get("reason", "")
        for c in pod.get("status", {}).get("conditions", [])
        if c["type"] == "PodScheduled" and c["status"] == "False"
    ]
    return pod["spec"].get("nodeName", ""), (reasons or [""])[0]


def test_plug_unplug_replug_and_scheduling(
    control_plane: ControlPlane,
    monitor_kubeconfig: Path,
    usb: SimulatedUsb,
    tmp_path: Path,
    device_names: list[str],
) -> None:
    name = new_name(device_names, "ender3")
    create_device(control_plane, name)
    adapter = UsbAdapter(serial="A50285BI")
    resource = PREFIX + name
    pods = [f"{name}-first", f"{name}-second"]
    exit_codes: list[int] = []
    try:
        with monitor(
            "node-a", usb=usb, kubeconfig=monitor_kubeconfig, tmp_path=tmp_path, exit_codes=exit_codes
        ) as node_a:
            # plug -> claimed by node-a with the stable by-id path, Free, capacity 1
            usb.plug(adapter)
            claimed = wait_available(control_plane, name, "True")
            assert claimed["nodeName"] == "node-a"
            assert claimed["devicePath"] == adapter.by_id
            assert condition(control_plane, name, "Available")["reason"] == "DeviceAvailable"
            free = condition(control_plane, name, "Free")
            assert (free["status"], free["reason"]) == ("True", "NoSession")
            wait_resource(control_plane, "node-a", name, "1")
            assert resource not in resources(control_plane, "node-b")["capacity"]
            lease = get(control_plane, "lease", "kubeserial-monitor-node-a", "-n", NAMESPACE)
            assert lease["spec"]["holderIdentity"] == "node-a"

            # a pod that requests the device is scheduled onto the node that has it
            control_plane.kubectl("create", "-f", "-", input=json.dumps(consumer_pod(pods[0], resource)))
            wait_for(lambda: pod_placement(control_plane, pods[0])[0], timeout=30, message="first pod bound")
            assert pod_placement(control_plane, pods[0])[0] == "node-a"

            # unplug -> released by its owner, capacity 0
            usb.unplug(adapter)
            released = wait_available(control_plane, name, "False")
            assert "nodeName" not in released and "devicePath" not in released
            assert condition(control_plane, name, "Available")["reason"] == "DeviceUnavailable"
            assert condition(control_plane, name, "Free")["status"] == "False"
            wait_resource(control_plane, "node-a", name, "0")

            # with the device gone nowhere has room: a second consumer stays pending
            # (forced: without a kubelet nothing would confirm a graceful deletion)
            control_plane.kubectl("delete", "pod", pods[0], "-n", "default", "--grace-period=0", "--force")
            control_plane.kubectl("create", "-f", "-", input=json.dumps(consumer_pod(pods[1], resource)))
            wait_for(
                lambda: pod_placement(control_plane, pods[1]) == ("", "Unschedulable"),
                timeout=30,
                message="second pod unschedulable",
            )

            # replug (a new ttyUSB number, the same by-id path) -> available again, pod scheduled
            assert usb.plug(adapter) != "/dev/ttyUSB0"
            again = wait_available(control_plane, name, "True")
            assert (again["nodeName"], again["devicePath"]) == ("node-a", adapter.by_id)
            wait_resource(control_plane, "node-a", name, "1")
            wait_for(
                lambda: pod_placement(control_plane, pods[1])[0] == "node-a",
                timeout=60,
                message="pending pod scheduled onto node-a after the replug",
            )

            assert node_a.metric("kubeserial_monitor_claims_total", outcome="claimed") == 2
            assert node_a.metric("kubeserial_monitor_claims_total", outcome="released") == 1
            assert node_a.metric("kubeserial_monitor_plug_to_status_seconds_count") == 2
            assert node_a.metric("kubeserial_monitor_udev_events_total", action="add") == 2
        # SIGTERM: the monitor removes its extended resources and exits cleanly
        assert exit_codes == [0]
        assert resource not in resources(control_plane, "node-a")["capacity"]
        assert resource not in resources(control_plane, "node-a")["allocatable"]
        events = get(
            control_plane, "events", "-n", "default", "--field-selector", f"involvedObject.name={name}"
        )
        reasons = sorted(e["reason"] for e in events["items"])
        assert reasons == ["DeviceAvailable", "DeviceAvailable", "DeviceUnavailable"]
    finally:
        for pod in pods:
            control_plane.kubectl(
                "delete", "pod", pod, "-n", "default", "--grace-period=0", "--force", check=False
            )


def test_two_monitors_and_one_device_make_exactly_one_claim(
    control_plane: ControlPlane,
    monitor_kubeconfig: Path,
    usb: SimulatedUsb,
    tmp_path: Path,
    device_names: list[str],
) -> None:
    """Both simulated nodes see the same adapter at the same moment and race to claim it."""
    name = new_name(device_names, "zigbee")
    adapter = UsbAdapter(serial=f"ZB{uuid.uuid4().hex[:6].upper()}")
    create_device(control_plane, name, serialNumber=adapter.serial)
    cycles = 3
    with (
        monitor("node-a", usb=usb, kubeconfig=monitor_kubeconfig, tmp_path=tmp_path) as node_a,
        monitor("node-b", usb=usb, kubeconfig=monitor_kubeconfig, tmp_path=tmp_path) as node_b,
    ):
        for cycle in range(1, cycles + 1):
            usb.plug(adapter)
            winner = wait_available(control_plane, name, "True")["nodeName"]
            loser = {"node-a": "node-b", "node-b": "node-a"}[winner]
            wait_resource(control_plane, winner, name, "1")
            claims = [
                m.metric("kubeserial_monitor_claims_total", outcome="claimed") for m in (node_a, node_b)
            ]
            assert sum(claims) == cycle, f"cycle {cycle}: claims {claims}"
            # the loser wrote nothing: the owner is unchanged and it advertises nothing
            assert status(control_plane, name)["nodeName"] == winner
            assert resources(control_plane, loser)["capacity"].get(PREFIX + name) in (None, "0")
            usb.unplug(adapter)
            wait_available(control_plane, name, "False")
            wait_resource(control_plane, winner, name, "0")
    available_events = get(
        control_plane, "events", "-n", "default", "--field-selector", f"involvedObject.name={name}"
    )
    assert sorted(e["reason"] for e in available_events["items"]).count("DeviceAvailable") == cycles


def test_identical_adapters_with_different_serials_get_their_own_devices(
    control_plane: ControlPlane,
    monitor_kubeconfig: Path,
    usb: SimulatedUsb,
    tmp_path: Path,
    device_names: list[str],
) -> None:
    tag = uuid.uuid4().hex[:6].upper()
    left, right = UsbAdapter(serial=f"L{tag}", port=2), UsbAdapter(serial=f"R{tag}", port=3)
    left_name, right_name = new_name(device_names, "left"), new_name(device_names, "right")
    create_device(control_plane, left_name, serialNumber=left.serial)
    create_device(control_plane, right_name, serialNumber=right.serial)
    with monitor("node-a", usb=usb, kubeconfig=monitor_kubeconfig, tmp_path=tmp_path):
        usb.plug(right)
        usb.plug(left)
        assert wait_available(control_plane, left_name, "True")["devicePath"] == left.by_id
        assert wait_available(control_plane, right_name, "True")["devicePath"] == right.by_id
        wait_resource(control_plane, "node-a", left_name, "1")
        wait_resource(control_plane, "node-a", right_name, "1")
        usb.unplug(left)
        wait_available(control_plane, left_name, "False")
        wait_resource(control_plane, "node-a", left_name, "0")
        assert condition(control_plane, right_name, "Available")["status"] == "True"
        assert resources(control_plane, "node-a")["capacity"][PREFIX + right_name] == "1"
        # a deleted SerialDevice takes its extended resource with it
        control_plane.kubectl("delete", "serialdevice", right_name)
        wait_resource(control_plane, "node-a", right_name, None)


def test_state_changed_while_the_monitor_was_down_is_repaired_at_start(
    control_plane: ControlPlane,
    monitor_kubeconfig: Path,
    usb: SimulatedUsb,
    tmp_path: Path,
    device_names: list[str],
) -> None:
    """No event is needed: the rescan at start finds what is plugged in, and what is not."""
    name = new_name(device_names, "gps")
    adapter = UsbAdapter(serial=f"G{uuid.uuid4().hex[:6].upper()}")
    create_device(control_plane, name, serialNumber=adapter.serial)
    usb.plug(adapter)
    with monitor("node-a", usb=usb, kubeconfig=monitor_kubeconfig, tmp_path=tmp_path):
        assert wait_available(control_plane, name, "True")["devicePath"] == adapter.by_id
    usb.unplug(adapter)  # nobody is listening
    assert condition(control_plane, name, "Available")["status"] == "True"
    with monitor("node-a", usb=usb, kubeconfig=monitor_kubeconfig, tmp_path=tmp_path):
        assert "nodeName" not in wait_available(control_plane, name, "False")
        # the first monitor removed its keys at shutdown; a device it never saw gets none
        assert PREFIX + name not in resources(control_plane, "node-a")["capacity"]


def test_a_lost_udev_event_is_repaired_by_the_periodic_rescan(
    control_plane: ControlPlane,
    monitor_kubeconfig: Path,
    usb: SimulatedUsb,
    tmp_path: Path,
    device_names: list[str],
) -> None:
    name = new_name(device_names, "zwave")
    adapter = UsbAdapter(serial=f"W{uuid.uuid4().hex[:6].upper()}")
    create_device(control_plane, name, serialNumber=adapter.serial)
    with monitor(
        "node-a",
        usb=usb,
        kubeconfig=monitor_kubeconfig,
        tmp_path=tmp_path,
        extra_args=("--rescan-seconds", "1"),
    ) as node_a:
        usb.plug(adapter)
        wait_available(control_plane, name, "True")
        usb.unplug(adapter, announce=False)  # no uevent reaches the monitor
        wait_available(control_plane, name, "False")
        wait_resource(control_plane, "node-a", name, "0")
        assert node_a.metric("kubeserial_monitor_udev_events_total", action="remove") == 0
        assert node_a.metric("kubeserial_monitor_rescans_total") >= 2
