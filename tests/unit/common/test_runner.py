"""The process runner: a runnable that dies stops the process with a log line naming it; signals and
stop() end it cleanly; graceful runnables drain; shutdown steps run in order."""

import asyncio
import os
import signal

from structlog.testing import capture_logs

from kubeserial_common.runtime.health import HealthServer
from kubeserial_common.runtime.runner import EXIT_CRASHED, EXIT_OK, FAULT_AFTER_ENV, FAULT_ENV, Runner


async def forever() -> None:
    await asyncio.Event().wait()


async def test_a_runnable_that_raises_stops_the_process_and_is_named() -> None:
    health = HealthServer(host="127.0.0.1", port=0)
    runner = Runner(health=health, environ={})
    seen_ready: list[bool] = []

    async def informer() -> None:
        await asyncio.sleep(0.05)
        seen_ready.append(health.ready_checks["runnables"]())
        raise KeyError("boom")

    runner.add("workers", forever)
    runner.add("informer", informer)
    with capture_logs() as logs:
        code = await asyncio.wait_for(runner.run(), 2)
    assert code == EXIT_CRASHED
    assert seen_ready == [True]
    assert not health.ready_checks["runnables"]() and runner.failed == "informer"
    (line,) = [entry for entry in logs if entry["log_level"] == "error"]
    assert line["runnable"] == "informer" and "boom" in line["error"]


async def test_a_runnable_that_returns_is_a_crash_too() -> None:
    runner = Runner(environ={})

    async def quits() -> None:
        return None

    runner.add("quits", quits)
    with capture_logs() as logs:
        assert await asyncio.wait_for(runner.run(), 2) == EXIT_CRASHED
    assert any(e.get("runnable") == "quits" and "ended unexpectedly" in e["event"] for e in logs)


async def test_sigterm_stops_cleanly_with_graceful_drain_and_steps_in_order() -> None:
    runner = Runner(environ={})
    order: list[str] = []
    drained = asyncio.Event()

    async def server() -> None:
        await drained.wait()
        order.append("server drained")

    def drain() -> bool:
        order.append("drain asked")
        drained.set()
        return True

    async def stopping() -> None:
        order.append("stopping (runnables still run)")

    async def first() -> None:
        order.append("first registered, last run")

    async def second() -> None:
        order.append("second registered, first run")

    runner.add("server", server, graceful_stop=drain)
    runner.add("other", forever)
    runner.on_stopping("sessions", stopping)
    runner.on_shutdown("first", first)
    runner.on_shutdown("second", second)
    asyncio.get_running_loop().call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(runner.run(), 2) == EXIT_OK
    assert order == [
        "stopping (runnables still run)",
        "drain asked",
        "server drained",
        "second registered, first run",
        "first registered, last run",
    ]


async def test_stop_with_a_code_and_runnables_added_while_running() -> None:
    runner = Runner(environ={})
    started: list[str] = []

    async def later() -> None:
        started.append("later")
        runner.stop(code=3, reason="lost the lease")
        await forever()

    async def leader() -> None:
        runner.add("later", later)
        await forever()

    runner.add("leader", leader)
    assert await asyncio.wait_for(runner.run(), 2) == 3
    assert started == ["later"]


async def test_the_test_fault_makes_the_named_runnable_raise() -> None:
    runner = Runner(environ={FAULT_ENV: "victim", FAULT_AFTER_ENV: "0.05"})
    runner.add("victim", forever)
    runner.add("bystander", forever)
    with capture_logs() as logs:
        assert await asyncio.wait_for(runner.run(), 2) == EXIT_CRASHED
    (line,) = [entry for entry in logs if entry["log_level"] == "error"]
    assert line["runnable"] == "victim" and "InjectedFault" in line["error"]
