"""cancel_and_wait: stopping a background task always ends, whatever the task does."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from brownout._aio import cancel_and_wait, wait_woken


class Sleeper:
    """A task body that sleeps, counts the cancellations it gets and swallows the
    first ``swallow`` of them (what 3.11's wait_for can do when its awaitable just
    finished)."""

    def __init__(self, swallow: int) -> None:
        self.swallow = swallow
        self.cancels = 0

    async def run(self) -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancels += 1
                if self.cancels > self.swallow:
                    raise


async def test_a_task_that_swallows_a_cancellation_is_cancelled_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sleeper = Sleeper(swallow=1)
    task = asyncio.create_task(sleeper.run(), name="stubborn")
    await asyncio.sleep(0)
    async with asyncio.timeout(10):  # a naive cancel() + await would wait forever here
        await cancel_and_wait(task, recancel_after=0.01)
    assert task.cancelled()
    assert sleeper.cancels == 2
    assert "task stubborn did not stop when cancelled" in caplog.text


async def test_an_obedient_task_is_cancelled_once_and_nothing_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sleeper = Sleeper(swallow=0)
    task = asyncio.create_task(sleeper.run())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert (task.cancelled(), sleeper.cancels, caplog.text) == (True, 1, "")


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
    for _ in range(3):  # the stopper cancels the inner task and waits for it
        await asyncio.sleep(0)
    assert not stopper.done()
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopper
    inner.cancel()  # the cleanup's sleep: now it ends
    with contextlib.suppress(asyncio.CancelledError):
        await inner


async def test_wait_woken_returns_when_set_and_clears_the_event() -> None:
    event = asyncio.Event()
    event.set()
    async with asyncio.timeout(10):
        await wait_woken(event, 3600)  # already set: at once
    assert not event.is_set()


async def test_wait_woken_returns_at_the_heartbeat_without_a_wake() -> None:
    event = asyncio.Event()
    async with asyncio.timeout(10):
        await wait_woken(event, 0.01)
    assert not event.is_set()


async def test_wait_woken_passes_a_cancellation_on_even_when_woken_at_the_same_moment() -> None:
    event = asyncio.Event()
    waiter = asyncio.create_task(wait_woken(event, 3600))
    await asyncio.sleep(0)
    event.set()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
