"""One process runner for every service (controller-runtime's Manager, kopf's root tasks).

A service registers its runnables (informers, workers, servers, leases: coroutines that run until
cancelled) and its shutdown steps; `Runner.run()` owns the rest:

- SIGTERM/SIGINT stop the process cleanly (exit 0): graceful runnables are asked to finish (a web
  server drains its requests), the others are cancelled, then the shutdown steps run in reverse
  order of registration, then the health server stops;
- a runnable that raises, or returns while it should run forever, is a crash: readiness fails at
  once, a log line names the runnable and the error, the process stops and exits 1;
- a service may end the process itself with its own code (`stop(code=...)`), e.g. the controller
  when it loses its leader Lease.

Tests prove the crash path per service: with KUBESERIAL_TEST_FAULT=<runnable name> the named
runnable raises after KUBESERIAL_TEST_FAULT_AFTER seconds (default 1). Nothing else reads them.
"""

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from kubeserial_common.runtime.health import HealthServer
from kubeserial_common.runtime.logs import get_logger

log = get_logger(__name__)

EXIT_OK = 0
EXIT_CRASHED = 1
FAULT_ENV = "KUBESERIAL_TEST_FAULT"
FAULT_AFTER_ENV = "KUBESERIAL_TEST_FAULT_AFTER"

RunnableFactory = Callable[[], Coroutine[Any, Any, Any]]
Step = Callable[[], Awaitable[Any]]


class InjectedFault(RuntimeError):
    """The test-only fault of KUBESERIAL_TEST_FAULT."""


@dataclass(frozen=True)
class _Runnable:
    name: str
    factory: RunnableFactory
    # Asks it to finish by itself; True when it will (else, and without one, it is cancelled).
    graceful_stop: Callable[[], bool] | None


class Runner:
    def __init__(
        self,
        *,
        health: HealthServer | None = None,
        shutdown_timeout: float = 10.0,
        environ: dict[str, str] | None = None,
    ) -> None:
        self.health = health
        self.shutdown_timeout = shutdown_timeout
        env = os.environ if environ is None else environ
        self._fault = env.get(FAULT_ENV) or None
        self._fault_after = float(env.get(FAULT_AFTER_ENV) or 1.0)
        self._pending: list[_Runnable] = []
        self._tasks: dict[asyncio.Task[Any], _Runnable] = {}
        self._steps: list[tuple[str, Step]] = []
        self._stopping_steps: list[tuple[str, Step]] = []
        self._stop = asyncio.Event()
        self._stopping = False
        self._running = False
        self._code = EXIT_OK
        self.failed: str | None = None  # the runnable that crashed, if one did
        if health is not None:
            health.ready_checks["runnables"] = lambda: self.failed is None
            health.live_checks.setdefault("runnables", lambda: self.failed is None)

    # -- registration ----------------------------------------------------------------------------

    def add(
        self, name: str, factory: RunnableFactory, *, graceful_stop: Callable[[], bool] | None = None
    ) -> None:
        """Run `factory()` until the process stops; started now when the runner already runs."""
        runnable = _Runnable(name, factory, graceful_stop)
        if self._running:
            self._start(runnable)
        else:
            self._pending.append(runnable)

    def on_stopping(self, name: str, step: Step) -> None:
        """Run `step()` first at shutdown, while the runnables still run (e.g. end sessions and let
        a status writer record that)."""
        self._stopping_steps.append((name, step))

    def on_shutdown(self, name: str, step: Step) -> None:
        """Run `step()` at shutdown, after the runnables ended (steps run in reverse order)."""
        self._steps.append((name, step))

    def stop(self, *, code: int = EXIT_OK, reason: str = "") -> None:
        """End the process with `code` (the first code given wins)."""
        if not self._stop.is_set():
            self._code = code
            if reason:
                (log.error if code else log.info)(reason, exit_code=code)
            self._stop.set()

    # -- running ---------------------------------------------------------------------------------

    def _start(self, runnable: _Runnable) -> None:
        coro = runnable.factory()
        if self._fault == runnable.name:
            coro = self._faulty(runnable.name, coro)
        task = asyncio.create_task(coro, name=runnable.name)
        self._tasks[task] = runnable
        task.add_done_callback(self._ended)

    async def _faulty(self, name: str, coro: Coroutine[Any, Any, Any]) -> Any:
        task = asyncio.ensure_future(coro)
        try:
            await asyncio.wait_for(asyncio.shield(task), self._fault_after)
        except TimeoutError:
            raise InjectedFault(f"fault injected into {name} ({FAULT_ENV})") from None
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _ended(self, task: asyncio.Task[Any]) -> None:
        if self._stopping or task.cancelled():
            return
        name = self._tasks[task].name
        exc = task.exception()
        self.failed = self.failed or name
        if exc is not None:
            log.error("runnable failed; stopping", runnable=name, error=repr(exc), exc_info=exc)
        else:
            log.error("runnable ended unexpectedly; stopping", runnable=name)
        self.stop(code=EXIT_CRASHED)

    async def run(self) -> int:
        """Start everything, wait for a signal, a crash or stop(); shut down; return the exit code."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        try:
            if self.health is not None:
                await self.health.start()
            self._running = True
            for runnable in self._pending:
                self._start(runnable)
            self._pending.clear()
            await self._stop.wait()
        finally:
            await self._shutdown()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
        return self._code

    async def _run_steps(self, steps: list[tuple[str, Step]]) -> None:
        for name, step in steps:
            try:
                await asyncio.wait_for(step(), self.shutdown_timeout)
            except Exception as exc:  # a failed clean-up step must not hide the others or the exit code
                log.warning("shutdown step failed", step=name, error=repr(exc))

    async def _shutdown(self) -> None:
        await self._run_steps(self._stopping_steps)
        self._stopping = True
        tasks = [task for task in self._tasks if not task.done()]
        graceful = []
        for task in tasks:
            stop = self._tasks[task].graceful_stop
            if stop is not None and stop():
                graceful.append(task)
        if graceful:
            await asyncio.wait(graceful, timeout=self.shutdown_timeout)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._run_steps(list(reversed(self._steps)))
        if self.health is not None:
            await self.health.stop()
