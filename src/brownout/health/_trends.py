"""The last minutes of each dependency and of the level, sampled once a second.

:class:`TrendRecorder` reads the breakers through their public API
(:meth:`~brownout.CircuitBreaker.totals` and ``state``) and the manager's
level, and keeps per dependency a ring of the last ``points`` samples
(900 at one a second: 15 minutes): requests per second, error rate, p95
latency, breaker state and how much of the component's admission is in use.
Memory is bounded: every series is a ``deque`` of fixed length.

Rates are the deltas of the lifetime totals between two samples: a
*request* is a call the breaker saw (succeeded, failed, ignored or rejected);
the *error rate* is the failed and rejected ones over them (``None`` with no
request). The p95 is estimated from the delta of the fixed-bucket duration
histogram (``brownout._histogram.DURATION_BUCKETS``; the component's
adapter's when it has one, else its breaker's), interpolated linearly inside
its bucket as Prometheus' ``histogram_quantile`` does; above the largest
bound it reads as that bound. ``in_use`` is the component's ``saturation``
(0..1, e.g. a bulkhead's) or ``None`` when it reports none.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from brownout._histogram import DURATION_BUCKETS
from brownout.health._model import Feature, Level

__all__ = ["TrendRecorder", "level_impacts", "quantile_from_buckets"]

logger = logging.getLogger("brownout.health.trends")

#: The series kept per dependency, in the order of a sample's tuple.
SERIES = ("t", "rps", "error_rate", "p95_ms", "state", "in_use")


def quantile_from_buckets(counts: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile (seconds) of per-bucket ``counts`` over ``DURATION_BUCKETS``.

    ``None`` when nothing was counted. Linear inside the bucket; the bucket above
    the largest bound reads as that bound.
    """
    if not 0.0 < q <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {q!r}")
    if len(counts) != len(DURATION_BUCKETS) + 1:
        raise ValueError(f"counts must have {len(DURATION_BUCKETS) + 1} buckets, got {len(counts)}")
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if count > 0 and seen + count >= rank:
            if i == len(DURATION_BUCKETS):
                return DURATION_BUCKETS[-1]
            lower = DURATION_BUCKETS[i - 1] if i else 0.0
            upper = DURATION_BUCKETS[i]
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
    return DURATION_BUCKETS[-1]  # pragma: no cover - rank <= total always stops above


def level_impacts(features: Iterable[Feature]) -> dict[str, str]:
    """One line per level, in plain words of what users are living with at that level.

    A feature is off at every level worse than its ``worst_level``; the line joins
    the ``when_off`` of the features off there (a feature without one reads
    "<description or name> is off"), each said once, in the features' order.

    >>> from brownout.health import Feature, Level
    >>> lines = level_impacts([
    ...     Feature("reports", worst_level=Level.DEGRADED, when_off="reports are off"),
    ...     Feature("writes", worst_level=Level.LIMITED, when_off="writes are being queued"),
    ... ])
    >>> lines["degraded"], lines["minimal"]
    ('everything works', 'reports are off; writes are being queued')
    """
    feats = list(features)
    out: dict[str, str] = {}
    for level in Level:
        said = dict.fromkeys(
            f.when_off or f"{f.description or f.name} is off"
            for f in feats
            if level > f.worst_level
        )
        out[level.label] = "; ".join(said) if said else "everything works"
    return out


def _buckets(component: Any, breaker_buckets: tuple[int, ...]) -> tuple[int, ...]:
    """The component's duration histogram: its adapter's (every operation summed; an
    adapter times every call) when it has one, else its breaker's (which times none
    on its untimed fast path: see ``docs/breaker.md``)."""
    adapter = component.adapter
    if adapter is None:
        return breaker_buckets
    summed = [0] * (len(DURATION_BUCKETS) + 1)
    for figures in adapter.stats.metrics().durations.values():
        for i, count in enumerate(figures.buckets):
            summed[i] += count
    return tuple(summed)


class _Dependency:
    __slots__ = ("last", "last_buckets", "last_t", "series")

    def __init__(self, points: int) -> None:
        self.last: Any = None
        self.last_buckets: tuple[int, ...] = ()
        self.last_t: float | None = None
        self.series: dict[str, deque[Any]] = {name: deque(maxlen=points) for name in SERIES}


class TrendRecorder:
    """Samples a :class:`~brownout.health.DegradationManager` every ``interval`` seconds.

    ``sample(now)`` takes one sample (tests call it with a fake clock);
    ``start()``/``stop()`` run it as an asyncio task. ``to_dict()`` is the
    JSON-ready series: numbers and state words only (no hosts, no errors).
    """

    def __init__(
        self,
        manager: Any,
        *,
        points: int = 900,
        interval: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(points, bool) or not isinstance(points, int) or points < 2:
            raise ValueError(f"TrendRecorder.points must be an int >= 2, got {points!r}")
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
            raise ValueError(f"TrendRecorder.interval must be a number > 0, got {interval!r}")
        self._manager = manager
        self.points = points
        self.interval = float(interval)
        self._clock = clock
        self._deps: dict[str, _Dependency] = {}
        self._level_t: deque[float] = deque(maxlen=points)
        self._level: deque[int] = deque(maxlen=points)
        self._task: asyncio.Task[None] | None = None

    def sample(self, now: float) -> None:
        """Take one sample at ``now`` (seconds since the epoch)."""
        level = self._manager.level
        self._level_t.append(now)
        self._level.append(int(level))
        for component in self._manager.components:
            breaker = component.breaker
            if breaker is None or not component.configured:
                continue
            dep = self._deps.get(component.name)
            if dep is None:
                dep = self._deps[component.name] = _Dependency(self.points)
            totals = breaker.totals()
            buckets = _buckets(component, totals.duration_buckets)
            rps = error_rate = p95_ms = None
            last = dep.last
            if last is not None and dep.last_t is not None and now > dep.last_t:
                dt = now - dep.last_t
                ok = max(0, totals.successes - last.successes)
                failed = max(0, totals.failures - last.failures)
                ignored = max(0, totals.ignored - last.ignored)
                rejected = max(0, totals.rejected - last.rejected)
                requests = ok + failed + ignored + rejected
                rps = requests / dt
                error_rate = (failed + rejected) / requests if requests else None
                if len(buckets) == len(dep.last_buckets):
                    delta = [max(0, a - b) for a, b in zip(buckets, dep.last_buckets, strict=True)]
                    p95 = quantile_from_buckets(delta, 0.95)
                    p95_ms = None if p95 is None else p95 * 1000.0
            in_use = None
            if component.saturation is not None:
                try:
                    in_use = float(component.saturation())
                except Exception:  # a figure must never stop the sampling
                    logger.debug("trends: saturation of %s unreadable", component.name)
            dep.last, dep.last_buckets, dep.last_t = totals, buckets, now
            for name, value in zip(
                SERIES, (now, rps, error_rate, p95_ms, str(breaker.state), in_use), strict=True
            ):
                dep.series[name].append(value)

    def to_dict(self) -> dict[str, Any]:
        """The series, column by column (``t`` in seconds since the epoch)."""
        return {
            "interval_s": self.interval,
            "points": self.points,
            "levels": [level.label for level in Level],
            "level_impacts": level_impacts(self._manager.features),
            "level": {"t": list(self._level_t), "value": list(self._level)},
            "dependencies": {
                name: {series: list(values) for series, values in dep.series.items()}
                for name, dep in self._deps.items()
            },
        }

    async def _run(self) -> None:
        while True:
            try:
                self.sample(self._clock())
            except Exception:  # keep sampling: one bad read must not end the trends
                logger.exception("trends: sampling failed")
            await asyncio.sleep(self.interval)

    async def start(self) -> None:
        """Sample every ``interval`` seconds in a task, until :meth:`stop`."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="brownout-trends")

    async def stop(self) -> None:
        """Stop sampling (the series stay)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
