"""The gateway as a real process on a real pty device: raw and RFC 2217 clients over real sockets."""

import contextlib
import os
import random
import select
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from kubeserial_testing.pty_device import PtyDevice
from kubeserial_testing.pty_gateway import Gateway, run_gateway
from kubeserial_testing.services import wait_for

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:serial.rfc2217")
EVERY_BYTE = bytes(range(256)) + b"\xff" * 3000 + bytes(range(255, -1, -1)) + b"\xff\x00\xff\xff\xfe" * 200


@pytest.fixture
def device(tmp_path: Path) -> Iterator[PtyDevice]:
    with PtyDevice(tmp_path / "ttyUSB-test") as pty:
        yield pty


@pytest.fixture
def gateway(device: PtyDevice, tmp_path: Path) -> Iterator[Gateway]:
    with run_gateway(device.link, log_path=tmp_path / "gateway.log") as gw:
        yield gw


def recv_exactly(sock: socket.socket, size: int, *, timeout: float = 10.0) -> bytes:
    deadline = time.monotonic() + timeout
    out = bytearray()
    while len(out) < size and time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(size - len(out))
        except TimeoutError:
            break
        if not chunk:
            break
        out += chunk
    return bytes(out)


def closed_by_peer(sock: socket.socket, *, timeout: float = 10.0) -> bool:
    """True when the peer closed (EOF or reset) within `timeout`, discarding data before that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(65536):
                return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
    return False


def connection_ended(port: serial.SerialBase) -> bool:
    """pyserial's RFC 2217 client: reads fail once its reader saw the gateway close the socket.

    Until then a read returns what arrived or b"" (end of stream, or its own timeout)."""
    try:
        port.read(1)
    except serial.SerialException:
        return True
    return False


def test_help_runs_as_a_module() -> None:
    for args in ([], ["serve"], ["bridge"]):
        out = subprocess.run(
            [sys.executable, "-m", "kubeserial_gateway", *args, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0 and "usage:" in out.stdout


def test_gateway_and_bridge_never_load_the_kubernetes_client() -> None:
    """kubernetes_asyncio alone costs ~50 MB of RSS; the gateway's budget is 40 MB in all."""
    code = (
        "import sys, kubeserial_gateway.__main__, kubeserial_gateway.kubeapi, kubeserial_gateway.freestatus;"
        "print(sorted(m for m in sys.modules if m.startswith('kubernetes')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", "a kubeserial_common import now pulls in kubernetes_asyncio"


def test_raw_carries_every_byte_value_both_ways(gateway: Gateway, device: PtyDevice) -> None:
    with gateway.raw_client() as client:
        client.sendall(EVERY_BYTE)
        assert device.read(len(EVERY_BYTE)) == EVERY_BYTE
        device.write(EVERY_BYTE)
        assert recv_exactly(client, len(EVERY_BYTE)) == EVERY_BYTE
    wait_for(lambda: gateway.metric("kubeserial_gateway_session_open") == 0, message="session closed")
    assert gateway.metric("kubeserial_gateway_bytes_total", direction="to_device") >= len(EVERY_BYTE)
    assert gateway.metric("kubeserial_gateway_bytes_total", direction="from_device") >= len(EVERY_BYTE)
    assert gateway.metric("kubeserial_gateway_sessions_total", protocol="raw") == 1


def test_rfc2217_carries_every_byte_value_and_sets_the_port(gateway: Gateway, device: PtyDevice) -> None:
    port = serial.serial_for_url(gateway.rfc2217_url, baudrate=57600, timeout=10)
    try:
        assert device.baud_rate() == 57600  # set during open, before open() returned
        port.write(EVERY_BYTE)
        assert device.read(len(EVERY_BYTE)) == EVERY_BYTE
        device.write(EVERY_BYTE)
        assert port.read(len(EVERY_BYTE)) == EVERY_BYTE

        port.baudrate = 9600
        port.stopbits = serial.STOPBITS_TWO
        port.parity = serial.PARITY_ODD  # a pty keeps PARODD (not PARENB): visible on the device side
        port.rtscts = True
        settings = device.line_settings()
        assert (settings["baud_rate"], settings["stop_bits"], settings["parity"]) == (9600, 2, "O")
        assert settings["rtscts"] and not settings["xonxoff"]
        port.rtscts = False
        port.xonxoff = True
        assert device.line_settings()["xonxoff"] and not device.line_settings()["rtscts"]

        # A pty has no modem lines: requests are acknowledged, lines read as absent, nothing breaks.
        port.dtr = False
        port.rts = False
        assert (port.cts, port.dsr, port.ri, port.cd) == (False, False, False, False)
        port.send_break(0.05)
        port.reset_input_buffer()
        port.reset_output_buffer()
        port.write(b"still alive")
        assert device.read(11) == b"still alive"
    finally:
        port.close()
    # The next session starts from the configured defaults again.
    wait_for(lambda: device.baud_rate() == 115200, message="defaults restored after the session")
    assert gateway.metric("kubeserial_gateway_port_requests_total", command="SET_BAUDRATE") >= 2


def test_second_client_is_refused_counted_and_the_first_keeps_working(
    gateway: Gateway, device: PtyDevice
) -> None:
    with gateway.raw_client() as first:
        first.sendall(b"one")
        assert device.read(3) == b"one"
        with gateway.raw_client() as second:
            assert closed_by_peer(second)
        with socket.create_connection(("127.0.0.1", gateway.rfc2217_port), timeout=10) as third:
            assert closed_by_peer(third)
        assert gateway.metric("kubeserial_gateway_refusals_total", reason="busy") == 2
        first.sendall(b"two")
        assert device.read(3) == b"two"
        device.write(b"back")
        assert recv_exactly(first, 4) == b"back"
    assert "connection refused" in gateway.log()
    # Once the first session is over, a new client gets in.
    wait_for(lambda: gateway.metric("kubeserial_gateway_session_open") == 0, message="session closed")
    with gateway.raw_client() as later:
        later.sendall(b"three")
        assert device.read(5) == b"three"


def test_takeover_replaces_an_idle_session_only(device: PtyDevice, tmp_path: Path) -> None:
    with (
        run_gateway(
            device.link,
            log_path=tmp_path / "gateway.log",
            args=["--allow-takeover", "--takeover-idle-seconds", "3"],
        ) as gateway,
        gateway.raw_client() as first,
    ):
        first.sendall(b"busy")
        assert device.read(4) == b"busy"
        with gateway.raw_client() as early:
            assert closed_by_peer(early)  # the first session moved data < 3 s ago: not idle
        wait_for(
            lambda: gateway.metric("kubeserial_gateway_refusals_total", reason="busy") == 1, message="refusal"
        )
        time.sleep(3.2)
        with gateway.raw_client() as newcomer:
            assert closed_by_peer(first)
            newcomer.sendall(b"mine")
            assert device.read(4) == b"mine"
            device.write(b"ok")
            assert recv_exactly(newcomer, 2) == b"ok"
        assert gateway.metric("kubeserial_gateway_takeovers_total") == 1


def test_unplug_mid_session_then_replug(gateway: Gateway, device: PtyDevice) -> None:
    with gateway.raw_client() as client:
        client.sendall(b"before")
        assert device.read(6) == b"before"
        device.unplug()
        assert closed_by_peer(client)  # the session ends cleanly
    wait_for(lambda: gateway.http_status("/readyz") == 503, message="not ready while unplugged")
    assert gateway.http_status("/healthz") == 200  # still running
    with gateway.raw_client() as meanwhile:
        assert closed_by_peer(meanwhile)
    assert gateway.metric("kubeserial_gateway_refusals_total", reason="device_unavailable") == 1
    assert gateway.metric("kubeserial_gateway_device_losses_total", reason="hangup") == 1

    device.plug()  # a new tty behind the same path, as a replugged adapter gets
    wait_for(gateway.ready, timeout=15, message="ready again after replug")
    port = serial.serial_for_url(gateway.rfc2217_url, baudrate=19200, timeout=10)
    try:
        assert device.baud_rate() == 19200
        port.write(EVERY_BYTE)
        assert device.read(len(EVERY_BYTE)) == EVERY_BYTE
        device.write(b"after")
        assert port.read(5) == b"after"
        # Unplug during an RFC 2217 session too: the client sees the connection end.
        device.unplug()
        wait_for(lambda: connection_ended(port), timeout=30, message="the RFC 2217 session ended")
        wait_for(lambda: gateway.http_status("/readyz") == 503, message="not ready")
    finally:
        port.close()
    device.plug()
    wait_for(gateway.ready, timeout=15, message="ready after the second replug")
    assert gateway.metric("kubeserial_gateway_device_reopens_total") == 2
    assert gateway.proc.poll() is None


def test_device_path_replaced_while_idle_is_noticed(gateway: Gateway, device: PtyDevice) -> None:
    """Unplug and replug between two reads of the gateway: the path now names another tty."""
    old_master = device.master
    device.master = -1  # keep the old tty open (no hang-up), but point the link at a new one
    device.plug()
    try:
        wait_for(
            lambda: gateway.metric("kubeserial_gateway_device_losses_total", reason="path_changed") == 1,
            message="path change noticed",
        )
        wait_for(lambda: gateway.metric("kubeserial_gateway_device_reopens_total") == 1, message="reopened")
        with gateway.raw_client() as client:
            client.sendall(b"new tty")
            assert device.read(7) == b"new tty"
    finally:
        os.close(old_master)


def test_garbage_and_abrupt_disconnects_break_nothing(gateway: Gateway, device: PtyDevice) -> None:
    rng = random.Random(2217)
    nasty = [
        b"\xff\xfa\x2c" + b"\x01" * 5000,  # endless subnegotiation
        b"\xff\xfa\x2c\x01\xff\xff\xff\xf0",  # escaped IAC in SB, short value
        b"\xff\xf0\xff\xf0",  # stray SE
        b"\xff\xfb",  # WILL without option, at the end of a chunk
        b"\xfe\xff\xfa\xff\xf0\xff\xfd\x2c\xff\xfa\x2c\x63\x01\xff\xf0",  # empty SB, unknown command
        bytes(rng.getrandbits(8) for _ in range(200_000)),
    ]
    with socket.create_connection(("127.0.0.1", gateway.rfc2217_port), timeout=10) as client:
        for chunk in nasty:
            client.sendall(chunk)
        device.drain()
        # Reset instead of FIN: the gateway must cope with a connection that vanishes.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with gateway.raw_client() as raw:
        raw.sendall(os.urandom(300_000))
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    device.drain()
    assert gateway.metric("kubeserial_gateway_protocol_errors_total") > 0
    assert gateway.http_status("/healthz") == 200
    wait_for(lambda: gateway.metric("kubeserial_gateway_session_open") == 0, message="sessions over")
    port = serial.serial_for_url(gateway.rfc2217_url, baudrate=38400, timeout=10)
    try:
        port.write(EVERY_BYTE)
        assert device.read(len(EVERY_BYTE)) == EVERY_BYTE
    finally:
        port.close()


def test_slow_reader_gets_backpressure_not_unbounded_memory(gateway: Gateway, device: PtyDevice) -> None:
    with gateway.raw_client() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        client.sendall(b"x")
        assert device.read(1) == b"x"
        rss_before = gateway.rss_kib()
        # The device talks far faster than the client reads (the client reads nothing at all).
        chunk = bytes(range(256)) * 256
        sent = 0
        os.set_blocking(device.master, False)
        while sent < 64 * 1024 * 1024:
            _, writable, _ = select.select([], [device.master], [], 2.0)
            if not writable:
                break  # the gateway stopped reading the device: backpressure reached the tty
            with contextlib.suppress(BlockingIOError):
                sent += os.write(device.master, chunk[sent % 256 :])  # the pattern continues across writes
        os.set_blocking(device.master, True)
        assert sent < 64 * 1024 * 1024, "the gateway kept reading into memory"
        growth_mib = (gateway.rss_kib() - rss_before) / 1024
        assert growth_mib < 16, f"gateway grew by {growth_mib:.1f} MiB for a client that does not read"
        # Nothing was lost: once the client reads, every byte the device wrote arrives, in order.
        received = recv_exactly(client, sent, timeout=60)
        assert len(received) == sent
        assert received == (chunk * (sent // len(chunk) + 1))[:sent]


def test_slow_device_gets_backpressure_not_unbounded_memory(gateway: Gateway, device: PtyDevice) -> None:
    """The client sends far faster than the device takes it (here: the device reads nothing)."""
    pattern = bytes(range(256)) * 256
    total = 64 * 1024 * 1024
    with gateway.raw_client() as client:
        client.sendall(b"x")
        assert device.read(1) == b"x"
        rss_before = gateway.rss_kib()
        client.setblocking(False)
        sent = 0
        while sent < total:
            _, writable, _ = select.select([], [client], [], 2.0)
            if not writable:
                break  # the gateway stopped reading the socket: backpressure reached the client
            with contextlib.suppress(BlockingIOError):
                sent += client.send(pattern[sent % 256 :])
        assert sent < total, "the gateway kept reading into memory"
        growth_mib = (gateway.rss_kib() - rss_before) / 1024
        assert growth_mib < 16, f"gateway grew by {growth_mib:.1f} MiB for a device that does not read"
        received = device.read(sent, timeout=60)
        assert len(received) == sent
        assert received == (pattern * (sent // len(pattern) + 1))[:sent]


def subnegotiation(command: int, payload: bytes) -> bytes:
    """IAC SB COM-PORT-OPTION <command> <payload, IAC doubled> IAC SE."""
    return b"\xff\xfa\x2c" + bytes([command]) + payload.replace(b"\xff", b"\xff\xff") + b"\xff\xf0"


def send_for(sock: socket.socket, data: bytes, *, seconds: float) -> int:
    """Send as much of `data` as the peer takes within `seconds` (non-blocking); bytes sent."""
    sock.setblocking(False)
    sent, deadline = 0, time.monotonic() + seconds
    try:
        while sent < len(data) and time.monotonic() < deadline:
            _, writable, _ = select.select([], [sock], [], 0.05)
            if writable:
                with contextlib.suppress(BlockingIOError):
                    sent += sock.send(data[sent : sent + 65536])
    finally:
        sock.setblocking(True)
    return sent


def test_subnegotiation_floods_end_cleanly_and_break_nothing(gateway: Gateway, device: PtyDevice) -> None:
    """20,000 oversized subnegotiations are each dropped and counted (five logged) and the session
    carries on; 500,000 RFC 2217 requests (each answered, each costing the gateway work) end the
    session with one clear log line; the gateway stays healthy and the next session works."""
    rss_before = gateway.rss_kib()
    errors_before = gateway.metric("kubeserial_gateway_protocol_errors_total")
    oversized = subnegotiation(0, b"A" * 1000)  # a 1000-byte "signature": MAX_SUBNEGOTIATION is 256
    with socket.create_connection(("127.0.0.1", gateway.rfc2217_port), timeout=10) as client:
        client.sendall(oversized * 20_000)  # 20 MB: read and dropped as it comes
        client.sendall(b"after-oversized")
        assert device.read(len(b"after-oversized"), timeout=30) == b"after-oversized"
        assert gateway.metric("kubeserial_gateway_protocol_errors_total") == errors_before + 20_000
        dropped = [line for line in gateway.log().splitlines() if "malformed telnet/RFC 2217 input" in line]
        assert len(dropped) == 5, "five logged per session, the rest only counted"
        assert "longer than 256 bytes dropped" in dropped[0]

        requests = subnegotiation(1, (9600).to_bytes(4, "big")) + subnegotiation(0, b"")  # each answered
        flood = requests * 250_000
        with contextlib.suppress(OSError):
            send_for(client, flood, seconds=10)
        assert closed_by_peer(client, timeout=10), "the flooding session was not ended"
    floods = [line for line in gateway.log().splitlines() if "RFC 2217 request flood" in line]
    assert len(floods) == 1 and '"level": "warning"' in floods[0], floods
    assert gateway.metric("kubeserial_gateway_request_floods_total") == 1
    assert len([line for line in gateway.log().splitlines() if "baud rate set by client" in line]) <= 1
    wait_for(lambda: gateway.metric("kubeserial_gateway_session_open") == 0, message="session over")
    assert gateway.http_status("/healthz") == 200 and gateway.ready()
    assert gateway.rss_kib() - rss_before < 16 * 1024
    # The next session, a real RFC 2217 client (a few requests as it opens), works both ways.
    port = serial.serial_for_url(gateway.rfc2217_url, baudrate=38400, timeout=10)
    try:
        port.write(b"next session")
        assert device.read(len(b"next session")) == b"next session"
        device.write(b"to the client")
        assert port.read(len(b"to the client")) == b"to the client"
    finally:
        port.close()
