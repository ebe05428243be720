"""Overload guard metrics (bulkheads, adaptive throttles, retry budgets), read at scrape.

One :class:`OverloadMetrics` per :class:`~brownout.prometheus.PrometheusMetrics`:
a custom collector over a :class:`brownout.overload._metrics.GuardSource` that
reads every attached guard's ``snapshot()`` when Prometheus scrapes (the guards
count in their own state; nothing runs per call). ``name`` is the guard's name
(the dependency's).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from brownout.overload._metrics import GUARD_METRICS, GuardSource
from brownout.prometheus._common import full_name

__all__ = ["OverloadMetrics"]


class OverloadMetrics:
    """The overload metric group of one ``PrometheusMetrics``; see the module docstring."""

    def __init__(self, registry: CollectorRegistry, namespace: str) -> None:
        self.source = GuardSource()
        self._ns = namespace
        registry.register(self)

    def _families(self) -> list[CounterMetricFamily | GaugeMetricFamily]:
        families: list[CounterMetricFamily | GaugeMetricFamily] = []
        for m in GUARD_METRICS:
            cls = CounterMetricFamily if m.counter else GaugeMetricFamily
            families.append(cls(full_name(self._ns, m.key), m.doc, labels=m.labels))
        return families

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        series = self.source.read()
        for m, family in zip(GUARD_METRICS, families, strict=True):
            for labels, value in series[m.key]:
                family.add_metric(labels, value)
        return families
