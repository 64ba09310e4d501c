"""Running a group of coroutines that live and die together."""

import asyncio
import contextlib
from collections.abc import Coroutine, Iterable
from typing import Any


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
