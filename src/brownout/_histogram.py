"""Fixed-bucket duration histograms kept in plain Python state (no metrics library).

Breakers and adapters count their calls' durations into a list of bucket
counts with these bounds; the Prometheus collectors and the OpenTelemetry
instruments read them when scraped (see ``docs/operations.md``, "Metrics").
Counts are per bucket (not cumulative): ``counts[i]`` is the number of
durations ``d`` with ``BOUNDS[i-1] < d <= BOUNDS[i]``, and the last slot
counts those above the largest bound (Prometheus' ``le="+Inf"`` bucket minus
the others).
"""

from __future__ import annotations

import functools
from bisect import bisect_left, bisect_right
from collections.abc import Sequence

__all__ = ["DURATION_BUCKETS", "add_batch", "bucket_of", "empty", "to_cumulative"]

#: Histogram bounds (seconds) for calls to a dependency: 0.5 ms to 10 s.
DURATION_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

#: The bucket of one duration: ``counts[bucket_of(d)] += 1`` (a C-level call).
bucket_of = functools.partial(bisect_left, DURATION_BUCKETS)


def empty() -> list[int]:
    """A new list of bucket counts, all zero."""
    return [0] * (len(DURATION_BUCKETS) + 1)


def add_batch(counts: list[int], durations: list[float]) -> None:
    """Count a batch of durations into ``counts``; sorts ``durations`` in place.

    One C-level sort and a bisection per bound instead of one per duration:
    cheaper for the batches the breaker folds (up to ~1,000 at a time).
    """
    durations.sort()
    done = 0
    for i, bound in enumerate(DURATION_BUCKETS):
        upto = bisect_right(durations, bound, done)
        counts[i] += upto - done
        done = upto
    counts[-1] += len(durations) - done


def to_cumulative(counts: Sequence[int]) -> list[int]:
    """Per-bucket counts as cumulative ones (Prometheus' ``le`` buckets, ``+Inf`` last)."""
    out = []
    total = 0
    for n in counts:
        total += n
        out.append(total)
    return out
