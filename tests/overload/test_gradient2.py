"""Gradient2: unit tests on explicit times, and a Hypothesis state machine of a
bulkhead driven by it (the limit stays in bounds, nothing is admitted over it)."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from brownout.overload import Bulkhead, BulkheadFull, Gradient2, LimitPolicy, Permit
from brownout.testing import FakeClock


def feed(
    g: Gradient2, start: float, seconds: int, rtt: float, inflight: int | None = None
) -> float:
    """One sample per second (``min_samples=1``) for ``seconds``; returns the next time."""
    t = start
    for _ in range(seconds):
        g.on_sample(t, rtt, g.limit if inflight is None else inflight, False)
        t += 1.0
    return t


def test_is_a_limit_policy() -> None:
    assert isinstance(Gradient2(), LimitPolicy)
    assert Gradient2().limit == 20


def test_steady_latency_and_busy_grows_by_the_queue_allowance() -> None:
    g = Gradient2(initial_limit=10, min_samples=1)
    t = feed(g, 0.0, 1, 0.010)  # the first sample opens the first window
    for _ in range(5):
        before = g._estimate
        t = feed(g, t, 1, 0.010)
        # gradient 1: limit * 0.8 + (limit + 4) * 0.2 = limit + 0.8
        assert g._estimate == pytest.approx(before + 0.8)


def test_app_limited_keeps_the_limit() -> None:
    g = Gradient2(initial_limit=40, min_samples=1)
    feed(g, 0.0, 30, 0.010, inflight=5)  # fewer than half the limit in flight
    assert g.limit == 40


def test_slowdown_shrinks_to_twice_the_queue_size_and_recovers() -> None:
    g = Gradient2(initial_limit=50, min_samples=1)
    t = feed(g, 0.0, 60, 0.010)
    high = g.limit
    t = feed(g, t, 60, 0.400)
    assert g.limit == 2 * g.queue_size  # the fixed point of gradient 0.5
    low_long = g.long_rtt
    assert 0.010 < low_long < 0.400  # the long average lags: still "normal" is near 10 ms
    t = feed(g, t, 200, 0.010)
    assert g.limit > high / 2  # back to normal latency: grows again


def test_long_rtt_is_pulled_down_fast_after_a_long_slow_period() -> None:
    g = Gradient2(initial_limit=20, min_samples=1, long_window=10)
    t = feed(g, 0.0, 100, 0.500)  # the long average learns 500 ms
    assert g.long_rtt == pytest.approx(0.5, rel=0.01)
    feed(g, t, 5, 0.010)
    # each window: ratio > 2 ⇒ long_rtt * 0.9 on top of the exponential average
    assert g.long_rtt < 0.5 * 0.9**5


def test_a_drop_counts_as_queueing() -> None:
    g = Gradient2(initial_limit=100, min_samples=1)
    g.on_sample(0.0, 0.010, 1, False)
    g.on_sample(1.0, 0.010, 1, True)  # app-limited, but dropped: halve-ish
    # 100 * 0.8 + (100 * 0.5 + 4) * 0.2
    assert g._estimate == pytest.approx(90.8)


def test_samples_are_averaged_over_a_window_of_min_samples() -> None:
    g = Gradient2(initial_limit=10, min_samples=3, window=1.0)
    g.on_sample(0.0, 0.010, 10, False)
    g.on_sample(5.0, 0.010, 10, False)  # window over, but only 2 samples
    assert g.long_rtt == 0.0
    g.on_sample(5.0, 0.040, 10, False)
    assert g.long_rtt == pytest.approx(0.020)  # the mean of the window's three samples


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"min_limit": 0}, "Gradient2.min_limit must be an integer >= 1"),
        ({"max_limit": 5, "min_limit": 6, "initial_limit": 6}, "Gradient2.max_limit (5)"),
        ({"initial_limit": 500}, "Gradient2.initial_limit must be in [min_limit, max_limit]"),
        ({"smoothing": 0.0}, "Gradient2.smoothing must be > 0"),
        ({"smoothing": 1.5}, "Gradient2.smoothing must be a number in [0.0, 1.0]"),
        ({"tolerance": 0.5}, "Gradient2.tolerance"),
        ({"queue_size": -1}, "Gradient2.queue_size"),
        ({"window": float("nan")}, "Gradient2.window"),
        ({"min_samples": 0}, "Gradient2.min_samples"),
    ],
)
def test_bad_settings_are_named(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        Gradient2(**kwargs)  # type: ignore[arg-type]
    assert fragment in str(info.value)


class AdaptiveBulkhead(RuleBasedStateMachine):
    """A bulkhead with a Gradient2 limit against a model: the permits held."""

    permits = Bundle("permits")

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.policy = Gradient2(
            initial_limit=4, min_limit=1, max_limit=12, queue_size=2, window=0.5, min_samples=1
        )
        self.bh = Bulkhead("dep", limit=self.policy, clock=self.clock)
        self.held: set[int] = set()
        self.admitted = 0
        self.refused = 0

    @rule(target=permits)
    def acquire(self) -> Permit | None:
        limit_before, in_use_before = self.bh.limit, self.bh.in_use
        try:
            permit = self.bh.acquire().__enter__()
        except BulkheadFull:
            assert in_use_before >= limit_before
            self.refused += 1
            return None
        assert in_use_before < limit_before  # never admitted over the limit
        self.held.add(id(permit))
        self.admitted += 1
        return permit

    @rule(
        permit=consumes(permits),
        rtt=st.floats(min_value=0.0, max_value=2.0),
        dropped=st.booleans(),
    )
    def release(self, permit: Permit | None, rtt: float, dropped: bool) -> None:
        if permit is None:
            return
        self.clock.advance(rtt)
        permit.release(dropped=dropped)
        self.held.discard(id(permit))
        assert not permit.held

    @rule(seconds=st.floats(min_value=0.0, max_value=5.0))
    def idle(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def limit_within_bounds(self) -> None:
        assert self.policy.min_limit <= self.bh.limit <= self.policy.max_limit
        assert self.bh.limit == self.policy.limit

    @invariant()
    def counts_match_the_model(self) -> None:
        snap = self.bh.snapshot()
        assert snap.in_use == len(self.held)
        assert snap.admitted == self.admitted
        assert snap.rejected == self.refused
        assert snap.waiting == 0
        assert snap.saturation == pytest.approx(len(self.held) / snap.limit)


TestAdaptiveBulkhead = AdaptiveBulkhead.TestCase
TestAdaptiveBulkhead.settings = settings(max_examples=100, stateful_step_count=50, deadline=None)
