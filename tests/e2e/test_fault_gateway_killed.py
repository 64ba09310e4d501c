"""A gateway process killed in the middle of a session: it is restarted, the consumer's bridge
reconnects, the application's open tty carries on, and Free ends up telling the truth."""

import json
import os
import signal
import termios
import uuid

import pytest

from kubeserial_common import constants as c
from kubeserial_testing.objects import condition, get_object
from kubeserial_testing.stack import LocalStack, wait_async
from kubeserial_testing.ttyio import baud, exchange, make_raw
from kubeserial_testing.umockdev import UsbAdapter

pytestmark = pytest.mark.umockdev

SUFFIX = uuid.uuid4().hex[:4]
DEVICE = f"killed-{SUFFIX}"
ADAPTER = UsbAdapter(serial=f"KIL{SUFFIX.upper()}")


async def test_gateway_killed_mid_session(plugged: LocalStack) -> None:
    """The gateway dies with a session open: it is restarted, the consumer's bridge reconnects
    and the application's open tty carries on, and Free ends up telling the truth."""
    stack = plugged
    plane = stack.plane
    await wait_async(stack.ports_for(DEVICE).ready, within=30, message="gateway ready")
    consumer = f"victim-{SUFFIX}"
    plane.kubectl("create", "namespace", "apps", check=False)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": consumer, "namespace": "apps", "annotations": {c.INJECT_ANNOTATION: DEVICE}},
        "spec": {"containers": [{"name": "app", "image": "busybox", "command": ["sleep", "infinity"]}]},
    }
    plane.kubectl("apply", "-f", "-", input=json.dumps(pod))
    link = stack.link_path(consumer, DEVICE)
    await wait_async(link.exists, within=30, message="the bridge's tty")
    device_fd = stack.usb["node-a"].device_side(ADAPTER)
    app_fd = os.open(link, os.O_RDWR | os.O_NOCTTY)
    try:
        make_raw(app_fd, termios.B57600)
        await wait_async(lambda: baud(device_fd) == termios.B57600, within=10, message="57600 on the device")
        await exchange(app_fd, device_fd, b"before:")
        await wait_async(
            lambda: condition(get_object(plane, "serialdevice", DEVICE), c.FREE).get("reason") == "InUse",
            within=30,
            message="Free=False InUse while the session is open",
        )

        # The gateway of before the outage may still be on its way out (garbage collection).
        await wait_async(
            lambda: len(stack.gateway_pods(DEVICE, "node-a")) == 1, within=60, message="one gateway"
        )
        gateway = stack.gateway_process(DEVICE, "node-a")
        gateway.send_signal(signal.SIGKILL)
        gateway.wait()
        await wait_async(
            lambda: stack.kubelets["node-a"].restarts >= 1, within=10, message="gateway restarted"
        )
        await wait_async(stack.ports_for(DEVICE).ready, within=30, message="restarted gateway ready")
        await exchange(app_fd, device_fd, b"after:")
        assert baud(device_fd) == termios.B57600, "the bridge re-applies the application's settings"
    finally:
        os.close(app_fd)
    plane.kubectl("delete", "pod", consumer, "-n", "apps", "--wait=false")
    await wait_async(
        lambda: condition(get_object(plane, "serialdevice", DEVICE), c.FREE).get("status") == "True",
        within=30,
        message="Free=True once the consumer is gone",
    )
    available = condition(get_object(plane, "serialdevice", DEVICE), c.AVAILABLE)
    assert (available["status"], available["reason"]) == ("True", "DeviceAvailable")
