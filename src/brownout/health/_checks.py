"""Validation of the DegradationManager's arguments: every bad input gets an error naming it."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence

from brownout.health._model import Component, Feature, Level, LevelRule, seed_features

__all__ = [
    "check_backoff",
    "check_components",
    "check_degrade_after",
    "check_features",
    "check_impact",
    "check_levels_covered",
    "check_non_negative",
    "check_positive",
    "check_recovery",
    "check_rules",
    "check_thresholds",
]


def check_components(components: Iterable[Component]) -> tuple[Component, ...]:
    out = tuple(components)
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise ValueError(f"DegradationManager: component names must be unique, got {names}")
    for c in out:
        if not isinstance(c, Component):
            raise TypeError(f"DegradationManager: components must be Component, got {c!r}")
    present = [c for c in out if c.configured]
    if present and sum(c.weight or 0.0 for c in present) <= 0:
        raise ValueError(
            "DegradationManager: the configured components' weights are all zero; "
            "at least one weight must be > 0"
        )
    return out


def check_features(features: Iterable[Feature] | None, known: set[str]) -> tuple[Feature, ...]:
    if features is None:
        # the seed's matrix: requirements on dependencies this application does not
        # have make a feature off ("not configured"), they are not typos
        return seed_features()
    out = tuple(features)
    seen: set[str] = set()
    for feature in out:
        if not isinstance(feature, Feature):
            raise TypeError(f"DegradationManager: features must be Feature, got {feature!r}")
        if feature.name in seen:
            raise ValueError(f"DegradationManager: feature {feature.name!r} is defined twice")
        seen.add(feature.name)
        unknown = feature.requires - known
        if unknown:
            raise ValueError(
                f"Feature {feature.name!r} requires unknown component(s) {sorted(unknown)}; "
                f"known components: {sorted(known)} (declare an absent one with "
                "Component(name, configured=False))"
            )
    return out


def check_rules(rules: Sequence[LevelRule]) -> tuple[LevelRule, ...]:
    out = tuple(rules)
    for rule in out:
        if not isinstance(rule, LevelRule):
            raise TypeError(f"DegradationManager.rules entries must be LevelRule, got {rule!r}")
    return out


def check_impact(impact: Mapping[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    out = dict(impact)
    for (src, dst), frac in out.items():
        if not isinstance(frac, int | float) or not 0 <= frac <= 1:
            raise ValueError(
                f"DegradationManager.impact[({src!r}, {dst!r})] must be in [0, 1], got {frac!r}"
            )
    return out


def check_thresholds(thresholds: Sequence[float]) -> tuple[float, float, float, float]:
    values = tuple(float(t) for t in thresholds)
    if len(values) != 4:
        raise ValueError(
            f"DegradationManager.thresholds must be 4 numbers (OPTIMAL, DEGRADED, LIMITED, "
            f"MINIMAL lower bounds), got {len(values)}"
        )
    if not all(0 < v <= 100 for v in values):
        raise ValueError(f"DegradationManager.thresholds must be in (0, 100], got {values}")
    if not all(a > b for a, b in itertools.pairwise(values)):
        raise ValueError(f"DegradationManager.thresholds must be strictly decreasing, got {values}")
    a, b, c, d = values
    return (a, b, c, d)


def check_levels_covered(settings: Mapping[Level, object]) -> None:
    missing = [lvl for lvl in Level if lvl not in settings]
    if missing:
        raise ValueError(f"DegradationManager.settings lacks levels {missing}")


def check_degrade_after(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"DegradationManager.degrade_after must be an int >= 1, got {value!r}")
    return value


def check_recovery(value: str) -> str:
    if value not in ("step", "direct"):
        raise ValueError(f"DegradationManager.recovery must be 'step' or 'direct', got {value!r}")
    return value


def check_backoff(value: tuple[float, float]) -> tuple[float, float]:
    if value[0] <= 0 or value[1] < value[0]:
        raise ValueError(
            f"DegradationManager.probe_backoff must be (base > 0, cap >= base), got {value!r}"
        )
    return value


def check_non_negative(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"DegradationManager.{name} must be a number >= 0, got {value!r}")
    return float(value)


def check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"DegradationManager.{name} must be a number > 0, got {value!r}")
    return float(value)
