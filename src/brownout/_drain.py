"""The background loop of the components that keep work for later (the outbox's
:class:`~brownout.outbox.Replayer`, the spool's :class:`~brownout.spool.SpoolUploader`).

One task per instance drains on a heartbeat and whenever :meth:`DrainLoop.wake` is
called (a watched breaker closed, new work was queued); a drain that raises (the
journal itself failed: a disk error) is logged and tried again at the next wait.
Subclasses define :meth:`DrainLoop.drain` and may shape the wait (:meth:`DrainLoop._cycle`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from brownout._aio import cancel_and_wait, wait_woken
from brownout._breaker import CircuitBreaker
from brownout._events import StateChange
from brownout._state import State

__all__ = ["DrainLoop"]


class DrainLoop:
    """Drain on a heartbeat and on :meth:`wake`; :meth:`watch` wakes on a breaker closing."""

    #: the background task's name, and the logger and prefix of its messages
    _task_name: ClassVar[str] = "brownout-drain"
    _logger: ClassVar[logging.Logger] = logging.getLogger("brownout")
    _label: ClassVar[str] = "drain"

    def __init__(self, heartbeat: float) -> None:
        if heartbeat <= 0:
            raise ValueError(
                f"{type(self).__name__}.heartbeat must be > 0 seconds, got {heartbeat!r}"
            )
        self.heartbeat = heartbeat
        self._lock = asyncio.Lock()  # one drain at a time
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: list[Callable[[], None]] = []

    async def drain(self) -> Any:
        """Do what can be done now; returns a report."""
        raise NotImplementedError

    def watch(self, breaker: CircuitBreaker) -> None:
        """Drain as soon as ``breaker`` (the dependency's) closes."""

        def on_change(event: StateChange) -> None:
            if event.to_state is State.CLOSED:
                self.wake()

        self._unsubscribe.append(breaker.add_listener(on_state_change=on_change))

    def wake(self) -> None:
        """Ask the background task to drain now (thread-safe; no-op before :meth:`start`)."""
        loop, event = self._loop, self._wake
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    async def start(self) -> None:
        """Drain on a heartbeat and whenever :meth:`wake` is called."""
        if self._task is not None and not self._task.done():
            return
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=self._task_name)

    async def _cycle(self) -> float:
        """One drain of the background task; returns the seconds to wait before the next
        (unless woken). The default: the heartbeat, whatever happened."""
        try:
            await self.drain()
        except asyncio.CancelledError:
            raise
        except Exception:  # the journal itself failed (disk): try again later
            self._logger.exception("%s failed", self._label)
        return self.heartbeat

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await wait_woken(self._wake, await self._cycle())

    async def stop(self) -> None:
        """Stop the background task and the breaker subscriptions."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        for undo in self._unsubscribe:
            undo()
        self._unsubscribe.clear()
