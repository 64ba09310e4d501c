"""DevicePort.handle_request on a real pty: whatever value a client sends, the port keeps working."""

import asyncio
import os
import pty

import pytest

from kubeserial_common.runtime.promtext import Registry
from kubeserial_gateway.device import DevicePort
from kubeserial_gateway.metrics import GatewayMetrics
from kubeserial_gateway.rfc2217 import Cmd, SerialSettings


@pytest.mark.parametrize("baud", [2**31, 0xFFFFFFFF])
def test_out_of_range_baud_rate_is_refused_not_raised(baud: int) -> None:
    """SET-BAUDRATE carries 32 bits; the kernel takes a signed int. pyserial raises OverflowError
    for the rest, which used to escape data_received and kill the session mid-chunk."""
    controller, tty = pty.openpty()

    async def scenario() -> tuple[int | None, int | None]:
        port = DevicePort(
            os.ttyname(tty),
            defaults=SerialSettings(baud_rate=9600),
            metrics=GatewayMetrics(Registry()),
        )
        port.open()
        try:
            refused = port.handle_request(Cmd.SET_BAUDRATE, baud)
            still_settable = port.handle_request(Cmd.SET_BAUDRATE, 19200)
        finally:
            port.close()
        return refused, still_settable

    try:
        assert asyncio.run(scenario()) == (9600, 19200)
    finally:
        os.close(controller)
        os.close(tty)
