"""Running a group of coroutines that live and die together."""

import asyncio
import contextlib
from collections.abc import Awaitable, Coroutine, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


async def within(awaitable: Awaitable[T], seconds: float) -> T:
    """`awaitable`, or TimeoutError after `seconds`. Not asyncio.wait_for: on Python 3.11 it can
    swallow a cancellation that arrives just as the inner call completes, and a task cancelled at
    shutdown then runs on (a benchmark hung in its clean-up that way)."""
    async with asyncio.timeout(seconds):
        return await awaitable


async def run_together(coroutines: Iterable[Coroutine[Any, Any, Any]], *, name: str) -> None:
    """Run until one fails or we are cancelled; then cancel the rest and wait for them to end."""
    tasks = [asyncio.create_task(coro, name=f"{name}-{i}") for i, coro in enumerate(coroutines)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
