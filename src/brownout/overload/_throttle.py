"""Client-side adaptive throttling (Google SRE book, chapter 21 "Handling Overload").

Each client keeps, over the last ``window`` seconds (two minutes in the book):

- ``requests``: the calls the application attempted (including the ones
  this throttle rejected locally);
- ``accepts``: the calls the dependency accepted (answered, even with an
  error that is the caller's own, rather than refusing them for overload).

and rejects a new call locally with probability
``max(0, (requests - K * accepts) / (requests + 1))``. While the dependency
accepts everything nothing is rejected; once it refuses more than ``1 - 1/K``
of the calls, the client sheds the excess itself instead of sending requests
that would be refused anyway (each refusal still costs the dependency work).
``K = 2`` (the book's suggestion) lets twice the accepted traffic through, so
the client probes and adapts quickly when the dependency recovers; a lower K
sheds more aggressively.

Under the kill switch (``BROWNOUT_DISABLED=1`` when the throttle is created, as
for breakers) nothing is rejected: the counts and the probability go on (for
metrics and the status page), the calls all go through.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from brownout._breaker import kill_switch_active
from brownout._clock import Clock, Duration, monotonic, to_seconds
from brownout._config import ErrorMatcher
from brownout._errors import Throttled

__all__ = ["AdaptiveThrottle", "ThrottleSnapshot"]

from brownout.overload._ring import Ring


@dataclass(frozen=True, slots=True)
class ThrottleSnapshot:
    """An adaptive throttle at one moment: the window's counts, the current
    rejection probability and the lifetime totals (for metrics). ``disabled``:
    built under the kill switch (the probability is computed, never applied)."""

    name: str
    requests: int
    accepts: int
    probability: float
    total_requests: int
    total_rejected: int
    total_refused: int
    disabled: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "requests": self.requests,
            "accepts": self.accepts,
            "probability": self.probability,
            "total_requests": self.total_requests,
            "total_rejected": self.total_rejected,
            "total_refused": self.total_refused,
            "disabled": self.disabled,
        }


def _matches(matchers: tuple[ErrorMatcher, ...], exc: BaseException) -> bool:
    for m in matchers:
        if isinstance(m, type):
            if isinstance(exc, m):
                return True
        elif m(exc):
            return True
    return False


class AdaptiveThrottle:
    """Reject calls locally in proportion to how many the dependency has been refusing.

    Use :meth:`attempt` around each call (``with`` or ``async with``): it
    raises :class:`~brownout.Throttled` when the call is shed, and on leaving
    counts the call as accepted unless it raised an error matching
    ``refused_on`` (the dependency's "overloaded" answers: 429, 503, timeouts:
    an adapter passes its own). The explicit protocol is :meth:`admit`, then
    :meth:`accepted` or :meth:`refused`.

    ``random`` (a zero-argument callable returning a float in [0, 1)) and
    ``clock`` are injectable for tests. Under the kill switch
    (``BROWNOUT_DISABLED=1`` when it is created) :attr:`disabled` is True and
    nothing is rejected; everything is still counted.

    >>> from brownout.testing import FakeClock
    >>> roll = [0.999]
    >>> t = AdaptiveThrottle("openai", clock=FakeClock(), random=lambda: roll[0])
    >>> for _ in range(10):
    ...     t.admit(); t.refused()        # the API answers 429 to everything
    >>> round(t.probability, 3)          # (10 - 2*0) / (10 + 1)
    0.909
    >>> roll[0] = 0.5
    >>> t.admit()
    Traceback (most recent call last):
      ...
    brownout._errors.Throttled: 'openai' is throttled locally; retry after 1 s
    """

    __slots__ = (
        "_clock",
        "_lock",
        "_random",
        "_refused",
        "_rejected",
        "_requests",
        "_ring",
        "disabled",
        "k",
        "name",
        "refused_on",
        "retry_after",
        "window",
    )

    def __init__(
        self,
        name: str,
        *,
        k: float = 2.0,
        window: Duration = 120.0,
        buckets: int = 24,
        refused_on: tuple[ErrorMatcher, ...] = (Exception,),
        retry_after: Duration = 1.0,
        clock: Clock = monotonic,
        random: Callable[[], float] = random.random,
    ) -> None:
        own = "AdaptiveThrottle"
        if not isinstance(name, str) or not name:
            raise ValueError(f"{own}.name must be a non-empty string, got {name!r}")
        self.name = name
        if (
            isinstance(k, bool)
            or not isinstance(k, int | float)
            or not math.isfinite(k)
            or not 1.0 <= k <= 100.0
        ):
            raise ValueError(f"{own}.k must be a number in [1, 100], got {k!r}")
        self.k = float(k)
        self.window = _seconds(own, "window", window, positive=True)
        if isinstance(buckets, bool) or not isinstance(buckets, int) or not 1 <= buckets <= 3600:
            raise ValueError(f"{own}.buckets must be an integer in [1, 3600], got {buckets!r}")
        if not isinstance(refused_on, tuple) or not all(
            isinstance(m, type) or callable(m) for m in refused_on
        ):
            raise TypeError(
                f"{own}.refused_on must be a tuple of exception types or predicates, "
                f"got {refused_on!r}"
            )
        self.refused_on = refused_on
        self.retry_after = _seconds(own, "retry_after", retry_after, positive=False)
        if not callable(random):
            raise TypeError(f"{own}.random must be a callable returning [0, 1), got {random!r}")
        self._random = random
        self._clock = clock
        self._lock = threading.Lock()
        self._ring = Ring(self.window, buckets)
        self._requests = 0
        self._rejected = 0
        self._refused = 0
        #: built under the kill switch: counts, never rejects
        self.disabled = kill_switch_active()

    @property
    def probability(self) -> float:
        """The probability that the next call is rejected locally."""
        with self._lock:
            requests, accepts = self._ring.sums(self._clock())
        return max(0.0, (requests - self.k * accepts) / (requests + 1))

    def admit(self) -> None:
        """Count a call the application wants to make; raise :class:`~brownout.Throttled`
        if it is shed (it still counts as a request, as in the book)."""
        with self._lock:
            now = self._clock()
            requests, accepts = self._ring.sums(now)
            self._ring.add(now, 1, 0)
            self._requests += 1
            p = (requests - self.k * accepts) / (requests + 1)
            if p <= 0.0 or self.disabled:
                return
        # the random source is a Python call: made outside the lock
        if self._random() < p:
            with self._lock:
                self._rejected += 1
            raise Throttled(self.name, self.retry_after or None)

    def accepted(self) -> None:
        """The dependency accepted the admitted call (answered it, even with the caller's error)."""
        with self._lock:
            self._ring.add(self._clock(), 0, 1)

    def refused(self) -> None:
        """The dependency refused the admitted call for overload (429, 503, a timeout)."""
        with self._lock:
            self._refused += 1

    def attempt(self) -> _Attempt:
        """``with throttle.attempt():`` / ``async with``: admit, then count the outcome."""
        return _Attempt(self)

    def outcome(self, exc: BaseException | None) -> None:
        """Count the outcome of an admitted call: ``None`` (it returned) or its error,
        which is a refusal if it matches ``refused_on``; a cancellation counts as neither."""
        if exc is None:
            self.accepted()
        elif not isinstance(exc, Exception):
            return
        elif _matches(self.refused_on, exc):
            self.refused()
        else:
            self.accepted()

    def snapshot(self) -> ThrottleSnapshot:
        with self._lock:
            requests, accepts = self._ring.sums(self._clock())
            return ThrottleSnapshot(
                name=self.name,
                requests=requests,
                accepts=accepts,
                probability=max(0.0, (requests - self.k * accepts) / (requests + 1)),
                total_requests=self._requests,
                total_rejected=self._rejected,
                total_refused=self._refused,
                disabled=self.disabled,
            )

    def __repr__(self) -> str:
        return f"AdaptiveThrottle({self.name!r}, k={self.k}, window={self.window})"


class _Attempt:
    __slots__ = ("_throttle",)

    def __init__(self, throttle: AdaptiveThrottle) -> None:
        self._throttle = throttle

    def __enter__(self) -> None:
        self._throttle.admit()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._throttle.outcome(exc)

    async def __aenter__(self) -> None:
        self._throttle.admit()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._throttle.outcome(exc)


def _seconds(owner: str, name: str, value: Duration, *, positive: bool) -> float:
    try:
        seconds = to_seconds(value)
    except TypeError as exc:
        raise TypeError(f"{owner}.{name}: {exc}") from None
    if not math.isfinite(seconds) or seconds < 0 or (positive and seconds == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{owner}.{name} must be {bound} seconds, got {value!r}")
    return seconds
