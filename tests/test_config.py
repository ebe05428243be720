"""Invalid configuration fails at construction and names the field."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from brownout import PRESETS, BreakerConfig, CircuitBreaker, Registry


@pytest.mark.parametrize(
    ("kwargs", "exc", "words"),
    [
        ({"open_for": 0}, ValueError, "open_for must be > 0"),
        ({"open_for": -1.0}, ValueError, "open_for must be > 0"),
        ({"open_for": timedelta(seconds=-2)}, ValueError, "open_for"),
        ({"open_for": "10"}, TypeError, "open_for must be seconds"),
        ({"failure_rate": 0}, ValueError, "failure_rate must be in (0, 1]"),
        ({"failure_rate": 1.5}, ValueError, "failure_rate must be in (0, 1]"),
        ({"slow_call_rate": -0.1, "slow_call_duration": 1}, ValueError, "slow_call_rate"),
        ({"slow_call_rate": 0.5}, ValueError, "slow_call_duration is required"),
        ({"half_open_calls": 0}, ValueError, "half_open_calls must be >= 1"),
        ({"half_open_calls": 1.5}, TypeError, "half_open_calls must be an int"),
        ({"consecutive_failures": 0}, ValueError, "consecutive_failures must be >= 1"),
        ({"window_duration": 0.5, "window_bucket": 1.0}, ValueError, "window_duration must be >="),
        (
            {"window_size": 5, "minimum_calls": 6},
            ValueError,
            "minimum_calls must be <= window_size",
        ),
        ({"open_for_multiplier": 0.5}, ValueError, "open_for_multiplier"),
        ({"open_for": 100, "open_for_max": 10}, ValueError, "open_for_max must be >= open_for"),
        ({"half_open_max_wait": 0}, ValueError, "half_open_max_wait"),
        ({"record": (int,)}, TypeError, "record entries must be exception types or predicates"),
        ({"ignore": ("KeyError",)}, TypeError, "ignore entries must be"),
        ({"failure_result": 3}, TypeError, "failure_result must be a callable"),
    ],
)
def test_invalid_config_names_the_field(
    kwargs: dict[str, Any], exc: type[Exception], words: str
) -> None:
    with pytest.raises(exc) as info:
        BreakerConfig(**kwargs)
    assert words in str(info.value)
    assert "BreakerConfig." in str(info.value)


def test_minimum_calls_may_exceed_window_size_for_time_windows() -> None:
    BreakerConfig(window_duration=60, minimum_calls=500)


def test_single_matcher_is_accepted() -> None:
    cfg = BreakerConfig(ignore=KeyError)  # type: ignore[arg-type]
    assert cfg.ignore == (KeyError,)


def test_config_is_frozen_and_replace_validates() -> None:
    cfg = BreakerConfig()
    with pytest.raises(AttributeError):
        cfg.open_for = 3  # type: ignore[misc]
    assert cfg.replace(open_for=3).open_for == 3
    with pytest.raises(ValueError, match="open_for"):
        cfg.replace(open_for=-3)
    with pytest.raises(TypeError, match="no field"):
        cfg.replace(opn_for=3)


def test_breaker_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="name"):
        CircuitBreaker("")
    with pytest.raises(TypeError, match="BreakerConfig"):
        CircuitBreaker("x", {"open_for": 3})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="fallback"):
        CircuitBreaker("x", fallback=3)  # type: ignore[arg-type]


def test_presets_match_the_seed() -> None:
    figures = {
        name: (cfg.consecutive_failures, cfg.open_for, cfg.half_open_calls)
        for name, cfg in PRESETS.items()
    }
    assert figures == {
        "openai": (5, 60.0, 2),
        "database": (3, 30.0, 1),
        "redis": (5, 20.0, 2),
        "s3": (5, 30.0, 2),
    }


def test_registry_creates_once_lists_and_snapshots() -> None:
    registry = Registry.with_defaults()
    redis = registry.get("redis")
    assert registry.get("redis") is redis
    assert redis.config == PRESETS["redis"]
    other = registry.get("payments")
    assert other.config == BreakerConfig()
    assert registry.names() == ["redis", "payments"]
    assert set(registry.snapshot()) == {"redis", "payments"}
    with pytest.raises(ValueError, match="already exists"):
        registry.get("redis", BreakerConfig(open_for=1))
    with pytest.raises(ValueError, match="already exists"):
        registry.add(CircuitBreaker("redis"))


def test_registry_listeners_cover_future_breakers() -> None:
    registry = Registry()
    seen: list[str] = []
    registry.get("a")
    registry.add_listener(on_call=lambda e: seen.append(e.breaker))
    registry.get("b")
    for breaker in registry:
        breaker.call(len, "x")
    assert seen == ["a", "b"]


def test_registry_listener_unsubscribes_from_all_breakers() -> None:
    registry = Registry()
    seen: list[str] = []
    registry.get("a")
    unsubscribe = registry.add_listener(on_call=lambda e: seen.append(e.breaker))
    registry.get("b")
    unsubscribe()
    registry.get("c")
    for breaker in registry:
        breaker.call(len, "x")
    assert seen == []
    unsubscribe()  # a second call is harmless


def test_registry_refuses_a_listener_that_is_not_callable_at_once() -> None:
    registry = Registry()  # no breaker yet: nothing else would look at it before add()
    with pytest.raises(TypeError, match="on_state_change must be callable"):
        registry.add_listener(on_state_change="print")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs on_state_change= and/or on_call="):
        registry.add_listener()
    registry.get("a").call(len, "x")
