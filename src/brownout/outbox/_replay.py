"""Draining the outbox: apply each intent once, FIFO per stream, when the database is back."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from brownout._aio import cancel_and_wait, wait_woken
from brownout._breaker import CircuitBreaker
from brownout._errors import BreakerOpen
from brownout._events import StateChange
from brownout._redact import redact
from brownout._state import State
from brownout.outbox._journal import Intent, Outbox, next_backoff

__all__ = ["ReplayReport", "Replayer"]

logger = logging.getLogger("brownout.outbox")

Apply = Callable[[Intent], Awaitable[None]]


@dataclass
class ReplayReport:
    """What one :meth:`Replayer.drain` did."""

    applied: int = 0
    failed: int = 0  # caller errors (retried later, or dead-lettered)
    dead: int = 0
    stopped: str | None = None  # why it stopped early: the dependency is failing
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


class Replayer:
    """Applies the outbox's intents with ``apply``, when the dependency can take them.

    ``apply(intent)`` must apply the intent's effect in one database transaction
    that also records ``intent.key`` (see :class:`~brownout.outbox.SqlApplier`),
    so applying twice has no second effect. An error for which ``is_outage(exc)``
    is true (default: the breaker rejected the call, or the adapter's error
    table counts the error) stops the drain: the dependency is down, try later.
    Any other error is the intent's own problem: it is retried with backoff and
    dead-lettered after the outbox's ``max_attempts`` (at once if the error has a
    true ``permanent`` attribute: retrying cannot help), and never blocks its
    stream forever; other streams go on.
    """

    def __init__(
        self,
        outbox: Outbox,
        apply: Apply,
        *,
        is_outage: Callable[[BaseException], bool] | None = None,
        heartbeat: float = 5.0,
        backoff: tuple[float, float] = (1.0, 60.0),
    ) -> None:
        if heartbeat <= 0:
            raise ValueError(f"Replayer.heartbeat must be > 0 seconds, got {heartbeat!r}")
        self.outbox = outbox
        self._apply = apply
        self._is_outage = is_outage or _default_is_outage(apply)
        self.heartbeat = heartbeat
        self._backoff = backoff
        self._lock = asyncio.Lock()
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        self.last_report: ReplayReport | None = None

    def watch(self, breaker: CircuitBreaker) -> None:
        """Drain as soon as ``breaker`` closes (the database is back)."""

        def on_change(event: StateChange) -> None:
            if event.to_state is State.CLOSED:
                self.wake()

        self._unsubscribe.append(breaker.add_listener(on_state_change=on_change))

    def wake(self) -> None:
        """Ask the background task to drain now (thread-safe)."""
        loop, event = self._loop, self._wake
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    async def drain(self, *, limit: int | None = None) -> ReplayReport:
        """Apply what can be applied now; returns what happened."""
        async with self._lock:
            report = ReplayReport()
            start = time.perf_counter()
            while limit is None or report.applied < limit:
                heads = await asyncio.to_thread(self.outbox.heads)
                if not heads:
                    break
                progressed = False
                for intent in heads:
                    began = time.perf_counter()
                    try:
                        await self._apply(intent)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        reason = redact(f"{type(exc).__name__}: {exc}")
                        if self._is_outage(exc):
                            report.stopped = reason
                            break
                        report.failed += 1
                        report.errors.append(f"{intent.key}: {reason}")
                        base, cap = self._backoff
                        dead = await asyncio.to_thread(
                            self.outbox.mark_failed,
                            intent,
                            reason,
                            backoff=next_backoff(intent.attempts + 1, base, cap),
                            final=bool(getattr(exc, "permanent", False)),
                        )
                        if dead:
                            report.dead += 1
                            logger.warning(
                                "outbox: intent %s (%s) dead-lettered after %d attempts: %s",
                                intent.key,
                                intent.operation,
                                intent.attempts + 1,
                                reason,
                            )
                        continue
                    await asyncio.to_thread(
                        self.outbox.mark_applied, intent, seconds=time.perf_counter() - began
                    )
                    report.applied += 1
                    progressed = True
                if report.stopped or not progressed:
                    break
            report.seconds = time.perf_counter() - start
            self.last_report = report
            if report.applied or report.dead:
                logger.info(
                    "outbox: replayed %d, dead-lettered %d in %.3f s%s",
                    report.applied,
                    report.dead,
                    report.seconds,
                    f"; stopped: {report.stopped}" if report.stopped else "",
                )
            return report

    async def start(self) -> None:
        """Drain on a heartbeat and whenever :meth:`wake` is called."""
        if self._task is not None and not self._task.done():
            return
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="brownout-outbox-replayer")

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            try:
                await self.drain()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("outbox: replay failed")
            await wait_woken(self._wake, self.heartbeat)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        for undo in self._unsubscribe:
            undo()
        self._unsubscribe.clear()


def _default_is_outage(apply: Any) -> Callable[[BaseException], bool]:
    errors = getattr(getattr(apply, "database", None), "errors", None)

    def is_outage(exc: BaseException) -> bool:
        if isinstance(exc, BreakerOpen):
            return True
        if errors is not None:
            return bool(errors.counts(exc))
        return isinstance(exc, OSError | TimeoutError | ConnectionError)

    return is_outage
