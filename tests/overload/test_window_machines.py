"""Issue 14 items 3 and 4: the adaptive throttle and the retry budget are state machines
(counts over a sliding window of buckets); Hypothesis drives each against a plain model on
a fake clock: every event kept with its time, the window's counts recomputed from scratch.

Checked after every step: the throttle rejects exactly when the injected roll is below the
SRE book's ``max(0, (requests - K * accepts) / (requests + 1))`` of the model's window, and
its snapshot says the same counts and probability; the retry budget allows a retry exactly
when ``retries + 1 <= ratio * requests + floor * window`` holds in the model's window, so
the retries in any window never pass that bound (no retry storm), and its counts match.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from brownout.overload import AdaptiveThrottle, RetryBudget, Throttled
from brownout.testing import FakeClock

#: steps of the clock: within a bucket, across a few, past the whole window
STEPS = st.one_of(
    st.floats(min_value=0.0, max_value=1.0),
    st.sampled_from([0.0, 2.5, 4.999, 5.0, 5.001, 30.0, 119.0, 120.0, 1000.0]),
)


class WindowModel:
    """Events (epoch, a, b) kept whole; the window is the last ``buckets`` epochs."""

    def __init__(self, window: float, buckets: int) -> None:
        self.width = window / buckets
        self.buckets = buckets
        self.events: list[tuple[int, int, int]] = []

    def add(self, now: float, a: int, b: int) -> None:
        self.events.append((int(now // self.width), a, b))

    def sums(self, now: float) -> tuple[int, int]:
        epoch = int(now // self.width)
        kept = [(a, b) for e, a, b in self.events if epoch - self.buckets < e <= epoch]
        return sum(a for a, _ in kept), sum(b for _, b in kept)


class ThrottleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(1_000.0)
        self.roll = 0.5

    @initialize(k=st.sampled_from([1.0, 1.5, 2.0, 4.0]), buckets=st.sampled_from([1, 4, 24]))
    def build(self, k: float, buckets: int) -> None:
        self.throttle = AdaptiveThrottle(
            "api", k=k, window=120.0, buckets=buckets, clock=self.clock, random=lambda: self.roll
        )
        self.model = WindowModel(120.0, buckets)
        self.k = k
        self.admitted = 0  # admitted, outcome not yet told
        self.requests = self.rejected = self.refused = 0

    def p(self) -> float:
        requests, accepts = self.model.sums(self.clock())
        return max(0.0, (requests - self.k * accepts) / (requests + 1))

    @rule(dt=STEPS)
    def advance(self, dt: float) -> None:
        self.clock.advance(dt)

    @rule(roll=st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
    def admit(self, roll: float) -> None:
        self.roll = roll
        expected = self.p()
        self.model.add(self.clock(), 1, 0)  # a request even when rejected (as in the book)
        self.requests += 1
        if roll < expected:
            with pytest.raises(Throttled) as info:
                self.throttle.admit()
            assert info.value.retry_after == 1.0
            self.rejected += 1
        else:
            self.throttle.admit()  # not rejected
            self.admitted += 1

    @rule()
    def accepted(self) -> None:
        if self.admitted:
            self.admitted -= 1
            self.throttle.accepted()
            self.model.add(self.clock(), 0, 1)

    @rule()
    def refused(self) -> None:
        if self.admitted:
            self.admitted -= 1
            self.throttle.refused()
            self.refused += 1

    @invariant()
    def counts_match_the_model(self) -> None:
        if not hasattr(self, "throttle"):
            return
        snap = self.throttle.snapshot()
        assert (snap.requests, snap.accepts) == self.model.sums(self.clock())
        assert snap.probability == pytest.approx(self.p(), abs=1e-12)
        assert 0.0 <= snap.probability < 1.0
        assert (snap.total_requests, snap.total_rejected, snap.total_refused) == (
            self.requests,
            self.rejected,
            self.refused,
        )


class BudgetMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(500.0)

    @initialize(
        ratio=st.sampled_from([0.0, 0.2, 0.5, 1.0]),
        floor=st.sampled_from([0.0, 0.1, 1.0, 10.0]),
        buckets=st.sampled_from([1, 5, 10]),
    )
    def build(self, ratio: float, floor: float, buckets: int) -> None:
        self.budget = RetryBudget(
            "db", ratio=ratio, window=10.0, floor=floor, buckets=buckets, clock=self.clock
        )
        self.model = WindowModel(10.0, buckets)
        self.bound = (ratio, floor * 10.0)
        self.requests = self.allowed = self.denied = 0

    @rule(
        dt=st.one_of(
            st.floats(min_value=0.0, max_value=0.5), st.sampled_from([1.0, 9.99, 10.0, 60.0])
        )
    )
    def advance(self, dt: float) -> None:
        self.clock.advance(dt)

    @rule(n=st.integers(min_value=1, max_value=20))
    def requests_made(self, n: int) -> None:
        for _ in range(n):
            self.budget.request()
            self.model.add(self.clock(), 1, 0)
        self.requests += n

    @rule()
    def retry(self) -> None:
        ratio, reserve = self.bound
        requests, retries = self.model.sums(self.clock())
        expected = retries + 1 <= ratio * requests + reserve + 1e-9
        assert self.budget.try_retry() is expected, (requests, retries, self.bound)
        if expected:
            self.model.add(self.clock(), 0, 1)
            self.allowed += 1
        else:
            self.denied += 1

    @invariant()
    def never_more_retries_than_the_budget(self) -> None:
        if not hasattr(self, "budget"):
            return
        ratio, reserve = self.bound
        requests, retries = self.model.sums(self.clock())
        assert retries <= ratio * requests + reserve + 1e-9
        snap = self.budget.snapshot()
        assert (snap.window_requests, snap.window_retries) == (requests, retries)
        assert snap.available == max(0, math.floor(ratio * requests + reserve - retries + 1e-9))
        assert (snap.requests, snap.allowed, snap.denied) == (
            self.requests,
            self.allowed,
            self.denied,
        )


MACHINE_SETTINGS = settings(
    max_examples=150,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestThrottleMachine = ThrottleMachine.TestCase
TestThrottleMachine.settings = MACHINE_SETTINGS
TestBudgetMachine = BudgetMachine.TestCase
TestBudgetMachine.settings = MACHINE_SETTINGS


def test_the_model_window_is_the_documented_one() -> None:
    """The model itself, on the book's example: 10 refused calls give 10/11; two minutes
    later (24 buckets of 5 s) they are forgotten."""
    clock = FakeClock()
    throttle = AdaptiveThrottle("api", clock=clock, random=lambda: 0.999)
    model = WindowModel(120.0, 24)
    for _ in range(10):
        throttle.admit()
        throttle.refused()
        model.add(clock(), 1, 0)
    assert (
        throttle.probability
        == pytest.approx(10 / 11)
        == pytest.approx(10 / (model.sums(clock())[0] + 1))
    )
    clock.advance(119.999)  # still within the last bucket's reach? epoch 23 vs 0: kept
    assert model.sums(clock()) == (10, 0) == (throttle.snapshot().requests, 0)
    clock.advance(0.001)
    assert model.sums(clock()) == (0, 0) and throttle.probability == 0.0
