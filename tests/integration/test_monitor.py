"""The monitor as a real process on the real control plane, with its own ServiceAccount, watching a
umockdev testbed: simulated FTDI adapters are plugged and unplugged, the monitor publishes them as
SerialPorts, and the controller (a real process too, under its own ServiceAccount) binds
SerialDevices to them: the cluster state follows."""

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kubeserial_testing.controlplane import ControlPlane, free_port
from kubeserial_testing.probes import RunningService, is_ready, metric_at, running_service
from kubeserial_testing.services import apply_rbac, service_process, wait_for
from kubeserial_testing.umockdev import SimulatedUsb, UsbAdapter

pytestmark = [pytest.mark.controlplane, pytest.mark.umockdev]
NAMESPACE = "kubeserial"
PREFIX = "kubeserial.com/"


@dataclass
class RunningMonitor:
    node: str
    health_port: int

    def metric(self, name: str, **labels: str) -> float:
        value = metric_at(self.health_port, name, **labels)
        assert value is not None, f"the monitor of {self.node} does not answer /metrics"
        return value


@dataclass
class Lab:
    """One test's world: the control plane, a umockdev testbed, and the SerialDevices it made."""

    plane: ControlPlane
    kubeconfig: Path
    usb: SimulatedUsb
    tmp_path: Path
    names: list[str] = field(default_factory=list)

    def device(self, base: str, adapter: UsbAdapter | None = None) -> str:
        """A SerialDevice for FTDI 0403:6001; with `adapter`, for its serial number only."""
        name = f"{base}-{uuid.uuid4().hex[:6]}"
        self.names.append(name)
        spec = {"idVendor": "0403", "idProduct": "6001"}
        if adapter is not None:
            spec["serialNumber"] = adapter.serial
        body = {"apiVersion": "app.kubeserial.com/v1alpha1", "kind": "SerialDevice"}
        self.plane.kubectl(
            "create", "-f", "-", input=json.dumps({**body, "metadata": {"name": name}, "spec": spec})
        )
        return name

    @contextmanager
    def monitor(self, node: str, *args: str, exit_codes: list[int] | None = None) -> Iterator[RunningMonitor]:
        """The monitor for `node` as a process under its ServiceAccount, seeing the testbed."""
        running = RunningMonitor(node=node, health_port=free_port())
        argv = ["--node-name", node, "--health-host", "127.0.0.1", "--health-port", str(running.health_port)]
        log_path = self.tmp_path / f"monitor-{node}.log"
        with service_process(
            "kubeserial_monitor",
            [*argv, *args],
            kubeconfig=self.kubeconfig,
            log_path=log_path,
            env=self.usb.env,
        ) as proc:
            wait_for(
                lambda: proc.poll() is not None or is_ready(running.health_port), timeout=30, message="ready"
            )
            assert proc.poll() is None, log_path.read_text()
            yield running
        if exit_codes is not None:
            exit_codes.append(proc.returncode)

    def get(self, *args: str) -> dict[str, Any]:
        return json.loads(self.plane.kubectl("get", *args, "-o", "json").stdout)  # type: ignore[no-any-return]

    def status(self, name: str) -> dict[str, Any]:
        return self.get("serialdevice", name).get("status", {})  # type: ignore[no-any-return]

    def condition(self, name: str, kind: str) -> dict[str, Any]:
        return next((c for c in self.status(name).get("conditions", []) if c["type"] == kind), {})

    def wait_available(self, name: str, value: str) -> dict[str, Any]:
        wait_for(
            lambda: self.condition(name, "Available").get("status") == value,
            timeout=20,
            message=f"{name} Available={value}",
        )
        return self.status(name)

    def resources(self, node: str) -> dict[str, dict[str, str]]:
        """kubeserial.com/* in the Node's capacity and allocatable."""
        node_status = self.get("node", node)["status"]
        return {
            part: {k: v for k, v in (node_status.get(part) or {}).items() if k.startswith(PREFIX)}
            for part in ("capacity", "allocatable")
        }

    def wait_resource(self, node: str, name: str, value: str | None) -> None:
        key = PREFIX + name
        wait_for(
            lambda: all(part.get(key) == value for part in self.resources(node).values()),
            timeout=20,
            message=f"{node} {key}={value}",
        )

    def ports(self, node: str) -> list[dict[str, Any]]:
        """`kubectl get serialports` of one node."""
        items = self.get("serialports", "-l", f"app.kubeserial.com/node={node}")["items"]
        return list(items)

    def event_reasons(self, name: str) -> list[str]:
        events = self.get("events", "-n", "default", "--field-selector", f"involvedObject.name={name}")
        return sorted(e["reason"] for e in events["items"])

    def pod_placement(self, name: str) -> tuple[str, str]:
        """(spec.nodeName, reason of PodScheduled=False) of a pod in "default"."""
        pod = self.get("pod", name, "-n", "default")
        reasons = [
            c.get("reason", "")
            for c in pod.get("status", {}).get("conditions", [])
            if c["type"] == "PodScheduled" and c["status"] == "False"
        ]
        return pod["spec"].get("nodeName", ""), (reasons or [""])[0]


@pytest.fixture(scope="module")
def monitor_kubeconfig(control_plane: ControlPlane) -> Path:
    return apply_rbac(control_plane, "monitor")


@pytest.fixture(scope="module")
def binder(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    """The controller, which binds SerialDevices to the SerialPorts the monitors publish."""
    kubeconfig = apply_rbac(control_plane, "controller")
    control_plane.kubectl("create", "serviceaccount", "kubeserial-gateway", "-n", NAMESPACE, check=False)
    log_path = tmp_path_factory.mktemp("controller") / "controller.log"
    args = ["--gateway-image", "kubeserial/gateway:under-test", "--node-grace-seconds", "1"]
    with running_service("kubeserial_controller", args, kubeconfig=kubeconfig, log_path=log_path) as running:
        wait_for(
            lambda: not running.alive() or running.metric("kubeserial_controller_leader") == 1.0,
            timeout=60,
            message="controller leading",
        )
        assert running.alive(), running.log_tail()
        yield running


@pytest.fixture
def lab(
    control_plane: ControlPlane, monitor_kubeconfig: Path, binder: RunningService, tmp_path: Path
) -> Iterator[Lab]:
    with SimulatedUsb(tmp_path / "usb") as usb:
        world = Lab(control_plane, monitor_kubeconfig, usb, tmp_path)
        yield world
    for name in world.names:
        control_plane.kubectl("delete", "serialdevice", name, "--wait=false", check=False)


def adapter(prefix: str, *, port: int = 1) -> UsbAdapter:
    return UsbAdapter(serial=f"{prefix}{uuid.uuid4().hex[:6].upper()}", port=port)


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


def force_delete_pod(plane: ControlPlane, name: str) -> None:
    """Forced: without a kubelet nothing would confirm a graceful deletion."""
    plane.kubectl("delete", "pod", name, "-n", "default", "--grace-period=0", "--force", check=False)


def test_plug_unplug_replug_and_scheduling(lab: Lab) -> None:
    name = lab.device("ender3")  # any FT232R, as in the seed manifest
    printer = UsbAdapter(serial="A50285BI")
    resource = PREFIX + name
    pods = [f"{name}-first", f"{name}-second"]
    exit_codes: list[int] = []
    try:
        with lab.monitor("node-a", exit_codes=exit_codes) as node_a:
            # plug -> a SerialPort of node-a, bound to the device with the stable by-id path, Free,
            # capacity 1
            lab.usb.plug(printer)
            claimed = lab.wait_available(name, "True")
            assert (claimed["nodeName"], claimed["devicePath"]) == ("node-a", printer.by_id)
            [port] = lab.ports("node-a")
            assert claimed["port"] == port["metadata"]["name"]
            assert port["spec"]["byIdPath"] == printer.by_id and port["spec"]["serialNumber"] == "A50285BI"
            assert (port["spec"]["idVendor"], port["spec"]["idProduct"]) == ("0403", "6001")
            wait_for(lambda: lab.ports("node-a")[0].get("status", {}).get("device") == name, timeout=10)
            assert lab.condition(name, "Available")["reason"] == "DeviceAvailable"
            free = lab.condition(name, "Free")
            assert (free["status"], free["reason"]) == ("True", "NoSession")
            lab.wait_resource("node-a", name, "1")
            assert resource not in lab.resources("node-b")["capacity"]
            lease = lab.get("lease", "kubeserial-monitor-node-a", "-n", NAMESPACE)
            assert lease["spec"]["holderIdentity"] == "node-a"

            # a pod that requests the device is scheduled onto the node that has it
            lab.plane.kubectl("create", "-f", "-", input=json.dumps(consumer_pod(pods[0], resource)))
            wait_for(lambda: lab.pod_placement(pods[0])[0], timeout=30, message="first pod bound")
            assert lab.pod_placement(pods[0])[0] == "node-a"

            # unplug -> the SerialPort is deleted, the device released, capacity 0
            lab.usb.unplug(printer)
            released = lab.wait_available(name, "False")
            assert "nodeName" not in released and "devicePath" not in released and "port" not in released
            assert lab.ports("node-a") == []
            assert lab.condition(name, "Available")["reason"] == "DeviceUnavailable"
            assert lab.condition(name, "Free")["status"] == "False"
            lab.wait_resource("node-a", name, "0")

            # with the device gone nowhere has room: a second consumer stays pending
            force_delete_pod(lab.plane, pods[0])
            lab.plane.kubectl("create", "-f", "-", input=json.dumps(consumer_pod(pods[1], resource)))
            wait_for(
                lambda: lab.pod_placement(pods[1]) == ("", "Unschedulable"),
                timeout=30,
                message="second pod unschedulable",
            )

            # replug (a new ttyUSB number, the same by-id path) -> available again, pod scheduled
            assert lab.usb.plug(printer) != "/dev/ttyUSB0"
            again = lab.wait_available(name, "True")
            assert (again["nodeName"], again["devicePath"]) == ("node-a", printer.by_id)
            lab.wait_resource("node-a", name, "1")
            wait_for(
                lambda: lab.pod_placement(pods[1])[0] == "node-a",
                timeout=60,
                message="pending pod scheduled onto node-a after the replug",
            )

            assert node_a.metric("kubeserial_monitor_serialport_writes_total", outcome="created") == 2
            assert node_a.metric("kubeserial_monitor_serialport_writes_total", outcome="deleted") == 1
            assert node_a.metric("kubeserial_monitor_plug_to_port_seconds_count") == 2
            assert node_a.metric("kubeserial_monitor_udev_events_total", action="add") == 2
        # SIGTERM: the monitor exits cleanly and leaves its SerialPorts: a monitor restart (an
        # upgrade) must not make devices flap. Extended resources are the controller's.
        assert exit_codes == [0]
        assert len(lab.ports("node-a")) == 1
        assert lab.condition(name, "Available")["status"] == "True"
        device_events = [reason for reason in lab.event_reasons(name) if reason.startswith("Device")]
        assert device_events == ["DeviceAvailable", "DeviceAvailable", "DeviceUnavailable"]
    finally:
        for pod in pods:
            force_delete_pod(lab.plane, pod)


def test_two_nodes_and_one_device_make_exactly_one_binding(lab: Lab) -> None:
    """Both simulated nodes see the same adapter at the same moment: two SerialPorts, one binding."""
    stick = adapter("ZB")
    name = lab.device("zigbee", stick)
    cycles = 3
    with lab.monitor("node-a"), lab.monitor("node-b"):
        for _cycle in range(1, cycles + 1):
            lab.usb.plug(stick)
            winner = lab.wait_available(name, "True")["nodeName"]
            loser = {"node-a": "node-b", "node-b": "node-a"}[winner]
            lab.wait_resource(winner, name, "1")
            # umockdev may deliver the uevent to one of the two listeners only (the other one's
            # rescan would find the adapter later): one or two SerialPorts, exactly one bound
            holders = [p.get("status", {}).get("device") for n in ("node-a", "node-b") for p in lab.ports(n)]
            assert holders.count(name) == 1 and set(holders) <= {name, None}, holders
            # the binding does not move: the owner is unchanged and the other node advertises nothing
            assert lab.status(name)["nodeName"] == winner
            assert lab.resources(loser)["capacity"].get(PREFIX + name) in (None, "0")
            lab.usb.unplug(stick)
            lab.wait_available(name, "False")
            lab.wait_resource(winner, name, "0")
    assert lab.event_reasons(name).count("DeviceAvailable") == cycles


def test_identical_adapters_with_different_serials_get_their_own_devices(lab: Lab) -> None:
    left, right = adapter("L", port=2), adapter("R", port=3)
    left_name, right_name = lab.device("left", left), lab.device("right", right)
    with lab.monitor("node-a"):
        lab.usb.plug(right)
        lab.usb.plug(left)
        assert lab.wait_available(left_name, "True")["devicePath"] == left.by_id
        assert lab.wait_available(right_name, "True")["devicePath"] == right.by_id
        lab.wait_resource("node-a", left_name, "1")
        lab.wait_resource("node-a", right_name, "1")
        lab.usb.unplug(left)
        lab.wait_available(left_name, "False")
        lab.wait_resource("node-a", left_name, "0")
        assert lab.condition(right_name, "Available")["status"] == "True"
        assert lab.resources("node-a")["capacity"][PREFIX + right_name] == "1"
        # a deleted SerialDevice takes its extended resource with it
        lab.plane.kubectl("delete", "serialdevice", right_name)
        lab.wait_resource("node-a", right_name, None)


def test_state_changed_while_the_monitor_was_down_is_repaired_at_start(lab: Lab) -> None:
    """No event is needed: the rescan at start finds what is plugged in, and what is not."""
    gps = adapter("G")
    name = lab.device("gps", gps)
    lab.usb.plug(gps)
    with lab.monitor("node-a"):
        assert lab.wait_available(name, "True")["devicePath"] == gps.by_id
    lab.usb.unplug(gps)  # nobody is listening
    assert lab.condition(name, "Available")["status"] == "True"
    with lab.monitor("node-a"):
        assert "nodeName" not in lab.wait_available(name, "False")
        assert lab.ports("node-a") == []  # the restarted monitor deleted what is no longer there
        lab.wait_resource("node-a", name, "0")


def test_a_lost_udev_event_is_repaired_by_the_periodic_rescan(lab: Lab) -> None:
    stick = adapter("W")
    name = lab.device("zwave", stick)
    with lab.monitor("node-a", "--rescan-seconds", "1") as node_a:
        lab.usb.plug(stick)
        lab.wait_available(name, "True")
        lab.usb.unplug(stick, announce=False)  # no uevent reaches the monitor
        lab.wait_available(name, "False")
        lab.wait_resource("node-a", name, "0")
        assert node_a.metric("kubeserial_monitor_udev_events_total", action="remove") == 0
        assert node_a.metric("kubeserial_monitor_rescans_total") >= 2


def test_in_place_upgrade_adopts_the_old_monitors_status_without_flapping(lab: Lab) -> None:
    """A cluster upgraded in place: the old monitor claimed the device itself (nodeName, devicePath,
    Available=True written by the monitor, no SerialPort anywhere) and held its node Lease. The new
    monitor publishes the SerialPort and the new controller adopts the placement: Available never
    leaves True, and its lastTransitionTime does not move."""
    from kubeserial_testing.objects import monitor_lease, monitor_status

    lab.plane.kubectl("delete", "serialports", "--all")  # the old version had no SerialPorts
    stick = adapter("UP")
    name = lab.device("upgraded", stick)
    lab.usb.plug(stick)
    lease = monitor_lease("node-a", duration=40)
    lease["spec"]["holderIdentity"] = "node-a"  # the old monitor's identity was its node, as now
    lab.plane.kubectl("apply", "-f", "-", input=json.dumps(lease))
    old = monitor_status(
        lab.get("serialdevice", name), node="node-a", available=True, device_path=stick.by_id
    )
    lab.plane.kubectl(
        "patch",
        "serialdevice",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": old}),
    )
    before = lab.condition(name, "Available")
    assert before["status"] == "True"
    seen: list[str] = []

    def adopted() -> bool:
        status = lab.status(name)
        available = next(c for c in status["conditions"] if c["type"] == "Available")
        seen.append(available["status"])
        return bool(status.get("port"))

    with lab.monitor("node-a"):
        wait_for(adopted, timeout=30, interval=0.05, message="placement adopted (status.port)")
        for _ in range(20):  # and it stays so
            adopted()
    assert set(seen) == {"True"}, seen
    after = lab.condition(name, "Available")
    assert after["lastTransitionTime"] == before["lastTransitionTime"]
    status = lab.status(name)
    assert (status["nodeName"], status["devicePath"]) == ("node-a", stick.by_id)
    [port] = lab.ports("node-a")
    assert port["metadata"]["name"] == status["port"]
    wait_for(lambda: lab.ports("node-a")[0].get("status", {}).get("device") == name, timeout=10)
