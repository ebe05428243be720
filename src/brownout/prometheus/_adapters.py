"""Adapter metrics, read from the adapters' own figures when Prometheus scrapes.

One :class:`AdapterMetrics` per :class:`~brownout.prometheus.PrometheusMetrics`
(created on first use through ``PrometheusMetrics.group``). It is a custom
collector over a :class:`brownout._metrics.AdapterSource`: at each scrape it
reads every attached adapter's lifetime figures
(:meth:`~brownout.adapter.AdapterStats.metrics`: requests by operation and
outcome, errors by kind, a duration histogram per operation, cache hits and
misses, S3 bytes, OpenAI tokens), which the adapter keeps anyway for its
health figures; nothing runs per operation. Connection-pool gauges are a
second collector that reads ``adapter.extra_figures()`` (``pool_in_use``,
``pool_size``) of every attached adapter at scrape time, for the adapters
that report them.

``dependency`` is the adapter's kind (``redis``, ``s3``, ``sql``, ``openai``,
...), ``name`` its name (and its breaker's).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from brownout._histogram import to_cumulative
from brownout._metrics import AdapterSource, adapter_counts, pool_figures
from brownout.prometheus._breakers import bucket_labels
from brownout.prometheus._common import full_name

if TYPE_CHECKING:
    from brownout._adapter import Adapter

__all__ = ["AdapterMetrics"]

logger = logging.getLogger("brownout.prometheus")

_POOL_FIGURES = (
    ("pool_in_use", "pool_connections_in_use", "Connections of the pool checked out now."),
    ("pool_size", "pool_size", "Size of the connection pool (its configured maximum)."),
)


class _PoolCollector:
    """``<namespace>_pool_connections_in_use`` and ``<namespace>_pool_size``, read at scrape."""

    def __init__(self, owner: AdapterMetrics, namespace: str) -> None:
        self._owner = owner
        self._names = tuple(
            (key, full_name(namespace, name), doc) for key, name, doc in _POOL_FIGURES
        )

    def _families(self) -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(name, doc, labels=("dependency", "name"))
            for _, name, doc in self._names
        ]

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        seen: set[tuple[str, str]] = set()
        for adapter in self._owner.adapters():
            labels = (adapter.kind, adapter.name)
            if labels in seen:  # two adapters of one kind and name: the first one reports
                continue
            seen.add(labels)
            try:
                figures = pool_figures(adapter)
            except Exception:  # a scrape must not fail because one adapter misbehaved
                logger.exception(
                    "brownout.prometheus: extra_figures() of adapter %r failed", adapter.name
                )
                continue
            for family, (key, _, _) in zip(families, self._names, strict=True):
                value = figures.get(key)
                if value is not None:
                    family.add_metric(labels, value)
        return list(families)


class AdapterMetrics:
    """The adapter metric group of one ``PrometheusMetrics``; see the module docstring."""

    def __init__(self, registry: CollectorRegistry, namespace: str) -> None:
        self.source = AdapterSource()
        self._ns = namespace
        self._le = bucket_labels()
        registry.register(self)
        registry.register(_PoolCollector(self, namespace))

    # ---------------------------------------------------------------- attach

    def attach_adapter(self, adapter: Adapter) -> Callable[[], None]:
        """Read ``adapter`` at every scrape; returns a function that detaches it.

        Attaching an adapter that is already attached changes nothing (and
        returns a no-op).
        """
        return self.source.attach_adapter(adapter)

    def adapters(self) -> list[Adapter]:
        """The attached adapters, in attach order."""
        return self.source.adapters()

    # ------------------------------------------------------------- collector

    def _families(
        self,
    ) -> tuple[
        CounterMetricFamily,
        CounterMetricFamily,
        HistogramMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
    ]:
        ns = self._ns
        return (
            CounterMetricFamily(
                full_name(ns, "dependency_requests"),
                "Operations of a dependency adapter, by outcome "
                "(success, failure, caller_error, rejected).",
                labels=("dependency", "name", "operation", "outcome"),
            ),
            CounterMetricFamily(
                full_name(ns, "dependency_errors"),
                "Failed operations of a dependency adapter (counted against it), by error kind.",
                labels=("dependency", "name", "kind"),
            ),
            HistogramMetricFamily(
                full_name(ns, "dependency_request_duration_seconds"),
                "Duration of dependency operations (rejected operations excluded).",
                labels=("dependency", "name", "operation"),
            ),
            CounterMetricFamily(
                full_name(ns, "cache_hits"), "Cache lookups that found the key.", labels=("name",)
            ),
            CounterMetricFamily(
                full_name(ns, "cache_misses"),
                "Cache lookups that did not find the key.",
                labels=("name",),
            ),
            CounterMetricFamily(
                full_name(ns, "s3_bytes"),
                "Bytes moved to (up) and from (down) object storage.",
                labels=("name", "direction"),
            ),
            CounterMetricFamily(
                full_name(ns, "openai_tokens"),
                "Tokens used by LLM calls, by model and kind (prompt, completion).",
                labels=("name", "model", "kind"),
            ),
        )

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        requests, errors, duration, hits, misses, s3_bytes, tokens = families
        by_key = {
            "dependency_requests": requests,
            "dependency_errors": errors,
            "cache_hits": hits,
            "cache_misses": misses,
            "s3_bytes": s3_bytes,
            "openai_tokens": tokens,
        }
        for reading in self.source.read():
            for key, series in adapter_counts(reading).items():
                family = by_key[key]
                for labels, n in series:
                    family.add_metric(labels, float(n))
            for operation, timed in reading.figures.durations.items():
                duration.add_metric(
                    (reading.kind, reading.name, operation),
                    list(zip(self._le, to_cumulative(timed.buckets), strict=True)),
                    timed.sum,
                )
        return list(families)


def _noop() -> None:
    return None
