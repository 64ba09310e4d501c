"""The consumer side: a local tty whose other end is the gateway, over RFC 2217.

The bridge makes a pty, links it at --link, and moves bytes between the pty master and the
gateway. Every POLL_SECONDS it reads the pty's termios: a change the application made (baud,
parity, data bits, stop bits, flow control, B0) becomes RFC 2217 requests, and so do opening and
closing the tty (DTR/RTS, as a real port does).

The pty stays open however often the gateway goes away: the application keeps its file
descriptor while the bridge reconnects with backoff. Meanwhile the bridge does not read the pty,
so what the application writes is held (by the kernel, bounded) and delivered after the reconnect.

The pty's settings start as the gateway's (queried at the first connection) until the application
changes them; from then on the application's settings win and are pushed on every reconnect.
"""

import array
import asyncio
import contextlib
import errno
import fcntl
import os
import select
import socket
import termios
import tty
from pathlib import Path
from typing import Any, Final, cast

from kubeserial_common.backoff import Backoff
from kubeserial_common.runtime.logs import get_logger
from kubeserial_gateway.fdwriter import FdWriter
from kubeserial_gateway.keepalive import enable_keepalive
from kubeserial_gateway.metrics import BridgeMetrics
from kubeserial_gateway.rfc2217 import (
    Cmd,
    ModemState,
    OutputFlow,
    Rfc2217Client,
    SerialSettings,
    SettingReport,
)
from kubeserial_gateway.telnet import Data, ProtocolError
from kubeserial_gateway.ttysettings import (
    BOTHER,
    CFLAG,
    OSPEED,
    QUERIES,
    TERMIOS2,
    TtyView,
    adopt_report,
    settings_from_termios,
    speed_from_termios2,
    sync_requests,
    termios2_with_speed,
    termios_with_settings,
)

log = get_logger(__name__)

POLL_SECONDS: Final = 0.05
LINK_CHECK_SECONDS: Final = 1.0
RECONNECT_BACKOFF: Final = Backoff(base=0.1, cap=2.0)
CONNECT_TIMEOUT: Final = 10.0
SHORT_CONNECTION: Final = 1.0  # a connection closed sooner than this (refused: busy) counts as a failure
READ_SIZE: Final = 65536
HIGH_WATER: Final = 64 * 1024
TCGETS2: Final = 0x802C542A  # _IOR('T', 0x2A, struct termios2) on x86, arm, riscv
TCSETS2: Final = 0x402C542B


def _hupcl(attrs: list[Any]) -> bool:
    return bool(int(attrs[CFLAG]) & termios.HUPCL)


def link_target(slave_path: str, *, via_proc: bool, pid: int) -> str:
    """What the link points at. Through /proc/<pid>/root another container of the pod (shared PID
    namespace, same uid) reaches our devpts instance, which its own /dev/pts does not show."""
    return f"/proc/{pid}/root{slave_path}" if via_proc else slave_path


def publish_link(link: Path, target: str) -> None:
    """Point `link` at `target` atomically: readers see the old link or the new one, never none."""
    link.parent.mkdir(parents=True, exist_ok=True)
    temporary = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    os.symlink(target, temporary)
    os.replace(temporary, link)


class _GatewayLink(asyncio.Protocol):
    def __init__(self, bridge: "Bridge") -> None:
        self.bridge = bridge
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            enable_keepalive(sock)
        self.bridge.connected(cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        self.bridge.from_gateway(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.bridge.disconnected(exc)
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        self.bridge.pause_app_input("gateway", True)

    def resume_writing(self) -> None:
        self.bridge.pause_app_input("gateway", False)


class Bridge:
    def __init__(self, *, host: str, port: int, link: Path, via_proc: bool, metrics: BridgeMetrics) -> None:
        self.host = host
        self.port = port
        self.link = link
        self.via_proc = via_proc
        self.metrics = metrics
        self.master = -1
        self.slave_path = ""
        self.target = ""
        self.link_published = False
        self.transport: asyncio.Transport | None = None
        self.client = Rfc2217Client()
        self.attached = False
        self._reading = False
        self._input_paused: set[str] = set()
        self._to_app: FdWriter | None = None
        self.app_configured = False  # the app changed the tty's settings: its settings win from now on
        self.known: SerialSettings = SerialSettings()  # the pty's settings as last seen or set by us
        self.sent: SerialSettings | None = None  # what this connection's gateway got from us
        self.lines_sent: bool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._retrying = False  # in a streak of connections the gateway closed at once: log quietly
        # A connection is a session once the gateway speaks: it refuses (busy, device unavailable)
        # by closing without a byte, and those are not (re)connections, only failed attempts.
        self.session_established = False
        self.sessions = 0

    @property
    def is_connected(self) -> bool:
        return self.transport is not None

    # --- the pty -------------------------------------------------------------------------------

    def open_pty(self) -> None:
        self._loop = asyncio.get_running_loop()
        master, slave = os.openpty()
        tty.setraw(slave)  # a byte pipe until the app says otherwise
        attrs = termios.tcgetattr(slave)
        # A serial port hangs up (drops DTR/RTS) on last close by default; a pty starts without
        # HUPCL. Set it, so the app sees what a real port would show (`stty -hupcl` still works).
        attrs[CFLAG] |= termios.HUPCL
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        self.slave_path = os.ttyname(slave)
        # Not holding the slave open ourselves lets us see when the app opens and closes it (POLLHUP).
        os.close(slave)
        os.set_blocking(master, False)
        self.master = master
        self._to_app = FdWriter(
            master,
            loop=self._loop,
            high_water=HIGH_WATER,
            low_water=HIGH_WATER // 4,
            on_written=self.metrics.from_gateway.inc,
            on_error=lambda _, dropped: self.metrics.dropped_detached.inc(dropped),  # EIO: nobody has it open
            on_congested=self._app_congested,
        )
        self.known = settings_from_termios(attrs)
        self.target = link_target(self.slave_path, via_proc=self.via_proc, pid=os.getpid())
        publish_link(self.link, self.target)
        self.link_published = True
        log.info("tty ready", link=str(self.link), target=self.target)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if os.readlink(self.link) == self.target:
                self.link.unlink()
        if self.master >= 0:
            if self._loop is not None:
                self._loop.remove_reader(self.master)
            if self._to_app is not None:
                self._to_app.close()
            os.close(self.master)
            self.master = -1

    def _read_termios(self) -> tuple[list[Any], SerialSettings]:
        attrs = termios.tcgetattr(self.master)
        custom = 0
        if attrs[OSPEED] == BOTHER:
            raw = array.array("B", bytes(TERMIOS2.size))
            fcntl.ioctl(self.master, TCGETS2, raw)
            custom = speed_from_termios2(raw.tobytes())
        return attrs, settings_from_termios(attrs, custom_speed=custom)

    def _apply_to_pty(self, settings: SerialSettings) -> None:
        """Give the pty the gateway's settings (the app has not chosen any yet)."""
        attrs, _ = self._read_termios()
        termios.tcsetattr(self.master, termios.TCSANOW, termios_with_settings(attrs, settings))
        _, now = self._read_termios()
        if now.baud_rate != settings.baud_rate and settings.baud_rate:
            raw = array.array("B", bytes(TERMIOS2.size))
            fcntl.ioctl(self.master, TCGETS2, raw)
            fcntl.ioctl(
                self.master, TCSETS2, array.array("B", termios2_with_speed(raw.tobytes(), settings.baud_rate))
            )
            _, now = self._read_termios()
        self.known = now

    def _attached_now(self) -> bool:
        poller = select.poll()
        poller.register(self.master, select.POLLIN | select.POLLOUT)
        return not any(mask & select.POLLHUP for _, mask in poller.poll(0))

    def _update_reader(self) -> None:
        # No gateway, no reading: what the app writes meanwhile waits in the pty (the kernel bounds
        # it; a writer that fills it blocks, as behind a port whose CTS is low) and goes out once
        # the bridge is back, after the app's settings.
        want = self.attached and self.transport is not None and not self._input_paused and self.master >= 0
        if want == self._reading or self._loop is None:
            return
        self._reading = want
        if want:
            self._loop.add_reader(self.master, self._on_app_data)
        else:
            self._loop.remove_reader(self.master)

    def pause_app_input(self, reason: str, paused: bool) -> None:
        if paused:
            self._input_paused.add(reason)
        else:
            self._input_paused.discard(reason)
        self._update_reader()

    def _on_app_data(self) -> None:
        try:
            data = os.read(self.master, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno != errno.EIO:
                log.warning("reading the pty failed", error=repr(exc))
            self._set_attached(False)  # EIO: the last process closed the tty
            return
        if self.transport is None:  # not reached: the reader only runs while connected
            return
        self.metrics.to_gateway.inc(len(data))
        self.transport.write(self.client.encode(data))

    def _write_to_app(self, data: bytes) -> None:
        if not self.attached or self._to_app is None:
            self.metrics.dropped_detached.inc(len(data))
            return
        self._to_app.write(data)

    def _app_congested(self, congested: bool) -> None:
        """The app reads slower than the gateway sends: stop reading the socket meanwhile."""
        if self.transport is None or self.transport.is_closing():
            return
        if congested:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def _set_attached(self, attached: bool) -> None:
        if attached == self.attached:
            return
        self.attached = attached
        self.metrics.app_attached.set(1 if attached else 0)
        log.info("application " + ("opened" if attached else "closed") + " the tty", link=str(self.link))
        if not attached and self._to_app is not None:
            self.metrics.dropped_detached.inc(self._to_app.discard())
        self._update_reader()

    # --- watching the application ----------------------------------------------------------------

    async def watch_tty(self) -> None:
        loop = asyncio.get_running_loop()
        next_link_check = loop.time() + LINK_CHECK_SECONDS
        failing = False
        while True:
            try:
                self.poll_once()
                if loop.time() >= next_link_check:
                    next_link_check = loop.time() + LINK_CHECK_SECONDS
                    self._check_link()
                failing = False
            except (OSError, termios.error) as exc:
                if not failing:  # log the first of a run of failures, not one per poll
                    log.warning("watching the tty failed", error=repr(exc))
                failing = True
            await asyncio.sleep(POLL_SECONDS)

    def poll_once(self) -> None:
        self._set_attached(self._attached_now())
        attrs = self._observe()
        self._sync(hupcl=_hupcl(attrs))

    def _observe(self) -> list[Any]:
        """Read the pty's settings; a difference from what we last saw or set is the application's
        doing, and from then on its settings win. Called by every poll, and also right before we
        would take the gateway's settings (at connect, on each report): a change made since the
        last poll must not be mistaken for ours and overwritten."""
        attrs, settings = self._read_termios()
        if settings != self.known:
            if not self.app_configured:
                log.info("application configured the tty; its settings are forwarded from now on")
            self.app_configured = True
            self.known = settings
        return attrs

    def _sync(self, *, hupcl: bool) -> None:
        if self.transport is None:
            return
        view = TtyView(settings=self.known, attached=self.attached, hupcl=hupcl)
        requests, self.sent, self.lines_sent = sync_requests(view, sent=self.sent, lines_sent=self.lines_sent)
        for command, value in requests:
            self._request(command, value)

    def _request(self, command: int, value: int) -> None:
        assert self.transport is not None
        self.metrics.settings_sent.labels(Cmd(command).name).inc()
        log.debug("request to gateway", command=Cmd(command).name, value=value)
        self.transport.write(self.client.request(command, value))

    def _check_link(self) -> None:
        try:
            current = os.readlink(self.link)
        except OSError:
            current = None
        if current != self.target:
            log.warning("tty link missing or changed; restoring it", link=str(self.link), found=current)
            publish_link(self.link, self.target)

    # --- the gateway connection ------------------------------------------------------------------

    def connected(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.session_established = False
        self.client = Rfc2217Client()
        self.metrics.connected.set(1)
        transport.write(self.client.greeting())
        attrs = self._observe()
        if self.app_configured:
            self.sent = None  # push everything the app chose
        else:
            # Adopt the gateway's settings: ask for them, and send nothing but the lines meanwhile.
            self.sent = self.known
            for command, value in QUERIES:
                self._request(command, value)
        self.lines_sent = None
        self._sync(hupcl=_hupcl(attrs))
        self._update_reader()  # after the settings, so held data goes out at the right speed
        (log.debug if self._retrying else log.info)(
            "connected to gateway", host=self.host, port=self.port, adopting=not self.app_configured
        )

    def disconnected(self, exc: Exception | None) -> None:
        if self.transport is None:
            return
        self.transport = None
        self.metrics.connected.set(0)
        self.sent, self.lines_sent = None, None
        self._input_paused.discard("gateway")
        self._input_paused.discard("flow")
        self._update_reader()
        (log.debug if self._retrying else log.warning)(
            "gateway connection lost; the tty stays open", error=None if exc is None else repr(exc)
        )

    def from_gateway(self, data: bytes) -> None:
        if not self.session_established:
            self.session_established = True
            self.metrics.connects.inc()
            if self.sessions:
                self.metrics.reconnects.inc()
            self.sessions += 1
        events, reply = self.client.receive(data)
        if reply and self.transport is not None:
            self.transport.write(reply)
        for event in events:
            if isinstance(event, Data):
                self._write_to_app(event.payload)
            elif isinstance(event, SettingReport):
                self._adopt(event)
            elif isinstance(event, OutputFlow):
                self.pause_app_input("flow", event.suspended)
            elif isinstance(event, ProtocolError):
                self.metrics.protocol_errors.inc()
                log.debug("malformed input from gateway dropped", reason=event.reason)
            elif isinstance(event, ModemState):
                log.debug("modem state", value=event.value)

    def _adopt(self, report: SettingReport) -> None:
        try:
            self._observe()
        except (OSError, termios.error) as exc:
            log.warning("could not read the tty's settings", error=repr(exc))
            return
        if self.app_configured:
            return
        settings = adopt_report(self.known, report.command, report.value)
        if settings == self.known:
            return
        try:
            self._apply_to_pty(settings)
        except (OSError, termios.error) as exc:
            log.warning("could not apply the gateway's settings to the tty", error=repr(exc))
            return
        self.sent = self.known

    async def connect_forever(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            try:
                _, link = await asyncio.wait_for(
                    loop.create_connection(lambda: _GatewayLink(self), self.host, self.port), CONNECT_TIMEOUT
                )
            except (OSError, TimeoutError) as exc:
                failures += 1
                self.metrics.connect_failures.inc()
                if failures == 1 or failures % 20 == 0:
                    log.warning(
                        "cannot reach the gateway; retrying", host=self.host, port=self.port, error=repr(exc)
                    )
                await asyncio.sleep(RECONNECT_BACKOFF.delay(failures))
                continue
            started = loop.time()
            await link.closed
            if not self.session_established:
                self.metrics.connect_failures.inc()  # refused: closed before the gateway said a word
            if loop.time() - started < SHORT_CONNECTION:
                failures += 1
                if not self._retrying:  # say it once per streak, not every couple of seconds
                    log.warning("gateway closed the connection at once (another client holds it?); retrying")
                self._retrying = True
            else:
                failures = 0
                self._retrying = False
            await asyncio.sleep(RECONNECT_BACKOFF.delay(failures))
