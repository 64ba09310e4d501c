"""DTR and RTS arrive at the device: the gateway's tty ioctls recorded where the adapter's driver would
get them, once from an RFC 2217 client and once from an application's tty behind the bridge.

The device is a simulated FT232R (umockdev) whose tty has modem lines: umockdev hands each ioctl
the gateway makes on it to a recorder in the testbed (kubeserial_testing.umockdev
ModemLineRecorder), which keeps DTR/RTS, answers TIOCMGET and lets the test drive CTS/DSR/CD/RI.
A plain pty cannot show any of this: TIOCMGET/TIOCMSET/TIOCMBIS/TIOCMBIC fail there with ENOTTY and
TIOCPKT on its master reports only flushes, flow control stops and termios changes.
"""

import errno
import fcntl
import os
import struct
import termios
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import serial

from kubeserial_testing.pty_gateway import Gateway, Process, run_bridge, run_gateway
from kubeserial_testing.services import wait_for
from kubeserial_testing.umockdev import ModemLineRecorder, SimulatedUsb, UsbAdapter

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:serial.rfc2217")

UP, DOWN = (True, True), (False, False)  # (DTR, RTS)


class Device:
    def __init__(self, usb: SimulatedUsb, adapter: UsbAdapter, recorder: ModemLineRecorder) -> None:
        self.usb = usb
        self.adapter = adapter
        self.recorder = recorder

    def lines_since(self, mark: int) -> list[tuple[bool, bool]]:
        """(DTR, RTS) after each change since `mark` changes had been seen."""
        return self.recorder.lines()[mark:]

    def wait_lines(self, mark: int, expected: list[tuple[bool, bool]], message: str) -> None:
        wait_for(lambda: self.lines_since(mark) == expected, timeout=15, message=message)


@pytest.fixture
def device(tmp_path: Path) -> Iterator[Device]:
    with SimulatedUsb(tmp_path / "usb") as usb:
        adapter = UsbAdapter()
        usb.plug(adapter)
        yield Device(usb, adapter, usb.record_modem_lines(adapter))


@pytest.fixture
def gateway(device: Device, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    """The gateway under the testbed's preload (only it: the test and the bridge see the real /dev)."""
    with ExitStack() as stack:
        with monkeypatch.context() as env:
            for name, value in device.usb.env.items():
                env.setenv(name, value)
            gw = stack.enter_context(
                run_gateway(Path(device.usb.plugged[device.adapter]), log_path=tmp_path / "gateway.log")
            )
        wait_for(lambda: gw.metric("kubeserial_gateway_device_open") == 1, message="device open")
        # pyserial raises both lines when it opens the port (DTR, then RTS), as the kernel does for
        # a real tty
        device.wait_lines(0, [(True, False), UP], "the gateway's open raised DTR and RTS")
        # Other ioctls reach the pty: TIOCEXCL took (umockdev's default handler answers ENOTTY).
        assert "refused exclusive mode" not in gw.log()
        yield gw
        # The recorder answered every ioctl; nothing made the gateway give up the device.
        assert gw.metric("kubeserial_gateway_device_losses_total", category="io_error") == 0


def test_rfc2217_set_control_reaches_the_device_and_its_input_lines_come_back(
    device: Device, gateway: Gateway
) -> None:
    mark = len(device.recorder.lines())
    client = serial.serial_for_url(gateway.rfc2217_url, baudrate=9600, timeout=1)
    try:
        client.dtr = False
        device.wait_lines(mark, [(False, True)], "DTR_OFF at the device")
        client.rts = False
        device.wait_lines(mark, [(False, True), DOWN], "RTS_OFF at the device")
        client.dtr = True
        device.wait_lines(mark, [(False, True), DOWN, (True, False)], "DTR_ON at the device")
        client.rts = True
        device.wait_lines(mark, [(False, True), DOWN, (True, False), UP], "RTS_ON at the device")
        assert {e.request for e in device.recorder.events()} >= {"TIOCMBIS", "TIOCMBIC", "TIOCMGET"}

        # The other way: lines the device drives reach the client (NOTIFY-MODEMSTATE).
        def client_sees(cts: bool, dsr: bool, cd: bool, ri: bool) -> bool:
            try:
                return (client.cts, client.dsr, client.cd, client.ri) == (cts, dsr, cd, ri)
            except serial.SerialException:  # no NOTIFY-MODEMSTATE yet
                return False

        device.usb.set_modem_inputs(device.adapter, cts=True, cd=True)
        wait_for(
            lambda: client_sees(True, False, True, False), timeout=15, message="CTS and CD up at the client"
        )
        device.usb.set_modem_inputs(device.adapter, dsr=True, ri=True)
        wait_for(
            lambda: client_sees(False, True, False, True), timeout=15, message="DSR and RI at the client"
        )
    finally:
        client.close()


def bridge_connected(bridge: Process) -> bool:
    return bridge.http_status("/readyz") == 200


def test_an_applications_tty_moves_the_device_lines_through_the_bridge(
    device: Device, gateway: Gateway, tmp_path: Path
) -> None:
    """The app's side is a pty, which has no modem lines: what moves DTR/RTS there is what moves
    them on a real port without any ioctl (open, B0 and back, last close with HUPCL). An app's own
    TIOCMBIS/TIOCMSET fails with ENOTTY, as the README says."""
    link = tmp_path / "links" / "arduino"
    mark = len(device.recorder.lines())
    with run_bridge(gateway.rfc2217_url, link, log_path=tmp_path / "bridge.log") as bridge:
        wait_for(lambda: bridge_connected(bridge), message="bridge connected")
        # Nobody has the tty open: the lines go down (DTR first, then RTS).
        device.wait_lines(mark, [(False, True), DOWN], "lines down while the tty is closed")
        expected = [(False, True), DOWN]

        app = os.open(link, os.O_RDWR | os.O_NOCTTY)
        try:
            expected += [(True, False), UP]
            device.wait_lines(mark, expected, "the app's open raised DTR and RTS at the device")

            with pytest.raises(OSError) as refused:
                fcntl.ioctl(app, termios.TIOCMBIC, struct.pack("I", termios.TIOCM_DTR))
            assert refused.value.errno == errno.ENOTTY

            attrs = termios.tcgetattr(app)
            attrs[4] = attrs[5] = termios.B0
            termios.tcsetattr(app, termios.TCSANOW, attrs)
            expected += [(False, True), DOWN]
            device.wait_lines(mark, expected, "B0 dropped them at the device")

            attrs[4] = attrs[5] = termios.B19200
            termios.tcsetattr(app, termios.TCSANOW, attrs)
            expected += [(True, False), UP]
            device.wait_lines(mark, expected, "a speed raised them again at the device")
        finally:
            os.close(app)
        expected += [(False, True), DOWN]
        device.wait_lines(mark, expected, "the app's last close (HUPCL) dropped them at the device")
