"""Concurrency-limit policies for a :class:`~brownout.overload.Bulkhead`.

A policy is a pure state machine: it is told of every finished call (its
round-trip time, how many calls were in flight when it started, whether it was
dropped: timed out or refused for overload) and answers the new limit. It does
no I/O and reads no clock; the bulkhead calls it under its own lock.

:class:`Gradient2` is the algorithm of Netflix's concurrency-limits library
(``Gradient2Limit``, https://github.com/Netflix/concurrency-limits): the limit
follows the ratio of a long-term average RTT to the latest RTT, so when a
dependency slows down the limit shrinks (at most halving per step), and when it
is fast and the bulkhead is busy the limit grows by a small queue allowance.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

__all__ = ["Gradient2", "LimitPolicy"]


@runtime_checkable
class LimitPolicy(Protocol):
    """What a bulkhead needs of an adaptive limit.

    ``limit`` is the current concurrency limit (a whole number >= 1);
    ``on_sample`` is called once per finished call with the bulkhead clock's
    time, the call's round-trip time in seconds, the calls in flight when it
    was admitted (itself included) and whether it was dropped, and returns the
    new ``limit``.
    """

    @property
    def limit(self) -> int: ...

    def on_sample(self, now: float, rtt: float, inflight: int, dropped: bool) -> int: ...


def _check_int(owner: str, name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{owner}.{name} must be an integer >= {low}, got {value!r}")
    return value


def _check_float(owner: str, name: str, value: object, low: float, high: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        raise ValueError(f"{owner}.{name} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


class Gradient2:
    """Netflix concurrency-limits' Gradient2 algorithm.

    Calls are aggregated over sampling windows (Netflix's ``WindowedLimit``:
    ``window`` seconds and at least ``min_samples`` calls; the window's RTT is
    the mean, its in-flight count the maximum, and it is "dropped" if any call
    was). At the end of every window::

        long_rtt  = exponential average of window RTTs over ~long_window windows
        if long_rtt / rtt > 2:   long_rtt *= 0.9        # recover fast once latency is back
        if inflight < limit / 2: keep the limit          # app-limited: no evidence either way
        gradient  = clamp(tolerance * long_rtt / rtt, 0.5, 1.0)
        new       = limit * gradient + queue_size
        limit     = clamp(limit * (1 - smoothing) + new * smoothing, min_limit, max_limit)

    A dropped call (timed out, refused for overload) counts as ``gradient =
    0.5``: it is the strongest sign of queueing there is, and its RTT is only
    a lower bound.

    Defaults, and why they differ from Netflix's: ``min_limit=1`` (Netflix: 20)
    because brownout guards one dependency from one process, whose connection
    pool is often smaller than 20, and the point is to fail fast when the
    dependency is slow; ``max_limit=200``, ``initial_limit=20``,
    ``smoothing=0.2``, ``queue_size=4``, ``long_window=600``,
    ``tolerance=1.5`` (a latency up to 1.5x the long-term average is not
    queueing), ``window=1.0`` s and ``min_samples=10`` as Netflix's: with one
    update per second, ``long_window=600`` is a ten-minute memory of what
    "normal" latency is, so a slowdown of minutes keeps the limit low.

    >>> g = Gradient2(initial_limit=10, window=1.0, min_samples=1)
    >>> for t in range(20):       # one window per second, steady 10 ms
    ...     _ = g.on_sample(t, 0.010, inflight=10, dropped=False)
    >>> g.limit > 10
    True
    >>> for t in range(20, 50):   # the dependency slows to 200 ms
    ...     _ = g.on_sample(t, 0.200, inflight=g.limit, dropped=False)
    >>> g.limit          # settles at 2 * queue_size while the long average still says 10 ms
    8
    """

    __slots__ = (
        "_count",
        "_estimate",
        "_factor",
        "_long",
        "_w_drop",
        "_w_end",
        "_w_inflight",
        "_w_n",
        "_w_sum",
        "initial_limit",
        "long_window",
        "max_limit",
        "min_limit",
        "min_samples",
        "queue_size",
        "smoothing",
        "tolerance",
        "window",
    )

    #: samples averaged plainly before the exponential average takes over (Netflix's warm-up)
    WARMUP = 10

    def __init__(
        self,
        *,
        initial_limit: int = 20,
        min_limit: int = 1,
        max_limit: int = 200,
        smoothing: float = 0.2,
        queue_size: int = 4,
        long_window: int = 600,
        tolerance: float = 1.5,
        window: float = 1.0,
        min_samples: int = 10,
    ) -> None:
        own = "Gradient2"
        self.min_limit = _check_int(own, "min_limit", min_limit, 1)
        self.max_limit = _check_int(own, "max_limit", max_limit, 1)
        if self.max_limit < self.min_limit:
            raise ValueError(
                f"Gradient2.max_limit ({max_limit}) must be >= min_limit ({min_limit})"
            )
        self.initial_limit = _check_int(own, "initial_limit", initial_limit, 1)
        if not self.min_limit <= self.initial_limit <= self.max_limit:
            raise ValueError(
                f"Gradient2.initial_limit must be in [min_limit, max_limit] = "
                f"[{min_limit}, {max_limit}], got {initial_limit}"
            )
        self.smoothing = _check_float(own, "smoothing", smoothing, 0.0, 1.0)
        if self.smoothing == 0.0:
            raise ValueError("Gradient2.smoothing must be > 0 (0 would never move the limit)")
        self.queue_size = _check_int(own, "queue_size", queue_size, 0)
        self.long_window = _check_int(own, "long_window", long_window, 1)
        self.tolerance = _check_float(own, "tolerance", tolerance, 1.0, 100.0)
        self.window = _check_float(own, "window", window, 0.0, 3600.0)
        self.min_samples = _check_int(own, "min_samples", min_samples, 1)
        self._w_end = -math.inf  # the current window ends then (starts with the first sample)
        self._w_sum = 0.0
        self._w_n = 0
        self._w_inflight = 0
        self._w_drop = False
        self._estimate = float(self.initial_limit)
        self._long = 0.0
        self._count = 0
        self._factor = 2.0 / (self.long_window + 1)

    @property
    def limit(self) -> int:
        return int(self._estimate)

    @property
    def long_rtt(self) -> float:
        """The long-term average RTT in seconds (0 before the first sample)."""
        return self._long

    def on_sample(self, now: float, rtt: float, inflight: int, dropped: bool) -> int:
        if self._w_end == -math.inf:
            self._w_end = now + self.window
        self._w_n += 1
        self._w_sum += rtt
        if inflight > self._w_inflight:
            self._w_inflight = inflight
        self._w_drop = self._w_drop or dropped
        if now < self._w_end or self._w_n < self.min_samples:
            return int(self._estimate)
        mean = self._w_sum / self._w_n
        inflight, dropped = self._w_inflight, self._w_drop
        self._w_end = now + self.window
        self._w_n = self._w_inflight = 0
        self._w_sum = 0.0
        self._w_drop = False
        return self._update(mean, inflight, dropped)

    def _update(self, rtt: float, inflight: int, dropped: bool) -> int:
        # a zero RTT (a coarse clock) carries no information about queueing
        if rtt > 0.0:
            if self._count < self.WARMUP:
                self._count += 1
                self._long += (rtt - self._long) / self._count
            else:
                self._long += (rtt - self._long) * self._factor
            if self._long / rtt > 2.0:
                self._long *= 0.9
        elif not dropped:
            return int(self._estimate)
        estimate = self._estimate
        if dropped:
            gradient = 0.5
        elif inflight < estimate / 2:
            return int(estimate)
        else:
            gradient = max(0.5, min(1.0, self.tolerance * self._long / rtt))
        new = estimate * gradient + self.queue_size
        new = estimate * (1.0 - self.smoothing) + new * self.smoothing
        self._estimate = max(self.min_limit, min(self.max_limit, new))
        return int(self._estimate)

    def __repr__(self) -> str:
        return f"Gradient2(limit={self.limit}, long_rtt={self._long:.6f})"
