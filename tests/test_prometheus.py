"""brownout.prometheus: breaker metrics read from the breakers at scrape time, in a registry of
the caller's choosing."""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import subprocess
import sys

import pytest

prometheus_client = pytest.importorskip("prometheus_client")

from prometheus_client import CollectorRegistry  # noqa: E402

from brownout import BreakerConfig, BreakerOpen, CircuitBreaker, Registry, State  # noqa: E402
from brownout.prometheus import CONTENT_TYPE, PrometheusMetrics  # noqa: E402
from brownout.testing import FakeClock  # noqa: E402

STATES = [s.value for s in State]


def value(metrics: PrometheusMetrics, name: str, **labels: str) -> float:
    got = metrics.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def calls(metrics: PrometheusMetrics, breaker: str, outcome: str) -> float:
    return value(metrics, "brownout_calls_total", breaker=breaker, outcome=outcome)


def trips(metrics: PrometheusMetrics, breaker: str, trigger: str) -> float:
    return value(metrics, "brownout_breaker_trips_total", breaker=breaker, trigger=trigger)


def transitions(metrics: PrometheusMetrics, breaker: str, frm: str, to: str) -> float:
    return value(
        metrics,
        "brownout_breaker_transitions_total",
        breaker=breaker,
        from_state=frm,
        to_state=to,
    )


def bucket(metrics: PrometheusMetrics, breaker: str, le: str) -> float:
    return value(metrics, "brownout_call_duration_seconds_bucket", breaker=breaker, le=le)


def state_of(metrics: PrometheusMetrics, breaker: str) -> str:
    """The one state whose gauge is 1 (and check every other is present and 0)."""
    values = {
        s: metrics.registry.get_sample_value(
            "brownout_breaker_state", {"breaker": breaker, "state": s}
        )
        for s in STATES
    }
    assert all(v is not None for v in values.values()), values
    ones = [s for s, v in values.items() if v == 1.0]
    assert len(ones) == 1, values
    assert sum(v for v in values.values() if v is not None) == 1.0
    return ones[0]


def boom() -> None:
    raise ConnectionError("refused")


def fail(cb: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        with pytest.raises(ConnectionError):
            cb.call(boom)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def metrics() -> PrometheusMetrics:
    return PrometheusMetrics()


def make(clock: FakeClock, name: str = "redis", **config: object) -> CircuitBreaker:
    cfg = BreakerConfig(**{"consecutive_failures": 2, "open_for": 10.0, **config})  # type: ignore[arg-type]
    return CircuitBreaker(name, cfg, clock=clock)


# ------------------------------------------------------------------- construction


def test_default_registry_is_private_and_exposed() -> None:
    metrics = PrometheusMetrics()
    assert isinstance(metrics.registry, CollectorRegistry)
    assert metrics.registry is not prometheus_client.REGISTRY
    assert metrics.namespace == "brownout"
    metrics.attach(CircuitBreaker("private"))
    assert (
        prometheus_client.REGISTRY.get_sample_value(
            "brownout_breaker_state", {"breaker": "private", "state": "closed"}
        )
        is None
    )


def test_explicit_registry_is_used() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    assert metrics.registry is registry
    cb = CircuitBreaker("db")
    metrics.attach(cb)
    assert registry.get_sample_value("brownout_breaker_state", {"breaker": "db", "state": "closed"})


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="CollectorRegistry"):
        PrometheusMetrics(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="namespace"):
        PrometheusMetrics(namespace=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="CircuitBreaker or a Registry"):
        PrometheusMetrics().attach("redis")  # type: ignore[call-overload]


def test_namespace_prefixes_every_metric(clock: FakeClock) -> None:
    metrics = PrometheusMetrics(namespace="myapp")
    cb = make(clock)
    metrics.attach(cb)
    cb.call(len, "x")
    get = metrics.registry.get_sample_value
    assert get("myapp_calls_total", {"breaker": "redis", "outcome": "success"}) == 1.0
    assert get("myapp_breaker_state", {"breaker": "redis", "state": "closed"}) == 1.0
    assert get("brownout_calls_total", {"breaker": "redis", "outcome": "success"}) is None


def test_render_and_content_type(clock: FakeClock, metrics: PrometheusMetrics) -> None:
    cb = make(clock)
    metrics.attach(cb)
    cb.call(len, "x")
    text = metrics.render().decode()
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")
    for name in (
        "brownout_breaker_state",
        "brownout_calls_total",
        "brownout_slow_calls_total",
        "brownout_calls_rejected_total",
        "brownout_call_duration_seconds_bucket",
        "brownout_breaker_transitions_total",
        "brownout_breaker_trips_total",
    ):
        assert f"# TYPE {name.removesuffix('_bucket').removesuffix('_total')}" in text
    assert 'brownout_calls_total{breaker="redis",outcome="success"} 1.0' in text
    assert 'brownout_breaker_state{breaker="redis",state="closed"} 1.0' in text


def test_group_is_created_once() -> None:
    metrics = PrometheusMetrics()
    made: list[tuple[CollectorRegistry, str]] = []

    def factory(registry: CollectorRegistry, namespace: str) -> object:
        made.append((registry, namespace))
        return object()

    first = metrics.group(factory)
    assert metrics.group(factory) is first
    assert made == [(metrics.registry, "brownout")]


# ------------------------------------------------------------------- call outcomes


def test_successes(clock: FakeClock, metrics: PrometheusMetrics) -> None:
    cb = make(clock)
    metrics.attach(cb)
    for _ in range(3):
        assert cb.call(len, "abc") == 3
    assert calls(metrics, "redis", "success") == 3.0
    for outcome in ("failure", "ignored", "rejected"):
        # every outcome series exists from the start, at zero
        assert (
            metrics.registry.get_sample_value(
                "brownout_calls_total", {"breaker": "redis", "outcome": outcome}
            )
            == 0.0
        )
    # the default configuration is the untimed lock-free path: no duration observed
    assert value(metrics, "brownout_call_duration_seconds_count", breaker="redis") == 0.0
    assert value(metrics, "brownout_slow_calls_total", breaker="redis") == 0.0
    assert state_of(metrics, "redis") == "closed"
    assert cb._fast is not None, "attaching metrics must keep the lock-free fast path"


def test_timed_calls_fill_the_histogram(clock: FakeClock, metrics: PrometheusMetrics) -> None:
    cb = make(clock, slow_call_duration=60.0)  # a slow-call threshold: every call is timed
    metrics.attach(cb)

    def took(seconds: float) -> None:
        clock.advance(seconds)

    for seconds in (0.0004, 0.003, 0.003, 0.2, 30.0):
        cb.call(took, seconds)
    fail(cb)
    assert value(metrics, "brownout_call_duration_seconds_count", breaker="redis") == 6.0
    assert value(metrics, "brownout_call_duration_seconds_sum", breaker="redis") == pytest.approx(
        30.2064
    )
    assert bucket(metrics, "redis", "0.0005") == 2.0  # 0.0004 and the failure (0 s)
    assert bucket(metrics, "redis", "0.005") == 4.0
    assert bucket(metrics, "redis", "0.25") == 5.0
    assert bucket(metrics, "redis", "10.0") == 5.0
    assert bucket(metrics, "redis", "+Inf") == 6.0


def test_attaching_installs_no_call_listener(clock: FakeClock, metrics: PrometheusMetrics) -> None:
    registry = Registry(clock=clock)
    direct = make(clock, name="direct")
    metrics.attach(registry)
    metrics.attach(direct)
    for cb in (registry.get("a"), direct):
        assert cb._call_listeners == ()
        assert cb._fast is not None


def test_failures_trip_and_transition(clock: FakeClock, metrics: PrometheusMetrics) -> None:
    cb = make(clock)
    metrics.attach(cb)
    fail(cb)
    assert calls(metrics, "redis", "failure") == 1.0
    assert state_of(metrics, "redis") == "closed"
    fail(cb)
    assert calls(metrics, "redis", "failure") == 2.0
    assert state_of(metrics, "redis") == "open"
    assert transitions(metrics, "redis", "closed", "open") == 1.0
    assert trips(metrics, "redis", "consecutive_failures") == 1.0


def test_ignored_errors(clock: FakeClock, metrics: PrometheusMetrics) -> None:
    cb = make(clock, ignore=(KeyError,))
    metrics.attach(cb)

    def missing() -> None:
        clock.advance(0.003)
        raise KeyError("k")

    with pytest.raises(KeyError):
        cb.call(missing)
    assert calls(metrics, "redis", "ignored") == 1.0
    assert calls(metrics, "redis", "failure") == 0.0
    # ignored calls count as nothing: not in the histogram either (as in the snapshot)
    assert value(metrics, "brownout_call_duration_seconds_count", breaker="redis") == 0.0


async def test_cancelled_call_is_ignored(clock: FakeClock, metrics: PrometheusMetrics) -> None:
    cb = make(clock)
    metrics.attach(cb)

    async def cancelled() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await cb.acall(cancelled)
    assert calls(metrics, "redis", "ignored") == 1.0
    assert value(metrics, "brownout_call_duration_seconds_count", breaker="redis") == 0.0


async def test_async_calls(clock: FakeClock, metrics: PrometheusMetrics) -> None:
    cb = make(clock, slow_call_duration=60.0)
    metrics.attach(cb)

    async def fetch() -> int:
        clock.advance(0.02)
        return 7

    assert await cb.acall(fetch) == 7
    assert calls(metrics, "redis", "success") == 1.0
    assert bucket(metrics, "redis", "0.025") == 1.0
    assert bucket(metrics, "redis", "0.01") == 0.0


def test_rejections(clock: FakeClock, metrics: PrometheusMetrics) -> None:
    cb = make(clock, slow_call_duration=60.0)
    metrics.attach(cb)
    fail(cb, 2)
    for _ in range(3):
        with pytest.raises(BreakerOpen):
            cb.call(len, "x")
    assert calls(metrics, "redis", "rejected") == 3.0
    assert value(metrics, "brownout_calls_rejected_total", breaker="redis") == 3.0
    # rejections are not timed: only the two failures are in the histogram
    assert value(metrics, "brownout_call_duration_seconds_count", breaker="redis") == 2.0


def test_rejections_with_fallback(clock: FakeClock, metrics: PrometheusMetrics) -> None:
    cb = CircuitBreaker(
        "s3", BreakerConfig(consecutive_failures=1), clock=clock, fallback=lambda exc: "cached"
    )
    metrics.attach(cb)
    assert cb.call(boom) == "cached"  # a failure, answered by the fallback
    assert cb.call(str, "x") == "cached"  # rejected, answered by the fallback
    assert calls(metrics, "s3", "failure") == 1.0
    assert calls(metrics, "s3", "rejected") == 1.0
    assert value(metrics, "brownout_calls_rejected_total", breaker="s3") == 1.0


def test_slow_calls(clock: FakeClock, metrics: PrometheusMetrics) -> None:
    cb = make(clock, slow_call_duration=1.0)
    metrics.attach(cb)

    def slow() -> str:
        clock.advance(2.0)
        return "ok"

    def quick() -> str:
        clock.advance(0.1)
        return "ok"

    assert cb.call(slow) == "ok"
    assert cb.call(quick) == "ok"
    assert value(metrics, "brownout_slow_calls_total", breaker="redis") == 1.0
    assert calls(metrics, "redis", "success") == 2.0
    assert value(metrics, "brownout_call_duration_seconds_sum", breaker="redis") == pytest.approx(
        2.1
    )
    assert bucket(metrics, "redis", "1.0") == 1.0
    assert bucket(metrics, "redis", "2.5") == 2.0


def test_slow_failures_count_as_slow(clock: FakeClock, metrics: PrometheusMetrics) -> None:
    cb = make(clock, slow_call_duration=1.0)
    metrics.attach(cb)

    def slow_boom() -> None:
        clock.advance(1.5)
        raise ConnectionError("timeout")

    with pytest.raises(ConnectionError):
        cb.call(slow_boom)
    assert value(metrics, "brownout_slow_calls_total", breaker="redis") == 1.0
    assert calls(metrics, "redis", "failure") == 1.0


# --------------------------------------------------------------------- state gauge


def test_state_set_on_attach(clock: FakeClock, metrics: PrometheusMetrics) -> None:
    cb = make(clock)
    fail(cb, 2)  # open before anyone listens
    metrics.attach(cb)
    assert state_of(metrics, "redis") == "open"
    # lifetime counts, as in the snapshot: the calls made before the attach are in them
    assert calls(metrics, "redis", "failure") == 2.0


def test_full_cycle_of_transitions(clock: FakeClock, metrics: PrometheusMetrics) -> None:
    cb = make(clock, half_open_calls=1)
    metrics.attach(cb)
    assert state_of(metrics, "redis") == "closed"
    fail(cb, 2)
    assert state_of(metrics, "redis") == "open"
    clock.advance(10)
    assert cb.state is State.HALF_OPEN
    assert state_of(metrics, "redis") == "half_open"
    fail(cb)  # the probe fails
    assert state_of(metrics, "redis") == "open"
    clock.advance(10)
    assert cb.call(len, "x") == 1  # the probe succeeds
    assert state_of(metrics, "redis") == "closed"

    assert transitions(metrics, "redis", "closed", "open") == 1.0
    assert transitions(metrics, "redis", "open", "half_open") == 2.0
    assert transitions(metrics, "redis", "half_open", "open") == 1.0
    assert transitions(metrics, "redis", "half_open", "closed") == 1.0
    assert trips(metrics, "redis", "consecutive_failures") == 1.0
    assert trips(metrics, "redis", "probe_failed") == 1.0


def test_scrape_notices_a_break_that_is_over(clock: FakeClock, metrics: PrometheusMetrics) -> None:
    cb = make(clock)
    metrics.attach(cb)
    fail(cb, 2)
    clock.advance(10)  # no call, nobody reads cb.state: the scrape itself moves it on
    assert state_of(metrics, "redis") == "half_open"
    assert transitions(metrics, "redis", "open", "half_open") == 1.0


def test_manual_states(clock: FakeClock, metrics: PrometheusMetrics) -> None:
    cb = make(clock)
    metrics.attach(cb)
    cb.force_open()
    assert state_of(metrics, "redis") == "forced_open"
    cb.disable()
    assert state_of(metrics, "redis") == "disabled"
    cb.reset()
    assert state_of(metrics, "redis") == "closed"
    # forced_open is not a trip
    assert trips(metrics, "redis", "manual") == 0.0
    assert transitions(metrics, "redis", "closed", "forced_open") == 1.0


def test_kill_switch_shows_disabled(
    clock: FakeClock, metrics: PrometheusMetrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BROWNOUT_DISABLED", "1")
    cb = make(clock)
    metrics.attach(cb)
    assert state_of(metrics, "redis") == "disabled"
    fail(cb, 3)
    assert calls(metrics, "redis", "failure") == 0.0  # DISABLED counts nothing (issue 10)
    assert state_of(metrics, "redis") == "disabled"


# ------------------------------------------------------------------------ registry


def test_registry_covers_present_and_future_breakers(
    clock: FakeClock, metrics: PrometheusMetrics
) -> None:
    registry = Registry(default=BreakerConfig(consecutive_failures=2), clock=clock)
    existing = registry.get("database")
    detach = metrics.attach(registry)
    assert callable(detach)
    assert state_of(metrics, "database") == "closed"
    later = registry.get("openai")
    # the state of a breaker created later shows from the next scrape, before any call
    assert state_of(metrics, "openai") == "closed"
    existing.call(len, "x")
    fail(later, 2)
    assert calls(metrics, "database", "success") == 1.0
    assert calls(metrics, "openai", "failure") == 2.0
    assert state_of(metrics, "openai") == "open"
    assert trips(metrics, "openai", "consecutive_failures") == 1.0
    added = registry.add(CircuitBreaker("s3", clock=clock))
    added.call(len, "x")
    assert calls(metrics, "s3", "success") == 1.0


def test_a_registry_detaches_like_everything_else(
    clock: FakeClock, metrics: PrometheusMetrics
) -> None:
    registry = Registry(default=BreakerConfig(consecutive_failures=2), clock=clock)
    registry.get("database").call(len, "x")
    detach = metrics.attach(registry)
    assert calls(metrics, "database", "success") == 1.0
    detach()
    detach()  # a second call is harmless
    registry.get("openai")
    assert (
        metrics.registry.get_sample_value(
            "brownout_breaker_state", {"breaker": "openai", "state": "closed"}
        )
        is None
    )
    assert (
        metrics.registry.get_sample_value(
            "brownout_breaker_state", {"breaker": "database", "state": "closed"}
        )
        is None
    )
    fail(registry.get("database"), 2)  # its listener is gone: no transition counted
    metrics.attach(registry)  # attached again after a detach: read again
    assert state_of(metrics, "openai") == "closed"
    assert state_of(metrics, "database") == "open"
    assert transitions(metrics, "database", "closed", "open") == 0.0


def test_registry_with_defaults(clock: FakeClock, metrics: PrometheusMetrics) -> None:
    registry = Registry.with_defaults(clock=clock)
    metrics.attach(registry)
    redis = registry.get("redis")
    for _ in range(5):
        fail(redis)
    assert state_of(metrics, "redis") == "open"


# --------------------------------------------------------------------- no doubles


def test_double_attach_of_a_breaker_does_not_double_count(
    clock: FakeClock, metrics: PrometheusMetrics
) -> None:
    cb = make(clock)
    metrics.attach(cb)
    metrics.attach(cb)
    cb.call(len, "x")
    fail(cb, 2)
    assert calls(metrics, "redis", "success") == 1.0
    assert calls(metrics, "redis", "failure") == 2.0
    assert transitions(metrics, "redis", "closed", "open") == 1.0


def test_double_attach_of_a_registry_does_not_double_count(
    clock: FakeClock, metrics: PrometheusMetrics
) -> None:
    registry = Registry(clock=clock)
    metrics.attach(registry)
    metrics.attach(registry)
    registry.get("a").call(len, "x")
    assert calls(metrics, "a", "success") == 1.0


@pytest.mark.parametrize("registry_first", [True, False])
def test_breaker_and_its_registry_count_once(
    clock: FakeClock, metrics: PrometheusMetrics, registry_first: bool
) -> None:
    registry = Registry(clock=clock)
    cb = registry.get("a")
    if registry_first:
        metrics.attach(registry)
        metrics.attach(cb)
    else:
        metrics.attach(cb)
        metrics.attach(registry)
    cb.call(len, "x")
    fail(cb)
    assert calls(metrics, "a", "success") == 1.0
    assert calls(metrics, "a", "failure") == 1.0
    assert state_of(metrics, "a") == "closed"


def test_breaker_created_after_registry_attach_then_attached_directly(
    clock: FakeClock, metrics: PrometheusMetrics
) -> None:
    registry = Registry(clock=clock)
    metrics.attach(registry)
    cb = registry.get("a")  # not yet seen by the metrics: no event, no scrape
    metrics.attach(cb)
    cb.call(len, "x")
    assert calls(metrics, "a", "success") == 1.0


def test_detach_removes_the_series_and_reattach_shows_them_again(
    clock: FakeClock, metrics: PrometheusMetrics
) -> None:
    cb = make(clock)
    detach = metrics.attach(cb)
    cb.call(len, "x")
    assert calls(metrics, "redis", "success") == 1.0
    detach()
    cb.call(len, "x")
    assert (
        metrics.registry.get_sample_value(
            "brownout_calls_total", {"breaker": "redis", "outcome": "success"}
        )
        is None
    )
    metrics.attach(cb)
    cb.call(len, "x")
    assert calls(metrics, "redis", "success") == 3.0  # the breaker's lifetime count
    assert state_of(metrics, "redis") == "closed"


def test_detached_breaker_hands_over_to_its_registry(
    clock: FakeClock, metrics: PrometheusMetrics
) -> None:
    registry = Registry(clock=clock)
    cb = registry.get("a")
    detach = metrics.attach(cb)
    metrics.attach(registry)
    detach()
    cb.call(len, "x")
    assert calls(metrics, "a", "success") == 1.0  # now fed through the registry, once


def test_second_live_breaker_with_the_same_name_is_not_counted(
    clock: FakeClock, metrics: PrometheusMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    first = make(clock)
    second = make(clock)
    metrics.attach(first)
    with caplog.at_level(logging.WARNING, logger="brownout.prometheus"):
        metrics.attach(second)
    assert "already attached" in caplog.text
    second.call(len, "x")
    first.call(len, "x")
    first.call(len, "x")
    assert calls(metrics, "redis", "success") == 2.0


def test_a_collected_breaker_frees_its_name(clock: FakeClock, metrics: PrometheusMetrics) -> None:
    first = make(clock)
    metrics.attach(first)
    first.call(len, "x")
    del first
    gc.collect()
    second = make(clock)
    metrics.attach(second)
    second.call(len, "x")
    assert calls(metrics, "redis", "success") == 2.0  # the series carries on


def test_two_metrics_objects_with_separate_registries(clock: FakeClock) -> None:
    one = PrometheusMetrics()
    two = PrometheusMetrics()
    cb = make(clock)
    one.attach(cb)
    two.attach(cb)
    cb.call(len, "x")
    fail(cb)
    for m in (one, two):
        assert calls(m, "redis", "success") == 1.0
        assert calls(m, "redis", "failure") == 1.0
        assert state_of(m, "redis") == "closed"


def test_two_namespaces_can_share_a_registry(clock: FakeClock) -> None:
    registry = CollectorRegistry()
    one = PrometheusMetrics(registry, namespace="a")
    two = PrometheusMetrics(registry, namespace="b")
    cb = make(clock)
    one.attach(cb)
    two.attach(cb)
    cb.call(len, "x")
    assert registry.get_sample_value("a_calls_total", {"breaker": "redis", "outcome": "success"})
    assert registry.get_sample_value("b_calls_total", {"breaker": "redis", "outcome": "success"})


def test_same_namespace_twice_on_one_registry_is_refused(clock: FakeClock) -> None:
    registry = CollectorRegistry()
    PrometheusMetrics(registry).attach(make(clock))
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        PrometheusMetrics(registry).attach(make(clock))


# ------------------------------------------------------------------------- safety


def test_scrape_survives_a_broken_breaker(
    clock: FakeClock,
    metrics: PrometheusMetrics,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cb = make(clock)
    metrics.attach(cb)

    def broken_clock() -> float:
        raise RuntimeError("clock broke")

    fail(cb, 2)
    monkeypatch.setattr(cb, "_clock", broken_clock)
    with caplog.at_level(logging.ERROR, logger="brownout.prometheus"):
        body = metrics.render()
    assert b'brownout_breaker_state{breaker="redis",state="open"} 1.0' in body
    assert "refreshing breaker states failed" in caplog.text


# ---------------------------------------------------------------- optional import


def test_missing_prometheus_client_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m.startswith("brownout.prometheus")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ImportError, match=r"pip install 'brownout\[prometheus\]'"):
        importlib.import_module("brownout.prometheus")


def test_core_never_imports_prometheus_client() -> None:
    code = (
        "import sys, brownout, brownout.testing\n"
        "assert 'prometheus_client' not in sys.modules\n"
        "import brownout.prometheus\n"
        "assert 'prometheus_client' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_counts_are_exact_under_threads(clock: FakeClock, metrics: PrometheusMetrics) -> None:
    import threading

    registry = Registry(clock=clock)
    metrics.attach(registry)
    fast = registry.get("shared")
    timed = registry.get("timed", BreakerConfig(slow_call_duration=60.0))
    metrics.attach(fast)  # also directly: still counted once
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for _ in range(500):
            fast.call(len, "x")
            timed.call(len, "x")
            with pytest.raises(BreakerOpen):
                opened.call(len, "x")

    opened = registry.get("opened")
    opened.force_open()
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls(metrics, "shared", "success") == 4000.0
    assert calls(metrics, "timed", "success") == 4000.0
    assert value(metrics, "brownout_call_duration_seconds_count", breaker="timed") == 4000.0
    assert bucket(metrics, "timed", "0.0005") == 4000.0  # the fake clock never moved
    assert calls(metrics, "opened", "rejected") == 4000.0
    assert value(metrics, "brownout_calls_rejected_total", breaker="opened") == 4000.0
