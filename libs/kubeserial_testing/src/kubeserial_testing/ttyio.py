"""Playing both ends of a serial line in tests: the device (a pty master) and the application
(a tty opened through the bridge)."""

import asyncio
import errno
import os
import select
import termios
import time


def _read_some(fd: int, limit: int) -> bytes:
    """Up to `limit` bytes from a readable fd. A pty master reads EIO while nobody has the slave
    open (say, a gateway being restarted); a real adapter just stays quiet then, so: nothing yet."""
    try:
        return os.read(fd, limit)
    except OSError as exc:
        if exc.errno != errno.EIO:
            raise
        time.sleep(0.02)
        return b""


def read_exactly(fd: int, count: int, *, timeout: float = 10.0) -> bytes:
    """`count` bytes from a file descriptor, or AssertionError saying what did arrive."""
    data = b""
    deadline = time.monotonic() + timeout
    while len(data) < count:
        readable, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        if not readable:
            raise AssertionError(f"read {data!r}, wanted {count} bytes within {timeout}s")
        data += _read_some(fd, count - len(data))
    return data


def read_until(fd: int, end: bytes, *, timeout: float = 10.0) -> bytes:
    """What arrives on `fd` until it ends with `end`, or whatever came within `timeout`."""
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(end) and time.monotonic() < deadline:
        readable, _, _ = select.select([fd], [], [], max(min(0.2, deadline - time.monotonic()), 0))
        if readable:
            data += _read_some(fd, 256)
    return data


def make_raw(fd: int, speed: int) -> None:
    """8N1, no processing, no echo, at `speed` (a termios.B* constant): what a serial app sets."""
    attrs = termios.tcgetattr(fd)
    attrs[0] = attrs[1] = attrs[3] = 0
    attrs[2] = termios.CS8 | termios.CREAD | termios.CLOCAL
    attrs[4] = attrs[5] = speed
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def baud(fd: int) -> int:
    """The output speed (a termios.B* constant) of a tty; on a pty master, the slave's."""
    return int(termios.tcgetattr(fd)[4])


async def exchange(app_fd: int, device_fd: int, label: bytes) -> None:
    """Bytes both ways, every byte value included, between an application tty and a device."""
    to_device = label + bytes(range(256))
    os.write(app_fd, to_device)
    assert await asyncio.to_thread(read_exactly, device_fd, len(to_device)) == to_device
    to_app = b"reply:" + label + bytes(range(255, -1, -1))
    os.write(device_fd, to_app)
    assert await asyncio.to_thread(read_exactly, app_fd, len(to_app)) == to_app
