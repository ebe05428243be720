"""The clock a breaker reads: monotonic seconds, injectable for tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import TypeAlias

#: A clock is any zero-argument callable returning monotonic seconds.
Clock: TypeAlias = Callable[[], float]

#: Seconds as a number, or a :class:`datetime.timedelta`.
Duration: TypeAlias = float | int | timedelta

monotonic: Clock = time.monotonic


def to_seconds(value: Duration) -> float:
    """Return ``value`` in seconds as a float."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected seconds (float) or timedelta, got {type(value).__name__}")
    return float(value)
