"""The two ends of the chaos soak's session, as threads: the device (a tty's master) and a client
(a command such as socat, respawned whenever its connection ends). Each sends numbered records
(kubeserial_testing.soak) at a fixed pace and feeds what it receives into a StreamCheck."""

import contextlib
import os
import select
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Final

from kubeserial_testing.soak import RECORD, StreamCheck, records

RECORDS_PER_TICK: Final = 5
TICK: Final = 0.05  # 100 records a second each way
SESSION_QUIET: Final = 1.5  # no record for this long: the client's session is not up


class DeviceEnd:
    """The adapter's side: reads the pty master into a StreamCheck, writes numbered records."""

    def __init__(self) -> None:
        self.check = StreamCheck("app->device")
        self.sent = 0
        self.fd: int | None = None
        self.lock = threading.Lock()
        self._pending = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="device", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def attach(self, fd: int | None) -> None:
        """The master of the tty now plugged in (None: unplugged). Call before unplugging."""
        with self.lock:
            self.fd = fd
            self._pending = b""  # a record half-written into a tty that is gone

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            produce = time.monotonic() >= next_tick
            if produce:
                next_tick += TICK
            with self.lock:
                fd = self.fd
                if fd is not None:
                    self._step(fd, produce)
            if fd is None:
                self._stop.wait(TICK)

    def _step(self, fd: int, produce: bool) -> None:
        if produce and len(self._pending) < 4 * RECORDS_PER_TICK * RECORD:
            self._pending += records(self.sent, RECORDS_PER_TICK)
            self.sent += RECORDS_PER_TICK
        readable, writable, _ = select.select([fd], [fd] if self._pending else [], [], TICK / 2)
        if readable:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: nobody has the tty open (the gateway is away)
                data = b""
            if data:
                self.check.feed(data, time.monotonic())
        if writable:
            with contextlib.suppress(BlockingIOError, OSError):
                self._pending = self._pending[os.write(fd, self._pending) :]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class ClientEnd:
    """The consumer: socat in a node's network namespace, reconnecting whenever its session ends."""

    def __init__(self, argv: list[str] | Callable[[], list[str]]) -> None:
        """`argv`, or a function that makes it afresh for each connection (a Service's address can
        change between two)."""
        self.argv = argv
        self.check = StreamCheck("device->app")
        self.sent = 0
        self.reconnects: list[float] = []
        self.last_receive = 0.0
        self.proc: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="client", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def session_up(self) -> bool:
        return self.proc is not None and time.monotonic() - self.last_receive < SESSION_QUIET

    def _run(self) -> None:
        while not self._stop.is_set():
            self.reconnects.append(time.monotonic())
            argv = self.argv() if callable(self.argv) else self.argv
            proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
            self.proc = proc
            assert proc.stdin is not None and proc.stdout is not None
            os.set_blocking(proc.stdin.fileno(), False)
            reader = threading.Thread(target=self._read, args=(proc,), daemon=True)
            reader.start()
            pending = b""
            while proc.poll() is None and not self._stop.is_set():
                pending += records(self.sent, RECORDS_PER_TICK)
                self.sent += RECORDS_PER_TICK
                with contextlib.suppress(BlockingIOError):
                    try:
                        pending = pending[os.write(proc.stdin.fileno(), pending) :]
                    except BrokenPipeError:
                        break
                self._stop.wait(TICK)
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            reader.join(5)
            with contextlib.suppress(OSError):
                proc.stdin.close()
            self.proc = None
            self.check.connection_ended()
            self._stop.wait(0.2)  # a refused connection (busy) is retried, not spun on

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        while chunk := proc.stdout.read1(65536):  # type: ignore[attr-defined]
            now = time.monotonic()
            self.last_receive = now
            self.check.feed(chunk, now)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
