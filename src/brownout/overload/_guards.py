"""A dependency's overload guards as one value, and the registry presets that build them.

An adapter takes its guards one by one (``bulkhead=``, ``throttle=``,
``retry_budget=``); a :class:`~brownout.Registry` built with ``guards=`` presets
builds them once per dependency name and hands the same objects to every adapter
of that name (as it does breakers), so two adapters of one Redis share its limit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from brownout._clock import Clock, monotonic
from brownout._config import ErrorMatcher
from brownout.overload._budget import RetryBudget
from brownout.overload._bulkhead import MAX_LIMIT, MAX_WAIT, Bulkhead
from brownout.overload._limit import LimitPolicy
from brownout.overload._throttle import AdaptiveThrottle

__all__ = ["GuardPreset", "Guards"]


@dataclass(frozen=True, slots=True)
class Guards:
    """The overload guards of one dependency (each ``None`` when not used)."""

    bulkhead: Bulkhead | None = None
    throttle: AdaptiveThrottle | None = None
    retry_budget: RetryBudget | None = None


@dataclass(frozen=True, slots=True)
class GuardPreset:
    """How a registry builds a dependency's guards (see ``Registry(guards=...)``).

    - ``bulkhead``: ``None`` (no bulkhead), a fixed limit, or a factory of an
      adaptive :class:`~brownout.overload.LimitPolicy` (e.g. ``Gradient2``: a
      policy is stateful, so each dependency gets its own);
      ``max_wait`` / ``max_waiting`` as in :class:`~brownout.overload.Bulkhead`;
    - ``throttle``: an :class:`~brownout.overload.AdaptiveThrottle` with ``k``,
      refusing on ``refused_on`` (``None``: the adapter's overload errors);
    - ``retry_budget``: a :class:`~brownout.overload.RetryBudget` with
      ``retry_ratio`` and ``retry_floor``.

    >>> from brownout.overload import GuardPreset, Gradient2
    >>> g = GuardPreset(bulkhead=Gradient2, max_wait=0.05, retry_budget=True).build("redis")
    >>> g.bulkhead.snapshot().adaptive, g.throttle, g.retry_budget.name
    (True, None, 'redis')
    """

    bulkhead: int | Callable[[], LimitPolicy] | None = None
    max_wait: float = 0.0
    max_waiting: int | None = None
    throttle: bool = False
    k: float = 2.0
    refused_on: tuple[ErrorMatcher, ...] | None = None
    retry_budget: bool = False
    retry_ratio: float = 0.2
    retry_floor: float = 10.0

    def __post_init__(self) -> None:
        b = self.bulkhead
        if (
            b is not None
            and not callable(b)
            and (isinstance(b, bool) or not isinstance(b, int) or b < 1)
        ):
            raise ValueError(
                f"GuardPreset.bulkhead must be None, an integer >= 1 or a LimitPolicy factory, "
                f"got {b!r}"
            )
        if (
            isinstance(self.max_wait, bool)
            or not isinstance(self.max_wait, int | float)
            or not (math.isfinite(self.max_wait) and 0 <= self.max_wait <= MAX_WAIT)
        ):
            raise ValueError(
                f"GuardPreset.max_wait must be >= 0 and <= {MAX_WAIT:g} seconds, "
                f"got {self.max_wait!r}"
            )
        for flag in ("throttle", "retry_budget"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(
                    f"GuardPreset.{flag} must be True or False, got {getattr(self, flag)!r}"
                )
        # the other settings are checked now, by the guards that will take them, so that a
        # mistake is refused where the registry is built, not when the first adapter of
        # that kind asks for its guards
        try:
            if isinstance(self.bulkhead, int) and self.bulkhead > MAX_LIMIT:
                # (checked without building it: a fixed limit's tokens are allocated)
                Bulkhead("preset", limit=self.bulkhead)
            if self.max_waiting is not None:
                Bulkhead("preset", limit=1, max_waiting=self.max_waiting)
            if self.throttle:
                AdaptiveThrottle("preset", k=self.k, refused_on=self.refused_on or (Exception,))
            if self.retry_budget:
                RetryBudget("preset", ratio=self.retry_ratio, floor=self.retry_floor)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"GuardPreset: {exc}") from None

    def build(self, name: str, clock: Clock | None = None) -> Guards:
        """New guards named ``name`` (errors in the settings are named as by each guard)."""
        clk = clock or monotonic
        bulkhead = None
        if self.bulkhead is not None:
            limit: int | LimitPolicy = (
                self.bulkhead if isinstance(self.bulkhead, int) else self.bulkhead()
            )
            bulkhead = Bulkhead(
                name,
                limit=limit,
                max_wait=self.max_wait,
                max_waiting=self.max_waiting,
                clock=clk,
            )
        throttle = None
        if self.throttle:
            throttle = AdaptiveThrottle(
                name, k=self.k, refused_on=self.refused_on or (Exception,), clock=clk
            )
        budget = None
        if self.retry_budget:
            budget = RetryBudget(name, ratio=self.retry_ratio, floor=self.retry_floor, clock=clk)
        return Guards(bulkhead, throttle, budget)
