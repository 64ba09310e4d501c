"""The serial device: opened and configured with pyserial, read and written on its fd by the event loop.

pyserial does what it is good at (termios for every baud rate, parity, flow control, modem lines);
the data path is the loop's own reader/writer callbacks on the fd, with no thread and no copy
beyond the read itself. Writes go through an FdWriter: past HIGH_WATER the sink is told to stop
sending (backpressure instead of unbounded memory).
"""

import asyncio
import contextlib
import errno
import fcntl
import os
import struct
import termios
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

import serial

from kubeserial_common.runtime.logs import get_logger
from kubeserial_gateway.fdwriter import FdWriter
from kubeserial_gateway.metrics import GatewayMetrics
from kubeserial_gateway.rfc2217 import (
    MODEM_CD,
    MODEM_CTS,
    MODEM_DSR,
    MODEM_RI,
    Cmd,
    Control,
    Parity,
    Purge,
    SerialSettings,
    StopBits,
)

log = get_logger(__name__)

READ_SIZE: Final = 65536
HIGH_WATER: Final = 64 * 1024
LOW_WATER: Final = 16 * 1024
BREAK_SECONDS: Final = 0.25  # telnet BRK: a break as long as tcsendbreak's default

_PYSERIAL_PARITY: Final = {
    Parity.NONE: serial.PARITY_NONE,
    Parity.ODD: serial.PARITY_ODD,
    Parity.EVEN: serial.PARITY_EVEN,
    Parity.MARK: serial.PARITY_MARK,
    Parity.SPACE: serial.PARITY_SPACE,
}
_PYSERIAL_STOPBITS: Final = {
    StopBits.ONE: serial.STOPBITS_ONE,
    StopBits.TWO: serial.STOPBITS_TWO,
    StopBits.ONE_POINT_FIVE: serial.STOPBITS_ONE_POINT_FIVE,
}
_TIOCM_TO_MODEM: Final = (
    (termios.TIOCM_CAR, MODEM_CD),
    (termios.TIOCM_RNG, MODEM_RI),
    (termios.TIOCM_DSR, MODEM_DSR),
    (termios.TIOCM_CTS, MODEM_CTS),
)
# Errors that mean "this tty has no modem lines" (a pty, some USB CDC devices), not "device gone".
_NO_MODEM_LINES: Final = (errno.ENOTTY, errno.EINVAL)
# TIOCEXCL refused because the fd is not a tty the kernel manages (umockdev's emulated node answers
# ioctls itself): the device stays usable, only without the kernel's exclusive mode.
_NO_EXCLUSIVE_MODE: Final = (errno.ENOTTY, errno.EINVAL)
# What pyserial raises for a setting the port cannot take. OverflowError: SET-BAUDRATE carries 32
# bits, the kernel's custom-speed field is a signed int.
_SETTING_ERRORS: Final = (OSError, ValueError, OverflowError, serial.SerialException, termios.error)


class DeviceSink(Protocol):
    """Who gets the device's data: the open client session."""

    def device_data(self, data: bytes) -> None: ...

    def device_congested(self, congested: bool) -> None: ...


@dataclass(frozen=True)
class DeviceIdentity:
    """What a device path named when it was opened: the char device number (as stat of the path
    reports it) and the node the path resolves to."""

    rdev: int
    node: str


def identity_of(path: str) -> DeviceIdentity:
    """Raises OSError when the path is gone."""
    return DeviceIdentity(rdev=os.stat(path).st_rdev, node=os.path.realpath(path))


def same_device(opened: DeviceIdentity, now: DeviceIdentity) -> bool:
    """Does the path still name the device it named at open? Both sides come from stat of the
    path, never from fstat of the open fd: for a pty-backed device (umockdev, socat, tty0tty) the
    fd reports the pty's number while the path reports the device's, so the two never agree. A
    replug under the same name shows up as a hangup on the open fd; a by-id link that udev
    rewrites to another tty shows up here as a new number or node."""
    return opened == now


def set_exclusive(fd: int, path: str) -> bool:
    """TIOCEXCL on an open tty: from now on open(2) of it fails with EBUSY for every other process
    without CAP_SYS_ADMIN, until TIOCNXCL or the last close. False when the fd refuses it (not a
    kernel tty); any other error is raised."""
    try:
        fcntl.ioctl(fd, termios.TIOCEXCL)
    except OSError as exc:
        if exc.errno not in _NO_EXCLUSIVE_MODE:
            raise
        log.warning(
            "the device refused exclusive mode (TIOCEXCL): other processes can open it too",
            device=path,
            error=repr(exc),
        )
        return False
    return True


def modem_state_from_tiocm(bits: int) -> int:
    """TIOCMGET bits -> RFC 2217 modem state (line bits only, no deltas)."""
    state = 0
    for tiocm, modem in _TIOCM_TO_MODEM:
        if bits & tiocm:
            state |= modem
    return state


class DevicePort:
    def __init__(
        self,
        path: str,
        *,
        defaults: SerialSettings,
        metrics: GatewayMetrics,
        admit: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        # Called with the path before every open; raises to refuse it (usbtty.check_usb_tty).
        self.admit = admit
        self.defaults = defaults
        self.metrics = metrics
        self.on_lost: Callable[[str, str], None] | None = None  # (category, detail)
        self.sink: DeviceSink | None = None
        self._serial: serial.Serial | None = None
        self.exclusive = False  # TIOCEXCL is set on the open tty
        self._fd = -1
        self._identity: DeviceIdentity | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._paused: set[str] = set()
        self._reading = False
        self._writer: FdWriter | None = None
        self._modem_lines_supported = True
        self._dtr = True
        self._rts = True
        self._break = False

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def open(self) -> None:
        """Open and configure with the defaults; raises OSError/SerialException when it cannot."""
        if self.admit is not None:
            self.admit(self.path)
        port = serial.Serial()
        port.port = self.path
        port.timeout = 0
        # pyserial's exclusive is an advisory flock: it stops only openers that flock too. TIOCEXCL
        # (below) is the kernel's: any later open(2) fails with EBUSY, whoever does it, except a
        # process with CAP_SYS_ADMIN.
        port.exclusive = True
        self._configure(port, self.defaults)
        identity = identity_of(self.path)
        port.open()
        self.exclusive = set_exclusive(port.fileno(), self.path)
        self._identity = identity
        self._loop = asyncio.get_running_loop()
        self._serial = port
        self._fd = port.fileno()
        self._writer = FdWriter(
            self._fd,
            loop=self._loop,
            high_water=HIGH_WATER,
            low_water=LOW_WATER,
            on_written=self.metrics.to_device.inc,
            on_error=lambda exc, _: self.lose("io_error", f"write failed: {exc}"),
            on_congested=self._congested,
        )
        self._paused.clear()
        self._dtr = self._rts = True
        self._break = False
        self._modem_lines_supported = True
        self._update_reader()

    @staticmethod
    def _configure(port: serial.Serial, settings: SerialSettings) -> None:
        # apply_settings touches (and so reconfigures the tty for) only what differs.
        port.apply_settings(
            {
                "baudrate": settings.baud_rate,
                "bytesize": settings.data_bits,
                "parity": _PYSERIAL_PARITY[settings.parity],
                "stopbits": _PYSERIAL_STOPBITS[settings.stop_bits],
                "xonxoff": settings.flow_control == Control.FLOW_XONXOFF,
                "rtscts": settings.flow_control == Control.FLOW_HARDWARE,
            }
        )

    def close(self) -> None:
        port, self._serial = self._serial, None
        if port is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._reading = False
        if self.exclusive:
            # The flag belongs to the tty, not to our fd: a pty keeps its tty (and the flag) while
            # its master lives, so clear it rather than leave the next opener EBUSY.
            with contextlib.suppress(OSError):
                fcntl.ioctl(self._fd, termios.TIOCNXCL)
            self.exclusive = False
        try:
            port.close()
        except (OSError, serial.SerialException) as exc:
            log.debug("closing the device failed", error=repr(exc))
        self._fd = -1

    def still_present(self) -> bool:
        """False when the path is gone or now names another device (unplugged, maybe replugged)."""
        if self._identity is None:
            return False
        try:
            return same_device(self._identity, identity_of(self.path))
        except OSError:
            return False

    def lose(self, category: str, detail: str) -> None:
        if self._serial is None:
            return
        self.close()
        self.metrics.device_losses.labels(category).inc()
        if self.on_lost is not None:
            self.on_lost(category, detail)

    # --- reading -------------------------------------------------------------------------------

    def set_sink(self, sink: DeviceSink | None) -> None:
        self.sink = sink
        self._paused.clear()
        self._update_reader()

    def pause_reading(self, reason: str) -> None:
        self._paused.add(reason)
        self._update_reader()

    def resume_reading(self, reason: str) -> None:
        self._paused.discard(reason)
        self._update_reader()

    def _update_reader(self) -> None:
        want = self._serial is not None and not self._paused
        if want == self._reading or self._loop is None:
            return
        self._reading = want
        if want:
            self._loop.add_reader(self._fd, self._on_readable)
        else:
            self._loop.remove_reader(self._fd)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.lose("io_error", f"read failed: {exc}")
            return
        if not data:
            # A tty reports readable with nothing to read only once it is hung up (unplugged).
            self.lose("hangup", "the device hung up")
            return
        if self.sink is None:
            self.metrics.discarded.inc(len(data))
            return
        self.metrics.from_device.inc(len(data))
        self.sink.device_data(data)

    # --- writing -------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._writer is not None:
            self._writer.write(data)

    def _congested(self, congested: bool) -> None:
        if self.sink is not None:
            self.sink.device_congested(congested)

    @property
    def pending_bytes(self) -> int:
        return 0 if self._writer is None else self._writer.pending

    # --- port control (RFC 2217 requests) ----------------------------------------------------

    def reset_settings(self) -> None:
        """Back to the configured defaults, for the next session."""
        if self._serial is None:
            return
        try:
            self._configure(self._serial, self.defaults)
        except _SETTING_ERRORS as exc:
            log.warning("could not restore the default port settings", error=repr(exc))
        self._set_lines(dtr=True, rts=True)
        self._set_break(False)

    def handle_request(self, command: int, value: int) -> int | None:
        """Apply a SET-*/PURGE request; returns the value to report back (None: no answer)."""
        port = self._serial
        if port is None:
            return None
        if command == Cmd.SET_BAUDRATE:
            if value:
                self._set(port, "baudrate", value)
            return int(port.baudrate)
        if command == Cmd.SET_DATASIZE:
            if value:
                self._set(port, "bytesize", value)
            return int(port.bytesize)
        if command == Cmd.SET_PARITY:
            if value in _PYSERIAL_PARITY:
                self._set(port, "parity", _PYSERIAL_PARITY[Parity(value)])
            return next(int(code) for code, name in _PYSERIAL_PARITY.items() if name == port.parity)
        if command == Cmd.SET_STOPSIZE:
            if value in _PYSERIAL_STOPBITS:
                self._set(port, "stopbits", _PYSERIAL_STOPBITS[StopBits(value)])
            return next(int(code) for code, bits in _PYSERIAL_STOPBITS.items() if bits == port.stopbits)
        if command == Cmd.SET_CONTROL:
            return self._control(port, value)
        if command == Cmd.PURGE_DATA:
            self._purge(port, value)
            return value
        return None

    @staticmethod
    def _set(port: serial.Serial, attribute: str, value: object) -> None:
        old = getattr(port, attribute)
        if old == value:  # pyserial would rewrite the termios anyway
            return
        try:
            setattr(port, attribute, value)
        except _SETTING_ERRORS as exc:
            log.warning("port setting refused", setting=attribute, value=value, error=repr(exc))
            # pyserial records the new value before applying it: put the old one back.
            with contextlib.suppress(*_SETTING_ERRORS):
                setattr(port, attribute, old)

    def _control(self, port: serial.Serial, value: int) -> int | None:
        if value in (Control.FLOW_NONE, Control.FLOW_XONXOFF, Control.FLOW_HARDWARE):
            self._set(port, "xonxoff", value == Control.FLOW_XONXOFF)
            self._set(port, "rtscts", value == Control.FLOW_HARDWARE)
        if value <= Control.FLOW_HARDWARE:
            return int(
                Control.FLOW_XONXOFF
                if port.xonxoff
                else Control.FLOW_HARDWARE
                if port.rtscts
                else Control.FLOW_NONE
            )
        if value <= Control.BREAK_OFF:
            if value != Control.BREAK_QUERY:
                self._set_break(value == Control.BREAK_ON)
            return int(Control.BREAK_ON if self._break else Control.BREAK_OFF)
        if value <= Control.DTR_OFF:
            if value != Control.DTR_QUERY:
                self._set_lines(dtr=value == Control.DTR_ON)
            return int(Control.DTR_ON if self._dtr else Control.DTR_OFF)
        if value <= Control.RTS_OFF:
            if value != Control.RTS_QUERY:
                self._set_lines(rts=value == Control.RTS_ON)
            return int(Control.RTS_ON if self._rts else Control.RTS_OFF)
        if value <= Control.INBOUND_FLOW_DSR:
            # Inbound flow control follows the outbound setting on a Linux tty (one CRTSCTS/IXOFF).
            return int(
                Control.INBOUND_FLOW_XONXOFF
                if port.xonxoff
                else Control.INBOUND_FLOW_HARDWARE
                if port.rtscts
                else Control.INBOUND_FLOW_NONE
            )
        return None

    def _set_lines(self, *, dtr: bool | None = None, rts: bool | None = None) -> None:
        if dtr is not None:
            self._dtr = dtr
        if rts is not None:
            self._rts = rts
        if self._serial is None or not self._modem_lines_supported:
            return
        try:
            if dtr is not None:
                self._serial.dtr = dtr
            if rts is not None and not self._serial.rtscts:
                self._serial.rts = rts
        except OSError as exc:
            self._modem_lines_unsupported(exc)

    def _set_break(self, active: bool) -> None:
        self._break = active
        if self._serial is None:
            return
        try:
            self._serial.break_condition = active
        except OSError as exc:
            log.warning("break not supported by this device", error=repr(exc))

    def send_break(self) -> None:
        if self._serial is None or self._loop is None:
            return
        self._set_break(True)
        self._loop.call_later(BREAK_SECONDS, self._set_break, False)

    def _purge(self, port: serial.Serial, which: int) -> None:
        try:
            if which in (Purge.RECEIVE, Purge.BOTH):
                port.reset_input_buffer()
            if which in (Purge.TRANSMIT, Purge.BOTH):
                if self._writer is not None:
                    self._writer.discard()
                port.reset_output_buffer()
        except (OSError, termios.error) as exc:
            log.warning("purge failed", error=repr(exc))

    def modem_lines(self) -> int:
        """CD/RI/DSR/CTS as RFC 2217 modem-state bits; 0 (lines absent) when the tty has none."""
        if self._serial is None or not self._modem_lines_supported:
            return 0
        try:
            raw = fcntl.ioctl(self._fd, termios.TIOCMGET, struct.pack("I", 0))
        except OSError as exc:
            self._modem_lines_unsupported(exc)
            return 0
        return modem_state_from_tiocm(struct.unpack("I", raw)[0])

    @property
    def modem_lines_supported(self) -> bool:
        return self._modem_lines_supported

    def _modem_lines_unsupported(self, exc: OSError) -> None:
        if exc.errno not in _NO_MODEM_LINES:
            log.warning("modem line ioctl failed", error=repr(exc))
            return
        if self._modem_lines_supported:
            log.info(
                "device has no modem lines (a pty?): DTR/RTS requests are acknowledged without effect,"
                " CTS/DSR/RI/CD read as absent",
                device=self.path,
                error=repr(exc),
            )
        self._modem_lines_supported = False
