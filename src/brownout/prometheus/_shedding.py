"""Priority-shedding metrics (``brownout.web.Shedder``), read at scrape time.

One :class:`SheddingMetrics` per :class:`~brownout.prometheus.PrometheusMetrics`;
a custom collector reads every attached shedder's ``snapshot()`` when Prometheus
scrapes (nothing is pushed per request). Labels: ``shedder`` (its name, given at
attach time), ``criticality`` and ``reason`` (``overload`` or ``level``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from brownout.prometheus._common import full_name

if TYPE_CHECKING:
    from brownout.web import Shedder

__all__ = ["SheddingMetrics"]


class SheddingMetrics:
    """The ``requests_*`` and ``queueing_delay_seconds`` metrics of attached shedders."""

    def __init__(self, registry: CollectorRegistry, namespace: str) -> None:
        self._namespace = namespace
        self._lock = threading.Lock()
        self._shedders: dict[int, tuple[Shedder, str]] = {}
        registry.register(self)  # a duck-typed collector

    def attach_shedder(self, shedder: Shedder, name: str = "edge") -> Callable[[], None]:
        with self._lock:
            if id(shedder) in self._shedders:
                return lambda: None
            self._shedders[id(shedder)] = (shedder, name)

        def detach() -> None:
            with self._lock:
                self._shedders.pop(id(shedder), None)

        return detach

    def _name(self, name: str) -> str:
        return full_name(self._namespace, name)

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def _families(self) -> list[Metric]:
        return [
            GaugeMetricFamily(
                self._name("requests_in_flight"),
                "Requests being served now, by criticality (exempt paths not counted).",
                labels=["shedder", "criticality"],
            ),
            CounterMetricFamily(
                self._name("requests_admitted"),
                "Requests the shedder let through, by criticality.",
                labels=["shedder", "criticality"],
            ),
            CounterMetricFamily(
                self._name("requests_shed"),
                "Requests refused with 503 before reaching the application, by criticality "
                "and reason (overload: in-flight or queueing delay over the limit; level: "
                "the degradation level).",
                labels=["shedder", "criticality", "reason"],
            ),
            GaugeMetricFamily(
                self._name("requests_queued"),
                "Requests waiting for a slot now (the shedder's queue), by criticality.",
                labels=["shedder", "criticality"],
            ),
            CounterMetricFamily(
                self._name("requests_abandoned"),
                "Requests whose client closed the connection while they waited for a slot "
                "(dropped from the queue, never served), by criticality.",
                labels=["shedder", "criticality"],
            ),
            GaugeMetricFamily(
                self._name("queueing_delay_seconds"),
                "Last measured event-loop lag: how long a ready request waits to run.",
                labels=["shedder"],
            ),
            GaugeMetricFamily(
                self._name("shed_pressure"),
                "max(in flight / limit, queueing delay / limit): 1.0 is the limit.",
                labels=["shedder"],
            ),
        ]

    def collect(self) -> Iterable[Metric]:
        in_flight, admitted, shed, queued, abandoned, delay, pressure = families = self._families()
        with self._lock:
            shedders = list(self._shedders.values())
        for shedder, name in shedders:
            snap = shedder.snapshot()
            for c, n in snap["in_flight_by_class"].items():
                in_flight.add_metric([name, c], n)  # type: ignore[attr-defined]
            for c, n in snap["admitted"].items():
                admitted.add_metric([name, c], n)  # type: ignore[attr-defined]
            for c, reasons in snap["shed"].items():
                for reason, n in reasons.items():
                    shed.add_metric([name, c, reason], n)  # type: ignore[attr-defined]
            for c, n in snap["queued_by_class"].items():
                queued.add_metric([name, c], n)  # type: ignore[attr-defined]
            for c, n in snap["abandoned"].items():
                abandoned.add_metric([name, c], n)  # type: ignore[attr-defined]
            delay.add_metric([name], snap["delay_ms"] / 1000)  # type: ignore[attr-defined]
            pressure.add_metric([name], snap["pressure"])  # type: ignore[attr-defined]
        return families
