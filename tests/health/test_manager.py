"""Degradation scenarios with all four components, on a fake clock.

These are the seed report's "integration phase": all four breakers together,
score aggregation, cascading failures, recovery.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import pytest

from brownout import BreakerConfig, CircuitBreaker, Registry, State
from brownout.health import (
    Component,
    DegradationManager,
    Evaluation,
    Feature,
    Level,
    LevelRule,
    Transition,
    UnknownFeature,
)
from brownout.testing import FakeClock


@dataclass
class World:
    clock: FakeClock
    registry: Registry
    manager: DegradationManager

    def breaker(self, component: str) -> CircuitBreaker:
        return self.manager.component(component).breaker  # type: ignore[return-value]

    def fail(self, component: str) -> None:
        """Trip the component's breaker with real failures."""
        cb = self.breaker(component)
        while cb.state is not State.OPEN:
            try:
                cb.call(_boom)
            except ConnectionError:
                pass

    def recover(self, component: str) -> None:
        """Wait out the break, then succeed the half-open probes."""
        cb = self.breaker(component)
        snap = cb.snapshot()
        if snap.retry_after:
            self.clock.advance(snap.retry_after)
        while cb.state is not State.CLOSED:
            cb.call(lambda: None)

    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.manager.evaluate("heartbeat")


def _boom() -> None:
    raise ConnectionError("down")


def world(**kwargs: object) -> World:
    clock = FakeClock()
    registry = Registry.with_defaults(clock=clock)
    components = [
        Component("database", breaker=registry.get("database")),
        Component("cache", breaker=registry.get("redis")),
        Component("openai", breaker=registry.get("openai")),
        Component("s3", breaker=registry.get("s3")),
    ]
    manager = DegradationManager(components, clock=clock, **kwargs)  # type: ignore[arg-type]
    return World(clock, registry, manager)


# ------------------------------------------------------------- one at a time


def test_all_healthy_is_optimal_with_every_feature_on() -> None:
    w = world()
    assert w.manager.level is Level.OPTIMAL
    assert w.manager.score == 100.0
    assert all(w.manager.enabled(f.name) for f in w.manager.features)
    assert w.manager.settings.pool_multiplier == 1.0


def test_cache_down_alone_lands_in_degraded_not_lower() -> None:
    w = world()
    w.fail("cache")
    assert w.manager.level is Level.DEGRADED
    assert w.manager.score == pytest.approx(77.78, abs=0.01)
    assert not w.manager.enabled("cache_read")
    assert w.manager.enabled("ai_pricing")
    assert w.manager.enabled("database_write")
    assert w.manager.settings.cache_ttl == 1800


def _database_and_cache(
    *more: Component, **kwargs: Any
) -> tuple[FakeClock, Registry, DegradationManager]:
    """A service with only a database and a cache (the cache weighs a third)."""
    clock = FakeClock()
    registry = Registry.with_defaults(clock=clock)
    components = [
        Component("database", breaker=registry.get("database")),
        Component("cache", breaker=registry.get("redis")),
        *more,
    ]
    return clock, registry, DegradationManager(components, clock=clock, **kwargs)


def test_cache_down_alone_is_degraded_even_where_the_cache_weighs_a_third() -> None:
    """Only a database and a cache: the cache down scores 66.7 (LIMITED by score), but
    the cache_down rule replaces the cache's share when the level is read."""
    _, registry, manager = _database_and_cache(Component("openai", configured=False))
    cache = registry.get("redis")
    while cache.state is not State.OPEN:
        with pytest.raises(ConnectionError):
            cache.call(_boom)
    assert manager.score == pytest.approx(66.67, abs=0.01)  # the score says what is
    assert manager.level is Level.DEGRADED
    explained = manager.explain()
    assert explained["level_score"] == 100.0
    assert explained["score_level"] == "DEGRADED"  # 66.7 reads LIMITED; capped
    assert explained["rule_level"] == "DEGRADED"
    assert "100.0 without cache, which may cost at most DEGRADED" in explained["decision"]
    assert manager.enabled("database_write")
    # the database failing as well: the rule no longer applies (not alone), scores count
    db = registry.get("database")
    while db.state is not State.OPEN:
        with pytest.raises(ConnectionError):
            db.call(_boom)
    assert manager.level is Level.EMERGENCY
    assert manager.explain()["level_score"] == manager.score == 0.0
    manager.close()


def test_a_failing_but_not_down_cache_costs_no_more_than_a_lost_one() -> None:
    """Recovering (held, half-open, or failing below the trip threshold) must not put
    the level below what losing the cache entirely does."""
    clock, registry, manager = _database_and_cache()
    manager.hold("cache", "stale keys being invalidated")  # capped at 50: impaired, not down
    for _ in range(3):  # no breaker opened: degrading takes 3 bad evaluations
        clock.advance(1)
        manager.evaluate("heartbeat")
    assert manager.score == pytest.approx(83.33, abs=0.01)
    assert manager.level is Level.DEGRADED
    cache = registry.get("redis")
    for _ in range(4):  # failing below the 5-failure trip: success rate 0 => score 0
        with pytest.raises(ConnectionError):
            cache.call(_boom)
    manager.release("cache")
    for _ in range(3):
        clock.advance(1)
        manager.evaluate("heartbeat")
    explained = manager.explain()
    assert cache.state is State.CLOSED
    assert manager.score == pytest.approx(66.67, abs=0.01)
    assert manager.level is Level.DEGRADED, explained["decision"]
    # the database impaired too: the cache no longer bounds anything, scores count
    db = registry.get("database")
    for _ in range(2):
        with pytest.raises(ConnectionError):
            db.call(_boom)
    for _ in range(3):
        clock.advance(1)
        manager.evaluate("heartbeat")
    assert manager.explain()["level_score"] == manager.score
    manager.close()


def test_a_replacing_rule_also_governs_recovery() -> None:
    """Recovering from LIMITED to DEGRADED while the cache is still down needs the level
    score (without the cache) above DEGRADED's threshold, not the raw score."""
    clock, registry, manager = _database_and_cache(dwell=5.0)
    manager.pin(Level.LIMITED, duration=1.0, reason="test")
    cache = registry.get("redis")
    while cache.state is not State.OPEN:
        with pytest.raises(ConnectionError):
            cache.call(_boom)
    assert manager.level is Level.LIMITED
    clock.advance(1.5)
    for _ in range(3):
        clock.advance(3.0)
        manager.evaluate("heartbeat")
    assert manager.level is Level.DEGRADED, manager.explain()["decision"]
    manager.close()


def test_openai_down_is_limited_by_rule() -> None:
    w = world()
    w.fail("openai")
    assert w.manager.level is Level.LIMITED
    explained = w.manager.explain()
    assert explained["score_level"] == "DEGRADED"
    assert explained["rule"] == "openai down => at least LIMITED"
    assert not w.manager.enabled("ai_invoice_extraction")
    assert w.manager.enabled("pricing_update")


def test_database_down_is_minimal_and_writes_are_queued_only() -> None:
    w = world()
    w.fail("database")
    assert w.manager.level is Level.MINIMAL
    assert not w.manager.enabled("database_write")
    assert w.manager.enabled("inventory_write")  # accepted into the outbox
    assert w.manager.settings.pool_multiplier == 0.5
    assert w.manager.settings.max_retries == 0


def test_s3_down_alone_is_degraded() -> None:
    w = world()
    w.fail("s3")
    assert w.manager.level is Level.DEGRADED
    assert w.manager.score == pytest.approx(88.89, abs=0.01)


def test_a_healthy_component_is_never_marked_down_because_another_failed() -> None:
    w = world()
    w.fail("cache")
    views = {v.name: v for v in w.manager.last_evaluation.components}  # type: ignore[union-attr]
    assert views["database"].score == 100.0 and not views["database"].down
    assert views["cache"].score == 0.0 and views["cache"].down


# ------------------------------------------------------------- cascades


def test_cache_then_database_is_a_cascade_of_the_cache_and_emergency() -> None:
    w = world()
    w.fail("cache")
    w.clock.advance(4)
    w.fail("database")
    assert w.manager.level is Level.EMERGENCY
    explained = w.manager.explain()
    assert explained["root_causes"] == [{"component": "database", "cascade_of": "cache"}]
    loads = {(c["source"], c["target"]): c["expected_extra_load"] for c in explained["cascade"]}
    assert loads == {
        ("cache", "database"): 0.3,
        ("database", "cache"): 0.2,
        ("database", "s3"): 0.1,
    }
    assert explained["patterns"][-1]["order"] == ["cache", "database"]
    assert explained["rule"] == "database and 1 more down => at least EMERGENCY"
    assert w.manager.history[-1].root_causes == ("cache",)


def test_failures_further_apart_than_the_window_are_independent() -> None:
    w = world()
    w.fail("cache")
    w.clock.advance(11)
    w.fail("database")
    assert w.manager.explain()["root_causes"] == []


def test_database_and_cache_together_is_emergency() -> None:
    w = world()
    w.breaker("database").force_open()
    w.breaker("cache").force_open()
    assert w.manager.level is Level.EMERGENCY
    assert w.manager.settings.pool_multiplier == 0.2
    assert not w.manager.enabled("inventory_write")
    assert w.manager.enabled("health_status")


def test_expected_load_is_an_early_warning_that_does_not_change_the_score() -> None:
    w = world()
    w.fail("database")
    assert w.manager.expected_load() == {("database", "cache"): 0.2, ("database", "s3"): 0.1}
    views = {v.name: v for v in w.manager.last_evaluation.components}  # type: ignore[union-attr]
    assert views["cache"].score == 100.0


# ------------------------------------------------------------- hysteresis


def test_recovery_waits_for_dwell_and_steps_one_level_at_a_time() -> None:
    w = world()
    w.fail("database")
    w.fail("cache")
    assert w.manager.level is Level.EMERGENCY
    w.recover("database")
    w.recover("cache")
    w.manager.evaluate()
    assert w.manager.level is Level.EMERGENCY  # healthy again, but not for 10 s yet
    levels = []
    for _ in range(6):
        w.tick(10)
        levels.append(w.manager.level)
    # one level per dwell: load comes back to the recovered dependencies gradually
    assert levels == [
        Level.MINIMAL,
        Level.LIMITED,
        Level.DEGRADED,
        Level.OPTIMAL,
        Level.OPTIMAL,
        Level.OPTIMAL,
    ]
    assert [t.to_level for t in w.manager.history] == [
        Level.MINIMAL,
        Level.EMERGENCY,
        Level.MINIMAL,
        Level.LIMITED,
        Level.DEGRADED,
        Level.OPTIMAL,
    ]


def test_no_recovery_before_dwell() -> None:
    w = world(dwell=10.0)
    w.breaker("s3").force_open()
    assert w.manager.level is Level.DEGRADED
    w.clock.advance(3)
    w.breaker("s3").reset()
    assert w.manager.level is Level.DEGRADED
    assert "level held 3.0 s, better for 0.0 s" in w.manager.explain()["decision"]
    w.tick(7)
    assert w.manager.level is Level.DEGRADED  # better for 7 s only
    w.tick(3)
    assert w.manager.level is Level.OPTIMAL


def test_direct_recovery_goes_straight_back() -> None:
    w = world(recovery="direct")
    w.breaker("database").force_open()
    w.breaker("cache").force_open()
    w.breaker("database").reset()
    w.breaker("cache").reset()
    w.tick(10)
    assert w.manager.level is Level.OPTIMAL  # straight back, no steps
    assert [t.to_level for t in w.manager.history] == [
        Level.MINIMAL,
        Level.EMERGENCY,
        Level.OPTIMAL,
    ]


def test_recovery_needs_the_margin_above_the_threshold() -> None:
    clock = FakeClock()
    probe_ok = {"b": True}
    b = CircuitBreaker("b", clock=clock)
    m = DegradationManager(
        [
            Component("a", weight=0.85),
            Component("b", breaker=b, probe=lambda: probe_ok["b"], weight=0.15),
        ],
        clock=clock,
        rules=[],
    )
    b.force_open()
    assert m.level is Level.DEGRADED  # score 85
    b.reset()
    probe_ok["b"] = False
    clock.advance(30)
    asyncio.run(m.tick())  # b is up but its probe fails: capped at 40 => score 91
    clock.advance(30)
    m.evaluate()
    assert m.score == 91.0
    assert m.level is Level.DEGRADED  # 91 >= 90, but not >= 92
    assert "score 91.0 < 92" in m.explain()["decision"]
    probe_ok["b"] = True
    clock.advance(60)
    asyncio.run(m.tick())
    assert m.level is Level.OPTIMAL


def test_degrading_without_an_open_breaker_takes_three_bad_evaluations() -> None:
    clock = FakeClock()
    ok = {"database": True}
    m = DegradationManager(
        [
            Component("database", probe=lambda: ok["database"]),
            Component("cache"),
            Component("openai"),
            Component("s3"),
        ],
        clock=clock,
    )
    ok["database"] = False
    asyncio.run(m.tick())  # probe fails: database capped at 40 => score 73.3
    assert m.level is Level.OPTIMAL
    assert "bad evaluation 1/3" in m.explain()["decision"]
    m.evaluate()
    assert m.level is Level.OPTIMAL
    m.evaluate()
    assert m.level is Level.DEGRADED


def test_a_flapping_dependency_does_not_make_the_level_flap() -> None:
    w = world()
    cache = w.breaker("cache")
    for _ in range(20):  # opens, is reset 2 s later, opens again 2 s later...
        cache.force_open()
        w.clock.advance(2)
        cache.reset()
        w.clock.advance(2)
        w.manager.evaluate("heartbeat")
    assert len(w.manager.history) == 1  # OPTIMAL -> DEGRADED, and it stays there
    w.tick(10)
    assert w.manager.level is Level.OPTIMAL
    assert len(w.manager.history) == 2


# ------------------------------------------------------------- features, settings


def test_unknown_feature_raises() -> None:
    w = world()
    with pytest.raises(UnknownFeature, match="cache_raed"):
        w.manager.enabled("cache_raed")
    with pytest.raises(KeyError):
        w.manager.enabled("nope")


def test_feature_reason_says_why() -> None:
    w = world()
    w.fail("openai")
    assert w.manager.feature_reason("ai_pricing") == "openai down"
    assert w.manager.feature_reason("complex_queries") == ("level LIMITED is worse than DEGRADED")
    assert w.manager.feature_reason("health_status") == "available"


def test_unconfigured_component_is_absent_not_failing() -> None:
    clock = FakeClock()
    db = CircuitBreaker("database", clock=clock)
    m = DegradationManager(
        [Component("database", breaker=db), Component("cache", configured=False)],
        clock=clock,
    )
    assert m.level is Level.OPTIMAL and m.score == 100.0
    assert not m.enabled("cache_read")
    assert m.feature_reason("cache_read") == "cache not configured"
    assert not m.enabled("ai_pricing")  # openai is not even declared
    assert m.enabled("database_write")


def test_half_open_component_keeps_its_features_off() -> None:
    w = world()
    w.fail("cache")
    w.clock.advance(20)
    assert w.breaker("cache").state is State.HALF_OPEN
    w.manager.evaluate()
    assert not w.manager.enabled("cache_read")
    assert w.manager.feature_reason("cache_read") == "cache recovering"


def test_hold_keeps_a_component_recovering() -> None:
    w = world()
    w.manager.hold("cache", "invalidating stale keys")
    assert not w.manager.enabled("cache_read")
    w.manager.release("cache")
    assert w.manager.enabled("cache_read")


def test_a_reported_problem_degrades_the_component_until_cleared() -> None:
    """S3 answering while refusing some work for good is neither up 100 nor down."""
    w = world()
    evaluations: list[str] = []
    w.manager.add_listener(lambda e: evaluations.append(e.trigger))
    w.manager.set_problem("s3", "spool", "3 uploads refused: NoSuchBucket")
    w.manager.set_problem("s3", "spool", "3 uploads refused: NoSuchBucket")  # no change
    assert len(evaluations) == 1 and "NoSuchBucket" in evaluations[0]
    assert w.manager.last_evaluation is not None
    view = w.manager.last_evaluation.component("s3")
    assert (view.status, view.score, view.down) == ("degraded", 50.0, False)
    assert view.why == ("3 uploads refused: NoSuchBucket (capped at 50)",)
    assert w.manager.score == pytest.approx(100 - 0.1 / 0.9 * 50, abs=0.01)
    assert w.manager.level is Level.OPTIMAL  # 94.4: every feature still works
    w.manager.set_problem("s3", "other", "quota")
    assert w.manager.problems("s3") == {
        "spool": "3 uploads refused: NoSuchBucket",
        "other": "quota",
    }
    w.manager.set_problem("s3", "spool", None)
    w.manager.set_problem("s3", "other", None)
    view = w.manager.last_evaluation.component("s3")
    assert (view.status, view.score) == ("up", 100.0)
    with pytest.raises(KeyError):
        w.manager.set_problem("nope", "spool", "x")


def test_saturation_costs_score_and_degrades_with_hysteresis(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    full = {"database": 0.0}

    def database_saturation() -> float:
        return full["database"]

    def broken() -> float:
        raise RuntimeError("bulkhead gone")

    manager = DegradationManager(
        [
            Component("database", saturation=database_saturation),
            Component("cache", saturation=broken),
            Component("openai"),
            Component("s3"),
        ],
        clock=clock,
    )
    assert manager.level is Level.OPTIMAL
    assert "bulkhead gone" in caplog.text  # unreadable: logged, not scored
    full["database"] = 0.8  # up to the knee: free
    manager.evaluate()
    assert manager.last_evaluation is not None
    assert manager.last_evaluation.component("database").score == 100.0
    full["database"] = 1.5  # over the limit counts as full
    for _ in range(2):
        manager.evaluate()
        assert manager.level is Level.OPTIMAL  # not at once: no breaker opened
    manager.evaluate()
    view = manager.last_evaluation.component("database")
    assert (view.score, view.status, view.down) == (60.0, "degraded", False)
    assert view.why == ("saturation 150% (-40)",)
    assert manager.level is Level.DEGRADED  # (0.4 * 60 + 0.5 * 100) / 0.9 = 82.2
    with pytest.raises(TypeError, match=r"Component\('database'\)\.saturation must be a callable"):
        Component("database", saturation=0.5)  # type: ignore[arg-type]


# ------------------------------------------------------------- handlers, pin, history


def test_transition_handlers_sync_async_per_level_and_raising(
    caplog: pytest.LogCaptureFixture,
) -> None:
    w = world()
    seen: list[str] = []
    w.manager.on_transition(lambda t: seen.append(f"any:{t.to_level.name}"))
    w.manager.on_transition(lambda t: seen.append("minimal"), level=Level.MINIMAL)

    def bad(t: Transition) -> None:
        raise RuntimeError("handler bug")

    w.manager.on_transition(bad)

    async def main() -> None:
        handled = asyncio.Event()

        async def ahandler(t: Transition) -> None:
            seen.append(f"async:{t.to_level.name}")
            handled.set()

        w.manager.on_transition(ahandler)
        w.fail("database")
        assert "async:MINIMAL" not in seen  # scheduled on the loop, not run inline
        await asyncio.wait_for(handled.wait(), timeout=10)

    asyncio.run(main())
    assert seen == ["any:MINIMAL", "minimal", "async:MINIMAL"]
    assert w.manager.level is Level.MINIMAL
    assert "handler bug" in caplog.text


def test_one_listener_shape_typed_events_and_unsubscribe() -> None:
    w = world()
    events: list[Evaluation] = []
    unsubscribe = w.manager.add_listener(events.append)
    transitions: list[Transition] = []
    stop_transitions = w.manager.on_transition(transitions.append)
    w.fail("cache")
    changed = [e for e in events if e.transition is not None]
    assert len(changed) == 1
    assert changed[0].transition == transitions[0] == w.manager.history[-1]
    assert (changed[0].level, transitions[0].to_level) == (Level.DEGRADED, Level.DEGRADED)
    with pytest.raises(dataclasses.FrozenInstanceError):
        changed[0].level = Level.OPTIMAL  # type: ignore[misc]
    unsubscribe()
    stop_transitions()
    count = len(events)
    w.fail("database")
    assert w.manager.level is Level.EMERGENCY
    assert (len(events), len(transitions)) == (count, 1)
    with pytest.raises(TypeError, match="add_listener needs a callable"):
        w.manager.add_listener(None)  # type: ignore[arg-type]


def test_pin_overrides_and_expires() -> None:
    w = world()
    w.manager.pin(Level.MINIMAL, duration=60, reason="db migration")
    assert w.manager.level is Level.MINIMAL
    assert w.manager.explain()["pinned"]["reason"] == "db migration"
    w.tick(61)
    assert w.manager.level is Level.MINIMAL  # the pin is over; healthy for 0 s so far
    w.tick(10)
    assert w.manager.level is Level.LIMITED  # recovering step by step
    w.tick(10)
    assert w.manager.level is Level.DEGRADED
    w.manager.pin(Level.EMERGENCY, duration=60)
    w.manager.unpin()
    assert w.manager.pinned is None


def test_transitions_are_logged_with_reason(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="brownout.health")
    w = world()
    w.fail("cache")
    assert "OPTIMAL -> DEGRADED" in caplog.text
    assert "a breaker opened" in caplog.text


def test_recovery_prediction_from_past_recoveries_never_made_up() -> None:
    w = world(dwell=0.0)
    w.fail("cache")
    assert w.manager.predict_recovery() is None  # no history: no number
    w.clock.advance(20)
    w.recover("cache")
    w.manager.evaluate()
    assert w.manager.level is Level.OPTIMAL
    w.clock.advance(100)
    w.fail("cache")
    w.clock.advance(5)
    assert w.manager.predict_recovery() == pytest.approx(15.0)
    assert w.manager.component_outages("cache") == [20.0]


# ------------------------------------------------------------- probing


async def test_probe_success_lets_an_open_breaker_try_half_open_early() -> None:
    clock = FakeClock()
    cb = CircuitBreaker("cache", BreakerConfig(consecutive_failures=1, open_for=20), clock=clock)
    calls: list[str] = []

    async def probe() -> bool:
        calls.append("probe")
        return True

    m = DegradationManager([Component("cache", breaker=cb, probe=probe)], clock=clock)
    cb.force_open()
    cb.reset()
    try:
        cb.call(_boom)
    except ConnectionError:
        pass
    assert cb.state is State.OPEN
    await m.tick()
    assert cb.state is State.HALF_OPEN  # 20 s early
    assert calls == ["probe"]


async def test_failed_probes_back_off_exponentially_with_jitter() -> None:
    import random

    clock = FakeClock()
    m = DegradationManager(
        [Component("cache", probe=lambda: False)],
        clock=clock,
        probe_backoff=(1.0, 8.0),
        rng=random.Random(1),
    )
    delays = []
    for _ in range(6):
        await m.tick()
        delay = m.probe_state("cache")["next_in_s"]
        delays.append(delay)
        clock.advance(delay)
    caps = [1, 2, 4, 8, 8, 8]
    for delay, cap in zip(delays, caps, strict=True):
        assert cap / 2 <= delay <= cap


async def test_probe_timeout_counts_as_failure() -> None:
    async def hang() -> bool:
        await asyncio.Event().wait()  # never answers
        return True

    m = DegradationManager([Component("cache", probe=hang)], probe_timeout=0.01)
    await m.tick()
    assert m.probe_state("cache")["ok"] is False
    assert "timed out" in m.probe_state("cache")["error"]


async def test_start_and_stop_the_heartbeat() -> None:
    probes = 0
    probed_twice = asyncio.Event()

    def probe() -> bool:
        # sync: the manager records the result before any other task runs
        nonlocal probes
        probes += 1
        if probes == 2:
            probed_twice.set()
        return True

    m = DegradationManager([Component("cache", probe=probe)], heartbeat=0.01)
    await m.start()
    await m.start()  # idempotent
    await asyncio.wait_for(probed_twice.wait(), timeout=10)  # the loop goes on after a tick
    await m.stop()
    assert m.probe_state("cache")["ok"] is True


# ------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"thresholds": (90, 90, 50, 30)}, "strictly decreasing"),
        ({"thresholds": (90, 70, 50)}, "4 numbers"),
        ({"hysteresis_margin": -1}, "hysteresis_margin must be a number >= 0"),
        (
            {"impact": {("database", "cache"): 1.5}},
            "impact[('database', 'cache')] must be in [0, 1]",
        ),
        ({"degrade_after": 0}, "degrade_after"),
        ({"recovery": "sometimes"}, "recovery must be 'step' or 'direct'"),
        ({"heartbeat": 0}, "heartbeat must be a number > 0"),
    ],
)
def test_bad_manager_arguments(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(ValueError) as info:
        DegradationManager([Component("database")], **kwargs)  # type: ignore[arg-type]
    assert words in str(info.value)


def test_bad_components_and_features() -> None:
    with pytest.raises(ValueError, match="weight must be a finite number >= 0"):
        Component("database", weight=-0.1)
    with pytest.raises(ValueError, match="all zero"):
        DegradationManager([Component("a", weight=0), Component("b", weight=0)])
    with pytest.raises(ValueError, match="requires unknown component"):
        DegradationManager([Component("database")], features=[Feature("x", requires={"databse"})])
    with pytest.raises(ValueError, match="unique"):
        DegradationManager([Component("a"), Component("a")])
    with pytest.raises(TypeError, match="worst_level must be a Level"):
        Feature("x", worst_level="LIMITED")  # type: ignore[arg-type]


def test_rules_are_data() -> None:
    clock = FakeClock()
    cb = CircuitBreaker("s3", clock=clock)
    m = DegradationManager(
        [Component("database"), Component("s3", breaker=cb)],
        rules=[LevelRule("uploads", frozenset({"s3"}), Level.MINIMAL)],
        clock=clock,
    )
    cb.force_open()
    assert m.level is Level.MINIMAL


# ------------------------------------------------------ closing (issue 12 item 2)


def _heartbeats() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "brownout-degradation-heartbeat"]


async def test_async_with_starts_the_heartbeat_and_aclose_detaches_and_stops_everything() -> None:
    clock = FakeClock()
    cache = CircuitBreaker("cache", clock=clock)
    started = asyncio.Event()
    release = asyncio.Event()
    ended: list[str] = []

    async def slow_listener(evaluation: Evaluation) -> None:
        started.set()
        try:
            await release.wait()  # never set: aclose must end it
        finally:
            ended.append(evaluation.trigger)

    manager = DegradationManager([Component("cache", breaker=cache)], clock=clock)
    async with manager as entered:
        assert entered is manager
        assert len(_heartbeats()) == 1
        manager.add_listener(slow_listener)
        cache.force_open()
        assert manager.level is Level.DEGRADED
        await asyncio.wait_for(started.wait(), timeout=10)
    assert _heartbeats() == []
    # every async listener still waiting was cancelled and awaited (the heartbeat's
    # evaluation may have reached it too)
    assert any(trigger.startswith("breaker cache") for trigger in ended), ended
    cache.reset()  # the manager no longer hears its breakers: the level stays
    assert manager.level is Level.DEGRADED
    await manager.aclose()  # idempotent


def test_with_detaches_a_manager_that_never_started() -> None:
    clock = FakeClock()
    cache = CircuitBreaker("cache", clock=clock)
    with DegradationManager([Component("cache", breaker=cache)], clock=clock) as manager:
        cache.force_open()
        assert manager.level is Level.DEGRADED
    cache.reset()
    assert manager.level is Level.DEGRADED
    manager.close()  # idempotent


async def test_aclose_detaches_even_when_the_heartbeat_fails_to_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    cache = CircuitBreaker("cache", clock=clock)
    manager = DegradationManager([Component("cache", breaker=cache)], clock=clock)

    async def broken_stop() -> None:
        raise RuntimeError("heartbeat stuck")

    monkeypatch.setattr(manager, "stop", broken_stop)
    with pytest.raises(RuntimeError, match="heartbeat stuck"):
        await manager.aclose()
    cache.force_open()
    assert manager.level is Level.OPTIMAL
