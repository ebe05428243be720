"""Draining the outbox: apply each intent once, FIFO per stream, when the database is back."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from brownout._drain import DrainLoop
from brownout._errors import BreakerOpen
from brownout._outage import default_is_outage
from brownout._redact import redact
from brownout.outbox._journal import Intent, Outbox, next_backoff

__all__ = ["ReplayReport", "Replayer", "outage_wait", "stopped_in_a_row"]

logger = logging.getLogger("brownout.outbox")

Apply = Callable[[Intent], Awaitable[None]]


@dataclass
class ReplayReport:
    """What one :meth:`Replayer.drain` did."""

    applied: int = 0
    failed: int = 0  # caller errors (retried later, or dead-lettered)
    dead: int = 0
    stopped: str | None = None  # why it stopped early: the dependency is failing
    rejected: bool = False  # stopped by an open breaker (it paces the retries itself)
    busy: bool = False  # not tried: another process was draining (see DrainLoop.share)
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


class Replayer(DrainLoop):
    """Applies the outbox's intents with ``apply``, when the dependency can take them.

    ``apply(intent)`` must apply the intent's effect in one database transaction
    that also records ``intent.key`` (see :class:`~brownout.outbox.SqlApplier`),
    so applying twice has no second effect.

    An error for which ``is_outage(exc)`` is true stops the drain: the dependency
    is down (or not ready), try later. Such an error is never held against the
    intent: it stays pending, with the error as its ``last_error``, however long
    the outage lasts; while it lasts the background task tries again after a
    growing wait (:func:`outage_wait`: the heartbeat, doubled per failed drain up
    to ``backoff``'s cap) or at once when :meth:`wake` is called (the breaker
    closed). The default ``is_outage`` is :func:`brownout._outage.default_is_outage`
    of ``apply.database`` (the breaker rejected the call, the adapter's error
    table counts the error, or, without a table, an ``OSError``), or'ed with
    ``apply.not_ready(exc)`` where ``apply`` has one (:class:`SqlApplier`: a table
    is missing: the schema is not created yet).

    ``prepare()`` (optional: e.g. create the schema the intents need) runs before
    the first drain and again before each one until it succeeds once (the
    database may not exist yet when the service starts); until then the drain
    stops as for an outage, on the same growing wait, and nothing is tried.

    Any other error is the intent's own problem: it is retried with backoff and
    dead-lettered, with the error as its reason, after the outbox's
    ``max_attempts`` (at once if the error has a true ``permanent`` attribute:
    retrying cannot help). It never blocks its stream forever; other streams go on.

    ``apply`` may also have ``apply_batch(intents, stop=is_outage)`` returning, per
    intent, ``True`` (applied and committed), ``False`` (not tried) or its error:
    the replayer then hands it up to ``batch_size`` intents at a time.
    """

    def __init__(
        self,
        outbox: Outbox,
        apply: Apply,
        *,
        is_outage: Callable[[BaseException], bool] | None = None,
        heartbeat: float = 5.0,
        backoff: tuple[float, float] = (1.0, 60.0),
        prepare: Callable[[], Awaitable[object]] | None = None,
        batch_size: int = 200,
    ) -> None:
        super().__init__(heartbeat)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"Replayer.batch_size must be an int >= 1, got {batch_size!r}")
        self.batch_size = batch_size
        self.outbox = outbox
        self._apply = apply
        self._prepare = prepare
        self._prepared = prepare is None
        self._is_outage = is_outage or default_is_outage(
            getattr(apply, "database", None), not_ready=getattr(apply, "not_ready", None)
        )
        self._backoff = backoff
        self._stopped = 0  # drains in a row stopped by an outage
        self.last_report: ReplayReport | None = None
        self._not_ready = ""

    @property
    def prepared(self) -> bool:
        """True once ``prepare`` succeeded (always, without one)."""
        return self._prepared

    async def ensure_prepared(self) -> bool:
        """Run ``prepare`` now unless it already succeeded; whether it has.

        A failure is logged (a warning, the error in one line) and left for the next
        drain to try again: ``prepare`` typically creates the schema, and the
        database may not be there yet.
        """
        if self._prepared or self._prepare is None:
            return True
        try:
            await self._prepare()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._not_ready = _reason(exc)
            logger.warning("outbox: not ready, tried again later: %s", self._not_ready)
            return False
        self._prepared = True
        logger.info("outbox: ready")
        return True

    def prepare_again(self) -> None:
        """Run ``prepare`` again before the next drain (e.g. the tables it creates were
        lost), and drain soon."""
        if self._prepare is not None:
            self._prepared = False
            self.wake()

    async def drain(self, *, limit: int | None = None) -> ReplayReport:
        """Apply what can be applied now; returns what happened.

        Intents go in batches of up to ``batch_size`` (oldest first, FIFO per
        stream, see :meth:`Outbox.batch`): with an applier that has
        ``apply_batch`` (:class:`~brownout.outbox.SqlApplier`) a batch is one
        database transaction, and the journal update of a batch is one journal
        transaction; a failing intent is isolated, the rest of its batch applied.
        """
        with self._exclusive() as mine:
            if not mine:  # another process (or drain) is at it: it takes what is queued
                return ReplayReport(busy=True)
            return await self._drain_locked(limit)

    async def _drain_locked(self, limit: int | None) -> ReplayReport:
        async with self._lock:
            report = ReplayReport()
            start = time.perf_counter()
            if not await self.ensure_prepared():
                report.stopped = f"not ready: {self._not_ready}"
            while not report.stopped and (limit is None or report.applied < limit):
                size = (
                    self.batch_size
                    if limit is None
                    else min(self.batch_size, limit - report.applied)
                )
                batch = await asyncio.to_thread(self.outbox.batch, size)
                if not batch:
                    break
                began = time.perf_counter()
                outcomes = await self._apply_batch(batch)
                each = (time.perf_counter() - began) / len(batch)
                applied = [i for i, outcome in zip(batch, outcomes, strict=True) if outcome is True]
                if applied:
                    await asyncio.to_thread(self.outbox.mark_applied_many, applied, seconds=each)
                    report.applied += len(applied)
                dead = report.dead
                for intent, outcome in zip(batch, outcomes, strict=True):
                    if isinstance(outcome, BaseException):
                        await self._failed(intent, outcome, report)
                if report.stopped or (not applied and report.dead == dead):
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

    async def _apply_batch(self, batch: list[Intent]) -> list[bool | Exception]:
        """``apply.apply_batch`` where the applier has one, else ``apply`` intent by
        intent: ``True`` applied, ``False`` not tried (after a failure in its stream,
        or after an outage), or the intent's error."""
        apply_batch = getattr(self._apply, "apply_batch", None)
        if apply_batch is not None:
            outcomes: list[bool | Exception] = await apply_batch(batch, stop=self._is_outage)
            return outcomes
        outcomes = [False] * len(batch)
        blocked: set[str] = set()
        for n, intent in enumerate(batch):
            if intent.stream in blocked:
                continue
            try:
                await self._apply(intent)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                outcomes[n] = exc
                blocked.add(intent.stream)
                if self._is_outage(exc):
                    break
            else:
                outcomes[n] = True
        return outcomes

    async def _failed(self, intent: Intent, exc: Exception, report: ReplayReport) -> None:
        reason = _reason(exc)
        if self._is_outage(exc):
            report.stopped = reason
            report.rejected = isinstance(exc, BreakerOpen)
            # shown by /writes/{key}: why it waits (not an attempt)
            await asyncio.to_thread(self.outbox.mark_waiting, intent, reason)
            return
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

    _task_name = "brownout-outbox-replayer"
    _logger = logger
    _label = "outbox: replay"

    async def _cycle(self) -> float:
        """One drain; after an outage stopped it, the next waits longer (:func:`outage_wait`)."""
        try:
            report = await self.drain()
            self._stopped = stopped_in_a_row(report, self._stopped)
        except asyncio.CancelledError:
            raise
        except Exception:  # the journal itself failed (disk): try again later
            self._stopped += 1
            logger.exception("outbox: replay failed")
        if self._stopped == 1 and self.last_report is not None:
            logger.warning(
                "outbox: %d intents wait for the database: %s",
                self.outbox.pending_count(),
                self.last_report.stopped,
            )
        return self._wait(outage_wait(self._stopped, self.heartbeat, self._backoff[1]))


def stopped_in_a_row(report: ReplayReport, before: int) -> int:
    """How many drains in a row an outage stopped, after ``report``: it backs off the
    next one (:func:`outage_wait`). A drain an open breaker stopped does not count: the
    breaker rejects at no cost until its own wait is over, and only a call let through
    then (half-open) can find the database back and close it; waiting longer than the
    heartbeat would only delay the replay after a recovery."""
    if report.stopped is None or report.rejected:
        return 0
    return before + 1


def outage_wait(stopped: int, heartbeat: float, cap: float) -> float:
    """Seconds before the next drain after ``stopped`` drains in a row stopped by an
    outage: the heartbeat, then doubling up to ``cap`` (never below the heartbeat)."""
    if stopped <= 1:
        return heartbeat
    return max(heartbeat, min(cap, heartbeat * 2.0 ** (stopped - 1)))


def _reason(exc: BaseException) -> str:
    """The error in one line, secrets removed (SQLAlchemy appends the statement and a
    link on further lines: they say nothing an operator acts on)."""
    text = redact(f"{type(exc).__name__}: {exc}")
    return text.splitlines()[0] if text else type(exc).__name__
