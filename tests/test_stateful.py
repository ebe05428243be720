"""A Hypothesis state machine drives a breaker and checks it against a small reference model."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from brownout import BreakerConfig, BreakerOpen, CircuitBreaker, State
from brownout.testing import FakeClock


class Down(Exception):
    pass


class Mine(Exception):
    pass


@dataclass
class Model:
    """The rules of docs/breaker.md, written as plainly as possible (count window)."""

    consecutive: int | None
    rate: float | None
    slow_rate: float | None
    slow_s: float
    window: int
    minimum: int
    open_for: float
    probes: int
    policy: str = "all"
    shadow: bool = False
    state: State = State.CLOSED
    outcomes: list[tuple[bool, bool]] = field(default_factory=list)  # (failed, slow)
    open_until: float = 0.0
    probe_done: int = 0  # finished probes ("all": only successes, a failure reopens)
    probe_failed: int = 0
    probe_slow: int = 0
    in_flight: int = 0
    successes: int = 0  # lifetime: every call that ran and returned
    trips: int = 0
    gen: int = 0  # bumps on every transition: late outcomes of older states count for nothing

    def tick(self, now: float) -> None:
        if self.state is State.OPEN and now >= self.open_until:
            self.state = State.HALF_OPEN
            self.gen += 1
            self.probe_done = self.probe_failed = self.probe_slow = 0
            self.in_flight = 0

    def admit(self, now: float) -> tuple[str, int]:
        self.tick(now)
        if self.state is State.CLOSED:
            return "closed", self.gen
        if self.state is State.HALF_OPEN and self.in_flight + self.probe_done < self.probes:
            self.in_flight += 1
            return "probe", self.gen
        return "rejected", self.gen

    def trip(self, now: float) -> None:
        self.state = State.OPEN
        self.open_until = now + self.open_for
        self.trips += 1
        self.gen += 1

    def open_for_a_while(self, now: float, seconds: float) -> None:
        """force_open(duration=seconds): OPEN for that long, not a trip."""
        self.tick(now)
        if self.state is not State.OPEN:
            self.state = State.OPEN
            self.gen += 1
        self.open_until = now + seconds

    def finish(self, admission: tuple[str, int], failed: bool, slow: bool, now: float) -> None:
        admitted, gen = admission
        if not failed:
            self.successes += 1
        if gen != self.gen:
            return
        if admitted == "closed" and self.state is State.CLOSED:
            self.outcomes.append((failed, slow))
            recent = self.outcomes[-self.window :]
            run = 0
            for f, _ in reversed(self.outcomes):
                if not f:
                    break
                run += 1
            calls = len(recent)
            fails = sum(f for f, _ in recent)
            slows = sum(s for _, s in recent)
            if (
                (failed and self.consecutive is not None and run >= self.consecutive)
                or (calls >= self.minimum and self.rate is not None and fails / calls >= self.rate)
                or (
                    calls >= self.minimum
                    and self.slow_rate is not None
                    and slows / calls >= self.slow_rate
                )
            ):
                self.trip(now)
        elif admitted == "probe" and self.state is State.HALF_OPEN:
            self.in_flight -= 1
            if self.policy == "all":
                if failed or (slow and self.slow_rate is not None):
                    self.trip(now)
                    return
            elif failed and self.rate is None:  # "rate" without failure_rate: as "all"
                self.trip(now)
                return
            self.probe_done += 1
            self.probe_failed += failed
            self.probe_slow += slow
            if self.probe_done >= self.probes:
                done = self.probe_done
                if (self.rate is not None and self.probe_failed / done >= self.rate) or (
                    self.slow_rate is not None and self.probe_slow / done >= self.slow_rate
                ):
                    self.trip(now)
                else:
                    self.state = State.CLOSED
                    self.gen += 1
                    self.outcomes = []

    def release(self, admission: tuple[str, int]) -> None:
        if admission == ("probe", self.gen) and self.state is State.HALF_OPEN:
            self.in_flight -= 1


class BreakerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.held: list[tuple[tuple[str, int], float]] = []

    @initialize(
        consecutive=st.none() | st.integers(1, 6),
        rate=st.none() | st.sampled_from([0.25, 0.5, 1.0]),
        slow_rate=st.none() | st.sampled_from([0.5, 1.0]),
        window=st.integers(1, 12),
        minimum=st.integers(1, 12),
        open_for=st.sampled_from([1.0, 5.0, 30.0]),
        probes=st.integers(1, 3),
        listener=st.booleans(),
        policy=st.sampled_from(["all", "rate"]),
    )
    def setup(
        self,
        consecutive: int | None,
        rate: float | None,
        slow_rate: float | None,
        window: int,
        minimum: int,
        open_for: float,
        probes: int,
        listener: bool,
        policy: str,
    ) -> None:
        minimum = min(minimum, window)
        self.clock = FakeClock()
        self.model = Model(
            consecutive, rate, slow_rate, 2.0, window, minimum, open_for, probes, policy
        )
        self.cb = CircuitBreaker(
            "dep",
            BreakerConfig(
                consecutive_failures=consecutive,
                failure_rate=rate,
                slow_call_rate=slow_rate,
                slow_call_duration=2.0 if slow_rate is not None else None,
                window_size=window,
                minimum_calls=minimum,
                open_for=open_for,
                half_open_calls=probes,
                half_open_policy=policy,  # type: ignore[arg-type]
                ignore=(Mine,),
            ),
            clock=self.clock,
        )
        if listener:  # the instrumented (locked) path must follow the same rules
            self.cb.add_listener(on_call=lambda e: None)

    def _call(self, failed: bool, slow: bool) -> None:
        expected = self.model.admit(self.clock())

        def fn() -> str:
            if slow:
                self.clock.advance(2.5)
            if failed:
                raise Down
            return "ok"

        try:
            self.cb.call(fn)
            outcome = "ok"
        except BreakerOpen:
            outcome = "rejected"
        except Down:
            outcome = "failed"
        if expected[0] == "rejected" and not self.model.shadow:
            assert outcome == "rejected"
            return
        assert outcome != "rejected", f"model admitted ({expected}), breaker rejected"
        self.model.finish(expected, failed, slow and self.model.slow_rate is not None, self.clock())

    @rule()
    def success(self) -> None:
        self._call(False, False)

    @rule()
    def failure(self) -> None:
        self._call(True, False)

    @rule()
    def slow_success(self) -> None:
        self._call(False, True)

    @rule()
    def ignored(self) -> None:
        expected = self.model.admit(self.clock())
        try:
            self.cb.call(lambda: (_ for _ in ()).throw(Mine()))
        except BreakerOpen:
            assert expected[0] == "rejected" and not self.model.shadow
            return
        except Mine:
            assert expected[0] != "rejected" or self.model.shadow
        self.model.release(expected)

    @rule(dt=st.sampled_from([0.5, 1.0, 4.0, 10.0, 31.0]))
    def advance(self, dt: float) -> None:
        self.clock.advance(dt)

    @precondition(lambda self: len(self.held) < 3)
    @rule()
    def begin_held_call(self) -> None:
        expected = self.model.admit(self.clock())
        try:
            self.cb.__enter__()
        except BreakerOpen:
            assert expected[0] == "rejected" and not self.model.shadow
            return
        assert expected[0] != "rejected" or self.model.shadow
        self.held.append((expected, self.clock()))

    @precondition(lambda self: bool(self.held))
    @rule(failed=st.booleans())
    def end_held_call(self, failed: bool) -> None:
        admitted, started = self.held.pop()
        slow = self.model.slow_rate is not None and self.clock() - started >= self.model.slow_s
        if failed:
            try:
                self.cb.__exit__(Down, Down(), None)
            except Down:  # pragma: no cover - __exit__ never swallows nor raises
                pass
        else:
            self.cb.__exit__(None, None, None)
        self.model.finish(admitted, failed, slow, self.clock())

    @rule(enabled=st.booleans())
    def shadow(self, enabled: bool) -> None:
        self.cb.set_shadow(enabled)
        self.model.shadow = enabled

    @rule(seconds=st.sampled_from([1.0, 5.0]))
    def timed_open(self, seconds: float) -> None:
        self.cb.force_open(duration=seconds)
        self.model.open_for_a_while(self.clock(), seconds)

    @rule()
    def reconfigure_unchanged(self) -> None:
        """Reconfiguring with the same thresholds changes no decision."""
        self.cb.reconfigure(self.cb.config.replace())

    @invariant()
    def same_state(self) -> None:
        if not hasattr(self, "cb"):
            return
        self.model.tick(self.clock())
        assert self.cb.state is self.model.state
        snap = self.cb.snapshot()
        assert snap.trips == self.model.trips
        assert snap.total_successes == self.model.successes
        assert snap.shadow is self.model.shadow
        if self.model.state is State.CLOSED:
            recent = self.model.outcomes[-self.model.window :]
            assert snap.calls == len(recent)
            assert snap.failures == sum(f for f, _ in recent)

    def teardown(self) -> None:
        while self.held:
            self.end_held_call(False)


BreakerMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
test_breaker_matches_model = pytest.mark.filterwarnings("error")(BreakerMachine.TestCase)
