"""Stopping background tasks reliably.

Python 3.11's ``asyncio.wait_for`` can swallow a cancellation: when the task
running it is cancelled in the same loop iteration as the awaited thing
completes, ``wait_for`` returns the result and the task goes on as if nothing
happened (fixed in 3.12, where ``wait_for`` is built on ``asyncio.timeout``).
A background loop that waits for "wake up or heartbeat" with ``wait_for`` then
never ends, and whoever awaits it after ``cancel()`` waits forever. brownout
waits with ``asyncio.timeout`` instead (which never swallows a cancellation),
(:func:`wait_woken`), and stops its tasks with :func:`cancel_and_wait`, which
also copes with a task that swallowed one anyway (a user's callback may).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

__all__ = ["cancel_and_wait", "retrieve", "wait_woken"]

logger = logging.getLogger("brownout")

RECANCEL_AFTER = 0.5  # seconds a cancelled task gets before it is cancelled again


def retrieve(future: asyncio.Future[Any]) -> None:
    """Read a finished background future's outcome that nobody else will (a done
    callback, or after the fact), so asyncio logs no "exception was never retrieved"."""
    if not future.cancelled():
        future.exception()


async def wait_woken(event: asyncio.Event, heartbeat: float) -> None:
    """Wait until ``event`` is set or ``heartbeat`` seconds have passed, then clear it:
    the "woken, or the heartbeat is due" wait of a background loop."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(heartbeat):
            await event.wait()
    event.clear()


async def cancel_and_wait(
    task: asyncio.Task[Any], *, recancel_after: float = RECANCEL_AFTER
) -> None:
    """Cancel ``task`` and return once it has ended, cancelling it again every
    ``recancel_after`` seconds while it is still running (it swallowed the
    cancellation). The task's own error, if it ended with one, is logged, not
    raised. If the caller is cancelled meanwhile, that cancellation propagates
    and ``task`` is left with the one cancel it already had."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=recancel_after)
        if not task.done():
            logger.warning(
                "task %s did not stop when cancelled: cancelling it again", task.get_name()
            )
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.error("task %s ended with an error", task.get_name(), exc_info=exc)
