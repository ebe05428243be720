"""Issue 14 item 6: the status page's trends (``TrendRecorder``: rings of ``points``
samples) as a Hypothesis state machine on a fake clock. Calls succeed or fail between
samples taken at uneven intervals; after every step the recorded series are the model's:
the last ``points`` samples (every series the same length, times increasing, never more),
requests per second and error rate the deltas of the interval, the breaker's state and
the level at the sample."""

from __future__ import annotations

import json

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from brownout import BreakerOpen, CircuitBreaker, Registry
from brownout.health import Component, DegradationManager, Level, TrendRecorder
from brownout.testing import FakeClock

POINTS = 6


def _boom() -> None:
    raise ConnectionError("down")


class TrendsMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(100.0)
        self.breaker: CircuitBreaker = Registry.with_defaults(clock=self.clock).get("database")
        self.manager = DegradationManager(
            [Component("database", breaker=self.breaker)], clock=self.clock
        )
        self.recorder = TrendRecorder(self.manager, points=POINTS, clock=self.clock)
        self.ok = self.failed = 0  # calls since the last sample
        self.expected: list[dict[str, object]] = []
        self.last_t: float | None = None

    @rule(n=st.integers(0, 5), failures=st.integers(0, 3))
    def calls(self, n: int, failures: int) -> None:
        # a call refused by the open breaker counts in both, as rejected (docs/inventario.md)
        for _ in range(n):
            try:
                self.breaker.call(lambda: None)
                self.ok += 1
            except BreakerOpen:
                self.failed += 1
        for _ in range(failures):
            with pytest.raises((ConnectionError, BreakerOpen)):
                self.breaker.call(_boom)
            self.failed += 1

    @rule(level=st.sampled_from(list(Level)))
    def pin(self, level: Level) -> None:
        self.manager.pin(level, duration=3600, reason="machine")

    @rule(dt=st.sampled_from([0.5, 1.0, 1.0, 2.5, 10.0]))
    def sample(self, dt: float) -> None:
        self.clock.advance(dt)
        now = self.clock()
        total = self.ok + self.failed
        if self.last_t is None:
            rps, error_rate = None, None
        else:
            rps = total / (now - self.last_t)
            error_rate = self.failed / total if total else None
        self.recorder.sample(now)
        self.expected.append(
            {
                "t": now,
                "rps": rps,
                "error_rate": error_rate,
                "state": str(self.breaker.state),
                "level": int(self.manager.level),
            }
        )
        self.expected = self.expected[-POINTS:]
        self.ok = self.failed = 0
        self.last_t = now

    @invariant()
    def series_are_the_models(self) -> None:
        doc = self.recorder.to_dict()
        json.dumps(doc, allow_nan=False)
        if not self.expected:
            return
        db = doc["dependencies"]["database"]
        lengths = {len(v) for v in db.values()}
        assert lengths == {len(self.expected)} and len(self.expected) <= POINTS
        assert db["t"] == [e["t"] for e in self.expected]
        assert db["t"] == sorted(set(db["t"]))
        for got, want in zip(db["rps"], self.expected, strict=True):
            assert got == (None if want["rps"] is None else pytest.approx(want["rps"]))
        for got, want in zip(db["error_rate"], self.expected, strict=True):
            assert got == (
                None if want["error_rate"] is None else pytest.approx(want["error_rate"])
            )
        assert db["state"] == [e["state"] for e in self.expected]
        assert doc["level"]["t"] == db["t"]
        assert doc["level"]["value"] == [e["level"] for e in self.expected]


TrendsMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=40)
TestTrendsMachine = TrendsMachine.TestCase
