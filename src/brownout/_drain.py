"""The background loop of the components that keep work for later (the outbox's
:class:`~brownout.outbox.Replayer`, the spool's :class:`~brownout.spool.SpoolUploader`).

One task per instance drains on a heartbeat and whenever :meth:`DrainLoop.wake` is
called (a watched breaker closed, new work was queued); a drain that raises (the
journal itself failed: a disk error) is logged and tried again at the next wait.
Subclasses define :meth:`DrainLoop.drain` and may shape the wait (:meth:`DrainLoop._cycle`).

Several processes sharing one journal (the workers of one service) call
:meth:`DrainLoop.share` with a lease file next to it: each drain then takes that
exclusive lease (:class:`~brownout._lease.FileLease`, an ``flock`` the kernel ends
when its holder dies) or, when another process holds it, skips its turn and tries
again after :data:`BUSY_WAIT` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from brownout._aio import cancel_and_wait, wait_woken
from brownout._breaker import CircuitBreaker
from brownout._events import StateChange
from brownout._lease import FileLease
from brownout._state import State

__all__ = ["BUSY_WAIT", "DrainLoop"]

#: Seconds before a drain that found another process draining tries again (at most the
#: heartbeat): work queued by this process while the other drained is taken soon after.
BUSY_WAIT = 1.0


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
        self._lease: FileLease | None = None
        self._busy = False  # the last drain found another process draining

    def share(self, lease: str | os.PathLike[str]) -> None:
        """Drain under the exclusive lease ``lease`` (a file), shared with the other
        processes whose loops drain the same journal: one drains at a time."""
        if self._lease is not None:
            self._lease.close()
        self._lease = FileLease(lease)

    @contextmanager
    def _exclusive(self) -> Iterator[bool]:
        """(In :meth:`drain`.) Whether this process may drain now: always when not
        shared, else while it holds the lease (released at the end of the block)."""
        lease = self._lease
        if lease is None:
            self._busy = False
            yield True
            return
        if not lease.try_acquire():
            self._busy = True
            yield False
            return
        self._busy = False
        try:
            yield True
        finally:
            lease.release()

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
        return self._wait(self.heartbeat)

    def _wait(self, wait: float) -> float:
        """``wait``, or :data:`BUSY_WAIT` if shorter when the drain found another
        process draining (what this one queued meanwhile is taken soon)."""
        return min(wait, BUSY_WAIT) if self._busy else wait

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
