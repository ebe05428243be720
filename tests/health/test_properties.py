"""Hypothesis properties of scoring, levels and features."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from brownout import Registry, State
from brownout.health import (
    Component,
    ComponentInputs,
    DegradationManager,
    Level,
    score_component,
)
from brownout.testing import FakeClock

states = st.sampled_from([None, *State])
rates = st.none() | st.floats(0, 1)
latencies = st.none() | st.floats(0, 30)
probes = st.sampled_from([None, True, False])
inputs = st.builds(
    ComponentInputs,
    state=states,
    success_rate=rates,
    p95=latencies,
    latency_target=st.floats(0.01, 5),
    probe_ok=probes,
    credentials_problem=st.sampled_from([None, "401"]),
)


@given(inputs)
def test_component_score_is_within_0_and_100(i: ComponentInputs) -> None:
    result = score_component(i)
    assert 0.0 <= result.score <= 100.0
    assert result.why


_STATE_BADNESS = {
    None: 0,
    State.CLOSED: 0,
    State.DISABLED: 0,
    State.HALF_OPEN: 1,
    State.OPEN: 2,
    State.FORCED_OPEN: 2,
}


@given(inputs, st.data())
def test_a_component_getting_worse_never_scores_higher(
    i: ComponentInputs, data: st.DataObject
) -> None:
    worse_state = data.draw(
        st.sampled_from([s for s in _STATE_BADNESS if _STATE_BADNESS[s] >= _STATE_BADNESS[i.state]])
    )
    worse_rate = (
        i.success_rate if i.success_rate is None else data.draw(st.floats(0, i.success_rate))
    )
    worse_p95 = i.p95 if i.p95 is None else data.draw(st.floats(i.p95, 60))
    worse_probe = False if i.probe_ok is False else data.draw(st.sampled_from([i.probe_ok, False]))
    worse = ComponentInputs(
        worse_state, worse_rate, worse_p95, i.latency_target, worse_probe, i.credentials_problem
    )
    if worse_state is State.DISABLED and i.state is not State.DISABLED:
        return  # disabled is "not guarded", not "better"
    assert score_component(worse).score <= score_component(i).score


@given(inputs, st.floats(0, 2), st.floats(0, 2))
def test_more_saturation_never_scores_higher(i: ComponentInputs, a: float, b: float) -> None:
    low, high = sorted((a, b))
    less = score_component(dataclasses.replace(i, saturation=low))
    more = score_component(dataclasses.replace(i, saturation=high))
    assert more.score <= less.score
    assert more.down == less.down  # a saturated component answers: never down for it
    if high <= 0.8:
        assert more == score_component(i)  # below the knee it costs nothing


@given(st.floats(0, 100), st.floats(0, 100))
def test_without_rules_the_level_is_monotone_in_the_score(a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert Level.for_score(low) >= Level.for_score(high)


@given(
    st.lists(st.tuples(st.floats(0.01, 1), st.floats(0, 100)), min_size=1, max_size=5), st.data()
)
def test_system_score_bounds_and_monotonicity(
    parts: list[tuple[float, float]], data: st.DataObject
) -> None:
    def system(p: list[tuple[float, float]]) -> float:
        return sum(w * s for w, s in p) / sum(w for w, _ in p)

    score = system(parts)
    assert -1e-9 <= score <= 100 + 1e-9
    i = data.draw(st.integers(0, len(parts) - 1))
    lowered = list(parts)
    lowered[i] = (parts[i][0], data.draw(st.floats(0, parts[i][1])))
    assert system(lowered) <= score + 1e-9


NAMES = {"database": "database", "cache": "redis", "openai": "openai", "s3": "s3"}


class ManagerMachine(RuleBasedStateMachine):
    """Random failures and recoveries of all four dependencies; invariants always hold."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.registry = Registry.with_defaults(clock=self.clock)
        self.manager = DegradationManager(
            [Component(c, breaker=self.registry.get(b)) for c, b in NAMES.items()],
            clock=self.clock,
        )

    @rule(component=st.sampled_from(sorted(NAMES)))
    def fail(self, component: str) -> None:
        self.registry.get(NAMES[component]).force_open()

    @rule(component=st.sampled_from(sorted(NAMES)))
    def heal(self, component: str) -> None:
        self.registry.get(NAMES[component]).reset()

    @rule(dt=st.sampled_from([0.5, 3.0, 10.0, 30.0]))
    def heartbeat(self, dt: float) -> None:
        self.clock.advance(dt)
        self.manager.evaluate("heartbeat")

    @invariant()
    def score_in_range(self) -> None:
        assert 0.0 <= self.manager.score <= 100.0

    @invariant()
    def features_never_on_while_a_requirement_is_down(self) -> None:
        down = {c for c, b in NAMES.items() if self.registry.get(b).state is not State.CLOSED}
        for feature in self.manager.features:
            if feature.requires & down:
                assert not self.manager.enabled(feature.name), (feature, down)

    @invariant()
    def a_dependency_down_is_never_optimal(self) -> None:
        if any(self.registry.get(b).state is State.FORCED_OPEN for b in NAMES.values()):
            assert self.manager.level > Level.OPTIMAL

    @invariant()
    def database_down_is_at_least_minimal(self) -> None:
        if self.registry.get("database").state is State.FORCED_OPEN:
            assert self.manager.level >= Level.MINIMAL


ManagerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
test_manager_invariants = ManagerMachine.TestCase
