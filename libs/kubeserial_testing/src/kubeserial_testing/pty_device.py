"""A serial device for tests and benchmarks: a real pty whose slave is reached through a stable link.

The test holds the master and plays the device; the code under test opens `link` (like a
/dev/serial/by-id/... path). Settings the code applies to the slave are visible here through
termios on the master (Linux applies termios calls on a pty master to its slave). `unplug()` hangs
the tty up and removes the link, as pulling the USB plug does; `plug()` makes a new tty behind the
same link, as plugging it back in does.
"""

import os
import select
import termios
import threading
import time
import tty
from pathlib import Path
from typing import Any

from kubeserial_testing.ttyio import read_exactly

SPEEDS = {
    getattr(termios, name): int(name[1:])
    for name in dir(termios)
    if name.startswith("B") and name[1:].isdigit()
}
CMSPAR = 0o10000000000


class PtyDevice:
    def __init__(self, link: Path) -> None:
        self.link = link
        self.master = -1
        self.slave_path = ""
        self._echo: threading.Thread | None = None
        self._echo_stop: tuple[int, int] | None = None

    def __enter__(self) -> "PtyDevice":
        return self.plug()

    def __exit__(self, *exc: object) -> None:
        self.unplug()

    @property
    def plugged(self) -> bool:
        return self.master >= 0

    def plug(self) -> "PtyDevice":
        assert not self.plugged, "already plugged"
        master, slave = os.openpty()
        tty.setraw(slave)
        self.slave_path = os.ttyname(slave)
        # Closing our slave fd is fine: the master keeps the pty alive, and nobody but the code
        # under test holds the slave, so a hang-up reaches it alone.
        os.close(slave)
        self.master = master
        temporary = self.link.with_name(f".{self.link.name}.tmp")
        temporary.unlink(missing_ok=True)
        os.symlink(self.slave_path, temporary)
        os.replace(temporary, self.link)
        return self

    def unplug(self) -> None:
        self.stop_echo()
        # The kernel hangs the tty up first and udev removes the link after: in the other order a
        # gateway's path check could see the link gone before the hangup (a flaky loss reason).
        if self.master >= 0:
            os.close(self.master)
            self.master = -1
        self.link.unlink(missing_ok=True)

    # --- playing the device ------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            _, writable, _ = select.select([], [self.master], [], 10)
            assert writable, "device write blocked for 10 s"
            view = view[os.write(self.master, view) :]

    def read(self, size: int, *, timeout: float = 10.0) -> bytes:
        """Exactly `size` bytes the code under test wrote to the device (AssertionError otherwise)."""
        return read_exactly(self.master, size, timeout=timeout)

    def drain(self, *, quiet: float = 0.2) -> bytes:
        """Whatever arrives until the line is quiet for `quiet` seconds."""
        out = bytearray()
        while True:
            readable, _, _ = select.select([self.master], [], [], quiet)
            if not readable:
                return bytes(out)
            try:
                out += os.read(self.master, 65536)
            except OSError:
                return bytes(out)

    def start_echo(self) -> None:
        """Echo everything back, like a loopback plug, in a thread (for round-trip tests)."""
        stop_r, stop_w = os.pipe()
        self._echo_stop = (stop_r, stop_w)
        master = self.master

        def loop() -> None:
            while True:
                readable, _, _ = select.select([master, stop_r], [], [])
                if stop_r in readable:
                    return
                try:
                    data = os.read(master, 65536)
                except OSError:
                    time.sleep(0.01)
                    continue
                view = memoryview(data)
                while view:
                    view = view[os.write(master, view) :]

        self._echo = threading.Thread(target=loop, name="pty-echo", daemon=True)
        self._echo.start()

    def stop_echo(self) -> None:
        if self._echo is None or self._echo_stop is None:
            return
        os.write(self._echo_stop[1], b"x")
        self._echo.join(5)
        for fd in self._echo_stop:
            os.close(fd)
        self._echo = None
        self._echo_stop = None

    # --- what the code under test configured ---------------------------------------------------

    def termios(self) -> list[Any]:
        return termios.tcgetattr(self.master)

    def baud_rate(self) -> int:
        return SPEEDS.get(self.termios()[5], 0)

    def line_settings(self) -> dict[str, Any]:
        """Baud, data bits, parity (N/O/E/M/S), stop bits and flow control as set on the slave."""
        iflag, _, cflag, *_ = self.termios()
        size = {termios.CS5: 5, termios.CS6: 6, termios.CS7: 7, termios.CS8: 8}[cflag & termios.CSIZE]
        # A Linux pty forces CS8 and drops PARENB but keeps PARODD and CMSPAR: even parity and
        # 5-7 data bits cannot be seen here (see kubeserial_gateway.ttysettings).
        if cflag & CMSPAR:
            parity = "M" if cflag & termios.PARODD else "S"
        elif cflag & termios.PARODD:
            parity = "O"
        else:
            parity = "E" if cflag & termios.PARENB else "N"
        return {
            "baud_rate": self.baud_rate(),
            "data_bits": size,
            "parity": parity,
            "stop_bits": 2 if cflag & termios.CSTOPB else 1,
            "rtscts": bool(cflag & termios.CRTSCTS),
            "xonxoff": bool(iflag & termios.IXON),
        }

    def opened_by_someone(self) -> bool:
        """True while some process has the slave open (no POLLHUP on the master)."""
        poller = select.poll()
        poller.register(self.master, select.POLLIN)
        return not any(mask & select.POLLHUP for _, mask in poller.poll(0))
