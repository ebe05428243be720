"""Issue 14 item 7: a bulkhead whose limit follows the degradation level
(``LevelScaledLimit``, as inventario builds Redis's, PostgreSQL's and S3's admission) as
a Hypothesis state machine: the level changes while calls are in flight, and the bulkhead
admits a call exactly while fewer than its limit are in flight, that limit being the one
read when it was built, at the last release or when the level's change was announced
(``Bulkhead.refresh_limit``; ``base x pool_multiplier`` of the level then, at least 1): a
worse level puts fewer calls at once on the dependency from then on, and a better one lets
more in."""

from __future__ import annotations

import math

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from brownout.health import DEFAULT_SETTINGS, Level
from brownout.overload import Bulkhead, Permit
from brownout.testing import FakeClock
from inventario.level_settings import LevelScaledLimit


def figure(base: int, level: Level) -> int:
    return max(1, math.floor(base * DEFAULT_SETTINGS[level].pool_multiplier))


class LevelLimitMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.level = Level.OPTIMAL
        self.base = 10
        self.policy = LevelScaledLimit(
            self.base, lambda: DEFAULT_SETTINGS[self.level].pool_multiplier
        )
        self.bulkhead = Bulkhead("dep", limit=self.policy, clock=FakeClock())
        self.limit = figure(self.base, self.level)  # read when built
        self.held: list[Permit] = []

    @rule(level=st.sampled_from(list(Level)))
    def change_level(self, level: Level) -> None:
        self.level = level

    @rule(level=st.sampled_from(list(Level)))
    def change_level_as_the_service_does(self, level: Level) -> None:
        """inventario's manager listener (``refresh_admission``) reads the limit again
        on a change of level: the new one holds at once, not from the next release."""
        self.level = level
        assert self.bulkhead.refresh_limit() == figure(self.base, level)
        self.limit = figure(self.base, level)

    @rule()
    def call_starts(self) -> None:
        permit = self.bulkhead.try_acquire()
        assert (permit is not None) == (len(self.held) < self.limit), (
            len(self.held),
            self.limit,
            self.level,
        )
        if permit is not None:
            self.held.append(permit)

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def call_ends(self, data: st.DataObject) -> None:
        permit = self.held.pop(data.draw(st.integers(0, len(self.held) - 1)))
        permit.release()
        self.limit = figure(self.base, self.level)  # read again after every call

    @invariant()
    def the_bulkhead_says_the_same(self) -> None:
        snap = self.bulkhead.snapshot()
        assert snap.limit == self.limit
        assert snap.in_use == len(self.held)
        assert snap.saturation == len(self.held) / self.limit


LevelLimitMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=60)
TestLevelLimitMachine = LevelLimitMachine.TestCase


def test_the_figures_are_the_documented_ones() -> None:
    """docs/overload.md's table: Redis 50, PostgreSQL 20, S3 10 per level."""
    assert [figure(50, lvl) for lvl in Level] == [50, 45, 37, 25, 10]
    assert [figure(20, lvl) for lvl in Level] == [20, 18, 15, 10, 4]
    assert [figure(10, lvl) for lvl in Level] == [10, 9, 7, 5, 2]
