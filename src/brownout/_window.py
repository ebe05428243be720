"""Sliding windows of call outcomes: count-based and time-based (bucketed).

The count window counts successes with a :func:`new_counter`: ``next()`` on
it is a single C-level operation, atomic under the GIL, that allocates
nothing, so the breaker records a successful call without taking its lock (the
breaker's hot path), and the same counter gives the breaker its lifetime count
of successes for free.
Failures and slow calls are recorded under the breaker's lock with their
position in the sequence of calls (successes so far + failures so far), so
"the last N calls" is still exact: a failure is in the window while its
position is among the last ``size`` positions.

``clear()`` does not empty a window in place: it starts a new success counter,
and so does ``retire()``, which keeps the count. The breaker retires the
counter on every transition: a call admitted before holds the old counter and
advances it when it succeeds, so a stale success can never land in a later
period, and "is my counter still the current one" tells a call whether the
breaker moved on since it was admitted.

The time window is a ring of ``ceil(duration / bucket)`` buckets, so its
memory is O(buckets) whatever the call rate; it is only touched under the
breaker's lock.

Both keep the run of consecutive failures as a plain number (not bounded by
the window), read by the breaker's ``consecutive_failures`` trip condition and
its snapshot.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections import deque
from typing import TypeAlias

#: A counter starts this high and counts down: far more calls than a process makes.
_COUNTER_START = 1 << 62

#: A lock-free counter: ``next(counter)`` counts one (returns ``None``).
Counter: TypeAlias = "itertools.repeat[None]"


def new_counter() -> Counter:
    """A lock-free counter: ``next()`` on it counts one, :func:`count_value` reads it.

    An ``itertools.repeat(None, n)`` counts its remaining items down in C and
    returns the same ``None`` every time: unlike ``itertools.count`` it
    allocates no int per call, which makes it as cheap as a ``deque.append``.
    """
    return itertools.repeat(None, _COUNTER_START)


def count_value(counter: Counter) -> int:
    """How often ``next()`` was called on a :func:`new_counter`."""
    return _COUNTER_START - operator.length_hint(counter)


class CountWindow:
    """The outcomes of the last ``size`` calls.

    ``successes`` is advanced without a lock by the breaker's fast path;
    everything else is changed under the breaker's lock.
    """

    __slots__ = (
        "_done",
        "_fail_at",
        "_failures",
        "_run",
        "_run_at",
        "_slow_at",
        "size",
        "successes",
    )

    def __init__(self, size: int) -> None:
        self.size = size
        self.successes = new_counter()
        self._done = 0  # successes counted by retired counters
        self._failures = 0
        # positions (0-based index in this period's sequence of calls) of the last failures
        # and slow calls; a window of ``size`` calls holds at most ``size`` of each
        self._fail_at: deque[int] = deque(maxlen=size)
        self._slow_at: deque[int] = deque(maxlen=size)
        self._run = 0  # consecutive failures ...
        self._run_at = -1  # ... all recorded after this many successes

    def record(self, now: float, failed: bool, slow: bool) -> None:
        if failed:
            done = self._successes()
            pos = done + self._failures
            self._failures += 1
            self._fail_at.append(pos)
            if self._run_at == done:
                self._run += 1
            else:
                self._run, self._run_at = 1, done
        else:
            pos = self._successes() + self._failures
            next(self.successes)
        if slow:
            self._slow_at.append(pos)

    def totals(self, now: float) -> tuple[int, int, int]:
        """(calls, failures, slow calls) in the window."""
        total = self._successes() + self._failures
        oldest = total - self.size
        return (
            min(total, self.size),
            _at_or_after(self._fail_at, oldest),
            _at_or_after(self._slow_at, oldest),
        )

    def trailing_failures(self) -> int:
        """The failures recorded since the last success (not bounded by the window)."""
        return self._run if self._run_at == self._successes() else 0

    def _successes(self) -> int:
        return self._done + count_value(self.successes)

    def retire(self) -> None:
        """Go on counting with a new success counter (under the breaker's lock)."""
        old, self.successes = self.successes, new_counter()
        self._done += count_value(old)

    def resize(self, size: int) -> None:
        """Change the window's length, keeping what the new length can hold."""
        self.size = size
        self._fail_at = deque(self._fail_at, maxlen=size)
        self._slow_at = deque(self._slow_at, maxlen=size)

    def clear(self) -> None:
        self.successes = new_counter()
        self._done = 0
        self._failures = 0
        self._fail_at.clear()
        self._slow_at.clear()
        self._run, self._run_at = 0, -1


def _at_or_after(positions: deque[int], oldest: int) -> int:
    """How many of the (increasing) positions are >= ``oldest``."""
    n = 0
    for pos in reversed(positions.copy()):
        if pos < oldest:
            break
        n += 1
    return n


class TimeWindow:
    """The outcomes of the last ``duration`` seconds, in ``ceil(duration/bucket)`` buckets."""

    __slots__ = (
        "_bucket",
        "_calls",
        "_epochs",
        "_failures",
        "_n",
        "_run",
        "_slow",
        "duration",
        "successes",
    )

    def __init__(self, duration: float, bucket: float) -> None:
        self.duration = duration
        self._bucket = bucket
        self._n = max(1, math.ceil(duration / bucket - 1e-9))
        self._epochs = [-1] * self._n
        self._calls = [0] * self._n
        self._failures = [0] * self._n
        self._slow = [0] * self._n
        self._run = 0
        # successes of this period (the breaker's lifetime count reads it, as for CountWindow)
        self.successes = new_counter()

    @property
    def buckets(self) -> int:
        return self._n

    @property
    def bucket(self) -> float:
        return self._bucket

    def record(self, now: float, failed: bool, slow: bool) -> None:
        epoch = int(now // self._bucket)
        i = epoch % self._n
        if self._epochs[i] != epoch:
            self._epochs[i] = epoch
            self._calls[i] = self._failures[i] = self._slow[i] = 0
        self._calls[i] += 1
        if failed:
            self._failures[i] += 1
            self._run += 1
        else:
            next(self.successes)
            self._run = 0
        if slow:
            self._slow[i] += 1

    def totals(self, now: float) -> tuple[int, int, int]:
        """(calls, failures, slow calls) in the last ``duration`` seconds."""
        oldest = int(now // self._bucket) - self._n + 1
        calls = failures = slow = 0
        for i, epoch in enumerate(self._epochs):
            if epoch >= oldest:
                calls += self._calls[i]
                failures += self._failures[i]
                slow += self._slow[i]
        return calls, failures, slow

    def trailing_failures(self) -> int:
        """The failures recorded since the last success (not bounded by the window)."""
        return self._run

    def retire(self) -> None:
        """Go on with a new success counter (only the breaker's lifetime count reads it)."""
        self.successes = new_counter()

    def clear(self) -> None:
        self._epochs = [-1] * self._n
        self._calls = [0] * self._n
        self._failures = [0] * self._n
        self._slow = [0] * self._n
        self._run = 0
        self.successes = new_counter()
