import asyncio
import itertools

import pytest

from kubeserial_common.workqueue import Backoff, Requeue, WorkQueue, run_workers


async def test_key_queued_once() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for _ in range(5):
        queue.add("a")
    queue.add("b")
    assert queue.depth() == 2
    assert await queue.get() == "a"
    assert await queue.get() == "b"


async def test_key_added_while_processing_runs_again_after_done_never_concurrently() -> None:
    queue: WorkQueue[str] = WorkQueue()
    running: set[str] = set()
    overlaps = 0
    calls = 0

    async def reconcile(key: str) -> None:
        nonlocal overlaps, calls
        calls += 1
        if key in running:
            overlaps += 1
        running.add(key)
        if calls == 1:
            queue.add(key)  # arrives mid-flight: must be handled after, not alongside
        await asyncio.sleep(0.02)
        running.discard(key)

    queue.add("a")
    task = asyncio.create_task(run_workers(queue, reconcile, workers=4))
    await asyncio.sleep(0.15)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == 2 and overlaps == 0


async def test_failures_back_off_per_key_and_success_resets() -> None:
    queue: WorkQueue[str] = WorkQueue(backoff=Backoff(base=0.01, cap=1))
    attempts: list[float] = []
    loop = asyncio.get_running_loop()

    async def reconcile(key: str) -> None:
        attempts.append(loop.time())
        if len(attempts) < 4:
            raise RuntimeError("boom")

    queue.add("a")
    task = asyncio.create_task(run_workers(queue, reconcile, workers=1))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(attempts) == 4
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.009 and gaps[1] >= 0.019 and gaps[2] >= 0.039
    assert "a" not in queue._failures


def test_backoff_is_capped() -> None:
    assert Backoff(base=1, cap=10).delay(1) == 1
    assert Backoff(base=1, cap=10).delay(3) == 4
    assert Backoff(base=1, cap=10).delay(30) == 10


async def test_requeue_after_and_returned_delay() -> None:
    queue: WorkQueue[str] = WorkQueue()
    seen: list[str] = []

    async def reconcile(key: str) -> float | None:
        seen.append(key)
        if key == "r" and seen.count("r") == 1:
            raise Requeue(0.01)
        if key == "d" and seen.count("d") == 1:
            return 0.01
        return None

    queue.add("r")
    queue.add("d")
    task = asyncio.create_task(run_workers(queue, reconcile, workers=1))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen.count("r") == 2 and seen.count("d") == 2
