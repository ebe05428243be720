"""Helpers for testing code that uses brownout: :class:`FakeClock` for time read from an
injected clock, :func:`eventually` / :func:`aeventually` for waiting on real background
work (threads, processes, sockets) without fixed sleeps.

>>> clock = FakeClock()
>>> clock()
0.0
>>> clock.advance(20)
>>> clock()
20.0
"""

from __future__ import annotations

import threading

from brownout._clock import Duration, to_seconds
from brownout.testing._eventually import aeventually, eventually

__all__ = ["FakeClock", "aeventually", "eventually"]


class FakeClock:
    """A monotonic clock that only moves when told to.

    Pass it as ``clock=`` to a :class:`~brownout.CircuitBreaker` (or anything
    else in brownout that takes a clock) and move time with :meth:`advance`
    instead of sleeping.
    """

    __slots__ = ("_lock", "_now")

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now

    @property
    def now(self) -> float:
        return self._now

    def advance(self, seconds: Duration) -> None:
        """Move the clock forward by ``seconds`` (a float or a timedelta)."""
        delta = to_seconds(seconds)
        if delta < 0:
            raise ValueError(f"FakeClock.advance: seconds must be >= 0, got {delta}")
        with self._lock:
            self._now += delta

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now})"
