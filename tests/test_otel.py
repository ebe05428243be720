"""brownout.otel: the same figures as the Prometheus backend, through OpenTelemetry observable
instruments, read by the SDK's InMemoryMetricReader."""

from __future__ import annotations

import asyncio
import importlib
import sys

import pytest

pytest.importorskip("opentelemetry.sdk.metrics")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from brownout import BreakerConfig, BreakerOpen, CircuitBreaker, Registry
from brownout.otel import OTelMetrics
from brownout.testing import FakeClock
from tests._fake_adapter import FakeAdapter, Missing

Points = dict[str, dict[frozenset[tuple[str, str]], float]]


def collect(reader: InMemoryMetricReader) -> Points:
    data = reader.get_metrics_data()
    out: Points = {}
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points = out.setdefault(metric.name, {})
                for point in metric.data.data_points:  # type: ignore[union-attr]
                    attrs = frozenset((k, str(v)) for k, v in (point.attributes or {}).items())
                    points[attrs] = point.value  # type: ignore[union-attr]
    return out


def point(points: Points, metric: str, /, **attrs: str) -> float | None:
    return points.get(metric, {}).get(frozenset(attrs.items()))


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def metrics(reader: InMemoryMetricReader) -> OTelMetrics:
    return OTelMetrics(MeterProvider(metric_readers=[reader]))


def boom() -> None:
    raise ConnectionError("refused")


async def test_breaker_figures_are_exported(
    reader: InMemoryMetricReader, metrics: OTelMetrics
) -> None:
    clock = FakeClock()
    registry = Registry(default=BreakerConfig(consecutive_failures=2, open_for=10), clock=clock)
    metrics.attach(registry)
    fast = registry.get("fast")
    timed = registry.get(
        "timed", BreakerConfig(consecutive_failures=2, open_for=10, slow_call_duration=1.0)
    )

    def took(seconds: float) -> None:
        clock.advance(seconds)

    async def ok() -> int:
        return 1

    for _ in range(5):
        fast.call(len, "x")
        await fast.acall(ok)
    timed.call(took, 0.003)
    timed.call(took, 2.0)  # slow
    for _ in range(2):
        with pytest.raises(ConnectionError):
            fast.call(boom)
    with pytest.raises(BreakerOpen):
        fast.call(len, "x")
    assert fast._fast is None and timed._call_listeners == ()  # open; no call listener

    p = collect(reader)
    assert point(p, "brownout_calls", breaker="fast", outcome="success") == 10
    assert point(p, "brownout_calls", breaker="fast", outcome="failure") == 2
    assert point(p, "brownout_calls", breaker="fast", outcome="rejected") == 1
    assert point(p, "brownout_calls_rejected", breaker="fast") == 1
    assert point(p, "brownout_calls", breaker="timed", outcome="success") == 2
    assert point(p, "brownout_slow_calls", breaker="timed") == 1
    assert point(p, "brownout_breaker_state", breaker="fast", state="open") == 1
    assert point(p, "brownout_breaker_state", breaker="fast", state="closed") == 0
    assert point(p, "brownout_breaker_state", breaker="timed", state="closed") == 1
    assert (
        point(
            p, "brownout_breaker_transitions", breaker="fast", from_state="closed", to_state="open"
        )
        == 1
    )
    assert point(p, "brownout_breaker_trips", breaker="fast", trigger="consecutive_failures") == 1
    assert point(p, "brownout_call_duration_seconds_count", breaker="timed") == 2
    assert point(p, "brownout_call_duration_seconds_sum", breaker="timed") == pytest.approx(2.003)
    assert point(p, "brownout_call_duration_seconds_bucket", breaker="timed", le="0.005") == 1
    assert point(p, "brownout_call_duration_seconds_bucket", breaker="timed", le="2.5") == 2
    assert point(p, "brownout_call_duration_seconds_bucket", breaker="timed", le="+Inf") == 2

    # a later collection sees the later calls
    clock.advance(10)
    fast.call(len, "x")  # the half-open probe: closes it
    p = collect(reader)
    assert point(p, "brownout_calls", breaker="fast", outcome="success") == 11
    assert point(p, "brownout_breaker_state", breaker="fast", state="closed") == 1


class FakeKV(FakeAdapter):
    kind = "redis"


def test_adapter_figures_are_exported(reader: InMemoryMetricReader, metrics: OTelMetrics) -> None:
    adapter = FakeKV(
        pool={"pool_in_use": 2, "pool_size": 8},
        name="kv",
        config=BreakerConfig(consecutive_failures=5),
        clock=FakeClock(),
    )
    metrics.attach(adapter)
    adapter.get("a")
    adapter.get("none")
    with pytest.raises(Missing):
        adapter.get("missing")
    adapter.up = False
    with pytest.raises(ConnectionError):
        adapter.get("a")
    p = collect(reader)
    req = "brownout_dependency_requests"
    assert point(p, req, dependency="redis", name="kv", operation="get", outcome="success") == 2
    assert (
        point(p, req, dependency="redis", name="kv", operation="get", outcome="caller_error") == 1
    )
    assert point(p, req, dependency="redis", name="kv", operation="get", outcome="failure") == 1
    assert (
        point(p, "brownout_dependency_errors", dependency="redis", name="kv", kind="connection")
        == 1
    )
    assert point(p, "brownout_cache_hits", name="kv") == 1
    assert point(p, "brownout_cache_misses", name="kv") == 1
    dur = "brownout_dependency_request_duration_seconds_count"
    assert point(p, dur, dependency="redis", name="kv", operation="get") == 4
    assert point(p, "brownout_pool_size", dependency="redis", name="kv") == 8
    assert point(p, "brownout_pool_connections_in_use", dependency="redis", name="kv") == 2


def test_a_registry_detaches(reader: InMemoryMetricReader, metrics: OTelMetrics) -> None:
    registry = Registry(clock=FakeClock())
    kept = CircuitBreaker("kept", clock=FakeClock())
    metrics.attach(kept)  # still read after the registry's detach: the collection is not empty
    detach = metrics.attach(registry)
    registry.get("db").call(len, "x")
    assert point(collect(reader), "brownout_calls", breaker="db", outcome="success") == 1
    detach()
    registry.get("later").call(len, "x")
    kept.call(len, "x")
    points = collect(reader)
    assert point(points, "brownout_calls", breaker="later", outcome="success") is None
    assert point(points, "brownout_calls", breaker="kept", outcome="success") == 1


def test_namespace_and_bad_targets(reader: InMemoryMetricReader) -> None:
    metrics = OTelMetrics(MeterProvider(metric_readers=[reader]), namespace="shop")
    cb = CircuitBreaker("db")
    metrics.attach(cb)
    cb.call(len, "x")
    p = collect(reader)
    assert point(p, "shop_calls", breaker="db", outcome="success") == 1
    assert "brownout_calls" not in p
    with pytest.raises(TypeError, match="CircuitBreaker, a Registry or an Adapter"):
        metrics.attach(object())  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="namespace"):
        OTelMetrics(namespace=1)  # type: ignore[arg-type]


def test_missing_sdk_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "brownout.otel", raising=False)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ImportError, match=r"pip install 'brownout\[otel\]'"):
        importlib.import_module("brownout.otel")


def test_async_and_threads_are_counted(reader: InMemoryMetricReader, metrics: OTelMetrics) -> None:
    import threading

    cb = CircuitBreaker("shared")
    metrics.attach(cb)

    async def ok() -> int:
        return 1

    async def many() -> None:
        await asyncio.gather(*(cb.acall(ok) for _ in range(300)))

    def worker() -> None:
        for _ in range(500):
            cb.call(len, "x")
        asyncio.run(many())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert point(collect(reader), "brownout_calls", breaker="shared", outcome="success") == 3200
