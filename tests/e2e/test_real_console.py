"""`kubectl serial` on real nodes: the three commands a new user needs, as one would type them.

An adapter is plugged into node-a (a simulated one: the test plays the device on its pty). With
no shell on the node: `kubectl serial ls` shows it (and so does `kubectl get serialports`),
`kubectl serial adopt node-a/ttyUSBn --name D` makes the SerialDevice, and
`kubectl serial console D` reaches it through its gateway pod over the apiserver's port-forward
(which needs a real kubelet). The console runs in a pty, as in a terminal: every byte value but
the exit key goes to the device and every byte value comes back, the exit key leaves with status
0 and the terminal's settings are restored; SIGTERM restores them too. A second console while the
first holds the device is refused ("busy, held by ..."); an unknown device and an unplugged one
are refused with their own messages.
"""

import contextlib
import os
import pty
import re
import signal
import subprocess
import sys
import termios
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubeserial_kubectl.terminal import EXIT_KEY

from kubeserial_common.core import vocabulary as v
from kubeserial_testing.realstack import RealStack, running_stack, wait_until
from kubeserial_testing.ttyio import read_exactly, read_until
from kubeserial_testing.umockdev import UsbAdapter

pytestmark = [pytest.mark.umockdev, pytest.mark.real_story, pytest.mark.timeout(1200)]

SUFFIX = uuid.uuid4().hex[:4]
DEVICE = f"console-{SUFFIX}"
ADAPTER = UsbAdapter(serial=f"CN{SUFFIX.upper()}", port=3)
TO_DEVICE = bytes(b for b in range(256) if b != EXIT_KEY)
TO_CONSOLE = bytes(range(255, -1, -1))
KUBECTL_SERIAL = Path(sys.executable).parent / "kubectl-serial"  # installed by hack/venv.sh


def user_env(stack: RealStack) -> dict[str, str]:
    """A user's shell: KUBECONFIG set (kubectl refuses flags before a plugin's name), the plugin on PATH."""
    return {
        **os.environ,
        "KUBECONFIG": str(stack.cluster.kubeconfig),
        "PATH": f"{KUBECTL_SERIAL.parent}:{os.environ['PATH']}",
    }


def kubectl_serial(stack: RealStack, *args: str) -> subprocess.CompletedProcess[str]:
    """The plugin as kubectl runs it (`kubectl serial ...` finds kubectl-serial on PATH)."""
    return subprocess.run(
        ["kubectl", "serial", *args], capture_output=True, text=True, timeout=60, env=user_env(stack)
    )


def serialports_table(stack: RealStack) -> list[dict[str, str]]:
    """`kubectl get serialports` as a user reads it: each row by the header's columns (MODEL, the
    USB product string, may hold spaces, so cells are cut where the header's columns start)."""
    lines = stack.kubectl("get", "serialports").stdout.splitlines()
    if not lines:
        return []
    header = lines[0]
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    return [
        {
            name: line[start : (starts[i + 1] if i + 1 < len(starts) else None)].strip()
            for i, (name, start) in enumerate(zip(names, starts, strict=True))
        }
        for line in lines[1:]
    ]


def adapter_row(stack: RealStack) -> dict[str, str] | None:
    return next((row for row in serialports_table(stack) if row.get("SERIAL") == ADAPTER.serial), None)


class Console:
    """`kubectl serial console DEVICE` in a terminal of its own (a pty the test holds)."""

    def __init__(self, stack: RealStack, device: str) -> None:
        self.master, self.slave = pty.openpty()
        self.cooked = termios.tcgetattr(self.slave)
        self.proc = subprocess.Popen(
            ["kubectl", "serial", "console", device],
            stdin=self.slave,
            stdout=self.slave,
            stderr=self.slave,
            env=user_env(stack),
            start_new_session=True,
        )

    def wait_connected(self) -> None:
        """Its greeting (written while the terminal is still cooked), then raw mode: from then on,
        bytes pass unchanged both ways."""
        said = read_until(self.master, b"\n", timeout=60)
        assert b"connected to" in said, said
        wait_until(lambda: not self.restored(), within=10, message="the console's terminal in raw mode")

    def restored(self) -> bool:
        return termios.tcgetattr(self.slave) == self.cooked

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealStack]:
    with running_stack(tmp_path_factory.mktemp("real-console")) as real:
        yield real


def test_ls_adopt_console_on_real_nodes(stack: RealStack) -> None:
    usb = stack.usb["node-a"]
    usb.plug(ADAPTER)
    device_fd = usb.device_side(ADAPTER)

    # 1. ls: the adapter, on its node, with its ids: no shell on the node, no udevadm.
    def listed() -> str | None:
        lines = kubectl_serial(stack, "ls").stdout.splitlines()
        return next((line for line in lines if ADAPTER.serial in line), None)

    row = wait_until(listed, within=60, message="the adapter in `kubectl serial ls`")
    match = re.match(r"(node-a/ttyUSB\d+)\s+0403:6001\s+" + ADAPTER.serial, row)
    assert match, row
    # The same, with kubectl alone: the SerialPort the node's monitor published, not bound yet.
    port = wait_until(
        lambda: adapter_row(stack), within=30, message="the adapter in `kubectl get serialports`"
    )
    assert list(port) == ["NAME", "NODE", "VENDOR", "PRODUCT", "SERIAL", "MODEL", "DEVICE"], port
    assert (port["NODE"], port["VENDOR"], port["PRODUCT"], port["DEVICE"]) == (
        "node-a",
        "0403",
        "6001",
        "",
    ), port
    assert port["MODEL"] == "FT232R USB UART", port  # the USB product string, spaces and all

    # 2. adopt NODE/PORT --name: the SerialDevice, from the port's ids.
    adopted = kubectl_serial(stack, "adopt", match.group(1), "--name", DEVICE)
    assert adopted.returncode == 0, adopted.stderr
    assert f"serialdevice/{DEVICE} created for 0403:6001 serial {ADAPTER.serial}" in adopted.stdout
    wait_until(lambda: stack.device_state(DEVICE) == ("True", "node-a"), within=60, message="Available")
    wait_until(lambda: stack.gateway_pods(DEVICE, node="node-a"), within=180, message="gateway Running")
    bound = adapter_row(stack)
    assert bound is not None and bound["DEVICE"] == DEVICE, f"the port's DEVICE column: {bound}"

    # 3. console: both ways through the gateway over port-forward; the exit key restores the terminal.
    console = Console(stack, DEVICE)
    try:
        console.wait_connected()
        os.write(console.master, TO_DEVICE)
        assert read_exactly(device_fd, len(TO_DEVICE), timeout=30) == TO_DEVICE
        os.write(device_fd, TO_CONSOLE)
        assert read_exactly(console.master, len(TO_CONSOLE), timeout=30) == TO_CONSOLE

        # A second console while this one holds the device: refused, saying who holds it.
        wait_until(
            lambda: stack.condition(DEVICE, v.FREE).get("status") == "False", within=30, message="Free=False"
        )
        second = kubectl_serial(stack, "console", DEVICE)
        assert second.returncode == 1 and f"device {DEVICE!r} is busy, held by" in second.stderr, second

        os.write(console.master, bytes([EXIT_KEY]))
        assert console.proc.wait(timeout=30) == 0
        assert console.restored(), "the terminal's settings are back after the exit key"
    finally:
        console.close()

    # SIGTERM (a closed window, a killed session) restores the terminal too.
    wait_until(
        lambda: stack.condition(DEVICE, v.FREE).get("status") == "True", within=60, message="Free again"
    )
    killed = Console(stack, DEVICE)
    try:
        killed.wait_connected()
        killed.proc.send_signal(signal.SIGTERM)
        assert killed.proc.wait(timeout=30) == 128 + signal.SIGTERM
        assert killed.restored(), "the terminal's settings are back after SIGTERM"
    finally:
        killed.close()

    # Clear refusals for what cannot work.
    unknown = kubectl_serial(stack, "console", f"nothing-{SUFFIX}")
    assert unknown.returncode == 1 and f"unknown device 'nothing-{SUFFIX}'" in unknown.stderr
    usb.unplug(ADAPTER)
    wait_until(lambda: stack.device_state(DEVICE)[0] == "False", within=60, message="Available=False")
    gone = kubectl_serial(stack, "console", DEVICE)
    assert gone.returncode == 1 and f"device {DEVICE!r} is not available" in gone.stderr, gone.stderr
    stack.kubectl("delete", "serialdevice", DEVICE, "--wait=false")
