"""Hypothesis properties of the pure level policy (``brownout.health._policy``)."""

from __future__ import annotations

import doctest
import importlib

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from brownout.health import DEFAULT_RULES, Level
from brownout.health._policy import (
    Hysteresis,
    LevelState,
    PolicyInput,
    Target,
    decide,
    target_level,
)

NAMES = ["database", "cache", "openai", "s3", "external_api", "search"]
levels = st.sampled_from(list(Level))


@st.composite
def thresholds(draw: st.DrawFn) -> tuple[float, float, float, float]:
    values = draw(
        st.lists(st.integers(1, 100), min_size=4, max_size=4, unique=True).map(
            lambda v: sorted(v, reverse=True)
        )
    )
    a, b, c, d = (float(v) for v in values)
    return (a, b, c, d)


@st.composite
def component(draw: st.DrawFn, name: str) -> PolicyInput:
    weight = draw(st.floats(0.01, 1))
    down = draw(st.booleans())
    # a down component scores 0 (see score_component)
    score = 0.0 if down else draw(st.floats(0, 100))
    return PolicyInput(name, weight, score, down)


@st.composite
def systems(draw: st.DrawFn) -> list[PolicyInput]:
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=len(NAMES), unique=True))
    return [draw(component(n)) for n in names]


@st.composite
def worse(draw: st.DrawFn, base: list[PolicyInput]) -> list[PolicyInput]:
    """``base`` with some components failing or scoring lower, none better."""
    out = []
    for c in base:
        how = draw(st.sampled_from(["same", "lower", "down"]))
        if how == "down" or c.down:
            out.append(PolicyInput(c.name, c.weight, 0.0, True))
        elif how == "lower":
            out.append(PolicyInput(c.name, c.weight, draw(st.floats(0, c.score)), False))
        else:
            out.append(c)
    return out


@given(systems(), thresholds(), st.data())
@settings(max_examples=400)
def test_more_failing_components_never_give_a_better_target(
    base: list[PolicyInput], bounds: tuple[float, float, float, float], data: st.DataObject
) -> None:
    worsened = data.draw(worse(base))
    before = target_level(base, DEFAULT_RULES, bounds)
    after = target_level(worsened, DEFAULT_RULES, bounds)
    assert after.target >= before.target, (before.why, after.why)
    assert after.score <= before.score + 1e-9


@given(systems(), thresholds())
def test_the_target_is_the_worse_of_score_and_rules(
    components: list[PolicyInput], bounds: tuple[float, float, float, float]
) -> None:
    t = target_level(components, DEFAULT_RULES, bounds)
    assert 0.0 <= t.score <= 100.0
    assert t.target == max(t.score_level, t.rule_level)
    assert t.down == frozenset(c.name for c in components if c.down)
    # a replacing rule can only make the score's level better, never worse
    assert t.score_level <= Level.for_score(t.score, bounds)


@given(systems())
def test_a_critical_component_down_bounds_the_level(components: list[PolicyInput]) -> None:
    t = target_level(components)
    down = {c.name for c in components if c.down}
    if "database" in down:
        assert t.target >= Level.MINIMAL  # database down: reads only, at best
        if len(down) > 1:
            assert t.target is Level.EMERGENCY
    if "openai" in down:
        assert t.target >= Level.LIMITED
    if down:
        assert t.target > Level.OPTIMAL


@given(systems())
def test_all_healthy_is_optimal(components: list[PolicyInput]) -> None:
    healthy = [PolicyInput(c.name, c.weight, 100.0, False) for c in components]
    t = target_level(healthy)
    assert (t.score, t.target, t.rule) == (100.0, Level.OPTIMAL, None)


@given(systems(), thresholds())
def test_the_policy_is_deterministic(
    components: list[PolicyInput], bounds: tuple[float, float, float, float]
) -> None:
    assert target_level(components, DEFAULT_RULES, bounds) == target_level(
        list(components), DEFAULT_RULES, bounds
    )


# ------------------------------------------------------------------- decide

hysteresis = st.builds(
    Hysteresis,
    margin=st.floats(0, 10),
    dwell=st.floats(0, 30),
    degrade_after=st.integers(1, 5),
    recovery=st.sampled_from(["step", "direct"]),
)


def _target(level: Level, score: float) -> Target:
    return Target(score, level, Level.OPTIMAL, None, level, score, frozenset(), "s", "w")


targets = st.builds(_target, levels, st.floats(0, 100))
states = st.builds(
    LevelState,
    levels,
    since=st.floats(0, 100),
    bad=st.integers(0, 4),
    better_since=st.none() | st.floats(0, 100),
)


@given(targets, states, st.floats(0, 200), st.booleans(), hysteresis)
def test_the_level_moves_towards_the_target_and_never_past_it(
    target: Target, state: LevelState, now: float, immediate: bool, h: Hysteresis
) -> None:
    d = decide(target, state, now=now, immediate=immediate, hysteresis=h)
    low, high = sorted((state.level, target.target))
    assert low <= d.level <= high
    if d.level is not state.level:
        assert d.state.since == now  # a new level restarts the dwell
    else:
        assert d.state.since == state.since
    if h.recovery == "step" and d.level < state.level:
        assert d.level == state.level - 1
    assert decide(target, state, now=now, immediate=immediate, hysteresis=h) == d


@given(targets, states, st.floats(0, 200), hysteresis)
def test_a_breaker_opening_degrades_at_once(
    target: Target, state: LevelState, now: float, h: Hysteresis
) -> None:
    d = decide(target, state, now=now, immediate=True, hysteresis=h)
    if target.target > state.level:
        assert d.level is target.target


@given(targets, states, st.floats(0, 200), hysteresis, levels)
def test_a_pin_wins(
    target: Target, state: LevelState, now: float, h: Hysteresis, pinned: Level
) -> None:
    d = decide(target, state, now=now, immediate=True, pin=(pinned, "why"), hysteresis=h)
    assert d.level is pinned
    assert (d.state.bad, d.state.better_since) == (0, None)
    assert "why" in d.text


@given(levels, levels, hysteresis, st.floats(0, 100))
def test_degrading_takes_degrade_after_bad_evaluations(
    current: Level, goal: Level, h: Hysteresis, score: float
) -> None:
    assume(goal > current)
    state = LevelState(current, since=0.0)
    target = _target(goal, score)
    for n in range(1, h.degrade_after + 1):
        state = decide(target, state, now=float(n), hysteresis=h).state
        assert state.level is (goal if n == h.degrade_after else current)
        assert state.bad == (0 if n == h.degrade_after else n)


@given(levels, levels, hysteresis, st.floats(0, 100), st.floats(0, 100))
def test_no_recovery_before_the_dwell(
    current: Level, goal: Level, h: Hysteresis, score: float, elapsed: float
) -> None:
    state = LevelState(current, since=0.0, better_since=0.0)
    d = decide(_target(goal, score), state, now=elapsed, hysteresis=h)
    if elapsed < h.dwell:
        assert d.level >= current


@pytest.mark.parametrize(
    "name", ["brownout.health._policy", "brownout.health._outages", "brownout.health._manager"]
)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted and result.failed == 0
