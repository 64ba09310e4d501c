"""The console's pure parts: the exit key, the RFC 2217 bytes for a baud rate, telnet filtering, and
a raw terminal that is restored on every exit path."""

import contextlib
import os
import signal
import struct
import termios
import tty
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

EXIT_KEY = 0x1D  # Ctrl-]
EXIT_KEY_NAME = "Ctrl-]"
IAC, SB, SE, WILL, DO, DONT, WONT = 255, 250, 240, 251, 253, 254, 252
COM_PORT_OPTION = 44
SET_BAUDRATE = 1


def split_at_exit(data: bytes, *, exit_key: int = EXIT_KEY) -> tuple[bytes, bool]:
    """(what to send, whether the user asked to leave): everything before the exit key is sent."""
    index = data.find(bytes([exit_key]))
    if index < 0:
        return data, False
    return data[:index], True


def set_baud_rate(baud: int) -> bytes:
    """RFC 2217: offer COM-PORT-OPTION and ask for `baud` (a 4-byte big-endian value, IAC doubled)."""
    value = struct.pack(">I", baud).replace(bytes([IAC]), bytes([IAC, IAC]))
    return (
        bytes([IAC, WILL, COM_PORT_OPTION, IAC, SB, COM_PORT_OPTION, SET_BAUDRATE]) + value + bytes([IAC, SE])
    )


def escape_iac(data: bytes) -> bytes:
    """Data to a telnet peer: a 0xFF byte is sent as IAC IAC."""
    return data.replace(bytes([IAC]), bytes([IAC, IAC]))


@dataclass
class TelnetFilter:
    """Device bytes out of a telnet stream: negotiations and subnegotiations are dropped."""

    _state: str = "data"
    _pending: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        for byte in data:
            if self._state == "data":
                if byte == IAC:
                    self._state = "iac"
                else:
                    out.append(byte)
            elif self._state == "iac":
                if byte == IAC:
                    out.append(IAC)
                    self._state = "data"
                elif byte in (WILL, WONT, DO, DONT):
                    self._state = "option"
                elif byte == SB:
                    self._state = "sb"
                else:
                    self._state = "data"
            elif self._state == "option":
                self._state = "data"
            elif self._state == "sb":
                if byte == IAC:
                    self._state = "sb-iac"
            elif self._state == "sb-iac":
                self._state = "data" if byte == SE else "sb"
        return bytes(out)


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """The terminal in raw mode for the block; restored however the block ends (an exception, the
    exit key, SIGTERM or SIGHUP: those become SystemExit so this `finally` runs)."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    previous: dict[signal.Signals, Any] = {}

    def leave(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        previous[sig] = signal.signal(sig, leave)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
