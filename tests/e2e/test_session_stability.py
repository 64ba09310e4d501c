"""A healthy session stays up: on a simulated adapter, through monitor, controller, gateway and a
consumer's bridge, a session held for 30 s sees no device loss and no reconnect; an unplug is then
exactly one loss. (The gateway used to compare stat() of the by-id link with fstat() of its open
fd; on a pty-backed adapter those never agree, so it dropped every session about once a second.)"""

import json
import os
import termios
import time
import uuid

import pytest

from kubeserial_common import constants as c
from kubeserial_testing.probes import metric_total
from kubeserial_testing.stack import LocalStack, wait_async
from kubeserial_testing.ttyio import exchange, make_raw
from kubeserial_testing.umockdev import UsbAdapter

pytestmark = pytest.mark.umockdev

SUFFIX = uuid.uuid4().hex[:4]
DEVICE = f"steady-{SUFFIX}"
CONSUMER = f"steady-app-{SUFFIX}"
ADAPTER = UsbAdapter(serial=f"STD{SUFFIX.upper()}")
HOLD_SECONDS = 30.0
LOSSES = "kubeserial_gateway_device_losses_total"
SESSIONS = "kubeserial_gateway_sessions_total"
RECONNECTS = "kubeserial_bridge_reconnects_total"


async def test_a_session_stays_open_until_the_adapter_is_unplugged(plugged: LocalStack) -> None:
    stack = plugged
    gateway_port = stack.ports_for(DEVICE).health
    assert metric_total(gateway_port, LOSSES) == 0, "the gateway lost the device before any session"

    stack.plane.kubectl("create", "namespace", "apps", check=False)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": CONSUMER, "namespace": "apps", "annotations": {c.INJECT_ANNOTATION: DEVICE}},
        "spec": {"containers": [{"name": "app", "image": "busybox", "command": ["sleep", "infinity"]}]},
    }
    stack.plane.kubectl("apply", "-f", "-", input=json.dumps(pod))
    link = stack.link_path(CONSUMER, DEVICE)
    await wait_async(link.exists, within=30, message="the bridge's tty")
    bridge_port = stack.bridge_health[(CONSUMER, DEVICE)]
    device_fd = stack.usb["node-a"].device_side(ADAPTER)
    app_fd = os.open(link, os.O_RDWR | os.O_NOCTTY)
    try:
        make_raw(app_fd, termios.B115200)
        await exchange(app_fd, device_fd, b"first:")
        sessions_at_start = metric_total(gateway_port, SESSIONS)
        assert sessions_at_start == 1, "the bridge's one session"

        # Keep talking for HOLD_SECONDS: every round trip must go through the same session.
        rounds = 0
        deadline = time.monotonic() + HOLD_SECONDS
        while time.monotonic() < deadline:
            await exchange(app_fd, device_fd, f"round {rounds}:".encode())
            rounds += 1
        assert metric_total(gateway_port, LOSSES) == 0, "the gateway lost the device during the session"
        assert metric_total(gateway_port, SESSIONS) == sessions_at_start, "the session was replaced"
        assert metric_total(bridge_port, RECONNECTS) == 0, "the bridge reconnected"
        assert rounds > 10

        # An unplug is one loss, of the one device. The gateway goes away right after it (the
        # device is no longer Available), so its log, which outlives it, is what we count.
        stack.usb["node-a"].unplug(ADAPTER)
        await wait_async(
            lambda: not stack.gateway_pods(DEVICE, "node-a"), within=60, message="the gateway removed"
        )
        log = stack.container_logs("node-a", f"{DEVICE}-gateway-", "gateway")
        losses = [json.loads(line) for line in log.splitlines() if '"device lost"' in line]
        assert [loss["reason"] for loss in losses] == ["hangup"], log[-3000:]
    finally:
        os.close(app_fd)
