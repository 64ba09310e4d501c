"""The bridge end to end: an application opens a tty; a pty device behind a real gateway sees it all."""

import os
import socket
import termios
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from kubeserial_gateway.rfc2217 import Cmd, Control, PortRequest, Rfc2217Server
from kubeserial_testing.controlplane import free_port
from kubeserial_testing.pty_device import PtyDevice
from kubeserial_testing.pty_gateway import Process, run_bridge, run_gateway
from kubeserial_testing.services import wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:serial.rfc2217")
EVERY_BYTE = bytes(range(256)) + b"\xff" * 3000 + bytes(range(255, -1, -1))


@pytest.fixture
def device(tmp_path: Path) -> Iterator[PtyDevice]:
    with PtyDevice(tmp_path / "ttyUSB-test") as pty:
        yield pty


def connected(bridge: Process) -> bool:
    return bridge.http_status("/readyz") == 200


def test_application_sets_57600_and_the_device_sees_it_and_the_bytes(
    device: PtyDevice, tmp_path: Path
) -> None:
    link = tmp_path / "links" / "printer"
    with (
        run_gateway(device.link, log_path=tmp_path / "gateway.log") as gateway,
        run_bridge(gateway.rfc2217_url, link, log_path=tmp_path / "bridge.log") as bridge,
    ):
        wait_for(lambda: connected(bridge), message="bridge connected")
        # --via-proc: the link goes through /proc/<bridge pid>/root, as another container would need.
        assert os.readlink(link) == f"/proc/{bridge.proc.pid}/root{os.path.realpath(link)}"
        app = serial.Serial(str(link), baudrate=57600, timeout=10)
        try:
            wait_for(lambda: device.baud_rate() == 57600, message="57600 on the device")
            app.write(EVERY_BYTE)
            assert device.read(len(EVERY_BYTE)) == EVERY_BYTE
            device.write(EVERY_BYTE)
            assert app.read(len(EVERY_BYTE)) == EVERY_BYTE

            app.baudrate = 9600
            app.stopbits = serial.STOPBITS_TWO
            app.parity = serial.PARITY_ODD
            app.rtscts = True
            wait_for(
                lambda: (
                    device.line_settings() | {"data_bits": 8}
                    == {
                        "baud_rate": 9600,
                        "data_bits": 8,
                        "parity": "O",
                        "stop_bits": 2,
                        "rtscts": True,
                        "xonxoff": False,
                    }
                ),
                message="the app's settings on the device",
            )
        finally:
            app.close()
        wait_for(lambda: bridge.metric("kubeserial_bridge_app_attached") == 0, message="app closed the tty")
        assert bridge.metric("kubeserial_bridge_bytes_total", direction="to_gateway") >= len(EVERY_BYTE)
        assert bridge.metric("kubeserial_bridge_settings_sent_total", command="SET_BAUDRATE") >= 2
        # Opening and closing the tty raised and dropped DTR/RTS, as on a real port.
        assert bridge.metric("kubeserial_bridge_settings_sent_total", command="SET_CONTROL") >= 3


def test_tty_stays_open_while_the_gateway_restarts(device: PtyDevice, tmp_path: Path) -> None:
    link = tmp_path / "links" / "printer"
    ports = (free_port(), free_port(), free_port())
    with run_gateway(device.link, log_path=tmp_path / "gateway.log", ports=ports) as gateway:
        url = gateway.rfc2217_url
        with run_bridge(url, link, log_path=tmp_path / "bridge.log") as bridge:
            wait_for(lambda: connected(bridge), message="bridge connected")
            app = serial.Serial(str(link), baudrate=57600, timeout=10)
            try:
                wait_for(lambda: device.baud_rate() == 57600, message="57600")
                gateway.proc.terminate()
                gateway.proc.wait(15)
                wait_for(lambda: not connected(bridge), message="bridge noticed")
                app.write(b"held while away")  # the tty is still there: no error for the app
                assert app.is_open
                with run_gateway(device.link, log_path=tmp_path / "gateway2.log", ports=ports) as again:
                    wait_for(lambda: connected(bridge), timeout=30, message="bridge reconnected")
                    # What the app wrote during the outage arrives now, at the app's speed again (the
                    # new session began at 115200 and the bridge pushed the app's settings first).
                    assert device.read(15) == b"held while away"
                    assert device.baud_rate() == 57600
                    app.write(EVERY_BYTE)
                    assert device.read(len(EVERY_BYTE)) == EVERY_BYTE
                    device.write(b"welcome back")
                    assert app.read(12) == b"welcome back"
                    assert again.metric("kubeserial_gateway_sessions_total", protocol="rfc2217") == 1
                assert bridge.metric("kubeserial_bridge_reconnects_total") >= 1
            finally:
                app.close()


def test_tty_starts_with_the_gateways_settings(device: PtyDevice, tmp_path: Path) -> None:
    link = tmp_path / "links" / "meter"
    with (
        run_gateway(device.link, log_path=tmp_path / "gateway.log", args=["--baud-rate", "9600"]) as gateway,
        run_bridge(gateway.rfc2217_url, link, log_path=tmp_path / "bridge.log", via_proc=False) as bridge,
    ):
        wait_for(lambda: connected(bridge), message="bridge connected")
        # An application that does not configure the tty sees the device's speed and a byte pipe.
        fd = os.open(link, os.O_RDWR | os.O_NOCTTY)
        try:
            wait_for(lambda: termios.tcgetattr(fd)[5] == termios.B9600, message="the pty adopted 9600 baud")
            os.write(fd, b"raw\r\n\x03")
            assert device.read(6) == b"raw\r\n\x03"
            assert device.baud_rate() == 9600  # and nothing was pushed back over it
        finally:
            os.close(fd)


def test_bridge_waits_for_a_gateway_that_is_not_there_yet(device: PtyDevice, tmp_path: Path) -> None:
    link = tmp_path / "links" / "late"
    ports = (free_port(), free_port(), free_port())
    url = f"rfc2217://127.0.0.1:{ports[1]}"
    with run_bridge(url, link, log_path=tmp_path / "bridge.log") as bridge:
        assert bridge.http_status("/healthz") == 200 and not connected(bridge)  # tty exists, no gateway
        app = os.open(link, os.O_RDWR | os.O_NOCTTY)
        try:
            wait_for(
                lambda: bridge.metric("kubeserial_bridge_connect_failures_total") >= 1,
                message="a failed connection attempt counted",
            )
            assert not connected(bridge)
            with run_gateway(device.link, log_path=tmp_path / "gateway.log", ports=ports):
                wait_for(lambda: connected(bridge), timeout=30, message="bridge connected")
                os.write(app, b"late hello")
                assert device.read(10) == b"late hello"
        finally:
            os.close(app)


class RecordingGateway:
    """A stand-in gateway on a real socket: answers like the real one and records every request."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests: list[tuple[int, int]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        server = Rfc2217Server(signature="recorder")
        with conn:
            conn.sendall(server.greeting())
            while data := conn.recv(65536):
                events, reply = server.receive(data)
                for event in events:
                    if isinstance(event, PortRequest):
                        with self._lock:
                            self.requests.append((event.command, event.value))
                        reply += server.reply(event.command, event.value)
                conn.sendall(reply)

    def controls(self) -> list[Control]:
        """The SET-CONTROL requests for DTR and RTS, in order."""
        lines = {Control.DTR_ON, Control.DTR_OFF, Control.RTS_ON, Control.RTS_OFF}
        with self._lock:
            return [Control(v) for c, v in self.requests if c == Cmd.SET_CONTROL and v in lines]

    def close(self) -> None:
        self.listener.close()


def test_dtr_and_rts_follow_open_b0_and_close_like_a_real_port(tmp_path: Path) -> None:
    recorder = RecordingGateway()
    link = tmp_path / "links" / "arduino"
    down, up = [Control.DTR_OFF, Control.RTS_OFF], [Control.DTR_ON, Control.RTS_ON]
    try:
        with run_bridge(
            f"rfc2217://127.0.0.1:{recorder.port}", link, log_path=tmp_path / "bridge.log"
        ) as bridge:
            wait_for(lambda: connected(bridge), message="bridge connected")
            wait_for(lambda: recorder.controls() == down, message="nobody has the tty open: lines down")
            fd = os.open(link, os.O_RDWR | os.O_NOCTTY)
            wait_for(lambda: recorder.controls() == down + up, message="open raises DTR and RTS")
            attrs = termios.tcgetattr(fd)
            since_b0 = len(recorder.requests)  # before: the queries (value 0) made when connecting
            attrs[4] = attrs[5] = termios.B0
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
            wait_for(lambda: recorder.controls() == down + up + down, message="B0 drops them")
            attrs[4] = attrs[5] = termios.B4800
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
            wait_for(
                lambda: recorder.controls() == down + up + down + up, message="a speed raises them again"
            )
            assert (Cmd.SET_BAUDRATE, 4800) in recorder.requests
            assert (Cmd.SET_BAUDRATE, 0) not in recorder.requests[since_b0:]  # B0 is not sent as a speed
            os.close(fd)
            wait_for(
                lambda: recorder.controls() == down + up + down + up + down, message="last close (HUPCL)"
            )
    finally:
        recorder.close()
