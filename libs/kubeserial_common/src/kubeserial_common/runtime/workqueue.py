"""A work queue with controller-runtime semantics.

- a key waiting in the queue is stored once, however often it is added;
- a key is never handed to two workers at once: re-added while in flight, it is queued again
  once the worker is done with it;
- failures back off per key, exponentially, and success resets the backoff;
- two lanes: keys added `low` (the periodic resync's replay of every cached object) are handed out
  only when no other key waits, and a key waiting low moves up when a change adds it again. A
  resync of 10,000 devices queues 10,000 keys at once; a plug on one node does not wait behind them.
"""

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from kubeserial_common.core.backoff import Backoff as Backoff  # still importable from here, as before
from kubeserial_common.core.errors import PermanentError, message_of
from kubeserial_common.runtime.logs import get_logger
from kubeserial_common.runtime.tasks import run_together

log = get_logger(__name__)

K = TypeVar("K", bound=Hashable)


@dataclass
class WorkQueue(Generic[K]):
    backoff: Backoff = field(default_factory=Backoff)
    # One token per waiting key; the keys themselves wait in `_high` or `_low`.
    _tokens: asyncio.Queue[None] = field(default_factory=asyncio.Queue)
    _high: deque[K] = field(default_factory=deque)
    _low: deque[K] = field(default_factory=deque)
    _waiting: set[K] = field(default_factory=set)
    _waiting_low: set[K] = field(default_factory=set)
    _processing: set[K] = field(default_factory=set)
    _dirty: set[K] = field(default_factory=set)
    _failures: dict[K, int] = field(default_factory=dict)
    _timers: dict[K, asyncio.TimerHandle] = field(default_factory=dict)
    _depth_waiters: list[tuple[int, asyncio.Future[None]]] = field(default_factory=list)

    def add(self, key: K, *, low: bool = False) -> None:
        if key in self._processing:
            self._dirty.add(key)
        elif key not in self._waiting:
            self._waiting.add(key)
            if low:
                self._waiting_low.add(key)
                self._low.append(key)
            else:
                self._high.append(key)
            self._tokens.put_nowait(None)
        elif not low and key in self._waiting_low:
            self._waiting_low.discard(key)
            self._low.remove(key)  # rare (a change during a replay), and O(waiting) at worst
            self._high.append(key)

    def add_after(self, key: K, delay: float) -> None:
        """Queue `key` after `delay` seconds; an earlier pending timer for the key wins."""
        loop = asyncio.get_running_loop()
        existing = self._timers.get(key)
        due = loop.time() + delay
        if existing is not None and existing.when() <= due:
            return
        if existing is not None:
            existing.cancel()
        self._timers[key] = loop.call_at(due, self._fire, key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def retry(self, key: K) -> float:
        """Record a failure and requeue with backoff; returns the delay used."""
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        delay = self.backoff.delay(failures)
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)

    async def get(self) -> K:
        await self._tokens.get()
        key = self._high.popleft() if self._high else self._low.popleft()
        self._waiting_low.discard(key)
        self._waiting.discard(key)
        self._processing.add(key)
        if self._depth_waiters:
            self._wake_depth_waiters()
        return key

    async def until_depth_at_most(self, depth: int) -> None:
        """Until at most `depth` keys wait (returns at once if that is already so)."""
        if len(self._waiting) <= depth:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._depth_waiters.append((depth, future))
        try:
            await future
        finally:
            self._depth_waiters = [(d, f) for d, f in self._depth_waiters if f is not future]

    def _wake_depth_waiters(self) -> None:
        for depth, future in self._depth_waiters:
            if len(self._waiting) <= depth and not future.done():
                future.set_result(None)

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def depth(self) -> int:
        return len(self._waiting)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()


class Requeue(Exception):
    """Raise from a reconciler to be called again after `delay` seconds, without counting a failure."""

    def __init__(self, delay: float) -> None:
        super().__init__(f"requeue after {delay}s")
        self.delay = delay


async def run_workers(
    queue: WorkQueue[K],
    reconcile: Callable[[K], Awaitable[float | None]],
    *,
    workers: int = 2,
    name: str = "reconcile",
    on_error: Callable[[K, BaseException], None] | None = None,
) -> None:
    """Run `workers` loops that feed keys to `reconcile` until cancelled.

    `reconcile` returns None when converged, or a delay in seconds to be called again (a timed
    re-check, like controller-runtime's RequeueAfter). Exceptions requeue with backoff, except
    PermanentError (invalid input), which waits for the object's next change.
    """

    async def worker() -> None:
        while True:
            key = await queue.get()
            try:
                again = await reconcile(key)
            except Requeue as requeue:
                queue.forget(key)
                queue.add_after(key, requeue.delay)
            except PermanentError as exc:  # reported by the reconciler; retrying cannot help
                queue.forget(key)
                log.warning(f"{name}: not retried until the object changes", key=str(key), error=exc.message)
                if on_error is not None:
                    on_error(key, exc)
            except Exception as exc:  # any failure of one reconcile is retried with backoff, never fatal
                delay = queue.retry(key)
                log.warning(
                    f"{name} failed; retrying", key=str(key), retry_in=round(delay, 3), error=message_of(exc)
                )
                if on_error is not None:
                    on_error(key, exc)
            else:
                queue.forget(key)
                if again is not None:
                    queue.add_after(key, again)
            finally:
                queue.done(key)

    try:
        await run_together((worker() for _ in range(workers)), name=f"{name}-worker")
    finally:
        queue.close()
