"""Adapter metrics, fed by :class:`~brownout.adapter.Adapter` listeners.

One :class:`AdapterMetrics` per :class:`~brownout.prometheus.PrometheusMetrics`
(created on first use through ``PrometheusMetrics.group``). Every
:class:`~brownout.adapter.OperationEvent` counts a request (by operation and
outcome), an error (by kind), a duration, and the figures the operation
carried: cache hits and misses, S3 bytes, OpenAI tokens. Connection-pool
gauges are a custom collector that reads ``adapter.extra_figures()``
(``pool_in_use``, ``pool_size``) of every attached adapter at scrape time,
for the adapters that report them.

``dependency`` is the adapter's kind (``redis``, ``s3``, ``sql``, ``openai``,
...), ``name`` its name (and its breaker's).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from brownout.prometheus._common import DURATION_BUCKETS, full_name

if TYPE_CHECKING:
    from brownout._adapter import Adapter, OperationEvent

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


class _Series:
    """Labelled children of one (dependency, name), cached per operation/outcome/kind."""

    __slots__ = ("durations", "errors", "requests")

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str], Any] = {}
        self.durations: dict[str, Any] = {}
        self.errors: dict[str, Any] = {}


class AdapterMetrics:
    """The adapter metric group of one ``PrometheusMetrics``; see the module docstring."""

    def __init__(self, registry: CollectorRegistry, namespace: str) -> None:
        self._lock = threading.Lock()
        # adapter -> attach order (scrapes list them in that order)
        self._adapters: weakref.WeakKeyDictionary[Adapter, int] = weakref.WeakKeyDictionary()
        self._next = 0
        self._series: dict[tuple[str, str], _Series] = {}

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
            return Counter(name, doc, labels, namespace=namespace, registry=registry)

        self.requests = counter(
            "dependency_requests",
            "Operations of a dependency adapter, by outcome "
            "(success, failure, caller_error, rejected).",
            ("dependency", "name", "operation", "outcome"),
        )
        self.errors = counter(
            "dependency_errors",
            "Failed operations of a dependency adapter (counted against it), by error kind.",
            ("dependency", "name", "kind"),
        )
        self.duration = Histogram(
            "dependency_request_duration_seconds",
            "Duration of dependency operations (rejected operations excluded).",
            ("dependency", "name", "operation"),
            namespace=namespace,
            registry=registry,
            buckets=DURATION_BUCKETS,
        )
        self.cache_hits = counter("cache_hits", "Cache lookups that found the key.", ("name",))
        self.cache_misses = counter(
            "cache_misses", "Cache lookups that did not find the key.", ("name",)
        )
        self.s3_bytes = counter(
            "s3_bytes",
            "Bytes moved to (up) and from (down) object storage.",
            ("name", "direction"),
        )
        self.tokens = counter(
            "openai_tokens",
            "Tokens used by LLM calls, by model and kind (prompt, completion).",
            ("name", "model", "kind"),
        )
        registry.register(_PoolCollector(self, namespace))

    # ---------------------------------------------------------------- attach

    def attach_adapter(self, adapter: Adapter) -> Callable[[], None]:
        """Feed the metrics from ``adapter``; returns a function that detaches it.

        Attaching an adapter that is already attached changes nothing (and
        returns a no-op).
        """
        with self._lock:
            if adapter in self._adapters:
                return _noop
            self._adapters[adapter] = self._next
            self._next += 1
        unsubscribe = adapter.add_listener(self._on_operation)

        def detach() -> None:
            unsubscribe()
            with self._lock:
                self._adapters.pop(adapter, None)

        return detach

    def adapters(self) -> list[Adapter]:
        """The attached adapters, in attach order."""
        with self._lock:
            pairs = list(self._adapters.items())
        return [adapter for adapter, _ in sorted(pairs, key=lambda pair: pair[1])]

    # ------------------------------------------------------------- listeners

    def _series_of(self, dependency: str, name: str) -> _Series:
        key = (dependency, name)
        series = self._series.get(key)
        if series is None:
            with self._lock:
                series = self._series.setdefault(key, _Series())
        return series

    def _on_operation(self, event: OperationEvent) -> None:
        dependency, name, operation, outcome = (
            event.dependency,
            event.name,
            event.operation,
            event.outcome,
        )
        series = self._series_of(dependency, name)
        requests = series.requests.get((operation, outcome))
        if requests is None:
            requests = series.requests[(operation, outcome)] = self.requests.labels(
                dependency, name, operation, outcome
            )
        requests.inc()
        if outcome == "rejected":
            return
        duration = series.durations.get(operation)
        if duration is None:
            duration = series.durations[operation] = self.duration.labels(
                dependency, name, operation
            )
        duration.observe(event.duration)
        kind = event.error_kind
        if kind is not None and outcome == "failure":
            errors = series.errors.get(kind)
            if errors is None:
                errors = series.errors[kind] = self.errors.labels(dependency, name, kind)
            errors.inc()
        if event.cache_hits:
            self.cache_hits.labels(name).inc(event.cache_hits)
        if event.cache_misses:
            self.cache_misses.labels(name).inc(event.cache_misses)
        if dependency == "s3":
            if event.bytes_sent:
                self.s3_bytes.labels(name, "up").inc(event.bytes_sent)
            if event.bytes_received:
                self.s3_bytes.labels(name, "down").inc(event.bytes_received)
        if event.prompt_tokens or event.completion_tokens:
            model = event.model or "unknown"
            if event.prompt_tokens:
                self.tokens.labels(name, model, "prompt").inc(event.prompt_tokens)
            if event.completion_tokens:
                self.tokens.labels(name, model, "completion").inc(event.completion_tokens)


def _noop() -> None:
    return None
