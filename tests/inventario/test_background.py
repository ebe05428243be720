"""inventario.background.BackgroundJob: one run at a time, failures logged, not raised."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from inventario.background import BackgroundJob, on_heartbeat

logger = logging.getLogger("test.background")


async def test_a_trigger_during_a_run_starts_nothing_and_a_later_one_runs_again() -> None:
    runs = 0
    gate = asyncio.Event()

    async def job() -> None:
        nonlocal runs
        runs += 1
        await gate.wait()

    bg = BackgroundJob(job, logger, "job")
    bg.start()
    first = bg.task
    await asyncio.sleep(0)
    bg.start()  # running: dropped
    assert bg.task is first and bg.running and runs == 1
    gate.set()
    assert first is not None
    await first
    assert not bg.running
    bg.start()
    assert bg.task is not first
    await bg.task
    assert runs == 2


def test_off_the_loop_a_trigger_is_dropped() -> None:
    async def job() -> None:
        raise AssertionError("not run")

    bg = BackgroundJob(job, logger, "job")
    bg.start()
    assert bg.task is None and not bg.running


async def test_a_failed_run_is_logged_by_type_only(caplog: pytest.LogCaptureFixture) -> None:
    async def job() -> None:
        raise ConnectionError("postgresql://user:s3cret@db/x refused")

    caplog.set_level(logging.DEBUG, logger="test.background")
    bg = BackgroundJob(job, logger, "shared flush")
    bg.start()
    assert bg.task is not None
    await bg.task  # the failure is not raised
    assert "shared flush failed: ConnectionError" in caplog.text
    assert "s3cret" not in caplog.text


async def test_cancel_ends_a_run_going_on() -> None:
    started = asyncio.Event()

    async def job() -> None:
        started.set()
        await asyncio.Event().wait()

    bg = BackgroundJob(job, logger, "job")
    bg.start()
    await started.wait()
    task = bg.task
    await bg.cancel()
    assert task is not None and task.cancelled() and bg.task is None
    await bg.cancel()  # nothing going on: nothing to do


def test_on_heartbeat_calls_only_on_heartbeat_evaluations() -> None:
    class Manager:
        def __init__(self) -> None:
            self.listeners: list[Callable[[object], None]] = []

        def add_listener(self, fn: Callable[[object], None]) -> Callable[[], None]:
            self.listeners.append(fn)
            return lambda: self.listeners.remove(fn)

    class Evaluation:
        def __init__(self, trigger: str) -> None:
            self.trigger = trigger

    calls: list[int] = []
    manager = Manager()
    undo = on_heartbeat(manager, lambda: calls.append(1))
    for trigger in ("heartbeat", "state_change", "heartbeat (probe)"):
        for listener in list(manager.listeners):
            listener(Evaluation(trigger))
    assert len(calls) == 2
    assert undo is not None
    undo()
    assert manager.listeners == []
