"""brownout.prometheus: degradation-manager and adapter metrics."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

pytest.importorskip("prometheus_client")

from brownout import BreakerConfig, BreakerOpen, CircuitBreaker
from brownout.health import Component, DegradationManager, Feature, Level
from brownout.prometheus import PrometheusMetrics
from brownout.testing import FakeClock
from tests._fake_adapter import FakeAdapter, Missing

LEVELS = [lvl.name for lvl in Level]


def value(metrics: PrometheusMetrics, metric: str, /, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(metric, labels)


# ------------------------------------------------------------------- manager


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


def make_manager(clock: FakeClock) -> DegradationManager:
    return DegradationManager(
        [
            Component("database", breaker=CircuitBreaker("database", clock=clock)),
            Component("cache", breaker=CircuitBreaker("cache", clock=clock)),
            Component("openai", breaker=CircuitBreaker("openai", clock=clock)),
            Component("s3", configured=False),
        ],
        features=[
            Feature("cache_read", {"cache"}, Level.DEGRADED),
            Feature("ai", {"openai"}, Level.DEGRADED),
            Feature("always"),
        ],
        dwell=5.0,
        clock=clock,
    )


def breaker(manager: DegradationManager, name: str) -> CircuitBreaker:
    cb = manager.component(name).breaker
    assert cb is not None
    return cb


def level_states(metrics: PrometheusMetrics) -> dict[str, float | None]:
    return {lvl: value(metrics, "brownout_degradation_level_state", level=lvl) for lvl in LEVELS}


def recover(clock: FakeClock, manager: DegradationManager, name: str) -> None:
    breaker(manager, name).reset()
    for _ in range(10):
        clock.advance(6)
        manager.evaluate("heartbeat")
        if manager.level is Level.OPTIMAL:
            return
    raise AssertionError(f"no recovery: {manager.explain()['decision']}")


def test_manager_gauges_on_attach(clock: FakeClock) -> None:
    manager = make_manager(clock)
    metrics = PrometheusMetrics()
    metrics.attach(manager)
    assert value(metrics, "brownout_degradation_level") == 0.0
    assert level_states(metrics) == {"OPTIMAL": 1.0, **dict.fromkeys(LEVELS[1:], 0.0)}
    assert value(metrics, "brownout_health_score") == 100.0
    for name in ("database", "cache", "openai"):
        assert value(metrics, "brownout_component_health_score", component=name) == 100.0
    # an absent component has no score series
    assert value(metrics, "brownout_component_health_score", component="s3") is None
    for feature in ("cache_read", "ai", "always"):
        assert value(metrics, "brownout_feature_enabled", feature=feature) == 1.0
    # the early warning exists (at 0) for pairs of present components only
    assert (
        value(metrics, "brownout_cascade_expected_extra_load", source="cache", target="database")
        == 0.0
    )
    assert (
        value(metrics, "brownout_cascade_expected_extra_load", source="database", target="cache")
        == 0.0
    )
    assert (
        value(metrics, "brownout_cascade_expected_extra_load", source="database", target="s3")
        is None
    )


def test_manager_metrics_follow_an_incident(clock: FakeClock) -> None:
    manager = make_manager(clock)
    metrics = PrometheusMetrics()
    metrics.attach(manager)

    breaker(manager, "cache").force_open()
    assert manager.level is Level.DEGRADED
    assert value(metrics, "brownout_degradation_level") == 1.0
    assert level_states(metrics)["DEGRADED"] == 1.0
    assert level_states(metrics)["OPTIMAL"] == 0.0
    assert value(metrics, "brownout_component_health_score", component="cache") == 0.0
    assert value(metrics, "brownout_health_score") == pytest.approx(manager.score)
    assert value(metrics, "brownout_feature_enabled", feature="cache_read") == 0.0
    assert value(metrics, "brownout_feature_enabled", feature="ai") == 1.0
    assert (
        value(metrics, "brownout_cascade_expected_extra_load", source="cache", target="database")
        == 0.3
    )
    assert (
        value(
            metrics,
            "brownout_degradation_transitions_total",
            from_level="OPTIMAL",
            to_level="DEGRADED",
        )
        == 1.0
    )
    assert value(metrics, "brownout_recovery_seconds_count") in (None, 0.0)

    started = clock()
    recover(clock, manager, "cache")
    assert value(metrics, "brownout_degradation_level") == 0.0
    assert (
        value(
            metrics,
            "brownout_degradation_transitions_total",
            from_level="DEGRADED",
            to_level="OPTIMAL",
        )
        == 1.0
    )
    assert value(metrics, "brownout_recovery_seconds_count") == 1.0
    assert value(metrics, "brownout_recovery_seconds_sum") == pytest.approx(clock() - started)
    assert (
        value(metrics, "brownout_cascade_expected_extra_load", source="cache", target="database")
        == 0.0
    )
    assert value(metrics, "brownout_feature_enabled", feature="cache_read") == 1.0


def test_recovery_of_an_incident_begun_before_attach(clock: FakeClock) -> None:
    manager = make_manager(clock)
    breaker(manager, "cache").force_open()
    started = clock()
    clock.advance(30)
    metrics = PrometheusMetrics()
    metrics.attach(manager)
    assert value(metrics, "brownout_degradation_level") == 1.0
    recover(clock, manager, "cache")
    assert value(metrics, "brownout_recovery_seconds_sum") == pytest.approx(clock() - started)
    # the transition before attach was not seen; the one after was
    assert (
        value(
            metrics,
            "brownout_degradation_transitions_total",
            from_level="OPTIMAL",
            to_level="DEGRADED",
        )
        is None
    )


def test_pinned_level_and_multi_step_incident(clock: FakeClock) -> None:
    manager = make_manager(clock)
    metrics = PrometheusMetrics()
    metrics.attach(manager)
    manager.pin(Level.EMERGENCY, duration=60)
    assert value(metrics, "brownout_degradation_level") == 4.0
    assert level_states(metrics)["EMERGENCY"] == 1.0
    assert sum(v or 0.0 for v in level_states(metrics).values()) == 1.0
    clock.advance(20)
    manager.unpin()
    # step recovery: EMERGENCY -> MINIMAL -> ... -> OPTIMAL, one incident
    for _ in range(20):
        clock.advance(6)
        manager.evaluate("heartbeat")
    assert manager.level is Level.OPTIMAL
    assert value(metrics, "brownout_recovery_seconds_count") == 1.0
    assert (
        value(
            metrics,
            "brownout_degradation_transitions_total",
            from_level="EMERGENCY",
            to_level="MINIMAL",
        )
        == 1.0
    )


def test_detach_leaves_nothing_on_the_manager(clock: FakeClock) -> None:
    import gc
    import weakref

    from brownout.prometheus._health import HealthMetrics

    manager = make_manager(clock)
    metrics = PrometheusMetrics()
    detach = metrics.attach(manager)
    group = weakref.ref(metrics.group(HealthMetrics))
    breaker(manager, "cache").force_open()  # a transition reaches the metrics
    detach()
    del metrics, detach
    gc.collect()
    assert group() is None  # no listener of the manager keeps the metrics alive


def test_attach_manager_twice_is_a_noop_and_another_is_refused(clock: FakeClock) -> None:
    manager = make_manager(clock)
    metrics = PrometheusMetrics()
    detach = metrics.attach(manager)
    metrics.attach(manager)
    breaker(manager, "cache").force_open()
    assert (
        value(
            metrics,
            "brownout_degradation_transitions_total",
            from_level="OPTIMAL",
            to_level="DEGRADED",
        )
        == 1.0
    )
    other = make_manager(clock)
    with pytest.raises(ValueError, match="another DegradationManager"):
        metrics.attach(other)
    detach()
    metrics.attach(other)  # allowed once the first is detached
    recover(clock, manager, "cache")  # the detached manager no longer feeds anything
    assert (
        value(
            metrics,
            "brownout_degradation_transitions_total",
            from_level="DEGRADED",
            to_level="OPTIMAL",
        )
        is None
    )
    assert value(metrics, "brownout_degradation_level") == 0.0


def test_namespace_applies(clock: FakeClock) -> None:
    metrics = PrometheusMetrics(namespace="shop")
    metrics.attach(make_manager(clock))
    assert metrics.registry.get_sample_value("shop_degradation_level") == 0.0
    assert b"shop_health_score 100.0" in metrics.render()


# ------------------------------------------------------------------ adapters


class FakeS3(FakeAdapter):
    kind = "s3"


def make_adapter(cls: type[FakeAdapter] = FakeAdapter, **kw: Any) -> FakeAdapter:
    return cls(config=BreakerConfig(consecutive_failures=2, open_for=10), clock=FakeClock(), **kw)


def requests(metrics: PrometheusMetrics, operation: str, outcome: str, **kw: str) -> float | None:
    labels = {"dependency": "fake", "name": "fake", **kw}
    return value(
        metrics,
        "brownout_dependency_requests_total",
        operation=operation,
        outcome=outcome,
        **labels,
    )


def test_adapter_requests_errors_durations_and_cache() -> None:
    adapter = make_adapter()
    metrics = PrometheusMetrics()
    detach = metrics.attach(adapter)
    adapter.get("a")
    adapter.get("none")
    with pytest.raises(Missing):
        adapter.get("missing")
    adapter.up = False
    for _ in range(2):
        with pytest.raises(ConnectionError):
            adapter.get("a")
    with pytest.raises(BreakerOpen):
        adapter.get("a")

    assert requests(metrics, "get", "success") == 2.0
    assert requests(metrics, "get", "caller_error") == 1.0
    assert requests(metrics, "get", "failure") == 2.0
    assert requests(metrics, "get", "rejected") == 1.0
    errors = "brownout_dependency_errors_total"
    assert value(metrics, errors, dependency="fake", name="fake", kind="connection") == 2.0
    # the caller's mistakes are not errors of the dependency
    assert value(metrics, errors, dependency="fake", name="fake", kind="caller") is None
    duration = "brownout_dependency_request_duration_seconds_count"
    # rejected operations are not observed
    assert value(metrics, duration, dependency="fake", name="fake", operation="get") == 5.0
    assert value(metrics, "brownout_cache_hits_total", name="fake") == 1.0
    assert value(metrics, "brownout_cache_misses_total", name="fake") == 1.0

    detach()  # detached: not read any more, its series are gone
    adapter.up = True
    adapter.breaker.reset()
    adapter.get("a")
    assert requests(metrics, "get", "success") is None


def test_s3_bytes_only_for_s3_adapters() -> None:
    s3 = make_adapter(FakeS3, name="assets")
    other = make_adapter(name="kv")
    metrics = PrometheusMetrics()
    metrics.attach(s3)
    metrics.attach(other)
    s3.put("k", b"12345")
    s3.download("k")
    other.put("k", b"123")
    assert value(metrics, "brownout_s3_bytes_total", name="assets", direction="up") == 5.0
    assert value(metrics, "brownout_s3_bytes_total", name="assets", direction="down") == 7.0
    assert value(metrics, "brownout_s3_bytes_total", name="kv", direction="up") is None
    assert (
        value(
            metrics,
            "brownout_dependency_requests_total",
            dependency="s3",
            name="assets",
            operation="put",
            outcome="success",
        )
        == 1.0
    )


def test_openai_tokens_by_model_and_kind() -> None:
    adapter = make_adapter(name="llm")
    metrics = PrometheusMetrics()
    metrics.attach(adapter)
    adapter.chat("gpt-x")
    adapter.chat("gpt-x")
    adapter.chat(None)
    tokens = "brownout_openai_tokens_total"
    assert value(metrics, tokens, name="llm", model="gpt-x", kind="prompt") == 22.0
    assert value(metrics, tokens, name="llm", model="gpt-x", kind="completion") == 8.0
    assert value(metrics, tokens, name="llm", model="unknown", kind="prompt") == 11.0


def test_pool_gauges_read_at_scrape_time() -> None:
    pooled = make_adapter(name="db", pool={"pool_in_use": 3, "pool_size": 10, "pool_idle": 7})
    partial = make_adapter(name="kv", pool={"pool_in_use": None, "pool_size": 5})
    plain = make_adapter(name="plain")
    metrics = PrometheusMetrics()
    for a in (pooled, partial, plain):
        metrics.attach(a)
    in_use = "brownout_pool_connections_in_use"
    size = "brownout_pool_size"
    assert value(metrics, in_use, dependency="fake", name="db") == 3.0
    assert value(metrics, size, dependency="fake", name="db") == 10.0
    assert value(metrics, in_use, dependency="fake", name="kv") is None
    assert value(metrics, size, dependency="fake", name="kv") == 5.0
    assert value(metrics, in_use, dependency="fake", name="plain") is None
    assert value(metrics, size, dependency="fake", name="plain") is None
    pooled.pool = {"pool_in_use": 9, "pool_size": 10}
    assert value(metrics, in_use, dependency="fake", name="db") == 9.0


def test_a_failing_pool_figure_does_not_break_the_scrape(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad = make_adapter(name="bad", pool={"boom": True})
    good = make_adapter(name="good", pool={"pool_in_use": 1, "pool_size": 2})
    metrics = PrometheusMetrics()
    metrics.attach(bad)
    metrics.attach(good)
    body = metrics.render()
    assert b'brownout_pool_size{dependency="fake",name="good"} 2.0' in body
    assert "extra_figures() of adapter 'bad' failed" in caplog.text


def test_attach_adapter_twice_counts_once() -> None:
    adapter = make_adapter()
    metrics = PrometheusMetrics()
    metrics.attach(adapter)
    metrics.attach(adapter)
    adapter.get("a")
    assert requests(metrics, "get", "success") == 1.0


def test_attach_rejects_other_types() -> None:
    with pytest.raises(TypeError, match="CircuitBreaker or a Registry"):
        PrometheusMetrics().attach(object())  # type: ignore[call-overload]


def test_manager_and_adapter_metrics_render_together(clock: FakeClock) -> None:
    metrics = PrometheusMetrics()
    manager = make_manager(clock)
    adapter = make_adapter(pool={"pool_in_use": 0, "pool_size": 4})
    metrics.attach(manager)
    metrics.attach(adapter)
    metrics.attach(breaker(manager, "cache"))
    adapter.get("a")
    body = metrics.render().decode()
    for name in (
        "brownout_degradation_level ",
        "brownout_degradation_level_state{",
        "brownout_health_score ",
        "brownout_component_health_score{",
        "brownout_cascade_expected_extra_load{",
        "brownout_recovery_seconds_bucket{",
        "brownout_feature_enabled{",
        "brownout_dependency_requests_total{",
        "brownout_dependency_request_duration_seconds_bucket{",
        "brownout_cache_hits_total{",
        "brownout_pool_connections_in_use{",
        "brownout_pool_size{",
        "brownout_breaker_state{",
    ):
        assert name in body, name


def test_prometheus_import_does_not_load_health_or_adapters() -> None:
    code = (
        "import sys, brownout.prometheus\n"
        "assert 'brownout.health' not in sys.modules, 'health loaded'\n"
        "assert 'brownout.prometheus._health' not in sys.modules\n"
        "assert 'brownout.prometheus._adapters' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
