"""The whole story, end to end, on the local control plane with two simulated nodes.

A KubeSerial is applied; a simulated FTDI adapter is plugged into node-a; the device becomes
Available there and `kubectl get serialdevice` shows it; the controller's gateway Deployment is
pinned to node-a and serves the device; an annotated consumer pod is injected by the webhook; the
consumer exchanges bytes with the device through its tty (bridge -> gateway) and its baud change
reaches the device; the adapter is unplugged (gateway gone, Available=False) and plugged into
node-b; the gateway follows and the consumer's open tty carries on without a restart.
"""

import json
import os
import termios
import uuid
from typing import Any

import pytest

from kubeserial_common import constants as c
from kubeserial_common.conditions import condition_status
from kubeserial_testing.controlplane import ControlPlane
from kubeserial_testing.objects import apply_object, kubeserial_for
from kubeserial_testing.probes import metric_total
from kubeserial_testing.stack import LocalStack, wait_async
from kubeserial_testing.ttyio import baud, exchange, make_raw
from kubeserial_testing.umockdev import UsbAdapter

pytestmark = pytest.mark.umockdev

SUFFIX = uuid.uuid4().hex[:4]
DEVICE = f"printer-{SUFFIX}"
CONSUMER = f"consumer-{SUFFIX}"
APPS = "apps"
ADAPTER = UsbAdapter(serial=f"E2E{SUFFIX.upper()}")
LOST_DEVICE = f"lost-{SUFFIX}"
LOST_ADAPTER = UsbAdapter(serial=f"LST{SUFFIX.upper()}", port=2)  # port 1 may hold ADAPTER
LOSSES = "kubeserial_gateway_device_losses_total"
SESSIONS = "kubeserial_gateway_sessions_total"
RECONNECTS = "kubeserial_bridge_reconnects_total"


def get(plane: ControlPlane, *args: str) -> dict[str, Any]:
    out = plane.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


async def test_device_follows_its_adapter_and_the_consumer_follows_the_device(stack: LocalStack) -> None:
    plane = stack.plane
    apply_object(plane, kubeserial_for("home", {DEVICE: ADAPTER.serial}))
    await wait_async(
        lambda: condition_status(get(plane, "serialdevice", DEVICE), c.READY) == "True",
        within=30,
        message="the controller to create a Ready SerialDevice",
    )
    assert stack.device_state(DEVICE)[0] != "True"

    # Plug into node-a.
    stack.usb["node-a"].plug(ADAPTER)
    device_a = stack.usb["node-a"].device_side(ADAPTER)
    await wait_async(
        lambda: stack.device_state(DEVICE) == ("True", "node-a"), within=30, message="Available on node-a"
    )
    table = plane.kubectl("get", "serialdevice", DEVICE).stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "AVAILABLE", "NODE"]
    assert table[1].split() == [DEVICE, "True", "True", "node-a"]
    status = get(plane, "serialdevice", DEVICE)["status"]
    assert status["devicePath"] == ADAPTER.by_id

    # The gateway is pinned to node-a and serves the device.
    deployment = await wait_async(
        lambda: get(plane, "deployment", f"{DEVICE}-gateway", "-n", "kubeserial"),
        within=30,
        message="the gateway Deployment",
    )
    affinity = deployment["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
    terms = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-a"]}]}]
    await wait_async(
        lambda: stack.gateway_pod(DEVICE, "node-a"), within=30, message="the gateway pod running on node-a"
    )

    # An annotated consumer pod is injected by the webhook.
    plane.kubectl("create", "namespace", APPS, check=False)
    consumer = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": CONSUMER, "namespace": APPS, "annotations": {c.INJECT_ANNOTATION: DEVICE}},
        "spec": {"containers": [{"name": "app", "image": "busybox", "command": ["sleep", "infinity"]}]},
    }
    plane.kubectl("apply", "-f", "-", input=json.dumps(consumer))
    admitted = get(plane, "pod", CONSUMER, "-n", APPS)
    assert admitted["metadata"]["annotations"].get(c.INJECTED_ANNOTATION) == DEVICE
    env = {e["name"]: e.get("value") for e in admitted["spec"]["containers"][0]["env"]}
    prefix = "KUBESERIAL_" + DEVICE.upper().replace("-", "_")
    assert env[f"{prefix}_URL"] == f"rfc2217://{DEVICE}-gateway.kubeserial.svc:2217"
    bridges = [ic["name"] for ic in admitted["spec"]["initContainers"] if ic.get("restartPolicy") == "Always"]
    assert bridges == [f"kubeserial-bridge-{DEVICE}"]

    # The consumer (we play the app) opens its tty, sets 57600 baud and talks to the device.
    link = stack.link_path(CONSUMER, DEVICE)
    await wait_async(link.exists, within=30, message="the bridge's tty link")
    app_fd = os.open(link, os.O_RDWR | os.O_NOCTTY)
    try:
        make_raw(app_fd, termios.B57600)
        await wait_async(
            lambda: baud(device_a) == termios.B57600, within=10, message="57600 baud on the device"
        )
        await exchange(app_fd, device_a, b"node-a:")
        # One session, never dropped, until the unplug.
        gateway_health = stack.ports_for(DEVICE).health
        bridge_health = stack.bridge_health[(CONSUMER, DEVICE)]
        assert metric_total(gateway_health, SESSIONS) == 1
        assert metric_total(gateway_health, LOSSES) == 0
        assert metric_total(bridge_health, RECONNECTS) == 0

        # Unplug: Available=False, the gateway goes away.
        stack.usb["node-a"].unplug(ADAPTER)
        await wait_async(
            lambda: stack.device_state(DEVICE)[0] == "False", within=30, message="Available=False"
        )
        await wait_async(
            lambda: not get(plane, "deployment", f"{DEVICE}-gateway", "-n", "kubeserial"),
            within=30,
            message="the gateway Deployment removed",
        )
        assert stack.device_state(DEVICE)[1] in (None, "")

        # Plug into node-b: the gateway follows, the consumer's tty (still open) works again.
        stack.usb["node-b"].plug(ADAPTER)
        device_b = stack.usb["node-b"].device_side(ADAPTER)
        await wait_async(
            lambda: stack.device_state(DEVICE) == ("True", "node-b"), within=30, message="Available on node-b"
        )
        await wait_async(
            lambda: stack.gateway_pod(DEVICE, "node-b"), within=30, message="the gateway on node-b"
        )
        await wait_async(
            lambda: baud(device_b) == termios.B57600,
            within=30,
            message="the bridge to reconnect and re-apply 57600 baud",
        )
        await exchange(app_fd, device_b, b"node-b:")
        # The move cost the bridge exactly one reconnect; node-b's gateway has one session, no loss.
        assert metric_total(bridge_health, RECONNECTS) == 1
        assert metric_total(gateway_health, SESSIONS) == 1
        assert metric_total(gateway_health, LOSSES) == 0
    finally:
        os.close(app_fd)
    consumer_now = get(plane, "pod", CONSUMER, "-n", APPS)
    assert consumer_now["metadata"]["uid"] == admitted["metadata"]["uid"], "the consumer was not restarted"


async def test_a_lost_node_releases_its_device(stack: LocalStack) -> None:
    """A device of this test's own, plugged into node-b; node-b's monitor dies (its Lease expires):
    the device is NodeLost and its gateway removed; the monitor comes back and claims it again."""
    plane = stack.plane
    apply_object(plane, kubeserial_for("lost-node", {LOST_DEVICE: LOST_ADAPTER.serial}))
    stack.usb["node-b"].plug(LOST_ADAPTER)
    await wait_async(
        lambda: stack.device_state(LOST_DEVICE) == ("True", "node-b"),
        within=30,
        message="Available on node-b",
    )
    await wait_async(
        lambda: get(plane, "deployment", f"{LOST_DEVICE}-gateway", "-n", "kubeserial"),
        within=30,
        message="its gateway Deployment",
    )
    stack.stop_monitor("node-b")
    await wait_async(lambda: stack.device_state(LOST_DEVICE)[0] == "Unknown", within=60, message="NodeLost")
    condition = next(
        cond
        for cond in get(plane, "serialdevice", LOST_DEVICE)["status"]["conditions"]
        if cond["type"] == c.AVAILABLE
    )
    assert condition["reason"] == "NodeLost"
    await wait_async(
        lambda: not get(plane, "deployment", f"{LOST_DEVICE}-gateway", "-n", "kubeserial"),
        within=30,
        message="the gateway of a lost node removed",
    )
    # The node comes back: its monitor claims the still-plugged adapter again.
    stack.start_monitor("node-b")
    await wait_async(
        lambda: stack.device_state(LOST_DEVICE) == ("True", "node-b"),
        within=60,
        message="reclaimed on node-b",
    )
