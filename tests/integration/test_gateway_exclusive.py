"""Exclusive open, enforced by the kernel: while the gateway holds the device, a second opener on the
node that never calls flock (screen, a shell's `exec 3<>`, another program) gets EBUSY.

The device is a real pty (the kernel's TIOCEXCL check is the same for a pty slave as for ttyUSB0).
Its node is made world-writable first, so that permissions are not what stops the other openers:
before the gateway opens it, and after it lets go, each of them opens it fine.
"""

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubeserial_testing.pty_device import PtyDevice
from kubeserial_testing.pty_gateway import Gateway, run_gateway
from kubeserial_testing.services import wait_for
from kubeserial_testing.ttyio import read_exactly
from kubeserial_testing.umockdev import (
    SYSTEM_PYTHON,
)  # the venv's Python is under /root: nobody cannot run it

# Plain open(2), no flock, no TIOCEXCL of its own: what a stray tool does.
PROBE = """
import errno, os, sys
try:
    os.close(os.open(sys.argv[1], os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK))
    print("opened")
except OSError as exc:
    print(errno.errorcode[exc.errno])
"""
# Who else is on the node: a user in the dialout group; root in an unprivileged container (no
# CAP_SYS_ADMIN); root with every capability (the host's root, a privileged pod).
OPENERS = {
    "user": ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"],
    "root without CAP_SYS_ADMIN": ["setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin"],
    "root": [],
}

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="changes uid and capabilities of the probes")


def open_as(who: str, path: str) -> str:
    """'opened' or the errno name, for a process of `who` opening `path`."""
    out = subprocess.run(
        [*OPENERS[who], SYSTEM_PYTHON, "-c", PROBE, path], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def everyone(path: str) -> dict[str, str]:
    return {who: open_as(who, path) for who in OPENERS}


@pytest.fixture
def device(tmp_path: Path) -> Iterator[PtyDevice]:
    with PtyDevice(tmp_path / "ttyUSB-test") as pty:
        os.chmod(pty.slave_path, 0o666)
        yield pty


def device_open(gateway: Gateway) -> bool:
    return gateway.metric("kubeserial_gateway_device_open") == 1


def assert_session_works(gateway: Gateway, device: PtyDevice) -> None:
    """A raw session carries bytes both ways (client first: then the session is surely up)."""
    with socket.create_connection(("127.0.0.1", gateway.raw_port), timeout=10) as client:
        client.sendall(b"ping")
        assert device.read(4) == b"ping"
        device.write(b"pong")
        assert read_exactly(client.fileno(), 4) == b"pong"


def test_a_second_opener_without_flock_is_refused_while_the_gateway_holds_the_device(
    device: PtyDevice, tmp_path: Path
) -> None:
    assert everyone(device.slave_path) == dict.fromkeys(OPENERS, "opened"), "the probes must work at all"
    with run_gateway(device.link, log_path=tmp_path / "gateway.log") as gateway:
        wait_for(lambda: device_open(gateway), message="gateway opened the device")
        assert everyone(device.slave_path) == {
            "user": "EBUSY",
            "root without CAP_SYS_ADMIN": "EBUSY",
            "root": "opened",  # TIOCEXCL does not stop CAP_SYS_ADMIN (README: what root can still do)
        }
        assert "refused exclusive mode" not in gateway.log()
        assert_session_works(gateway, device)  # the refused openers disturbed nothing
    assert everyone(device.slave_path) == dict.fromkeys(OPENERS, "opened"), "gateway gone: the device is free"


def test_the_device_is_exclusive_again_after_a_replug(device: PtyDevice, tmp_path: Path) -> None:
    with run_gateway(device.link, log_path=tmp_path / "gateway.log") as gateway:
        wait_for(lambda: device_open(gateway), message="gateway opened the device")
        device.unplug()
        wait_for(lambda: not device_open(gateway), message="gateway saw the unplug")
        device.plug()
        os.chmod(device.slave_path, 0o666)
        wait_for(lambda: gateway.metric("kubeserial_gateway_device_reopens_total") >= 1, message="reopened")
        assert open_as("user", device.slave_path) == "EBUSY"
        # and the reopened device works
        assert_session_works(gateway, device)
