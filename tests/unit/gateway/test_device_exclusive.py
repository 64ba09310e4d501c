"""TIOCEXCL on the device: set while open, cleared on close, tolerated where the fd is no kernel tty."""

import asyncio
import errno
import os
import pty
import tempfile

import pytest

from kubeserial_common.runtime.promtext import Registry
from kubeserial_gateway.device import DevicePort, set_exclusive
from kubeserial_gateway.metrics import GatewayMetrics
from kubeserial_gateway.rfc2217 import SerialSettings


def test_a_file_that_is_no_tty_is_reported_not_raised() -> None:
    with tempfile.TemporaryFile() as regular:
        assert set_exclusive(regular.fileno(), "/some/file") is False


def test_other_errors_are_raised() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    os.close(write_end)
    with pytest.raises(OSError) as raised:
        set_exclusive(read_end, "/closed")
    assert raised.value.errno == errno.EBADF


def test_open_sets_the_flag_and_close_clears_it() -> None:
    """What the flag does to other openers: tests/integration/test_gateway_exclusive.py."""
    controller, tty = pty.openpty()
    path = os.ttyname(tty)
    os.close(tty)

    async def scenario() -> tuple[bool, bool]:
        port = DevicePort(path, defaults=SerialSettings(baud_rate=9600), metrics=GatewayMetrics(Registry()))
        port.open()
        held = port.exclusive
        port.close()
        return held, port.exclusive

    try:
        assert asyncio.run(scenario()) == (True, False)
    finally:
        os.close(controller)
