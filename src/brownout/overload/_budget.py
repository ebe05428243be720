"""Retry budget: retries stay a fraction of the requests, so an outage never turns
into a retry storm.

The model is Finagle's ``RetryBudget`` (``ttl`` 10 s, ``percentCanRetry``
20 %, ``minRetriesPerSec`` 10) and Envoy's retry budgets: over the last
``window`` seconds a retry is allowed while

    retries + 1 <= ratio * requests + floor * window

where ``requests`` are first attempts (a retry deposits nothing) and the floor
lets a client that makes few requests still retry the odd failure. Without a
budget, every layer retrying 3 times multiplies the load on a failing
dependency by 4 per layer; with it, the extra load is at most ``ratio``
(plus the floor) whatever happens.

Under the kill switch (``BROWNOUT_DISABLED=1`` when the budget is created, as
for breakers) every retry is allowed: the client retries as configured, as
without brownout; the requests and retries are still counted.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

from brownout._breaker import kill_switch_active
from brownout._clock import Clock, Duration, monotonic, to_seconds
from brownout.overload._ring import Ring

__all__ = ["RetryBudget", "RetryBudgetSnapshot"]


@dataclass(frozen=True, slots=True)
class RetryBudgetSnapshot:
    """A retry budget at one moment: the window's counts, the retries it would still
    allow now, and the lifetime totals (``requests``: first attempts; ``allowed`` and
    ``denied``: retries asked for) for metrics. ``disabled``: built under the kill
    switch (nothing is denied; ``available`` is what the budget would allow)."""

    name: str
    window_requests: int
    window_retries: int
    available: int
    requests: int
    allowed: int
    denied: int
    disabled: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "window_requests": self.window_requests,
            "window_retries": self.window_retries,
            "available": self.available,
            "requests": self.requests,
            "allowed": self.allowed,
            "denied": self.denied,
            "disabled": self.disabled,
        }


class RetryBudget:
    """Allow retries while they stay within ``ratio`` of the requests over ``window``
    seconds, plus ``floor`` retries per second.

    Count every first attempt with :meth:`request`; ask :meth:`try_retry`
    before each retry and do not retry when it answers ``False`` (raise the
    last error instead). Thread-safe; one budget per dependency, shared by all
    its callers. Under the kill switch (``BROWNOUT_DISABLED=1`` when it is
    created) :attr:`disabled` is True and every retry is allowed (and counted).

    >>> from brownout.testing import FakeClock
    >>> b = RetryBudget("postgres", ratio=0.2, floor=0.0, clock=FakeClock())
    >>> for _ in range(10):
    ...     b.request()
    >>> b.try_retry(), b.try_retry(), b.try_retry()   # 20 % of 10
    (True, True, False)
    >>> s = b.snapshot(); (s.requests, s.allowed, s.denied)
    (10, 2, 1)
    """

    __slots__ = (
        "_allowed",
        "_clock",
        "_denied",
        "_lock",
        "_requests",
        "_reserve",
        "_ring",
        "disabled",
        "floor",
        "name",
        "ratio",
        "window",
    )

    def __init__(
        self,
        name: str,
        *,
        ratio: float = 0.2,
        window: Duration = 10.0,
        floor: float = 10.0,
        buckets: int = 10,
        clock: Clock = monotonic,
    ) -> None:
        own = "RetryBudget"
        if not isinstance(name, str) or not name:
            raise ValueError(f"{own}.name must be a non-empty string, got {name!r}")
        self.name = name
        self.ratio = _number(own, "ratio", ratio, 0.0, 1000.0)
        try:
            self.window = to_seconds(window)
        except TypeError as exc:
            raise TypeError(f"{own}.window: {exc}") from None
        if not math.isfinite(self.window) or self.window <= 0:
            raise ValueError(f"{own}.window must be > 0 seconds, got {window!r}")
        self.floor = _number(own, "floor", floor, 0.0, 1e6)
        if isinstance(buckets, bool) or not isinstance(buckets, int) or not 1 <= buckets <= 3600:
            raise ValueError(f"{own}.buckets must be an integer in [1, 3600], got {buckets!r}")
        self._reserve = self.floor * self.window
        self._ring = Ring(self.window, buckets)
        self._clock = clock
        self._lock = threading.Lock()
        self._requests = 0
        self._allowed = 0
        self._denied = 0
        #: built under the kill switch: counts, never denies
        self.disabled = kill_switch_active()

    def request(self) -> None:
        """Count a first attempt (it earns ``ratio`` of a retry)."""
        with self._lock:
            self._ring.add(self._clock(), 1, 0)
            self._requests += 1

    def try_retry(self) -> bool:
        """Whether a retry may be made now; an allowed retry is counted as spent."""
        with self._lock:
            now = self._clock()
            requests, retries = self._ring.sums(now)
            if retries + 1 <= self.ratio * requests + self._reserve + 1e-9 or self.disabled:
                self._ring.add(now, 0, 1)
                self._allowed += 1
                return True
            self._denied += 1
            return False

    @property
    def available(self) -> int:
        """How many retries would be allowed right now."""
        with self._lock:
            requests, retries = self._ring.sums(self._clock())
        return self._available(requests, retries)

    def _available(self, requests: int, retries: int) -> int:
        return max(0, math.floor(self.ratio * requests + self._reserve - retries + 1e-9))

    def snapshot(self) -> RetryBudgetSnapshot:
        with self._lock:
            requests, retries = self._ring.sums(self._clock())
            return RetryBudgetSnapshot(
                name=self.name,
                window_requests=requests,
                window_retries=retries,
                available=max(
                    0, math.floor(self.ratio * requests + self._reserve - retries + 1e-9)
                ),
                requests=self._requests,
                allowed=self._allowed,
                denied=self._denied,
                disabled=self.disabled,
            )

    def __repr__(self) -> str:
        return (
            f"RetryBudget({self.name!r}, ratio={self.ratio}, window={self.window}, "
            f"floor={self.floor})"
        )


def _number(owner: str, name: str, value: object, low: float, high: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        raise ValueError(f"{owner}.{name} must be a number in [{low:g}, {high:g}], got {value!r}")
    return float(value)
