"""Simulated USB serial adapters for tests: a umockdev testbed that can plug and unplug them.

    with SimulatedUsb(tmp_path) as usb:
        adapter = UsbAdapter(serial="A50285BI")
        service_process(..., env=usb.env)   # the process under test sees the testbed's sysfs/udev
        usb.plug(adapter)                   # `add` uevents, as from the kernel + udev
        usb.record_modem_lines(adapter)     # optional, before the tty is opened: DTR/RTS at the device
        usb.unplug(adapter)                 # `remove` uevents, tty first

The testbed lives in a driver process (umockdev_driver.py, Debian's Python with GI, under the
preload). Processes started with `env` (LD_PRELOAD + UMOCKDEV_DIR) enumerate its devices with
libudev/pyudev and receive its uevents over their netlink sockets.
"""

import contextlib
import os
import re
import select
import socket
import subprocess
import sys
import termios
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from kubeserial_testing.controlplane import REPO_ROOT

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "ftdi-ft232r.umockdev"
PRELOAD = "libumockdev-preload.so.0"
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's: the one with python3-gi
DRIVER = Path(__file__).with_name("umockdev_driver.py")
_FIXTURE_SERIAL = "A50285BI"
_FIXTURE_PORT = "usb1/1-1"


@dataclass(frozen=True)
class UsbAdapter:
    """An FTDI FT232R like the recorded fixture, on USB port `port` of bus 1, with its own serial."""

    serial: str = _FIXTURE_SERIAL
    port: int = 1
    vendor: str = "0403"
    product: str = "6001"

    @property
    def by_id(self) -> str:
        """The link udev's 60-serial.rules would make for it."""
        return f"/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_{self.serial}-if00-port0"

    @property
    def by_path(self) -> str:
        return f"/dev/serial/by-path/pci-0000:00:14.0-usb-0:{self.port}:1.0-port0"


@dataclass(frozen=True)
class ModemLineEvent:
    """One modem-line ioctl a program made on a simulated tty, and DTR/RTS after it."""

    request: str  # TIOCMGET, TIOCMSET, TIOCMBIS or TIOCMBIC
    bits: int  # the argument (TIOCMGET: what the device answered)
    dtr: bool
    rts: bool

    @classmethod
    def parse(cls, line: str) -> "ModemLineEvent":
        request, bits, dtr, rts = line.split()
        return cls(request, int(bits, 0), dtr == "dtr=1", rts == "rts=1")


class ModemLineRecorder:
    """What reaches the device's modem lines: every TIOCMGET/TIOCMSET/TIOCMBIS/TIOCMBIC on its tty
    (see umockdev_driver.py). The kernel's own raise of DTR/RTS on open and drop on last close
    (HUPCL) happen below the ioctls and are not seen."""

    def __init__(self, connection: socket.socket) -> None:
        self._connection = connection
        self._buffer = b""
        self._events: list[ModemLineEvent] = []

    def events(self) -> list[ModemLineEvent]:
        """Every event so far (reads what arrived without waiting)."""
        while select.select([self._connection], [], [], 0)[0]:
            chunk = self._connection.recv(65536)
            if not chunk:
                break
            self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        self._events += [ModemLineEvent.parse(line.decode()) for line in lines]
        return list(self._events)

    def lines(self) -> list[tuple[bool, bool]]:
        """(DTR, RTS) after each change the device saw, in order (requests that changed nothing,
        and reads, left out)."""
        states: list[tuple[bool, bool]] = []
        for event in self.events():
            state = (event.dtr, event.rts)
            if event.request != "TIOCMGET" and (not states or states[-1] != state):
                states.append(state)
        return states

    def close(self) -> None:
        self._connection.close()


def tty_number(tty: str) -> int:
    match = re.search(r"(\d+)$", tty)
    return int(match.group(1)) if match else 0


def adapter_description(adapter: UsbAdapter, *, tty: str, fixture: str | None = None) -> str:
    """The recorded FT232R description, moved to `adapter`'s port, serial and ids, with its tty
    named `tty` (e.g. ttyUSB3) and udev's by-id/by-path links on it."""
    text = fixture if fixture is not None else FIXTURE.read_text(encoding="utf-8")
    text = text.replace(_FIXTURE_SERIAL, adapter.serial)
    text = text.replace(f"{_FIXTURE_PORT}/1-1:", f"usb1/1-{adapter.port}/1-{adapter.port}:")
    text = re.sub(rf"{_FIXTURE_PORT}$", f"usb1/1-{adapter.port}", text, flags=re.MULTILINE)
    text = re.sub(r"^A: devnum=\d+$", f"A: devnum={adapter.port + 1}", text, flags=re.MULTILINE)
    text = re.sub(r"/dev/bus/usb/001/\d+", f"/dev/bus/usb/001/{adapter.port + 1:03d}", text)
    text = re.sub(r"\b0403\b", adapter.vendor, text)
    text = re.sub(r"\b6001\b", adapter.product, text)
    text = text.replace("ttyUSB0", tty)
    # ttyUSB<n> is char 188:<n>; umockdev links /sys/dev/char/<major:minor>, so they must differ.
    text = re.sub(r"^A: dev=188:\d+$", f"A: dev=188:{tty_number(tty)}", text, flags=re.MULTILINE)
    return text.replace(
        f"E: DEVNAME=/dev/{tty}\n", f"E: DEVNAME=/dev/{tty}\nE: DEVLINKS={adapter.by_id} {adapter.by_path}\n"
    )


# A PC's first 8250 UART as sysfs shows it: the tty and its platform parent, no USB anywhere.
MAINBOARD_UART = """P: /devices/platform/serial8250/tty/ttyS0
N: ttyS0
E: DEVNAME=/dev/ttyS0
E: MAJOR=4
E: MINOR=64
E: SUBSYSTEM=tty
A: dev=4:64

P: /devices/platform/serial8250
E: DRIVER=serial8250
E: SUBSYSTEM=platform
"""


class SimulatedUsb:
    """A umockdev testbed in a driver process; plug/unplug adapters; `env` for processes under test."""

    def __init__(self, workdir: Path, *, testbed_parent: Path | None = None, shared: bool = False) -> None:
        """`testbed_parent`: where the testbed directory is made (default: the system's temp dir).
        `shared`: open the testbed to every uid, for a non-root monitor in a container (tests only)."""
        self.workdir = workdir
        self.testbed_parent = testbed_parent
        self.shared = shared
        self.root_dir = ""
        self._proc: subprocess.Popen[str] | None = None
        self._next_tty = 0
        self.plugged: dict[UsbAdapter, str] = {}  # adapter -> its devnode (/dev/ttyUSBn)
        self._device_sides: dict[UsbAdapter, list[int]] = {}
        self._recorders: list[ModemLineRecorder] = []

    def __enter__(self) -> "SimulatedUsb":
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if self.testbed_parent is not None:
            self.testbed_parent.mkdir(parents=True, exist_ok=True)
            env["TMPDIR"] = str(self.testbed_parent)  # umockdev makes its testbed with g_dir_make_tmp
        self._proc = subprocess.Popen(
            ["umockdev-wrapper", SYSTEM_PYTHON, str(DRIVER)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=sys.stderr,
            text=True,
        )
        words = self._read().split()
        if len(words) != 2 or words[0] != "ready":
            raise RuntimeError(f"umockdev driver did not start: {words!r}")
        self.root_dir = words[1]
        if self.shared:
            self._open_up()
        return self

    def _open_up(self) -> None:
        """A non-root monitor must read the testbed and create its event sockets in it."""
        for path in [Path(self.root_dir), *Path(self.root_dir).rglob("*")]:
            if not path.is_symlink():
                path.chmod(0o777 if path.is_dir() else 0o666)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def env(self) -> dict[str, str]:
        """Environment for a process that should see this testbed instead of the host's devices."""
        return {"LD_PRELOAD": PRELOAD, "UMOCKDEV_DIR": self.root_dir}

    def plug(self, adapter: UsbAdapter) -> str:
        """Add the adapter; returns its devnode. Each plug gets a fresh ttyUSB number, as the kernel
        would while the old node is still held (and umockdev cannot reuse a node name)."""
        tty = f"ttyUSB{self._next_tty}"
        self._next_tty += 1
        description = self.workdir / f"{adapter.serial}-{tty}.umockdev"
        description.write_text(adapter_description(adapter, tty=tty), encoding="utf-8")
        # udev makes the by-id/by-path links before it announces the device; umockdev makes no
        # links, so we do, relative, so that they resolve inside the testbed's /dev.
        for link in self._links(adapter):
            link.parent.mkdir(parents=True, exist_ok=True)
            link.unlink(missing_ok=True)
            link.symlink_to(f"../../{tty}")
        words = self._command(f"plug {self._key(adapter)} {description}")
        self.plugged[adapter] = words[0] if words else f"/dev/{tty}"
        # On a real node stat() of a udev link reports the tty's own number (188:n). umockdev's
        # preload answers stat() of /dev paths from dev/.node/<path with / as _>, which it writes
        # only for the node itself: without these entries stat(by-id) reported 0:0. (After the add:
        # umockdev asserts on a .node folder it did not make.)
        for node_entry in self._node_entries(adapter):
            node_entry.unlink(missing_ok=True)
            node_entry.symlink_to(f"188:{tty_number(tty)}")
        if self.shared:
            self._open_up()
            os.chmod(os.path.realpath(Path(self.root_dir) / self.plugged[adapter].removeprefix("/")), 0o666)
        return self.plugged[adapter]

    def add_mainboard_uart(self) -> str:
        """Add the node's 8250 UART, /dev/ttyS0 (char 4:64, a platform device: no USB parent), as
        every PC has; returns its devnode. Tests point paths at it to see them refused."""
        description = self.workdir / "mainboard-uart.umockdev"
        description.write_text(MAINBOARD_UART, encoding="utf-8")
        words = self._command(f"plug mainboard-uart {description}")
        return words[0] if words else "/dev/ttyS0"

    def alias_node(self, name: str, *, of: str) -> str:
        """/dev/<name> as a second node for the device behind /dev/<of>, as `mknod /dev/<name> c
        <major> <minor>` by someone who can write the node's /dev would make it; returns its path.
        (umockdev answers stat() of a /dev path from dev/.node/<name>; the pty behind `of` is shared.)"""
        root = Path(self.root_dir)
        os.symlink(os.readlink(root / "dev" / of), root / "dev" / name)
        os.symlink(os.readlink(root / "dev" / ".node" / of), root / "dev" / ".node" / name)
        return f"/dev/{name}"

    def unplug(self, adapter: UsbAdapter, *, announce: bool = True) -> None:
        """Remove the adapter; `announce=False` sends no uevent (a lost event: only a rescan sees it)."""
        # Our copies of the pty master go with the device, so that the tty hangs up as a real one does.
        for fd in self._device_sides.pop(adapter, []):
            os.close(fd)
        self._command(f"unplug {self._key(adapter)}" + ("" if announce else " quiet"))
        self.plugged.pop(adapter, None)
        for path in [*self._links(adapter), *self._node_entries(adapter)]:
            path.unlink(missing_ok=True)

    def _node_entries(self, adapter: UsbAdapter) -> list[Path]:
        node_dir = Path(self.root_dir) / "dev" / ".node"
        return [
            node_dir / path.removeprefix("/dev/").replace("/", "_")
            for path in (adapter.by_id, adapter.by_path)
        ]

    def _links(self, adapter: UsbAdapter) -> list[Path]:
        return [Path(self.root_dir + path) for path in (adapter.by_id, adapter.by_path)]

    @contextlib.contextmanager
    def _listener(self, name: str) -> Iterator[socket.socket]:
        """A unix socket in the workdir for the driver to connect back to (one connection)."""
        path = self.workdir / name
        path.unlink(missing_ok=True)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(str(path))
            listener.listen(1)
            listener.settimeout(10)
            yield listener

    def device_side(self, adapter: UsbAdapter) -> int:
        """A file descriptor of the pty master behind the plugged adapter's tty: the test reads what
        programs write to the device, writes what the device "sends", and sees the port's termios
        (on Linux the master reports the slave's settings, so a baud change shows up here).
        Owned by this object: `unplug` closes it (the wire is gone with the device)."""
        devnode = self.plugged[adapter]
        with self._listener(f"master-{self._key(adapter)}.sock") as listener:
            assert self._proc is not None and self._proc.stdin is not None
            self._proc.stdin.write(f"master {devnode} {listener.getsockname()}\n")
            self._proc.stdin.flush()
            connection, _ = listener.accept()
            with connection:
                _, fds, _, _ = socket.recv_fds(connection, 1, 1)
        words = self._read().split()
        if not words or words[0] != "ok" or len(fds) != 1:
            raise RuntimeError(f"umockdev driver: no pty master for {devnode}: {' '.join(words)}")
        self._device_sides.setdefault(adapter, []).append(fds[0])
        return fds[0]

    def record_modem_lines(self, adapter: UsbAdapter) -> ModemLineRecorder:
        """Give the plugged adapter's tty modem lines and record what programs do to them. Only
        opens of the tty after this call are seen (umockdev routes a process's ioctls when it opens
        the node)."""
        devnode = self.plugged[adapter]
        with self._listener(f"modem-{self._key(adapter)}.sock") as listener:
            self._command(f"modem {devnode} {listener.getsockname()}")  # it connects, then answers
            connection, _ = listener.accept()
        recorder = ModemLineRecorder(connection)
        self._recorders.append(recorder)
        return recorder

    def set_modem_inputs(
        self, adapter: UsbAdapter, *, cts: bool = False, dsr: bool = False, cd: bool = False, ri: bool = False
    ) -> None:
        """The input lines the device drives, as TIOCMGET reports them (after record_modem_lines)."""
        bits = (
            (termios.TIOCM_CTS if cts else 0)
            | (termios.TIOCM_DSR if dsr else 0)
            | (termios.TIOCM_CAR if cd else 0)
            | (termios.TIOCM_RNG if ri else 0)
        )
        self._command(f"inputs {self.plugged[adapter]} {bits:#x}")

    def close(self) -> None:
        for recorder in self._recorders:
            recorder.close()
        self._recorders.clear()
        for fds in self._device_sides.values():
            for fd in fds:
                os.close(fd)
        self._device_sides.clear()
        if self._proc is None:
            return
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        assert self._proc.stdout is not None
        self._proc.stdout.close()
        self._proc = None

    @staticmethod
    def _key(adapter: UsbAdapter) -> str:
        return f"{adapter.port}-{adapter.serial}"

    def _command(self, line: str) -> list[str]:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()
        words = self._read().split()
        if not words or words[0] != "ok":
            raise RuntimeError(f"umockdev driver: {line!r} failed: {' '.join(words)}")
        return words[1:]

    def _read(self) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"umockdev driver exited with {self._proc.poll()}")
        return line.strip()
