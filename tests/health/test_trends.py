"""TrendRecorder on a fake clock: rates, error rate, p95 from histogram deltas, ring bound."""

from __future__ import annotations

import asyncio
import json

import pytest

from brownout import BreakerConfig, CircuitBreaker, Registry, State
from brownout._histogram import DURATION_BUCKETS, empty
from brownout.health import (
    Component,
    DegradationManager,
    Feature,
    Level,
    TrendRecorder,
    level_impacts,
)
from brownout.health._trends import quantile_from_buckets
from brownout.testing import FakeClock, aeventually


def _boom() -> None:
    raise ConnectionError("down")


def _setup(
    points: int = 900,
) -> tuple[FakeClock, CircuitBreaker, DegradationManager, TrendRecorder]:
    clock = FakeClock()
    registry = Registry.with_defaults(clock=clock)
    db = registry.get("database")
    manager = DegradationManager([Component("database", breaker=db)], clock=clock)
    return clock, db, manager, TrendRecorder(manager, points=points, clock=clock)


def _call(clock: FakeClock, breaker: CircuitBreaker, seconds: float) -> None:
    def work() -> None:
        clock.advance(seconds)

    breaker.call(work)


def test_requests_per_second_and_error_rate_are_deltas_over_the_interval() -> None:
    clock, db, _manager, rec = _setup()
    rec.sample(clock())
    for _ in range(8):
        db.call(lambda: None)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            db.call(_boom)
    clock.advance(2.0)
    rec.sample(clock())
    series = rec.to_dict()["dependencies"]["database"]
    assert series["rps"] == [None, pytest.approx(5.0)]
    assert series["error_rate"] == [None, pytest.approx(0.2)]
    assert series["state"] == ["closed", "closed"]
    assert series["in_use"] == [None, None]
    clock.advance(1.0)
    rec.sample(clock())  # no calls: zero per second, no error rate
    series = rec.to_dict()["dependencies"]["database"]
    assert series["rps"][-1] == 0.0
    assert series["error_rate"][-1] is None
    assert series["p95_ms"][-1] is None


def test_p95_comes_from_the_histogram_delta_of_the_interval() -> None:
    clock = FakeClock()
    # a slow_call_duration times every call (the untimed fast path times none)
    db = CircuitBreaker("db", BreakerConfig(slow_call_duration=30.0), clock=clock)
    rec = TrendRecorder(DegradationManager([Component("database", breaker=db)], clock=clock))
    for _ in range(50):  # slow calls before the first sample must not count
        _call(clock, db, 2.0)
    rec.sample(clock())
    for _ in range(100):
        _call(clock, db, 0.003)  # bucket (0.0025, 0.005]
    clock.advance(1.0)
    rec.sample(clock())
    p95 = rec.to_dict()["dependencies"]["database"]["p95_ms"][-1]
    assert 2.5 < p95 <= 5.0


def test_quantile_from_buckets() -> None:
    counts = empty()
    assert quantile_from_buckets(counts, 0.95) is None
    counts[0] = 100  # all in (0, 0.5 ms]
    assert quantile_from_buckets(counts, 0.95) == pytest.approx(0.0005 * 0.95)
    counts = empty()
    counts[-1] = 3  # above the largest bound: reads as it
    assert quantile_from_buckets(counts, 0.95) == DURATION_BUCKETS[-1]
    with pytest.raises(ValueError, match="quantile"):
        quantile_from_buckets(counts, 0.0)
    with pytest.raises(ValueError, match="buckets"):
        quantile_from_buckets([1, 2], 0.5)


def test_breaker_state_and_level_are_recorded() -> None:
    clock, db, manager, rec = _setup()
    rec.sample(clock())
    while db.state is not State.OPEN:
        with pytest.raises(ConnectionError):
            db.call(_boom)
    clock.advance(1.0)
    manager.evaluate("test", immediate=True)
    rec.sample(clock())
    doc = rec.to_dict()
    assert doc["dependencies"]["database"]["state"][-1] == "open"
    assert doc["level"]["value"][0] == int(Level.OPTIMAL)
    assert doc["level"]["value"][-1] == int(manager.level) > int(Level.OPTIMAL)
    assert doc["level"]["t"] == [clock() - 1.0, clock()]
    assert doc["dependencies"]["database"]["error_rate"][-1] == 1.0


def test_memory_is_bounded_by_points() -> None:
    clock, db, _manager, rec = _setup(points=5)
    for _ in range(50):
        db.call(lambda: None)
        clock.advance(1.0)
        rec.sample(clock())
    doc = rec.to_dict()
    for values in doc["dependencies"]["database"].values():
        assert len(values) == 5
    assert len(doc["level"]["t"]) == len(doc["level"]["value"]) == 5
    assert doc["dependencies"]["database"]["t"][-1] == clock()
    json.dumps(doc, allow_nan=False)


def test_saturation_is_the_in_use_series() -> None:
    clock = FakeClock()
    db = Registry.with_defaults(clock=clock).get("database")
    manager = DegradationManager(
        [Component("database", breaker=db, saturation=lambda: 0.25)], clock=clock
    )
    rec = TrendRecorder(manager, clock=clock)
    rec.sample(clock())
    assert rec.to_dict()["dependencies"]["database"]["in_use"] == [0.25]


def test_level_impacts_say_what_users_live_with_at_each_level() -> None:
    feats = [
        Feature("reports", {"database"}, Level.DEGRADED, "reports", "reports are off"),
        Feature("writes", {"database"}, Level.LIMITED, "direct writes", "writes are being queued"),
        Feature("cache_read", {"cache"}, Level.LIMITED, when_off="reads are slower"),
        Feature("cache_write", {"cache"}, Level.LIMITED, when_off="reads are slower"),
        Feature("uploads", worst_level=Level.MINIMAL, description="invoice uploads"),
        Feature("status"),
    ]
    impacts = level_impacts(feats)
    assert list(impacts) == [level.label for level in Level]
    assert impacts["optimal"] == impacts["degraded"] == "everything works"
    assert impacts["limited"] == "reports are off"
    # said once though two features lose it; in the features' order
    assert impacts["minimal"] == "reports are off; writes are being queued; reads are slower"
    # without ``when_off`` the description (else the name) "is off"
    assert impacts["emergency"].endswith("; invoice uploads is off")


def test_bad_settings_are_named() -> None:
    manager = DegradationManager([])
    with pytest.raises(ValueError, match="points"):
        TrendRecorder(manager, points=1)
    with pytest.raises(ValueError, match="interval"):
        TrendRecorder(manager, interval=0)


async def test_start_samples_in_a_task_and_stop_ends_it() -> None:
    manager = DegradationManager([Component("database", breaker=CircuitBreaker("db"))])
    rec = TrendRecorder(manager, interval=0.001)
    await rec.start()
    await aeventually(lambda: len(rec.to_dict()["level"]["t"]) >= 2, what="two samples")
    await rec.stop()
    n = len(rec.to_dict()["level"]["t"])
    # not a wait for work: ten sampling intervals in which a task still running would
    # add a sample (nothing signals that something did not happen)
    await asyncio.sleep(0.01)
    assert len(rec.to_dict()["level"]["t"]) == n
