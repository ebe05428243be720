"""One background run of an async job at a time, started from sync code on the loop.

The replica's shared-invalidation flush (:mod:`inventario.fleet_cache`) and its read
snapshot's refresh (:mod:`inventario.snapshot`) are both started by triggers that may
come often (every heartbeat, every failed cache call) and must not pile up: a trigger
while a run is going on is dropped (the run in progress does the work), a trigger off
the event loop is dropped too (the next one on the loop starts it), and a failed run
is logged, never raised into the trigger.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["BackgroundJob", "on_heartbeat"]


def on_heartbeat(manager: Any, fn: Callable[[], None]) -> Callable[[], None] | None:
    """Call ``fn()`` on every heartbeat evaluation of the degradation ``manager``; the
    unsubscribe function its ``add_listener`` returned (``None`` if it returned none)."""

    def on_evaluation(evaluation: Any) -> None:
        if "heartbeat" in str(getattr(evaluation, "trigger", "")):
            fn()

    undo = manager.add_listener(on_evaluation)
    return undo if callable(undo) else None


class BackgroundJob:
    """``job()`` run as a task on the running loop by :meth:`start`, one at a time.

    ``what`` names it in the debug line a failure logs (only the error's type: its
    text may hold a DSN)."""

    def __init__(
        self, job: Callable[[], Awaitable[object]], logger: logging.Logger, what: str
    ) -> None:
        self._job = job
        self._logger = logger
        self._what = what
        self.task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def start(self) -> None:
        """Start a run unless one is going on or no event loop runs in this thread."""
        if self.running:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self.task = loop.create_task(self._run())

    async def _run(self) -> None:
        try:
            await self._job()
        except Exception as exc:
            self._logger.debug("%s failed: %s", self._what, type(exc).__name__)

    async def cancel(self) -> None:
        """Cancel a run going on and wait for it to end."""
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
