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
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from brownout._histogram import to_cumulative
from brownout._metrics import AdapterSource
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


def _pool_value(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


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
                figures = adapter.extra_figures()
            except Exception:  # a scrape must not fail because one adapter misbehaved
                logger.exception(
                    "brownout.prometheus: extra_figures() of adapter %r failed", adapter.name
                )
                continue
            for family, (key, _, _) in zip(families, self._names, strict=True):
                value = _pool_value(figures.get(key))
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
        for reading in self.source.read():
            dependency, name, figs = reading.kind, reading.name, reading.figures
            for operation, per in figs.operations.items():
                for outcome, n in per.items():
                    requests.add_metric((dependency, name, operation, outcome), n)
            for kind, n in figs.errors.items():
                errors.add_metric((dependency, name, kind), n)
            for operation, timed in figs.durations.items():
                duration.add_metric(
                    (dependency, name, operation),
                    list(zip(self._le, to_cumulative(timed.buckets), strict=True)),
                    timed.sum,
                )
            totals = figs.totals
            if "cache_hits" in totals or "cache_misses" in totals:
                hits.add_metric((name,), totals.get("cache_hits", 0))
                misses.add_metric((name,), totals.get("cache_misses", 0))
            if dependency == "s3":
                for key, direction in (("bytes_sent", "up"), ("bytes_received", "down")):
                    if key in totals:
                        s3_bytes.add_metric((name, direction), totals[key])
            known = {"prompt": 0, "completion": 0}
            for model, per_kind in figs.tokens_by_model.items():
                for kind in ("prompt", "completion"):
                    n = per_kind.get(kind, 0)
                    known[kind] += n
                    if n:
                        tokens.add_metric((name, model, kind), n)
            for kind in ("prompt", "completion"):  # tokens of calls that named no model
                unknown = totals.get(f"{kind}_tokens", 0) - known[kind]
                if unknown > 0:
                    tokens.add_metric((name, "unknown", kind), unknown)
        return list(families)


def _noop() -> None:
    return None
