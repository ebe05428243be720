"""Sliding windows of call outcomes: count-based and time-based (bucketed).

The count window keeps outcomes in ``collections.deque`` objects with a
``maxlen``: appending is a single C-level operation, atomic under the GIL,
so the breaker records a successful call without taking its lock (the
breaker's hot path). Everything that reads several values at once (totals,
the run of trailing failures) first takes an atomic copy.

The time window is a ring of ``ceil(duration / bucket)`` buckets, so its
memory is O(buckets) whatever the call rate; it is only touched under the
breaker's lock.
"""

from __future__ import annotations

import math
from collections import deque
from itertools import islice

_SUCCESS = 0
_FAILURE = 1


def _trailing_ones(outcomes: deque[int], limit: int) -> int:
    """How many of the last (up to ``limit``) outcomes are failures, counted from the end."""
    run = 0
    # copy() is one C call, atomic under the GIL; iterating the live deque is not: the
    # lock-free fast path of another thread may append between reversed() and list()
    for value in islice(reversed(outcomes.copy()), limit):
        if value != _FAILURE:
            break
        run += 1
    return run


class CountWindow:
    """The outcomes of the last ``size`` calls.

    ``outcomes`` may be longer than ``size`` (``keep``) so that a run of
    consecutive failures longer than the window can still be counted.
    """

    __slots__ = ("outcomes", "size", "slows")

    def __init__(self, size: int, keep: int = 0) -> None:
        self.size = size
        self.outcomes: deque[int] = deque(maxlen=max(size, keep))
        self.slows: deque[int] = deque(maxlen=size)

    def record(self, now: float, failed: bool, slow: bool) -> None:
        self.outcomes.append(_FAILURE if failed else _SUCCESS)
        self.slows.append(1 if slow else 0)

    def totals(self, now: float) -> tuple[int, int, int]:
        """(calls, failures, slow calls) in the window."""
        outcomes = self.outcomes
        if outcomes.maxlen == self.size:
            copy = outcomes.copy()
        else:
            copy = deque(islice(reversed(outcomes.copy()), self.size))
        return len(copy), sum(copy), sum(self.slows)

    def trailing_failures(self, limit: int) -> int:
        return _trailing_ones(self.outcomes, limit)

    def clear(self) -> None:
        self.outcomes.clear()
        self.slows.clear()


class TimeWindow:
    """The outcomes of the last ``duration`` seconds, in ``ceil(duration/bucket)`` buckets."""

    __slots__ = ("_bucket", "_calls", "_epochs", "_failures", "_n", "_recent", "_slow")

    def __init__(self, duration: float, bucket: float, keep: int = 0) -> None:
        self._bucket = bucket
        self._n = max(1, math.ceil(duration / bucket - 1e-9))
        self._epochs = [-1] * self._n
        self._calls = [0] * self._n
        self._failures = [0] * self._n
        self._slow = [0] * self._n
        self._recent: deque[int] = deque(maxlen=max(keep, 1))

    @property
    def buckets(self) -> int:
        return self._n

    def record(self, now: float, failed: bool, slow: bool) -> None:
        epoch = int(now // self._bucket)
        i = epoch % self._n
        if self._epochs[i] != epoch:
            self._epochs[i] = epoch
            self._calls[i] = self._failures[i] = self._slow[i] = 0
        self._calls[i] += 1
        if failed:
            self._failures[i] += 1
        if slow:
            self._slow[i] += 1
        self._recent.append(_FAILURE if failed else _SUCCESS)

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

    def trailing_failures(self, limit: int) -> int:
        return _trailing_ones(self._recent, limit)

    def clear(self) -> None:
        self._epochs = [-1] * self._n
        self._calls = [0] * self._n
        self._failures = [0] * self._n
        self._slow = [0] * self._n
        self._recent.clear()
