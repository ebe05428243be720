"""Breaker metrics, read from the breakers when Prometheus scrapes.

One :class:`BreakerMetrics` per :class:`~brownout.prometheus.PrometheusMetrics`
(created on first use through ``PrometheusMetrics.group``). It is a custom
collector over a :class:`brownout._metrics.BreakerSource`: at each scrape it
reads every tracked breaker's state and lifetime totals
(:meth:`~brownout.CircuitBreaker.totals`) and yields the
``<namespace>_breaker_*`` / ``<namespace>_call*`` families listed in
``brownout.prometheus``. Nothing runs per guarded call: attaching metrics adds
no call listener, so a breaker keeps its lock-free fast path. The only listener
is a state listener, for the transition and trip counters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from brownout import CircuitBreaker, Registry, State
from brownout._histogram import DURATION_BUCKETS, to_cumulative
from brownout._metrics import BreakerSource
from brownout.prometheus._common import full_name

__all__ = ["BreakerMetrics", "bucket_labels"]

_STATES = tuple(State)


def bucket_labels() -> list[str]:
    """The ``le`` labels of the duration histograms, ``+Inf`` last."""
    return [*(str(floatToGoString(b)) for b in DURATION_BUCKETS), "+Inf"]  # type: ignore[no-untyped-call]


class BreakerMetrics:
    """The breaker metric group of one ``PrometheusMetrics``; see the module docstring."""

    def __init__(self, registry: CollectorRegistry, namespace: str) -> None:
        self.source = BreakerSource()
        self._ns = namespace
        self._le = bucket_labels()
        registry.register(self)

    # ---------------------------------------------------------------- attach

    def attach_breaker(self, breaker: CircuitBreaker) -> Callable[[], None]:
        """Read ``breaker`` at every scrape; returns a function that detaches it.

        A no-op (returning a no-op) if a live breaker of that name is already
        read, by this breaker or through an attached registry.
        """
        return self.source.attach_breaker(breaker)

    def attach_registry(self, registry: Registry) -> Callable[[], None]:
        """Read every breaker of ``registry``, present and future; returns a detach."""
        return self.source.attach_registry(registry)

    # ------------------------------------------------------------- collector

    def _families(
        self,
    ) -> tuple[
        GaugeMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        HistogramMetricFamily,
    ]:
        name = self._ns and f"{self._ns}_"
        return (
            GaugeMetricFamily(
                f"{name}breaker_state",
                "Circuit breaker state: 1 for the current state, 0 for the others.",
                labels=("breaker", "state"),
            ),
            CounterMetricFamily(
                f"{name}calls",
                "Calls through a circuit breaker, by outcome (success, failure, ignored, "
                "rejected).",
                labels=("breaker", "outcome"),
            ),
            CounterMetricFamily(
                f"{name}slow_calls",
                "Calls that took at least the breaker's slow_call_duration.",
                labels=("breaker",),
            ),
            CounterMetricFamily(
                f"{name}calls_rejected",
                "Calls rejected because the breaker was open.",
                labels=("breaker",),
            ),
            CounterMetricFamily(
                f"{name}breaker_transitions",
                "Circuit breaker state transitions.",
                labels=("breaker", "from_state", "to_state"),
            ),
            CounterMetricFamily(
                f"{name}breaker_trips",
                "Transitions into the open state, by what tripped the breaker.",
                labels=("breaker", "trigger"),
            ),
            HistogramMetricFamily(
                full_name(self._ns, "call_duration_seconds"),
                "Duration of the timed calls let through a circuit breaker (successes and "
                "failures; a breaker on its untimed fast path times none).",
                labels=("breaker",),
            ),
        )

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        state_f, calls_f, slow_f, rejected_f, trans_f, trips_f, duration_f = families
        for reading in self.source.read():
            name, t = reading.name, reading.totals
            if reading.state is not None:
                for state in _STATES:
                    state_f.add_metric((name, state.value), 1.0 if state is reading.state else 0.0)
            for outcome, n in (
                ("success", t.successes),
                ("failure", t.failures),
                ("ignored", t.ignored),
                ("rejected", t.rejected),
            ):
                calls_f.add_metric((name, outcome), float(n))
            slow_f.add_metric((name,), float(t.slow))
            rejected_f.add_metric((name,), float(t.rejected))
            for (frm, to), n in reading.transitions.items():
                trans_f.add_metric((name, frm.value, to.value), float(n))
            for trigger, n in reading.trips.items():
                trips_f.add_metric((name, trigger), float(n))
            duration_f.add_metric(
                (name,),
                list(zip(self._le, to_cumulative(t.duration_buckets), strict=True)),
                t.duration_sum,
            )
        return list(families)
