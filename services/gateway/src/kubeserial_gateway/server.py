"""The gateway's asyncio shell: two listeners, one session, the device kept open across unplugs.

Connections are asyncio Protocols (no streams): bytes from the socket go straight to the device
fd and back, with TCP_NODELAY and no added delay. All protocol decisions live in rfc2217/telnet
(sans-I/O) and sessions (admission); this module only moves bytes and applies the answers.
"""

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, cast

from kubeserial_common.backoff import Backoff
from kubeserial_common.runtime.logs import get_logger
from kubeserial_gateway.device import DevicePort
from kubeserial_gateway.keepalive import enable_keepalive
from kubeserial_gateway.metrics import GatewayMetrics
from kubeserial_gateway.rfc2217 import (
    Cmd,
    ModemStatePoll,
    OutputFlow,
    PortRequest,
    Rfc2217Server,
    SendBreak,
)
from kubeserial_gateway.sessions import RequestBudget, Verdict, admission, describe_peer
from kubeserial_gateway.telnet import Data, ProtocolError
from kubeserial_gateway.usbtty import NotUsbSerialTty

log = get_logger(__name__)

SIGNATURE: Final = "KubeSerial gateway"
PATH_CHECK_SECONDS: Final = 1.0
MODEM_POLL_SECONDS: Final = 0.2
REOPEN_BACKOFF: Final = Backoff(base=0.05, cap=2.0)
PROTOCOL_ERRORS_LOGGED: Final = 5  # per session; the rest are only counted
REFUSAL_LOG_SECONDS: Final = 10.0


@dataclass(frozen=True)
class GatewayOptions:
    allow_takeover: bool = False
    takeover_idle_seconds: float = 30.0


class RawConnection(asyncio.Protocol):
    """A `socket://` client: bytes in both directions, nothing else."""

    protocol_name = "raw"

    def __init__(self, gateway: "Gateway") -> None:
        self.gateway = gateway
        self.transport: asyncio.Transport | None = None
        self.peer = "unknown"
        self.admitted = False
        self.closed_by_gateway = False
        self.last_activity = 0.0
        self.bytes_in = 0
        self.bytes_out = 0
        self._input_paused: set[str] = set()

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's are not asyncio.Transport subclasses, so no isinstance).
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            enable_keepalive(sock)
        self.peer = describe_peer(transport.get_extra_info("peername"), protocol=self.protocol_name)
        self.last_activity = self.gateway.now()
        self.admitted = self.gateway.admit(self)
        if self.admitted:
            self.start()
        else:
            transport.close()

    def data_received(self, data: bytes) -> None:
        if not self.admitted:
            return
        self.last_activity = self.gateway.now()
        self.bytes_in += len(data)
        self.gateway.device.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.admitted:
            self.gateway.end_session(self, reason="client closed" if exc is None else f"client lost: {exc}")

    def pause_writing(self) -> None:
        # The client reads slower than the device talks: stop reading the device (bounded memory).
        # Only the current session may: a replaced one can still be flushing its last bytes.
        if self.gateway.session is self:
            self.gateway.device.pause_reading("client")

    def resume_writing(self) -> None:
        if self.gateway.session is self:
            self.gateway.device.resume_reading("client")

    # --- DeviceSink ----------------------------------------------------------------------------

    def device_data(self, data: bytes) -> None:
        assert self.transport is not None
        self.last_activity = self.gateway.now()
        self.bytes_out += len(data)
        self.transport.write(data)

    def device_congested(self, congested: bool) -> None:
        self._pause_input("device", congested)

    # --- helpers -------------------------------------------------------------------------------

    def start(self) -> None:
        """Called once admitted."""

    def _pause_input(self, reason: str, paused: bool) -> None:
        before = bool(self._input_paused)
        if paused:
            self._input_paused.add(reason)
        else:
            self._input_paused.discard(reason)
        if self.transport is None or before == bool(self._input_paused) or self.transport.is_closing():
            return
        if self._input_paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def close(self) -> None:
        self.closed_by_gateway = True
        if self.transport is not None:
            self.transport.close()


class Rfc2217Connection(RawConnection):
    """An `rfc2217://` client: telnet framing, port settings and modem lines."""

    protocol_name = "rfc2217"

    def __init__(self, gateway: "Gateway") -> None:
        super().__init__(gateway)
        self.server = Rfc2217Server(signature=SIGNATURE)
        self.protocol_errors = 0
        self.baud_logged: int | None = None
        self.budget = RequestBudget()

    def start(self) -> None:
        assert self.transport is not None
        self.transport.write(self.server.greeting())

    def data_received(self, data: bytes) -> None:
        if not self.admitted:
            return
        assert self.transport is not None
        self.last_activity = self.gateway.now()
        self.bytes_in += len(data)
        before = self.server.subnegotiations
        events, reply = self.server.receive(data)
        sent = self.server.subnegotiations - before
        if sent and not self.budget.spend(sent, now=self.last_activity):
            log.warning(
                "RFC 2217 request flood; closing the session",
                peer=self.peer,
                requests=self.server.subnegotiations,
                allowed_per_second=self.budget.per_second,
                burst=self.budget.burst,
            )
            self.gateway.metrics.floods.inc()
            self.gateway.end_session(self, reason="request flood")
            self.close()
            return
        if reply:
            self.transport.write(reply)
        device = self.gateway.device
        for event in events:
            if isinstance(event, Data):
                device.write(event.payload)
            elif isinstance(event, PortRequest):
                self.gateway.metrics.port_requests.labels(Cmd(event.command).name).inc()
                value = device.handle_request(event.command, event.value)
                if value is not None:
                    self.transport.write(self.server.reply(event.command, value))
                if event.command == Cmd.SET_BAUDRATE and event.value and value != self.baud_logged:
                    # Once per change: a client repeating the request must not flood the log.
                    self.baud_logged = value
                    log.info("baud rate set by client", peer=self.peer, requested=event.value, now=value)
            elif isinstance(event, ModemStatePoll):
                self.transport.write(self.server.modem_state(device.modem_lines(), poll=True))
            elif isinstance(event, OutputFlow):
                if event.suspended:
                    device.pause_reading("flow-suspend")
                else:
                    device.resume_reading("flow-suspend")
            elif isinstance(event, SendBreak):
                device.send_break()
            elif isinstance(event, ProtocolError):
                self._protocol_error(event.reason)

    def _protocol_error(self, reason: str) -> None:
        self.protocol_errors += 1
        self.gateway.metrics.protocol_errors.inc()
        if self.protocol_errors <= PROTOCOL_ERRORS_LOGGED:
            log.warning("malformed telnet/RFC 2217 input dropped", peer=self.peer, reason=reason)

    def device_data(self, data: bytes) -> None:
        super().device_data(Rfc2217Server.encode(data))

    def pause_writing(self) -> None:
        super().pause_writing()
        # Requests make replies; stop taking them too, so a client that never reads cannot grow our buffer.
        self._pause_input("output", True)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._pause_input("output", False)

    def poll_modem_lines(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        notification = self.server.modem_state(self.gateway.device.modem_lines(), poll=False)
        if notification:
            self.transport.write(notification)


SessionListener = Callable[[str | None], None]


class Gateway:
    """Owns the device and the (single) session; decides admissions; survives device loss."""

    def __init__(
        self,
        *,
        device: DevicePort,
        metrics: GatewayMetrics,
        options: GatewayOptions,
        on_session_change: SessionListener | None = None,
    ) -> None:
        self.device = device
        device.on_lost = self.device_lost
        self.metrics = metrics
        self.options = options
        self.on_session_change = on_session_change
        self.session: RawConnection | None = None
        self._lost: asyncio.Event | None = None
        self._servers: list[asyncio.Server] = []
        self._stopping = False
        self._last_refusal_log = -REFUSAL_LOG_SECONDS
        self._refusals_unlogged = 0

    @staticmethod
    def now() -> float:
        # Not loop.time(): asyncio.get_running_loop() makes a getpid() syscall, and this runs for
        # every chunk in both directions.
        return time.monotonic()

    # --- listeners ----------------------------------------------------------------------------

    async def listen(self, *, host: str | None, raw_port: int, rfc2217_port: int) -> None:
        """Listen on `host` (None: every interface, IPv4 and IPv6)."""
        loop = asyncio.get_running_loop()
        self._servers = [
            await loop.create_server(lambda: RawConnection(self), host, raw_port, reuse_address=True),
            await loop.create_server(lambda: Rfc2217Connection(self), host, rfc2217_port, reuse_address=True),
        ]
        log.info("listening", host=host, raw_port=raw_port, rfc2217_port=rfc2217_port)

    # --- sessions -----------------------------------------------------------------------------

    def admit(self, conn: RawConnection) -> bool:
        current = self.session
        verdict = admission(
            device_open=self.device.is_open and not self._stopping,
            session_idle_for=None if current is None else self.now() - current.last_activity,
            allow_takeover=self.options.allow_takeover,
            takeover_idle_seconds=self.options.takeover_idle_seconds,
        )
        if verdict in (Verdict.REFUSE_BUSY, Verdict.REFUSE_NO_DEVICE):
            self.metrics.refusals.labels(verdict.value).inc()
            self._log_refusal(conn, verdict, current)
            return False
        if verdict is Verdict.TAKE_OVER and current is not None:
            self.metrics.takeovers.inc()
            log.info("idle session taken over", old=current.peer, new=conn.peer)
            current.close()
            self.end_session(current, reason=f"taken over by {conn.peer}", notify=False)
        self.session = conn
        self.device.set_sink(conn)
        self.metrics.sessions.labels(conn.protocol_name).inc()
        self.metrics.session_open.set(1)
        log.info("session opened", peer=conn.peer)
        if self.on_session_change is not None:
            self.on_session_change(conn.peer)
        return True

    def _log_refusal(self, conn: RawConnection, verdict: Verdict, current: RawConnection | None) -> None:
        """Every refusal is counted; a flood of them is logged once per REFUSAL_LOG_SECONDS."""
        now = self.now()
        if now - self._last_refusal_log < REFUSAL_LOG_SECONDS:
            self._refusals_unlogged += 1
            return
        log.warning(
            "connection refused",
            peer=conn.peer,
            reason=verdict.value,
            session=None if current is None else current.peer,
            also_refused_since_last_log=self._refusals_unlogged,
        )
        self._last_refusal_log = now
        self._refusals_unlogged = 0

    def end_session(self, conn: RawConnection, *, reason: str, notify: bool = True) -> None:
        if self.session is not conn:
            return
        self.session = None
        self.device.set_sink(None)
        self.device.reset_settings()
        self.metrics.session_open.set(0)
        log.info(
            "session closed",
            peer=conn.peer,
            reason=reason,
            bytes_from_client=conn.bytes_in,
            bytes_to_client=conn.bytes_out,
        )
        if notify and self.on_session_change is not None:
            self.on_session_change(None)

    # --- device -------------------------------------------------------------------------------

    def device_lost(self, category: str, detail: str) -> None:
        """DevicePort callback: the device is gone. End the session; the keeper reopens later."""
        self.metrics.device_open.set(0)
        log.warning("device lost", device=self.device.path, reason=category, detail=detail)
        session = self.session
        if session is not None:
            session.close()
            self.end_session(session, reason=f"device lost ({category})")
        if self._lost is not None:
            self._lost.set()

    async def keep_device_open(self) -> None:
        """Open the device, watch it, and reopen it with backoff whenever it goes away."""
        failures = 0
        opened_before = False
        while not self._stopping:
            try:
                self.device.open()
            except Exception as exc:  # OSError, SerialException, termios.error: all mean "not now"
                failures += 1
                if failures == 1 and isinstance(exc, NotUsbSerialTty):
                    # Checked again at every retry: a by-id link may come to name a real adapter.
                    log.error("refusing to serve the device", device=self.device.path, error=str(exc))
                elif failures == 1:
                    log.warning("cannot open the device; retrying", device=self.device.path, error=repr(exc))
                await asyncio.sleep(REOPEN_BACKOFF.delay(failures))
                continue
            failures = 0
            self.metrics.device_open.set(1)
            self.metrics.device_opens.inc()
            if opened_before:
                self.metrics.device_reopens.inc()
            opened_before = True
            log.info("device open", device=self.device.path)
            await self._watch_device()

    async def _watch_device(self) -> None:
        self._lost = asyncio.Event()
        while not self._lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), PATH_CHECK_SECONDS)
            if not self._lost.is_set() and not self.device.still_present():
                self.device.lose("path_changed", f"{self.device.path} is gone or names another device now")

    async def poll_modem_lines(self) -> None:
        """Tell RFC 2217 clients about CTS/DSR/RI/CD changes (real adapters; a pty has no lines)."""
        while True:
            await asyncio.sleep(MODEM_POLL_SECONDS)
            session = self.session
            if isinstance(session, Rfc2217Connection) and self.device.modem_lines_supported:
                session.poll_modem_lines()

    async def stop(self) -> None:
        self._stopping = True
        for server in self._servers:
            server.close()
        session = self.session
        if session is not None:
            session.close()
            self.end_session(session, reason="gateway stopping")
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
        self.device.close()
        self.metrics.device_open.set(0)
