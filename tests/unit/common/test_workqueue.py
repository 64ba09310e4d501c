import asyncio
import itertools

import pytest

from kubeserial_common.runtime.workqueue import Backoff, Requeue, WorkQueue, run_workers


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

    second_done = asyncio.Event()

    async def reconcile(key: str) -> None:
        nonlocal overlaps, calls
        calls += 1
        if key in running:
            overlaps += 1
        running.add(key)
        if calls == 1:
            queue.add(key)  # arrives mid-flight: must be handled after, not alongside
        await asyncio.sleep(0.02)  # stay in flight while three idle workers could pick the key up
        running.discard(key)
        if calls == 2:
            second_done.set()

    queue.add("a")
    task = asyncio.create_task(run_workers(queue, reconcile, workers=4))
    await asyncio.wait_for(second_done.wait(), timeout=10)
    # Once the second run is over nothing is left: the key was queued once, not once per add.
    assert queue.depth() == 0 and not queue._processing and not queue._dirty
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == 2 and overlaps == 0


async def test_failures_back_off_per_key_and_success_resets() -> None:
    queue: WorkQueue[str] = WorkQueue(backoff=Backoff(base=0.01, cap=1))
    attempts: list[float] = []
    loop = asyncio.get_running_loop()

    succeeded = asyncio.Event()

    async def reconcile(key: str) -> None:
        attempts.append(loop.time())
        if len(attempts) < 4:
            raise RuntimeError("boom")
        succeeded.set()

    queue.add("a")
    task = asyncio.create_task(run_workers(queue, reconcile, workers=1))
    await asyncio.wait_for(succeeded.wait(), timeout=10)
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
    failures_when_requeued: list[int] = []
    both_again = asyncio.Event()

    async def reconcile(key: str) -> float | None:
        seen.append(key)
        if seen.count(key) == 2:
            failures_when_requeued.append(queue._failures.get(key, 0))
        if seen.count("r") == 2 and seen.count("d") == 2:
            both_again.set()
        if key == "r" and seen.count("r") == 1:
            raise Requeue(0.01)
        if key == "d" and seen.count("d") == 1:
            return 0.01
        return None

    queue.add("r")
    queue.add("d")
    task = asyncio.create_task(run_workers(queue, reconcile, workers=1))
    await asyncio.wait_for(both_again.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen.count("r") == 2 and seen.count("d") == 2
    assert failures_when_requeued == [0, 0], "a Requeue or a returned delay is not a failure (no backoff)"


async def test_until_depth_at_most_waits_for_the_backlog_to_shrink() -> None:
    queue: WorkQueue[int] = WorkQueue()
    for key in range(5):
        queue.add(key)
    await asyncio.wait_for(queue.until_depth_at_most(5), 1)  # already so: at once
    waiter = asyncio.create_task(queue.until_depth_at_most(2))
    await asyncio.sleep(0)
    for _ in range(2):
        await queue.get()
        await asyncio.sleep(0)
        assert not waiter.done()  # 4, then 3 still wait
    await queue.get()
    await asyncio.wait_for(waiter, 1)
    assert queue.depth() == 2 and queue._depth_waiters == []


async def test_until_depth_at_most_leaves_no_waiter_behind_when_cancelled() -> None:
    queue: WorkQueue[int] = WorkQueue()
    for key in range(3):
        queue.add(key)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await queue.until_depth_at_most(0)
    assert queue._depth_waiters == []


async def test_low_keys_wait_behind_every_other_key_and_move_up_when_added_again() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for key in ("replay-1", "replay-2", "replay-3"):
        queue.add(key, low=True)
    queue.add("plug")
    queue.add("replay-3")  # a real change to a key the replay queued: no longer behind the others
    queue.add("replay-1", low=True)  # already waiting: stays where it is, once
    assert queue.depth() == 4
    order = [await queue.get() for _ in range(4)]
    assert order == ["plug", "replay-3", "replay-1", "replay-2"]
    assert queue.depth() == 0
