"""Overload protection: keep load off a dependency that is slow or refusing calls.

- :class:`Bulkhead`: at most N concurrent calls, a bounded wait, then
  :class:`~brownout.BulkheadFull` (with ``retry_after``); its ``saturation``
  is a health signal. The limit is fixed or adaptive (:class:`Gradient2`,
  Netflix concurrency-limits' algorithm): it follows the observed latency.
- :class:`AdaptiveThrottle`: client-side adaptive throttling from the Google
  SRE book: sheds calls locally in proportion to the dependency's refusals.
- :class:`RetryBudget`: retries at most a share of the requests (Finagle,
  Envoy), counted for metrics.

All take an injectable ``clock`` (``brownout.testing.FakeClock``); none does
I/O. See docs/overload.md.

>>> from brownout.overload import Bulkhead, Gradient2
>>> bh = Bulkhead("redis", limit=Gradient2(initial_limit=10), max_wait=0.05)
>>> with bh.acquire():
...     pass
>>> bh.snapshot().admitted
1
"""

from brownout._errors import BulkheadFull, Overloaded, Throttled
from brownout.overload._budget import RetryBudget, RetryBudgetSnapshot
from brownout.overload._bulkhead import Bulkhead, BulkheadSnapshot, Permit
from brownout.overload._guards import GuardPreset, Guards
from brownout.overload._limit import Gradient2, LimitPolicy
from brownout.overload._throttle import AdaptiveThrottle, ThrottleSnapshot

__all__ = [
    "AdaptiveThrottle",
    "Bulkhead",
    "BulkheadFull",
    "BulkheadSnapshot",
    "Gradient2",
    "GuardPreset",
    "Guards",
    "LimitPolicy",
    "Overloaded",
    "Permit",
    "RetryBudget",
    "RetryBudgetSnapshot",
    "ThrottleSnapshot",
    "Throttled",
]
