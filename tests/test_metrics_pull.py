"""Metrics are pulled at scrape time: counts equal the calls made, whoever made them and when.

Issue 11 item 1: breakers and adapters count in their own state; attaching
metrics installs nothing on the call path.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref

import pytest

pytest.importorskip("prometheus_client")

import itertools

from brownout import BreakerConfig, BreakerOpen, CircuitBreaker, Registry
from brownout.prometheus import PrometheusMetrics
from brownout.testing import FakeClock


def sample(metrics: PrometheusMetrics, metric: str, /, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(metric, labels)


def calls(metrics: PrometheusMetrics, breaker: str, outcome: str) -> float | None:
    return sample(metrics, "brownout_calls_total", breaker=breaker, outcome=outcome)


def boom() -> None:
    raise ConnectionError("refused")


async def test_async_calls_are_counted_exactly() -> None:
    registry = Registry(default=BreakerConfig(consecutive_failures=1000))
    metrics = PrometheusMetrics()
    metrics.attach(registry)
    fast = registry.get("fast")
    timed = registry.get("timed", BreakerConfig(consecutive_failures=1000, slow_call_duration=60))

    async def ok() -> int:
        await asyncio.sleep(0)
        return 1

    async def bad() -> None:
        raise ConnectionError("refused")

    async def worker() -> None:
        for i in range(100):
            await fast.acall(ok)
            await timed.acall(ok)
            if i % 10 == 0:
                for cb in (fast, timed):
                    with pytest.raises(ConnectionError):
                        await cb.acall(bad)

    await asyncio.gather(*(worker() for _ in range(20)))
    for name in ("fast", "timed"):
        assert calls(metrics, name, "success") == 2000.0
        assert calls(metrics, name, "failure") == 200.0
    assert sample(metrics, "brownout_call_duration_seconds_count", breaker="timed") == 2200.0
    assert sample(metrics, "brownout_call_duration_seconds_count", breaker="fast") == 0.0
    assert fast._fast is not None, "metrics must not take the breaker off its lock-free path"


def test_scrape_while_calls_run() -> None:
    """Scrapes taken while eight threads call: every value only grows; the last is exact."""
    metrics = PrometheusMetrics()
    cb = CircuitBreaker("busy", BreakerConfig(consecutive_failures=10**9, slow_call_duration=60))
    fast = CircuitBreaker("busy-fast", BreakerConfig(consecutive_failures=10**9))
    metrics.attach(cb)
    metrics.attach(fast)
    per_thread, threads_n = 3000, 8
    start = threading.Barrier(threads_n + 1)
    done = threading.Event()

    def worker() -> None:
        start.wait()
        for i in range(per_thread):
            cb.call(len, "x")
            fast.call(len, "x")
            if i % 100 == 0:
                with pytest.raises(ConnectionError):
                    cb.call(boom)

    threads = [threading.Thread(target=worker) for _ in range(threads_n)]
    for t in threads:
        t.start()
    start.wait()
    seen: list[tuple[float, float, float, float]] = []

    def scrape() -> tuple[float, float, float, float]:
        metrics.render()  # the whole text format, as Prometheus asks for it
        return (
            calls(metrics, "busy", "success") or 0.0,
            calls(metrics, "busy", "failure") or 0.0,
            sample(metrics, "brownout_call_duration_seconds_count", breaker="busy") or 0.0,
            calls(metrics, "busy-fast", "success") or 0.0,
        )

    def watch() -> None:
        while not done.is_set():
            seen.append(scrape())

    watcher = threading.Thread(target=watch)
    watcher.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    assert len(seen) >= 2
    for before, after in itertools.pairwise(seen):
        assert all(a >= b for a, b in zip(after, before, strict=True)), (before, after)
    failures = threads_n * (per_thread // 100)
    total = threads_n * per_thread
    assert scrape() == (float(total), float(failures), float(total + failures), float(total))


def test_a_breaker_collected_while_attached_keeps_its_counts() -> None:
    clock = FakeClock()
    metrics = PrometheusMetrics()
    cfg = BreakerConfig(consecutive_failures=2, open_for=10, slow_call_duration=60)
    first = CircuitBreaker("gone", cfg, clock=clock)
    metrics.attach(first)
    for _ in range(3):
        first.call(len, "x")
    for _ in range(2):
        with pytest.raises(ConnectionError):
            first.call(boom)
    with pytest.raises(BreakerOpen):
        first.call(len, "x")
    assert calls(metrics, "gone", "success") == 3.0
    ref = weakref.ref(first)
    del first
    gc.collect()
    assert ref() is None, "the metrics must not keep a breaker alive"
    # the series stays (a counter never goes down); no state is reported for it
    assert calls(metrics, "gone", "success") == 3.0
    assert calls(metrics, "gone", "failure") == 2.0
    assert calls(metrics, "gone", "rejected") == 1.0
    assert sample(metrics, "brownout_call_duration_seconds_count", breaker="gone") == 5.0
    assert sample(metrics, "brownout_breaker_transitions_total", breaker="gone",
                  from_state="closed", to_state="open") == 1.0  # fmt: skip
    assert sample(metrics, "brownout_breaker_state", breaker="gone", state="open") is None
    # a new breaker of that name carries the series on
    second = CircuitBreaker("gone", cfg, clock=clock)
    metrics.attach(second)
    second.call(len, "x")
    assert calls(metrics, "gone", "success") == 4.0
    assert sample(metrics, "brownout_call_duration_seconds_count", breaker="gone") == 6.0
    assert sample(metrics, "brownout_breaker_state", breaker="gone", state="closed") == 1.0


def test_a_breaker_of_a_collected_registry_keeps_its_counts() -> None:
    metrics = PrometheusMetrics()
    registry = Registry()
    metrics.attach(registry)
    registry.get("db").call(len, "x")
    # a registry's new breaker is adopted at the next scrape (or its first transition)
    assert calls(metrics, "db", "success") == 1.0
    registry.get("db").call(len, "x")
    ref = weakref.ref(registry.get("db"))
    del registry
    gc.collect()
    assert ref() is None
    assert calls(metrics, "db", "success") == 2.0


def test_detached_breakers_are_not_kept_after_collection() -> None:
    metrics = PrometheusMetrics()
    cb = CircuitBreaker("tmp")
    detach = metrics.attach(cb)
    cb.call(len, "x")
    detach()
    del cb
    gc.collect()
    assert calls(metrics, "tmp", "success") is None


def test_an_adapter_collected_while_attached_keeps_its_counts() -> None:
    from brownout.adapter import Adapter

    class Payments(Adapter):
        kind = "payments"

        def charge(self, amount: int) -> str:
            return self._run("charge", lambda: f"charged {amount}")

    metrics = PrometheusMetrics()
    first = Payments(name="pay")
    metrics.attach(first)
    for amount in range(3):
        first.charge(amount)
    ref = weakref.ref(first)
    del first
    gc.collect()
    assert ref() is None, "the metrics must not keep an adapter alive"
    labels = {"dependency": "payments", "name": "pay", "operation": "charge"}
    assert sample(metrics, "brownout_dependency_requests_total", **labels, outcome="success") == 3
    second = Payments(name="pay")
    metrics.attach(second)
    second.charge(1)
    assert sample(metrics, "brownout_dependency_requests_total", **labels, outcome="success") == 4
    assert sample(metrics, "brownout_dependency_request_duration_seconds_count", **labels) == 4
