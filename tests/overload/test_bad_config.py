"""Issue 14, outsider checks: the overload guards' settings given wrong values are refused
where they are given (building the preset, the registry, the guard), with an error naming
the setting and the value, never later (a ``MemoryError``, an ``OverflowError`` on the first
queued caller, or a level that silently sheds nothing)."""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest

from brownout import Registry
from brownout.health import Level
from brownout.overload import Bulkhead, BulkheadFull, Gradient2, GuardPreset
from brownout.testing import eventually
from brownout.web import Criticality, Shedder

NAN = math.nan

PRESETS: list[tuple[dict[str, Any], str]] = [
    ({"bulkhead": -1}, "GuardPreset.bulkhead must be None, an integer >= 1"),
    ({"bulkhead": 0}, "GuardPreset.bulkhead must be None, an integer >= 1"),
    ({"bulkhead": True}, "GuardPreset.bulkhead must be None, an integer >= 1"),
    ({"bulkhead": "10"}, "got '10'"),
    # a deque of 10**12 tokens: was a MemoryError when the first adapter asked for it
    ({"bulkhead": 10**12}, "Bulkhead.limit must be an integer >= 1 and <= 1000000"),
    ({"bulkhead": 10, "max_wait": -1}, "GuardPreset.max_wait must be >= 0"),
    ({"bulkhead": 10, "max_wait": NAN}, "GuardPreset.max_wait must be >= 0 and <= 3600"),
    ({"bulkhead": 10, "max_wait": math.inf}, "got inf"),
    ({"bulkhead": 10, "max_wait": 1e10}, "got 10000000000.0"),
    ({"bulkhead": 10, "max_wait": "0.1"}, "got '0.1'"),
    # the settings below were only checked when an adapter first asked for its guards
    ({"bulkhead": 10, "max_waiting": -1}, "GuardPreset: Bulkhead.max_waiting"),
    ({"bulkhead": Gradient2, "max_waiting": 1.5}, "GuardPreset: Bulkhead.max_waiting"),
    ({"throttle": "yes"}, "GuardPreset.throttle must be True or False, got 'yes'"),
    ({"retry_budget": 1}, "GuardPreset.retry_budget must be True or False, got 1"),
    ({"throttle": True, "k": 0}, r"GuardPreset: AdaptiveThrottle.k must be a number in \[1, 100\]"),
    ({"throttle": True, "k": NAN}, "AdaptiveThrottle.k .* got nan"),
    ({"throttle": True, "k": "2"}, "AdaptiveThrottle.k .* got '2'"),
    ({"throttle": True, "refused_on": (1,)}, "GuardPreset: AdaptiveThrottle.refused_on"),
    ({"retry_budget": True, "retry_ratio": -0.1}, "GuardPreset: RetryBudget.ratio"),
    ({"retry_budget": True, "retry_ratio": NAN}, "RetryBudget.ratio .* got nan"),
    ({"retry_budget": True, "retry_floor": math.inf}, "GuardPreset: RetryBudget.floor"),
]


@pytest.mark.parametrize(("settings", "message"), PRESETS)
def test_a_bad_preset_is_refused_when_it_is_written(settings: dict[str, Any], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        Registry(guards={"redis": GuardPreset(**settings)})


def test_good_presets_still_build() -> None:
    registry = Registry(
        guards={
            "redis": GuardPreset(bulkhead=Gradient2, max_wait=0.05, max_waiting=4),
            "sql": GuardPreset(bulkhead=1_000_000, retry_budget=True, retry_ratio=0.0),
            "openai": GuardPreset(throttle=True, k=1.0, max_wait=3600),
        }
    )
    assert set(registry.guard_presets) == {"redis", "sql", "openai"}
    guards = GuardPreset(bulkhead=1_000_000).build("sql")
    assert guards.bulkhead is not None and guards.bulkhead.limit == 1_000_000


@pytest.mark.parametrize("limit", [10**7, 10**12])
def test_a_huge_fixed_limit_is_refused_not_allocated(limit: int) -> None:
    with pytest.raises(ValueError, match=rf"Bulkhead.limit .* got {limit}"):
        Bulkhead("db", limit=limit)


@pytest.mark.parametrize("wait", [1e10, 3600.5, math.inf, NAN, -0.1])
def test_a_wait_that_cannot_be_bounded_is_refused_at_construction(wait: float) -> None:
    with pytest.raises(ValueError, match=r"Bulkhead\.max_wait must be >= 0 and <= 3600 seconds"):
        Bulkhead("db", limit=1, max_wait=wait)
    bulkhead = Bulkhead("db", limit=1)
    with pytest.raises(ValueError, match=r"Bulkhead\.acquire: timeout must be >= 0 and <= 3600"):
        bulkhead.acquire(timeout=wait)


def test_the_longest_wait_allowed_is_a_wait_a_thread_can_make() -> None:
    """Before the bound, ``max_wait=1e10`` was accepted and the first thread that had to
    queue got ``OverflowError: timestamp out of range`` instead of a permit."""
    bulkhead = Bulkhead("db", limit=1, max_wait=3600)
    outcome: list[BaseException | str] = []

    def second() -> None:
        try:
            with bulkhead.acquire():
                outcome.append("admitted")
        except BaseException as exc:
            outcome.append(exc)

    with bulkhead.acquire():
        thread = threading.Thread(target=second)
        thread.start()
        eventually(
            lambda: bulkhead.snapshot().waiting == 1 or not thread.is_alive(),
            what="the second thread to queue",
        )
    thread.join(timeout=30)
    assert outcome == ["admitted"]
    with pytest.raises(BulkheadFull), bulkhead.acquire(), bulkhead.acquire(timeout=0):
        pass


@pytest.mark.parametrize("key", ["sheddable", "critical", "urgent", 1])
def test_shed_at_level_keys_must_be_classes(key: Any) -> None:
    """A string key was accepted and never matched a request: the level shed nothing (and
    ``"critical"`` slipped past the 'critical requests are never shed' check)."""
    with pytest.raises(TypeError, match="Shedder shed_at_level keys must be Criticality values"):
        Shedder(shed_at_level={key: Level.MINIMAL})
    assert Shedder(shed_at_level={Criticality.SHEDDABLE: Level.MINIMAL}).shed_at_level == {
        Criticality.SHEDDABLE: Level.MINIMAL
    }
