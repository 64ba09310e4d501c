"""The whole story as real pods on real kubelets, from the shipped e2e overlay and images.

A consumer pod (busybox: no Python, no socat) is annotated for a device that is not plugged in
yet: it is admitted with a warning. The adapter is plugged into node-a: the device becomes
Available there, the gateway pod runs there, and the consumer (on node-b) connects through the
gateway's Service name. All 256 byte values go both ways and a baud change reaches the device.
Unplug, plug into node-b: the gateway moves and the consumer's open tty carries on, no restart.
The adapter goes back to node-a and node-a dies without a FIN (its link is cut): NodeLost, the
consumer notices the silent connection within the keepalive bound and follows the adapter to
node-b. A Manager (a busybox image that plays OctoPrint) runs while its device is plugged in.
"""

import asyncio
import json
import os
import termios
import time
import uuid
from collections.abc import Iterator

import pytest

from kubeserial_common import constants as c
from kubeserial_gateway.keepalive import KEEPALIVE
from kubeserial_testing.objects import kubeserial_for
from kubeserial_testing.realstack import (
    NAMESPACE,
    SYSTEM_NAMESPACE,
    AppTty,
    RealStack,
    annotated_busybox_pod,
    app_command,
    running_stack,
    wait_until,
)
from kubeserial_testing.ttyio import baud, read_exactly, read_until
from kubeserial_testing.umockdev import UsbAdapter

# Building the images (warm: seconds, cold: minutes) and the cluster are part of the module's setup.
pytestmark = [pytest.mark.umockdev, pytest.mark.real_story, pytest.mark.timeout(1500)]
HOLD_SECONDS = 30.0

SUFFIX = uuid.uuid4().hex[:4]
DEVICE = f"printer-{SUFFIX}"
MANAGED = f"ender-{SUFFIX}"
CONSUMER = "consumer"
APPS = f"apps-{SUFFIX}"  # a namespace per run: a reused development cluster keeps old ones
DIAGNOSED_NAMESPACES = (APPS,)  # printed with KubeSerial's after a failure (conftest.py)
ADAPTER = UsbAdapter(serial=f"RN{SUFFIX.upper()}")
MANAGED_ADAPTER = UsbAdapter(serial=f"MG{SUFFIX.upper()}", port=2)
EVERY_BYTE = bytes(range(256))
ENV_PREFIX = "KUBESERIAL_" + DEVICE.upper().replace("-", "_")
LOSSES = "kubeserial_gateway_device_losses_total"
SESSIONS = "kubeserial_gateway_sessions_total"
RECONNECTS = "kubeserial_bridge_reconnects_total"
CONNECTED = "kubeserial_bridge_connected"
REJOIN_SECONDS = 60.0  # gateway Ready on its new node -> the bridge connected to it


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealStack]:
    # A cluster of its own, or the one $KUBESERIAL_E2E_CLUSTER names (development).
    with running_stack(tmp_path_factory.mktemp("real")) as real:
        yield real


def consumer_pod() -> dict[str, object]:
    # The application opens its tty (named by the injected env) at start.
    command = app_command(f"{ENV_PREFIX}_TTY", "raw -echo cs8 -parenb 57600")
    return annotated_busybox_pod(CONSUMER, namespace=APPS, device=DEVICE, node="node-b", command=command)


async def device_reads(device_fd: int, count: int) -> bytes:
    return await asyncio.to_thread(read_exactly, device_fd, count, timeout=30)


async def app_reads(app: AppTty, count: int) -> bytes:
    return await asyncio.to_thread(app.read_exactly, count, within=30)


async def both_ways(app: AppTty, device_fd: int, label: bytes) -> None:
    app.write(label + EVERY_BYTE)
    assert await device_reads(device_fd, len(label) + 256) == label + EVERY_BYTE
    os.write(device_fd, label + EVERY_BYTE[::-1])
    assert await app_reads(app, len(label) + 256) == label + EVERY_BYTE[::-1]


async def test_the_story_on_real_nodes(stack: RealStack) -> None:
    stack.kubectl("apply", "-f", "-", input=json.dumps(kubeserial_for("home", {DEVICE: ADAPTER.serial})))
    wait_until(lambda: stack.condition(DEVICE, c.READY).get("status") == "True", within=60, message="Ready")

    # The webhook is reached by the apiserver through its Service, as shipped: the apiserver checks
    # the injector's self-made certificate against caBundle for the name <service>.<ns>.svc, so the
    # mutation below happens only if that name, that certificate and the Service all work.
    webhook = stack.cluster.get_json("mutatingwebhookconfiguration", "kubeserial-injector")["webhooks"][0]
    assert webhook["clientConfig"]["service"] == {
        "name": "kubeserial-injector",
        "namespace": SYSTEM_NAMESPACE,
        "path": "/mutate",
        "port": 443,
    }
    assert "url" not in webhook["clientConfig"] and webhook["clientConfig"]["caBundle"]

    # Annotated before the device is plugged in: admitted with a warning.
    stack.kubectl("create", "namespace", APPS, check=False)
    created = stack.kubectl("apply", "-f", "-", input=json.dumps(consumer_pod()))
    assert "Warning" in created.stderr and DEVICE in created.stderr, created.stderr
    admitted = stack.get("pod", CONSUMER, "-n", APPS)
    assert admitted["metadata"]["annotations"][c.INJECTED_ANNOTATION] == DEVICE
    env = {e["name"]: e.get("value") for e in admitted["spec"]["containers"][0]["env"]}
    prefix = ENV_PREFIX
    assert env[f"{prefix}_URL"] == f"rfc2217://{DEVICE}-gateway.{NAMESPACE}.svc:2217"
    assert env[f"{prefix}_RAW_URL"] == f"socket://{DEVICE}-gateway.{NAMESPACE}.svc:3333"
    tty = env[f"{prefix}_TTY"]
    stack.kubectl("wait", "--for=condition=Ready", "pod", CONSUMER, "-n", APPS, "--timeout=180s")
    assert stack.get("pod", CONSUMER, "-n", APPS)["spec"]["nodeName"] == "node-b"

    # Plug into node-a: Available there, the gateway pod Runs there.
    stack.usb["node-a"].plug(ADAPTER)
    device_a = stack.usb["node-a"].device_side(ADAPTER)
    wait_until(
        lambda: stack.device_state(DEVICE) == ("True", "node-a"), within=60, message="Available on node-a"
    )
    wait_until(
        lambda: stack.gateway_pods(DEVICE, node="node-a"), within=120, message="gateway Running on node-a"
    )

    app = AppTty(stack, namespace=APPS, pod=CONSUMER, container="app", tty=tty)
    try:
        wait_until(lambda: baud(device_a) == termios.B57600, within=30, message="57600 baud at the device")
        await both_ways(app, device_a, b"node-a:")
        # A healthy session stays up: HOLD_SECONDS of traffic, no device loss, no reconnect.
        rounds, deadline = 0, time.monotonic() + HOLD_SECONDS
        while time.monotonic() < deadline:
            await both_ways(app, device_a, f"round {rounds}:".encode())
            rounds += 1
        assert stack.gateway_metric(DEVICE, LOSSES) == 0
        assert stack.gateway_metric(DEVICE, SESSIONS) == 1
        assert stack.bridge_metric(APPS, CONSUMER, RECONNECTS) == 0
        stack.kubectl("exec", "-n", APPS, CONSUMER, "-c", "app", "--", "stty", "-F", tty, "19200")
        wait_until(lambda: baud(device_a) == termios.B19200, within=30, message="a baud change at the device")

        # Unplug, plug into node-b: the gateway moves, the app's open tty carries on.
        stack.usb["node-a"].unplug(ADAPTER)
        wait_until(lambda: stack.device_state(DEVICE)[0] == "False", within=60, message="Available=False")
        stack.usb["node-b"].plug(ADAPTER)
        device_b = stack.usb["node-b"].device_side(ADAPTER)
        wait_until(lambda: stack.device_state(DEVICE) == ("True", "node-b"), within=60, message="on node-b")
        wait_until(lambda: stack.gateway_pods(DEVICE, node="node-b"), within=120, message="gateway on node-b")
        # The bridge reconnects by itself (Service name, 10 s connect timeout, backoff capped at 2 s);
        # until then the tty holds the app's bytes. Bounded: a CI run once took longer than the 30 s
        # a read allows (its connects to the old address timed out).
        reconnect = time.monotonic()
        wait_until(
            lambda: stack.bridge_metric(APPS, CONSUMER, CONNECTED) == 1,
            within=REJOIN_SECONDS,
            message="the bridge to reconnect to the gateway on node-b",
        )
        print(f"bridge reconnected {time.monotonic() - reconnect:.1f}s after the gateway on node-b was ready")
        wait_until(lambda: baud(device_b) == termios.B19200, within=60, message="the app's baud re-applied")
        await both_ways(app, device_b, b"node-b:")
        assert stack.bridge_metric(APPS, CONSUMER, RECONNECTS) == 1, "one reconnect, for the move"

        # Back to node-a, then node-a dies silently: NodeLost; the consumer notices the dead
        # connection within the keepalive bound and follows the adapter to node-b.
        stack.usb["node-b"].unplug(ADAPTER)
        wait_until(lambda: stack.device_state(DEVICE)[0] == "False", within=60, message="Available=False")
        stack.usb["node-a"].plug(ADAPTER)
        device_a = stack.usb["node-a"].device_side(ADAPTER)
        wait_until(lambda: stack.device_state(DEVICE) == ("True", "node-a"), within=60, message="on node-a")
        wait_until(lambda: stack.gateway_pods(DEVICE, node="node-a"), within=120, message="gateway on node-a")
        await both_ways(app, device_a, b"again-a:")
        stack.cluster.cut_link("node-a")
        cut = time.monotonic()
        wait_until(
            lambda: stack.bridge_metric(APPS, CONSUMER, CONNECTED) == 0,
            within=KEEPALIVE.dead_after_seconds + 10,
            message="the bridge to notice the silent gateway",
        )
        noticed = time.monotonic() - cut
        wait_until(
            lambda: stack.condition(DEVICE, c.AVAILABLE).get("reason") == "NodeLost",
            within=120,
            message="NodeLost",
        )
        assert stack.device_state(DEVICE)[0] == "Unknown"
        stack.usb["node-a"].unplug(ADAPTER)  # carried to node-b by hand
        stack.usb["node-b"].plug(ADAPTER)
        device_b = stack.usb["node-b"].device_side(ADAPTER)
        wait_until(lambda: stack.device_state(DEVICE) == ("True", "node-b"), within=60, message="on node-b")
        wait_until(lambda: stack.gateway_pods(DEVICE, node="node-b"), within=120, message="gateway on node-b")
        # The bridge reconnects by itself (Service name, 10 s connect timeout, backoff capped at 2 s);
        # until then the tty holds the app's bytes. Bounded: a CI run once took longer than the 30 s
        # a read allows (its connects to the old address timed out).
        reconnect = time.monotonic()
        wait_until(
            lambda: stack.bridge_metric(APPS, CONSUMER, CONNECTED) == 1,
            within=REJOIN_SECONDS,
            message="the bridge to reconnect to the gateway on node-b",
        )
        print(f"bridge reconnected {time.monotonic() - reconnect:.1f}s after the gateway on node-b was ready")
        await both_ways(app, device_b, b"after-loss:")
        print(f"dead gateway connection noticed after {noticed:.1f}s (bound {KEEPALIVE.dead_after_seconds}s)")
    finally:
        stack.cluster.restore_link("node-a")
    consumer = stack.get("pod", CONSUMER, "-n", APPS)
    assert consumer["metadata"]["uid"] == admitted["metadata"]["uid"]
    assert all(s["restartCount"] == 0 for s in consumer["status"]["containerStatuses"])


async def test_a_manager_runs_while_its_device_is_plugged_in(stack: RealStack) -> None:
    manager = {
        "apiVersion": "app.kubeserial.com/v1alpha1",
        "kind": "Manager",
        "metadata": {"name": f"fake-octoprint-{SUFFIX}"},
        "spec": {
            "image": {"repository": "kubeserial/octoprint", "tag": "e2e"},
            "runCmd": f"sh /octoprint.sh /dev/serial/{MANAGED}",
        },
    }
    stack.kubectl("apply", "-f", "-", input=json.dumps(manager))
    kubeserial = kubeserial_for("managed", {MANAGED: MANAGED_ADAPTER.serial})
    kubeserial["spec"]["serialDevices"][0]["manager"] = manager["metadata"]["name"]  # type: ignore[index]
    stack.kubectl("apply", "-f", "-", input=json.dumps(kubeserial))
    stack.usb["node-b"].plug(MANAGED_ADAPTER)
    device = stack.usb["node-b"].device_side(MANAGED_ADAPTER)
    request = f"{MANAGED}-{manager['metadata']['name']}"  # type: ignore[index]
    wait_until(
        lambda: (stack.get("managerschedulerequest", request).get("status") or {}).get("fulfilled"),
        within=120,
        message="the request fulfilled",
    )
    selector = f"{c.DEVICE_LABEL}={MANAGED},{c.COMPONENT_LABEL}=manager"
    wait_until(lambda: stack.running_pods(NAMESPACE, selector), within=120, message="the manager pod Running")
    assert await asyncio.to_thread(read_until, device, b"\n", timeout=30) == b"M115\n"
    os.write(device, b"FIRMWARE_NAME:Marlin ok\n")
    pod = stack.running_pods(NAMESPACE, selector)[0]["metadata"]["name"]
    wait_until(
        lambda: (
            "printer: FIRMWARE_NAME:Marlin ok"
            in stack.kubectl("logs", "-n", NAMESPACE, pod, "-c", "manager").stdout
        ),
        within=30,
        message="the manager to hear the printer",
    )
    stack.usb["node-b"].unplug(MANAGED_ADAPTER)
    wait_until(
        lambda: not stack.get("managerschedulerequest", request), within=60, message="the request removed"
    )
    wait_until(
        lambda: not stack.get("deployment", request, "-n", NAMESPACE),
        within=60,
        message="the manager removed",
    )
