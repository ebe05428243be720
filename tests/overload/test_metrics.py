"""Overload guard metrics: Prometheus and OpenTelemetry read the guards' snapshots at
collection time (bulkhead in use / limit / rejections, throttle rejections, retry
budget retries made and refused)."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from brownout import Registry
from brownout.adapter import Adapter
from brownout.otel import OTelMetrics
from brownout.overload import (
    AdaptiveThrottle,
    Bulkhead,
    BulkheadFull,
    GuardPreset,
    RetryBudget,
    Throttled,
)
from brownout.prometheus import PrometheusMetrics
from brownout.testing import FakeClock


def exercise() -> tuple[Bulkhead, AdaptiveThrottle, RetryBudget]:
    """Guards with known counts: bulkhead 2/3 in use, 1 rejection; throttle 1 shed;
    budget 2 retries made, the rest refused."""
    clock = FakeClock()
    bulkhead = Bulkhead("redis", limit=3, clock=clock)
    held = [bulkhead.try_acquire(), bulkhead.try_acquire(), bulkhead.try_acquire()]
    with pytest.raises(BulkheadFull):
        bulkhead.acquire().__enter__()
    held[0].release()  # type: ignore[union-attr]
    draw = [0.999]
    throttle = AdaptiveThrottle("openai", k=2.0, clock=clock, random=lambda: draw[0])
    for _ in range(3):
        throttle.admit()
        throttle.refused()
    draw[0] = 0.0
    with pytest.raises(Throttled):
        throttle.admit()
    budget = RetryBudget("postgres", ratio=0.0, floor=0.2, window=10.0, clock=clock)
    budget.request()
    made = [budget.try_retry() for _ in range(4)]
    assert made == [True, True, False, False]  # floor 0.2/s x 10 s = 2 retries
    return bulkhead, throttle, budget


def test_prometheus_reads_the_guards_at_scrape_time() -> None:
    bulkhead, throttle, budget = exercise()
    metrics = PrometheusMetrics()
    for guard in (bulkhead, throttle, budget):
        metrics.attach(guard)
    metrics.attach(bulkhead)  # again: no double count
    value = metrics.registry.get_sample_value
    assert value("brownout_bulkhead_in_use", {"name": "redis"}) == 2.0
    assert value("brownout_bulkhead_limit", {"name": "redis"}) == 3.0
    assert value("brownout_bulkhead_admitted_total", {"name": "redis"}) == 3.0
    assert value("brownout_bulkhead_rejections_total", {"name": "redis"}) == 1.0
    assert value("brownout_throttle_requests_total", {"name": "openai"}) == 4.0
    assert value("brownout_throttle_rejections_total", {"name": "openai"}) == 1.0
    assert value("brownout_throttle_refusals_total", {"name": "openai"}) == 3.0
    assert value("brownout_throttle_probability", {"name": "openai"}) == pytest.approx(4 / 5)
    assert value("brownout_retry_budget_requests_total", {"name": "postgres"}) == 1.0
    retries = "brownout_retry_budget_retries_total"
    assert value(retries, {"name": "postgres", "outcome": "made"}) == 2.0
    assert value(retries, {"name": "postgres", "outcome": "refused"}) == 2.0
    # read live: a later change shows at the next scrape
    bulkhead.try_acquire()
    assert value("brownout_bulkhead_in_use", {"name": "redis"}) == 3.0


def test_an_adapter_and_a_registry_bring_their_guards() -> None:
    registry = Registry(guards={"cache": GuardPreset(bulkhead=4)})
    bulkhead = registry.guards("cache").bulkhead
    assert bulkhead is not None
    bulkhead.try_acquire()
    own = Bulkhead("search", limit=2)
    adapter = Adapter("search", bulkhead=own)
    metrics = PrometheusMetrics()
    metrics.attach(registry)
    detach = metrics.attach(adapter)
    value = metrics.registry.get_sample_value
    assert value("brownout_bulkhead_in_use", {"name": "cache"}) == 1.0
    assert value("brownout_bulkhead_limit", {"name": "search"}) == 2.0
    detach()
    assert value("brownout_bulkhead_limit", {"name": "search"}) is None
    plain = PrometheusMetrics()
    plain.attach(Registry())  # no guard presets: no overload metrics registered
    assert b"bulkhead" not in plain.render()


def test_otel_reads_the_same_figures() -> None:
    bulkhead, throttle, budget = exercise()
    reader = InMemoryMetricReader()
    metrics = OTelMetrics(MeterProvider(metric_readers=[reader]))
    for guard in (bulkhead, throttle, budget):
        metrics.attach(guard)
    points: dict[tuple[str, tuple[tuple[str, Any], ...]], float] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                for p in m.data.data_points:  # type: ignore[union-attr]
                    points[(m.name, tuple(sorted(p.attributes.items())))] = p.value  # type: ignore[union-attr]
    assert points[("brownout_bulkhead_in_use", (("name", "redis"),))] == 2
    assert points[("brownout_bulkhead_rejections", (("name", "redis"),))] == 1
    assert points[("brownout_throttle_rejections", (("name", "openai"),))] == 1
    made = ("brownout_retry_budget_retries", (("name", "postgres"), ("outcome", "made")))
    refused = ("brownout_retry_budget_retries", (("name", "postgres"), ("outcome", "refused")))
    assert (points[made], points[refused]) == (2, 2)
