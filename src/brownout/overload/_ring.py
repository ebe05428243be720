"""Two counts over a sliding time window, in a ring of buckets.

Shared by the adaptive throttle (requests, accepts) and the retry budget
(requests, retries). The ring has ``buckets`` slots of ``window / buckets``
seconds each, so memory is O(buckets) whatever the rate; a bucket is reset
when time comes round to it again. The caller holds its own lock around every
method: nothing here is thread-safe by itself.
"""

from __future__ import annotations

import math

__all__ = ["Ring"]


class Ring:
    """Counts ``a`` and ``b`` over the last ``window`` seconds (to within one bucket)."""

    __slots__ = ("_a", "_b", "_epoch", "_sum_a", "_sum_b", "_width", "buckets")

    def __init__(self, window: float, buckets: int) -> None:
        self.buckets = buckets
        self._width = window / buckets
        self._a = [0] * buckets
        self._b = [0] * buckets
        self._sum_a = 0
        self._sum_b = 0
        # the number (time // width) of the newest bucket written
        self._epoch = -math.inf

    def _roll(self, now: float) -> int:
        epoch = int(now // self._width)
        if epoch != self._epoch:
            if epoch - self._epoch >= self.buckets:
                # the whole window has passed since the last write
                for i in range(self.buckets):
                    self._a[i] = self._b[i] = 0
                self._sum_a = self._sum_b = 0
            else:
                # clear the buckets time went past (epoch < self._epoch: a clock going
                # back is not monotonic; treat it as the same bucket)
                for e in range(int(self._epoch) + 1, epoch + 1):
                    i = e % self.buckets
                    self._sum_a -= self._a[i]
                    self._sum_b -= self._b[i]
                    self._a[i] = self._b[i] = 0
            if epoch > self._epoch:
                self._epoch = epoch
        return int(self._epoch) % self.buckets

    def add(self, now: float, a: int, b: int) -> None:
        i = self._roll(now)
        self._a[i] += a
        self._b[i] += b
        self._sum_a += a
        self._sum_b += b

    def sums(self, now: float) -> tuple[int, int]:
        self._roll(now)
        return self._sum_a, self._sum_b
