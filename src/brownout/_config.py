"""Breaker configuration: one frozen, validated object per breaker."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from brownout._clock import Duration, to_seconds

#: An entry of ``record=`` / ``ignore=``: an exception type or a predicate on the exception.
ErrorMatcher: TypeAlias = type[BaseException] | Callable[[BaseException], bool]

__all__ = ["BreakerConfig", "ErrorMatcher", "retry_after_attribute"]


def retry_after_attribute(exc: BaseException) -> float | None:
    """Default ``retry_after=`` hook: the error's own ``retry_after`` attribute, in seconds.

    Adapters attach it to errors whose response carried a ``Retry-After``.
    """
    value = getattr(exc, "retry_after", None)
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


@dataclass(frozen=True, kw_only=True, slots=True)
class BreakerConfig:
    """How a :class:`~brownout.CircuitBreaker` decides to open, and for how long.

    Every trip condition is optional; any that is configured trips the breaker.
    Durations are seconds (``float``) or :class:`datetime.timedelta`.

    >>> BreakerConfig(consecutive_failures=5, open_for=20.0, half_open_calls=2)
    ... # doctest: +ELLIPSIS
    BreakerConfig(consecutive_failures=5, ...)

    See ``docs/breaker.md`` for every field, its default and its allowed range.
    """

    #: Trip after this many recorded failures in a row (``None``: not a trip condition).
    consecutive_failures: int | None = 5
    #: Trip when the failure rate over the window reaches this, in (0, 1].
    failure_rate: float | None = None
    #: Trip when the share of slow calls over the window reaches this, in (0, 1].
    slow_call_rate: float | None = None
    #: A call taking at least this long is slow.
    slow_call_duration: Duration | None = None
    #: Count-based window: the last N calls (used unless ``window_duration`` is set).
    window_size: int = 100
    #: Time-based window: the last T seconds, kept in buckets of ``window_bucket``.
    window_duration: Duration | None = None
    window_bucket: Duration = 1.0
    #: Rates are not evaluated until the window holds at least this many calls.
    minimum_calls: int = 10
    #: How long the breaker stays open after a trip.
    open_for: Duration = 30.0
    #: Each further trip without closing in between multiplies the break by this (1 = fixed).
    open_for_multiplier: float = 1.0
    #: Upper bound of the growing break, and of a break taken from a ``Retry-After``
    #: (``None``: the larger of ``open_for`` and 600 s).
    open_for_max: Duration | None = None
    #: How many probes half-open lets through at once; all must succeed to close
    #: (``half_open_policy="all"``).
    half_open_calls: int = 1
    #: How half-open decides: ``"all"`` (every probe must succeed; the first failure
    #: reopens) or ``"rate"`` (once all ``half_open_calls`` probes are done, reopen if
    #: their failure rate reaches ``failure_rate`` or their slow rate ``slow_call_rate``;
    #: a threshold that is ``None`` keeps the ``"all"`` rule for its kind).
    half_open_policy: Literal["all", "rate"] = "all"
    #: Reopen if half-open has not finished its probes within this time (``None``: wait forever).
    half_open_max_wait: Duration | None = None
    #: Errors that count as failures (types or predicates). Others count as successes.
    record: Sequence[ErrorMatcher] = (Exception,)
    #: Errors that pass through and count as neither (the caller's own mistakes).
    ignore: Sequence[ErrorMatcher] = ()
    #: A predicate on returned values: true means the call failed although it returned.
    failure_result: Callable[[Any], bool] | None = None
    #: Reads a break duration from a recorded error (e.g. a ``Retry-After``); ``None`` if absent.
    retry_after: Callable[[BaseException], float | None] | None = field(
        default=retry_after_attribute
    )
    #: Async calls (``acall``, decorated coroutine functions) are bounded by this
    #: (``asyncio.timeout``); running out raises and records ``TimeoutError``. Sync calls
    #: cannot be interrupted and are not bounded.
    call_timeout: Duration | None = None
    #: Shadow mode (resilience4j ``METRICS_ONLY``): count and transition, never reject.
    shadow: bool = False

    def __post_init__(self) -> None:
        _check_count("consecutive_failures", self.consecutive_failures, allow_none=True)
        _check_rate("failure_rate", self.failure_rate)
        _check_rate("slow_call_rate", self.slow_call_rate)
        _check_duration("slow_call_duration", self.slow_call_duration, allow_none=True)
        if self.slow_call_rate is not None and self.slow_call_duration is None:
            raise ValueError(
                "BreakerConfig.slow_call_duration is required when slow_call_rate is set"
            )
        _check_count("window_size", self.window_size)
        _check_duration("window_duration", self.window_duration, allow_none=True)
        _check_duration("window_bucket", self.window_bucket)
        if self.window_duration is not None and to_seconds(self.window_duration) < to_seconds(
            self.window_bucket
        ):
            raise ValueError(
                "BreakerConfig.window_duration must be >= window_bucket "
                f"({to_seconds(self.window_bucket)} s), got {to_seconds(self.window_duration)} s"
            )
        _check_count("minimum_calls", self.minimum_calls)
        if self.window_duration is None and self.minimum_calls > self.window_size:
            raise ValueError(
                f"BreakerConfig.minimum_calls must be <= window_size ({self.window_size}), "
                f"got {self.minimum_calls}"
            )
        _check_duration("open_for", self.open_for)
        if (
            isinstance(self.open_for_multiplier, bool)
            or not isinstance(self.open_for_multiplier, int | float)
            or not math.isfinite(self.open_for_multiplier)
            or self.open_for_multiplier < 1
        ):
            raise ValueError(
                f"BreakerConfig.open_for_multiplier must be a finite number >= 1, "
                f"got {self.open_for_multiplier!r}"
            )
        _check_duration("open_for_max", self.open_for_max, allow_none=True)
        if self.open_for_max is not None and to_seconds(self.open_for_max) < to_seconds(
            self.open_for
        ):
            raise ValueError(
                f"BreakerConfig.open_for_max must be >= open_for ({to_seconds(self.open_for)} s), "
                f"got {to_seconds(self.open_for_max)} s"
            )
        _check_count("half_open_calls", self.half_open_calls)
        if self.half_open_policy not in ("all", "rate"):
            raise ValueError(
                f"BreakerConfig.half_open_policy must be 'all' or 'rate', "
                f"got {self.half_open_policy!r}"
            )
        _check_duration("half_open_max_wait", self.half_open_max_wait, allow_none=True)
        _check_duration("call_timeout", self.call_timeout, allow_none=True)
        if not isinstance(self.shadow, bool):
            raise TypeError(f"BreakerConfig.shadow must be a bool, got {self.shadow!r}")
        object.__setattr__(self, "record", _check_matchers("record", self.record))
        object.__setattr__(self, "ignore", _check_matchers("ignore", self.ignore))
        if self.failure_result is not None and not callable(self.failure_result):
            raise TypeError("BreakerConfig.failure_result must be a callable or None")
        if self.retry_after is not None and not callable(self.retry_after):
            raise TypeError("BreakerConfig.retry_after must be a callable or None")

    @property
    def effective_open_for_max(self) -> float:
        """``open_for_max`` in seconds, with its default applied."""
        if self.open_for_max is None:
            return max(to_seconds(self.open_for), 600.0)
        return to_seconds(self.open_for_max)

    def replace(self, **changes: Any) -> BreakerConfig:
        """Return a copy with ``changes`` applied (and validated)."""
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        unknown = set(changes) - set(fields)
        if unknown:
            raise TypeError(f"BreakerConfig has no field(s) {', '.join(sorted(unknown))}")
        fields.update(changes)
        return BreakerConfig(**fields)


def _check_count(name: str, value: object, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"BreakerConfig.{name} must be an int >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"BreakerConfig.{name} must be >= 1, got {value}")


def _check_rate(name: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"BreakerConfig.{name} must be a number in (0, 1], got {value!r}")
    if not 0 < value <= 1:
        raise ValueError(f"BreakerConfig.{name} must be in (0, 1], got {value}")


def _check_duration(name: str, value: object, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    try:
        seconds = to_seconds(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"BreakerConfig.{name} must be seconds (float) or a timedelta, got {value!r}"
        ) from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"BreakerConfig.{name} must be > 0 seconds, got {seconds}")


def _check_matchers(name: str, value: object) -> tuple[ErrorMatcher, ...]:
    if isinstance(value, type) or callable(value):
        value = (value,)
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise TypeError(
            f"BreakerConfig.{name} must be a sequence of exception types or predicates, "
            f"got {value!r}"
        )
    for entry in value:
        is_exc_type = isinstance(entry, type) and issubclass(entry, BaseException)
        if isinstance(entry, type) and not is_exc_type:
            raise TypeError(
                f"BreakerConfig.{name} entries must be exception types or predicates "
                f"(callable(exc) -> bool), got the class {entry.__name__}"
            )
        if not is_exc_type and not callable(entry):
            raise TypeError(
                f"BreakerConfig.{name} entries must be exception types or predicates "
                f"(callable(exc) -> bool), got {entry!r}"
            )
    return tuple(value)
