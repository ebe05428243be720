"""cancel_and_wait: stopping a background task always ends, whatever the task does."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from brownout._aio import cancel_and_wait


async def test_a_task_that_swallows_a_cancellation_is_cancelled_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # what 3.11's wait_for can do when its awaitable just finished

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    async with asyncio.timeout(10):  # a naive cancel() + await would wait forever here
        await cancel_and_wait(task, recancel_after=0.01)
    assert task.cancelled()
    assert swallowed == 1
    assert "task stubborn did not stop when cancelled" in caplog.text


async def test_an_obedient_task_is_cancelled_once_and_nothing_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cancels = 0

    async def obedient() -> None:
        nonlocal cancels
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancels += 1
            raise

    task = asyncio.create_task(obedient())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert (task.cancelled(), cancels, caplog.text) == (True, 1, "")


async def test_the_error_a_task_ended_with_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(broken(), name="broken")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="brownout"):
        await cancel_and_wait(task)
    assert "task broken ended with an error" in caplog.text
    assert "RuntimeError: boom" in caplog.text


async def test_the_callers_own_cancellation_propagates() -> None:
    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(3600)  # cleanup that does not end

    inner = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)
    stopper = asyncio.create_task(cancel_and_wait(inner, recancel_after=3600))
    await asyncio.sleep(0.01)
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopper
    inner.cancel()  # the cleanup's sleep: now it ends
    with contextlib.suppress(asyncio.CancelledError):
        await inner
