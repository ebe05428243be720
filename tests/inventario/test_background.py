"""inventario.background.BackgroundJob: one run at a time, failures logged, not raised."""

from __future__ import annotations

import asyncio
import logging

import pytest

from inventario.background import BackgroundJob

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
