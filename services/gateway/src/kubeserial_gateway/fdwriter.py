"""Non-blocking writes to a tty fd with a bounded buffer (the device in the gateway, the pty in the bridge).

Write at once; keep what the tty did not take and flush it when the loop says the fd is writable.
Past `high_water` pending bytes the producer is asked to pause (`on_congested(True)`), and told to
go on at `low_water`: memory stays bounded however fast the other side sends.
"""

import asyncio
import os
from collections.abc import Callable


class FdWriter:
    def __init__(
        self,
        fd: int,
        *,
        loop: asyncio.AbstractEventLoop,
        high_water: int,
        low_water: int,
        on_written: Callable[[int], None],
        on_error: Callable[[OSError, int], None],
        on_congested: Callable[[bool], None],
    ) -> None:
        self.fd = fd
        self._loop = loop
        self._high_water = high_water
        self._low_water = low_water
        self._on_written = on_written
        self._on_error = on_error  # (error, bytes dropped with it)
        self._on_congested = on_congested
        self._pending = bytearray()
        self._watching = False
        self.congested = False

    @property
    def pending(self) -> int:
        return len(self._pending)

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._pending:
            try:
                written = os.write(self.fd, data)
            except (BlockingIOError, InterruptedError):
                written = 0
            except OSError as exc:
                self._on_error(exc, len(data))
                return
            if written:
                self._on_written(written)
            if written == len(data):
                return
            data = data[written:]
            self._watch(True)
        self._pending += data
        if len(self._pending) > self._high_water and not self.congested:
            self._set_congested(True)

    def _on_writable(self) -> None:
        try:
            written = os.write(self.fd, self._pending)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._on_error(exc, self.discard())
            return
        self._on_written(written)
        del self._pending[:written]
        if not self._pending:
            self._watch(False)
        if self.congested and len(self._pending) <= self._low_water:
            self._set_congested(False)

    def discard(self) -> int:
        """Drop what is pending (purge, hang-up); returns how many bytes that was."""
        dropped = len(self._pending)
        self._pending.clear()
        self._watch(False)
        if self.congested:
            self._set_congested(False)
        return dropped

    def close(self) -> None:
        self._pending.clear()
        self._watch(False)

    def _watch(self, on: bool) -> None:
        if on != self._watching:
            self._watching = on
            if on:
                self._loop.add_writer(self.fd, self._on_writable)
            else:
                self._loop.remove_writer(self.fd)

    def _set_congested(self, congested: bool) -> None:
        self.congested = congested
        self._on_congested(congested)
