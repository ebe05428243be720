"""The shared adapter base: classification, accounting, events, secrets, probes."""

from __future__ import annotations

import asyncio

import pytest

from brownout import BreakerConfig, BreakerOpen, Registry, State
from brownout.adapter import (
    Adapter,
    DependencyError,
    ErrorRule,
    ErrorTable,
    Figures,
    OperationEvent,
)
from brownout.testing import FakeClock

SECRET = "pa55-w0rd-xyz"


class Missing(Exception):
    pass


class FakeAdapter(Adapter):
    kind = "fake"
    errors = ErrorTable(
        ErrorRule(ConnectionError, True, "connection", "unreachable"),
        ErrorRule(Missing, False, "caller", "the caller asked for nothing"),
    )

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.up = True
        self.probe_delay = 0.0

    def get(self, key: str) -> bytes | None:
        def fetch() -> bytes | None:
            if not self.up:
                raise ConnectionError(f"cannot reach fake://user:{SECRET}@host")
            if key == "missing":
                raise Missing(key)
            return None if key == "none" else key.encode()

        def count(result: bytes | None, figs: Figures) -> None:
            figs.cache_hits, figs.cache_misses = (0, 1) if result is None else (1, 0)

        return self._run("get", fetch, figures=Figures(key=key), on_result=count)

    def _probe_once(self) -> None:
        if not self.up:
            raise ConnectionError("down")

    async def _aprobe_once(self) -> None:
        await asyncio.sleep(self.probe_delay)
        self._probe_once()


def make(**kw: object) -> tuple[FakeAdapter, list[OperationEvent]]:
    adapter = FakeAdapter(
        config=BreakerConfig(consecutive_failures=2, open_for=10), clock=FakeClock(), **kw
    )
    events: list[OperationEvent] = []
    adapter.add_listener(events.append)
    return adapter, events


def test_operations_are_accounted_and_published() -> None:
    adapter, events = make()
    assert adapter.get("a") == b"a"
    assert adapter.get("none") is None
    assert [(e.operation, e.outcome, e.cache_hits, e.cache_misses) for e in events] == [
        ("get", "success", 1, 0),
        ("get", "success", 0, 1),
    ]
    health = adapter.health()
    assert health["totals"] == {"cache_hits": 1, "cache_misses": 1}
    assert health["success_rate"] == 1.0
    assert health["breaker"]["state"] == "closed"
    assert health["recent"][-1]["key"] == "none"


def test_caller_errors_pass_through_and_never_trip() -> None:
    adapter, events = make()
    for _ in range(10):
        with pytest.raises(Missing):
            adapter.get("missing")
    assert adapter.breaker.state is State.CLOSED
    assert {e.outcome for e in events} == {"caller_error"}


def test_failures_trip_then_rejections_are_published() -> None:
    adapter, events = make(secrets=[SECRET])
    adapter.up = False
    for _ in range(2):
        with pytest.raises(DependencyError) as info:
            adapter.get("a")
        assert SECRET not in str(info.value)
        assert info.value.kind == "connection"
    with pytest.raises(BreakerOpen):
        adapter.get("a")
    assert [e.outcome for e in events] == ["failure", "failure", "rejected"]
    assert events[0].error_kind == "connection"
    health = adapter.health()
    assert SECRET not in repr(health)
    assert health["last_error"].startswith("ConnectionError")


def test_client_errors_without_secrets_are_reraised_as_is() -> None:
    adapter, _ = make()
    adapter.up = False
    with pytest.raises(ConnectionError):
        adapter.get("a")


def test_registry_and_presets() -> None:
    registry = Registry.with_defaults()
    adapter = FakeAdapter(name="fake", registry=registry)
    assert registry.get("fake") is adapter.breaker
    with pytest.raises(ValueError, match="not both"):
        FakeAdapter(breaker=adapter.breaker, config=BreakerConfig())


def test_sync_probe_does_not_use_the_breaker() -> None:
    adapter, _ = make()
    adapter.breaker.force_open()
    assert adapter.probe().ok
    adapter.up = False
    result = adapter.probe()
    assert not result.ok and result.error == "ConnectionError: down"
    assert adapter.health()["last_probe"]["ok"] is False


async def test_async_probe_times_out() -> None:
    adapter = FakeAdapter(probe_timeout=0.05)
    adapter.probe_delay = 5.0
    result = await adapter.aprobe()
    assert not result.ok and result.error is not None and "timed out" in result.error


def test_listener_errors_are_contained() -> None:
    adapter, _ = make()
    adapter.add_listener(lambda e: 1 / 0)
    assert adapter.get("a") == b"a"


def test_error_table_rows_for_docs() -> None:
    rows = FakeAdapter.errors.rows()
    assert rows[0] == ("ConnectionError", "counts", "connection", "unreachable")
    assert rows[1][1] == "does not count"


def test_figures_age_out_after_the_horizon() -> None:
    """An outage's failures stop weighing on the success rate after a minute, traffic or not."""
    clock = FakeClock()
    fa = FakeAdapter(clock=clock, config=BreakerConfig(consecutive_failures=10))
    fa.up = False
    for _ in range(3):
        with pytest.raises(ConnectionError):
            fa.get("k")
    fa.up = True
    fa.get("k")
    success, p95, samples = fa.stats.window()
    assert (success, samples) == (0.25, 4)
    assert p95 is not None
    clock.advance(fa.stats.horizon - 1)
    fa.get("k")
    assert fa.stats.window() == (pytest.approx(0.4), fa.stats.window()[1], 5)
    clock.advance(2)  # the first four are now older than the horizon
    success, _, samples = fa.stats.window()
    assert (success, samples) == (1.0, 1)
    assert fa.stats.window(calls=0)[2] == 0
    clock.advance(fa.stats.horizon)
    assert fa.stats.window() == (None, None, 0)


def test_a_component_recovers_its_score_once_the_outage_ages_out() -> None:
    from brownout.health import Component, DegradationManager

    clock = FakeClock()
    fa = FakeAdapter(clock=clock, config=BreakerConfig(consecutive_failures=10))
    manager = DegradationManager([Component.of(fa, "cache")], clock=clock)
    fa.up = False
    for _ in range(2):
        with pytest.raises(ConnectionError):
            fa.get("k")
    fa.up = True
    for _ in range(8):
        fa.get("k")
    manager.evaluate("test")
    before = _score(manager, "cache")
    assert before < 90  # 80 % success: -60 points
    clock.advance(fa.stats.horizon + 1)  # no traffic at all
    fa.get("k")
    manager.evaluate("test")
    assert _score(manager, "cache") == 100.0
    manager.close()


def _score(manager: object, name: str) -> float:
    components = manager.explain()["components"]  # type: ignore[attr-defined]
    (found,) = [c for c in components if c["name"] == name]
    return float(found["score"])
