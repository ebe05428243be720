"""What the metrics backends read of the overload guards, at scrape/collection time.

Both :mod:`brownout.prometheus` and :mod:`brownout.otel` read the guards'
``snapshot()`` through a :class:`GuardSource` when they collect: nothing is
pushed per call. A source holds what was attached (a guard, an adapter, whose
guards are read at each collection, or a registry, whose guards built or
registered so far are read) and reads each guard once even when it is reached
several ways.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import NamedTuple

from brownout.overload._budget import RetryBudget
from brownout.overload._bulkhead import Bulkhead
from brownout.overload._guards import Guards
from brownout.overload._throttle import AdaptiveThrottle

__all__ = ["GUARD_METRICS", "GuardMetric", "GuardSource"]


class GuardMetric(NamedTuple):
    key: str  # the metric's name without namespace (and without ``_total``)
    counter: bool  # monotonic counter (else a gauge)
    doc: str
    labels: tuple[str, ...]


GUARD_METRICS: tuple[GuardMetric, ...] = (
    GuardMetric("bulkhead_in_use", False, "Permits of a bulkhead in use now.", ("name",)),
    GuardMetric("bulkhead_limit", False, "A bulkhead's current concurrency limit.", ("name",)),
    GuardMetric("bulkhead_waiting", False, "Callers queued for a bulkhead permit.", ("name",)),
    GuardMetric("bulkhead_admitted", True, "Calls a bulkhead admitted.", ("name",)),
    GuardMetric("bulkhead_rejections", True, "Calls a bulkhead refused (BulkheadFull).", ("name",)),
    GuardMetric(
        "bulkhead_peak_in_use",
        False,
        "Most calls in flight at once through a bulkhead built under the kill switch "
        "(BROWNOUT_DISABLED: it limits nothing).",
        ("name",),
    ),
    GuardMetric(
        "throttle_requests", True, "Calls an adaptive throttle was asked to admit.", ("name",)
    ),
    GuardMetric("throttle_rejections", True, "Calls an adaptive throttle shed locally.", ("name",)),
    GuardMetric(
        "throttle_refusals",
        True,
        "Admitted calls the dependency refused (429, timeouts, ...).",
        ("name",),
    ),
    GuardMetric(
        "throttle_probability",
        False,
        "An adaptive throttle's rejection probability now.",
        ("name",),
    ),
    GuardMetric(
        "retry_budget_requests", True, "First attempts counted by a retry budget.", ("name",)
    ),
    GuardMetric(
        "retry_budget_retries",
        True,
        "Retries asked of a retry budget, by outcome (made, refused).",
        ("name", "outcome"),
    ),
    GuardMetric(
        "guard_disabled",
        False,
        "1 for an overload guard built under the kill switch (BROWNOUT_DISABLED): it counts "
        "and never refuses; guard is bulkhead, throttle or retry_budget.",
        ("name", "guard"),
    ),
)

Series = dict[str, list[tuple[tuple[str, ...], float]]]


class GuardSource:
    """The guards a metrics backend reads (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._suppliers: dict[int, Callable[[], Iterable[Guards]]] = {}

    def attach(self, key: object, supplier: Callable[[], Iterable[Guards]]) -> Callable[[], None]:
        """Read ``supplier()`` at each collection (once per ``key``); returns a detach."""
        ident = id(key)
        with self._lock:
            if ident in self._suppliers:
                return _noop
            self._suppliers[ident] = supplier

        def detach() -> None:
            with self._lock:
                self._suppliers.pop(ident, None)

        return detach

    def attach_guard(self, guard: Bulkhead | AdaptiveThrottle | RetryBudget) -> Callable[[], None]:
        if isinstance(guard, Bulkhead):
            guards = Guards(bulkhead=guard)
        elif isinstance(guard, AdaptiveThrottle):
            guards = Guards(throttle=guard)
        else:
            guards = Guards(retry_budget=guard)
        return self.attach(guard, lambda: (guards,))

    def read(self) -> Series:
        """Every metric's series: ``{key: [(label values, value), ...]}``."""
        with self._lock:
            suppliers = list(self._suppliers.values())
        series: Series = {m.key: [] for m in GUARD_METRICS}
        seen: set[int] = set()
        for supplier in suppliers:
            for guards in supplier():
                for guard in (guards.bulkhead, guards.throttle, guards.retry_budget):
                    if guard is None or id(guard) in seen:
                        continue
                    seen.add(id(guard))
                    _read_one(guard, series)
        return series


def _read_one(guard: Bulkhead | AdaptiveThrottle | RetryBudget, series: Series) -> None:
    label = (guard.name,)
    if isinstance(guard, Bulkhead):
        b = guard.snapshot()
        series["bulkhead_in_use"].append((label, float(b.in_use)))
        series["bulkhead_limit"].append((label, float(b.limit)))
        series["bulkhead_waiting"].append((label, float(b.waiting)))
        series["bulkhead_admitted"].append((label, float(b.admitted)))
        series["bulkhead_rejections"].append((label, float(b.rejected)))
        if b.peak_in_use is not None:
            series["bulkhead_peak_in_use"].append((label, float(b.peak_in_use)))
        series["guard_disabled"].append(((guard.name, "bulkhead"), float(b.disabled)))
    elif isinstance(guard, AdaptiveThrottle):
        t = guard.snapshot()
        series["throttle_requests"].append((label, float(t.total_requests)))
        series["throttle_rejections"].append((label, float(t.total_rejected)))
        series["throttle_refusals"].append((label, float(t.total_refused)))
        series["throttle_probability"].append((label, t.probability))
        series["guard_disabled"].append(((guard.name, "throttle"), float(t.disabled)))
    else:
        r = guard.snapshot()
        series["retry_budget_requests"].append((label, float(r.requests)))
        series["retry_budget_retries"].append(((guard.name, "made"), float(r.allowed)))
        series["retry_budget_retries"].append(((guard.name, "refused"), float(r.denied)))
        series["guard_disabled"].append(((guard.name, "retry_budget"), float(r.disabled)))


def _noop() -> None:
    return None
